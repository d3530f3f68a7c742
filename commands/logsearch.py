"""Read the platform's JSON-lines logs without loading them: by id across files, or over a time window.

Files come from glob patterns; rotated `.gz` files are read through gzip. Lines that are not JSON
are counted and skipped. Nothing here holds more than a few buffers and the lines it returns. A big
plain file is searched in byte ranges of whole lines, one per core, in forked processes.
"""

from __future__ import annotations

import contextlib
import glob
import gzip
import heapq
import io
import itertools
import json
import math
import os
import pickle
import signal
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Generic, TypeVar

# Big enough that Python overhead per chunk is nothing, small enough to stay in the CPU caches.
CHUNK_BYTES = 1 << 20
# A "line" longer than this is no log line: it is dropped, counted as not JSON.
MAX_LINE_BYTES = 1 << 20
# Log writers append in time order, but concurrent writers interleave: look this far back.
ORDER_SLACK = timedelta(seconds=60)
TIMESTAMP_KEYS = ("timestamp", "time", "ts", "@timestamp")
LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}
_LEVEL_ALIASES = {"warn": "warning", "err": "error", "fatal": "critical", "crit": "critical"}
_SEARCH_BYTES = 64 << 10  # binary search stops when the range is this small
# A plain file is cut into ranges for several processes only if each gets at least this much of
# it: for less, starting a process costs more than it saves.
SPLIT_MIN_BYTES = 64 << 20
# How many processes search one file: one per core this process may run on.
SEARCH_PROCESSES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1

T = TypeVar("T")


def level_name(value: Any) -> str | None:
    """Normalise a log level (WARN, warning, Fatal...) to one of LEVELS, or None."""
    if not isinstance(value, str):
        return None
    lowered = value.strip().lower()
    lowered = _LEVEL_ALIASES.get(lowered, lowered)
    return lowered if lowered in LEVELS else None


def is_gzip(path: Path) -> bool:
    """Tell a gzip file by its name."""
    return path.suffix == ".gz"


def expand(patterns: Iterable[str]) -> list[Path]:
    """Return the files the glob patterns match, each once, oldest first (by modification time)."""
    found: dict[str, Path] = {}
    for pattern in patterns:
        for name in glob.glob(os.path.expanduser(pattern), recursive=True):
            path = Path(name)
            if path.is_file():
                found.setdefault(os.path.realpath(path), path)
    return sorted(found.values(), key=_mtime)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def parse_time(value: Any) -> datetime | None:
    """Read an ISO 8601 timestamp (Z or offset; naive means UTC) or Unix seconds."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        seconds = value / 1000 if value > 10**11 else value  # milliseconds, as some loggers write
        try:
            return datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


def record_time(record: dict[str, Any]) -> datetime | None:
    """Return a log record's timestamp from the usual keys."""
    for key in TIMESTAMP_KEYS:
        if key in record:
            return parse_time(record[key])
    return None


def parse_line(raw: bytes) -> dict[str, Any] | None:
    """Parse one JSON-lines line into an object, or None when it is not a JSON object."""
    stripped = raw.strip()
    if not stripped.startswith(b"{"):
        return None
    try:
        value = json.loads(stripped)
    except (ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


@dataclass
class Record:
    """One log line that is a JSON object, where it came from and when it happened."""

    file: str
    line: int  # the order within its file (a line number for window scans, a match count for searches)
    time: datetime | None
    data: dict[str, Any]


@dataclass
class ScanStats:
    """What a read covered: files, bytes, and what had to be skipped."""

    files: int = 0
    files_skipped: int = 0  # whole files older than the window, not opened
    bytes_read: int = 0
    lines: int = 0
    non_json: int = 0
    untimed: int = 0  # JSON lines with no readable timestamp
    errors: list[str] = field(default_factory=list)

    def add(self, other: ScanStats) -> None:
        """Add another file's figures to these."""
        self.files += other.files
        self.files_skipped += other.files_skipped
        self.bytes_read += other.bytes_read
        self.lines += other.lines
        self.non_json += other.non_json
        self.untimed += other.untimed
        self.errors.extend(other.errors)


# --- search by id ---------------------------------------------------------------------------


@dataclass
class SearchResult:
    """Every JSON line containing the text, in time order, and how much was read to find them."""

    records: list[Record]
    stats: ScanStats
    left_out: int = 0  # matches beyond the cap
    # When the scan began (time.perf_counter, the same clock in every process): a search begun
    # ahead of need began before whoever takes its answer asked for it.
    started: float = field(default_factory=time.perf_counter)


def begin(paths: list[Path], text: str | list[str], cap: int = 10_000) -> None:
    """Start `search(paths, text, cap)` now, in a forked process: that search takes its answer.

    The terminal begins a lookup's scan before the rest of the command has loaded: both go on at once.
    """
    key = _key(paths, text, cap)
    if key not in _begun:
        _begun[key] = _Forked(_search, paths, text, cap)


def search(paths: Iterable[Path], text: str | list[str], cap: int = 10_000) -> SearchResult:
    """Find the lines containing `text` in every file (as `grep -F` would), then order them by time.

    With several texts, a line containing any of them (once). Texts are literal: nothing in them is
    a pattern.
    """
    paths = list(paths)
    if _begun:
        begun = _begun.pop(_key(paths, text, cap), None)
        for other in _begun.values():
            other.wait()  # begun for a search that never came: not left behind
        _begun.clear()
        if begun is not None:
            return begun.result()
    return _search(paths, text, cap)


def _search(paths: list[Path], text: str | list[str], cap: int) -> SearchResult:
    started = time.perf_counter()
    needles = [item.encode() for item in ([text] if isinstance(text, str) else text) if item]
    stats = ScanStats()
    records: list[Record] = []
    left_out = 0
    for path in paths:
        file_stats = ScanStats(files=1)
        matches: list[bytes] = []
        try:
            _search_file(path, needles, matches, file_stats)
        except (OSError, EOFError, gzip.BadGzipFile) as error:
            file_stats.errors.append(f"{path}: {type(error).__name__}: {error}")
        for index, raw in enumerate(matches):
            data = parse_line(raw)
            if data is None:
                file_stats.non_json += 1
                continue
            if len(records) >= cap:
                left_out += 1
                continue
            records.append(Record(str(path), index, record_time(data), data))
        stats.add(file_stats)
    records.sort(key=_time_order)
    return SearchResult(records, stats, left_out, started)


# Searches begun ahead of need (by begin), by what they search.
_begun: dict[tuple[tuple[str, ...], tuple[str, ...], int], _Forked[SearchResult]] = {}


def _key(paths: list[Path], text: str | list[str], cap: int) -> tuple[tuple[str, ...], tuple[str, ...], int]:
    return tuple(map(str, paths)), (text,) if isinstance(text, str) else tuple(text), cap


def _time_order(record: Record) -> tuple[datetime, str, int]:
    # Lines without a time go last, in file order.
    return (record.time or datetime.max.replace(tzinfo=UTC), record.file, record.line)


def _search_file(path: Path, needles: list[bytes], matches: list[bytes], stats: ScanStats) -> None:
    """Append the file's lines holding a needle to `matches`, in file order."""
    ranges = [] if is_gzip(path) else _ranges(path)
    if len(ranges) < 2:
        with _open(path) as stream:
            _search_stream(stream, needles, matches.append, stats)
        return
    # bytes.find holds the GIL, so threads would take turns: the first range is searched here,
    # every other one in a forked process, on another core.
    others = [_Forked(_search_range, path, start, end, needles) for start, end in ranges[1:]]
    try:
        found = [_search_range(path, *ranges[0], needles)]
    finally:
        for other in others:
            other.wait()  # whatever happened here, no child is left behind
    found += [other.result() for other in others]
    for lines, range_stats in found:
        matches.extend(lines)
        stats.add(range_stats)


def _ranges(path: Path) -> list[tuple[int, int]]:
    """Cut a plain file into SEARCH_PROCESSES ranges of whole lines (one when it is small)."""
    size = path.stat().st_size
    parts = min(SEARCH_PROCESSES, size // SPLIT_MIN_BYTES)
    if parts < 2:
        return [(0, size)]
    cuts = [0]
    with io.FileIO(path, "rb") as stream:
        for index in range(1, parts):
            stream.seek(size * index // parts)
            head = stream.read(MAX_LINE_BYTES)
            newline = head.find(b"\n")
            cut = stream.tell() - len(head) + newline + 1
            # No line end near there (or the range would be empty): the neighbours share the range.
            if newline >= 0 and cuts[-1] < cut < size:
                cuts.append(cut)
    cuts.append(size)
    return list(itertools.pairwise(cuts))


def _search_range(path: Path, start: int, end: int, needles: list[bytes]) -> tuple[list[bytes], ScanStats]:
    """Return the lines holding a needle in bytes [start, end) of a plain file, which are whole lines."""
    stats = ScanStats()  # the file is counted once, by the caller
    lines: list[bytes] = []
    try:
        with _open(path) as stream:
            stream.seek(start)
            _search_stream(stream, needles, lines.append, stats, end - start)
    except OSError as error:
        stats.errors.append(f"{path}: {type(error).__name__}: {error}")
    return lines, stats


class _Forked(Generic[T]):
    """A call run in a forked child process: `wait()` for it, then take its `result()`."""

    def __init__(self, function: Callable[..., T], *args: Any) -> None:
        reader, writer = os.pipe()
        self._pid = os.fork()
        if self._pid == 0:
            # The child: the call, its answer pickled into the pipe, and out, without running the
            # parent's exit handlers or flushing its buffers a second time.
            try:
                os.close(reader)
                # A parent's event loop hears of signals through this descriptor: a signal to the
                # child (Ctrl-C reaches the whole group) must not reach the loop a second time.
                signal.set_wakeup_fd(-1)
                try:
                    answer: tuple[bool, Any] = (True, function(*args))
                except Exception as error:
                    answer = (False, error)
                with open(writer, "wb") as pipe:
                    pickle.dump(answer, pipe)
            finally:
                os._exit(0)
        os.close(writer)
        self._reader = reader
        self._answer: tuple[bool, Any] | None = None

    def wait(self) -> None:
        """Wait for the child to end, keeping its answer."""
        if self._answer is not None:
            return
        with open(self._reader, "rb") as pipe:
            data = pipe.read()
        os.waitpid(self._pid, 0)
        if not data:
            self._answer = (False, OSError(f"the search process {self._pid} ended without an answer"))
            return
        # The pipe is this process's own, written by its own child only: nothing untrusted to unpickle.
        self._answer = pickle.loads(data)  # noqa: S301

    def result(self) -> T:
        """Return what the call returned, or raise what it raised."""
        self.wait()
        assert self._answer is not None
        done, value = self._answer
        if not done:
            raise value
        result: T = value
        return result


def _open(path: Path) -> io.RawIOBase | gzip.GzipFile:
    if is_gzip(path):
        return gzip.GzipFile(path, "rb")
    stream = io.FileIO(path, "rb")
    # A file not in the page cache yet is read front to back: ask for a larger read-ahead.
    if hasattr(os, "posix_fadvise"):
        with contextlib.suppress(OSError):
            os.posix_fadvise(stream.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
    return stream


def _chunks(
    stream: io.RawIOBase | gzip.GzipFile, limit: int | None = None
) -> Iterator[tuple[bytearray, int]]:
    """Yield (buffer, bytes in it) until the end (or `limit` bytes), reusing one buffer: memory stays flat.

    One thread reads and searches in turn. A reader thread handing buffers over was measured
    slower, idle machine or busy (benchmarks/triage_bench.py): every hand-over waits on the GIL.
    """
    buffer = bytearray(CHUNK_BYTES)
    view = memoryview(buffer)
    left = math.inf if limit is None else limit
    while left > 0 and (count := stream.readinto(view[: int(min(left, CHUNK_BYTES))]) or 0):
        left -= count
        yield buffer, count


def _search_stream(
    stream: io.RawIOBase | gzip.GzipFile,
    needles: list[bytes],
    found: Callable[[bytes], None],
    stats: ScanStats,
    limit: int | None = None,
) -> None:
    """Call `found` with every line holding a needle, reading fixed buffers: memory stays flat."""
    carry = b""
    for buffer, count in _chunks(stream, limit):
        stats.bytes_read += count
        first = buffer.find(b"\n", 0, count)
        if first < 0:
            carry += bytes(buffer[:count])
            if len(carry) > MAX_LINE_BYTES:
                carry = b""
                stats.non_json += 1
            continue
        # The line cut by the previous chunk's end, completed by this chunk's start.
        head = carry + bytes(buffer[:first])
        if any(needle in head for needle in needles):
            found(head)
        last = buffer.rfind(b"\n", 0, count)
        if len(needles) == 1:
            for start, end in _lines_with(buffer, needles[0], first, last, count):
                found(bytes(buffer[start:end]))
        else:
            # Several spellings of one id: each matching line once, in file order.
            spans = {span for needle in needles for span in _lines_with(buffer, needle, first, last, count)}
            for start, end in sorted(spans):
                found(bytes(buffer[start:end]))
        carry = bytes(buffer[last + 1 : count])
    if carry and any(needle in carry for needle in needles):
        found(carry)


def _lines_with(
    buffer: bytearray, needle: bytes, first: int, last: int, count: int
) -> Iterator[tuple[int, int]]:
    """Yield (start, end) of every whole line after `first` and up to `last` that holds the needle."""
    position = buffer.find(needle, first + 1, last)
    while position >= 0:
        start = buffer.rfind(b"\n", 0, position) + 1
        end = buffer.find(b"\n", position, count)
        yield start, end
        position = buffer.find(needle, end + 1, last)


# --- time windows ---------------------------------------------------------------------------


def window_records(
    paths: Iterable[Path], since: datetime, stats: ScanStats, until: datetime | None = None
) -> Iterator[Record]:
    """Yield the JSON records stamped at or after `since` (and before `until`), file by file.

    A file last written before the window is not opened. In a plain file the start of the window
    is found by binary search on the timestamps; a .gz file is read from its start.
    """
    for path in paths:
        file_stats = ScanStats(files=1)
        try:
            modified = datetime.fromtimestamp(path.stat().st_mtime, UTC)
            if modified < since - ORDER_SLACK:
                stats.files_skipped += 1
                continue
            with _lines(path, since - ORDER_SLACK) as stream:
                for number, raw_line in enumerate(stream):
                    file_stats.lines += 1
                    file_stats.bytes_read += len(raw_line)
                    data = parse_line(raw_line)
                    if data is None:
                        if raw_line.strip():
                            file_stats.non_json += 1
                        continue
                    when = record_time(data)
                    if when is None:
                        file_stats.untimed += 1
                        continue
                    if when < since or (until is not None and when >= until):
                        continue
                    yield Record(str(path), number, when, data)
        except (OSError, EOFError, gzip.BadGzipFile) as error:
            file_stats.errors.append(f"{path}: {type(error).__name__}: {error}")
        finally:
            stats.add(file_stats)


def _lines(path: Path, start_at: datetime) -> io.BufferedReader[io.FileIO] | gzip.GzipFile:
    """Open a file for reading lines, positioned shortly before the first line at `start_at`."""
    if is_gzip(path):
        return gzip.GzipFile(path, "rb")
    stream = io.BufferedReader(io.FileIO(path, "rb"), CHUNK_BYTES)
    try:
        start = _offset_before(stream, path.stat().st_size, start_at)
        stream.seek(start)
        if start > 0:
            stream.readline()  # the rest of a line cut by the search
    except BaseException:
        stream.close()
        raise
    return stream


def _offset_before(stream: io.BufferedReader[io.FileIO], size: int, target: datetime) -> int:
    """Return an offset at or before the first line stamped `target` or later, by bisection."""
    low, high = 0, size
    while high - low > _SEARCH_BYTES:
        middle = (low + high) // 2
        when = _first_time_after(stream, middle)
        # No readable time there: move left, which only means reading more.
        if when is not None and when < target:
            low = middle
        else:
            high = middle
    return low


def _first_time_after(stream: io.BufferedReader[io.FileIO], offset: int, lines: int = 32) -> datetime | None:
    stream.seek(offset)
    stream.readline()
    for _ in range(lines):
        raw = stream.readline()
        if not raw:
            return None
        data = parse_line(raw)
        if data is not None and (when := record_time(data)) is not None:
            return when
    return None


def newest(records: Iterable[Record], keep: int) -> tuple[list[Record], int]:
    """Return the `keep` newest records (newest first) and how many there were in all."""
    heap: list[tuple[datetime, int, Record]] = []
    total = 0
    for record in records:
        total += 1
        assert record.time is not None
        item = (record.time, total, record)
        if len(heap) < keep:
            heapq.heappush(heap, item)
        elif item[:2] > heap[0][:2]:
            heapq.heapreplace(heap, item)
    ordered = [record for _, _, record in sorted(heap, key=lambda entry: entry[:2], reverse=True)]
    return ordered, total
