"""`/backup`: the platform database (pg_dump) and every object of its buckets, into the backup store.

The database is dumped inside an exported snapshot, and the exact row count of every table is
taken inside that same snapshot, so a restore can later be checked against what the dump holds.
Objects are copied with their SHA-256 computed on the way. The manifest is written last; until
then the backup is invisible. `/backup prune` applies the runbook's retention through the gate.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

import asyncpg

from adapters.base import DependencyError
from adapters.object_transfer import ObjectInfo, ObjectTransfer
from adapters.pg_tools import PgTools
from adapters.postgres import PostgresAdapter
from commands.backup_store import (
    ABANDONED_AFTER,
    DATABASE_FILE,
    TYPE_LABELS,
    VERIFIED,
    BackupStore,
    BackupType,
    DatabasePart,
    FileEntry,
    Manifest,
    ManifestProblem,
    ObjectEntry,
    Staging,
    backup_time,
    check_files,
    hash_file,
    load_manifest,
    new_backup_id,
    read_verified,
)
from commands.base import Arguments, CommandResult, Model, UsageError, normalise_flags, parse_positive_int
from commands.destructive import Execution, Plan, Progress, Proposal, StepStatus
from commands.formatting import format_bytes

USAGE = "/backup [full|db|storage] | /backup prune [keep-days=30] [dry-run=yes]"
_TYPES: tuple[BackupType, ...] = ("full", "db", "storage")
# Progress updates at most this often: each one renews the operation lock and edits a Slack message.
PROGRESS_INTERVAL = 2.0

# Every ordinary table of the database (not the catalogs, not tables an extension owns), with the
# server's own quoting of the name, so the name can go back into SQL as it is.
TABLES_SQL = """
SELECT format('%I.%I', n.nspname, c.relname) AS name, c.oid::bigint AS oid,
       coalesce(nullif(greatest(c.reltuples, 0), 0), pg_stat_get_live_tuples(c.oid))::bigint AS estimate
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                  AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 1
"""
COPY_PROGRESS_SQL = """
SELECT p.relid::bigint AS relid, p.tuples_processed AS rows
FROM pg_stat_progress_copy p JOIN pg_stat_activity a ON a.pid = p.pid
WHERE a.application_name = $1
"""


# --- progress ----------------------------------------------------------------------------------------


class ReportAborted(Exception):
    """Reporting progress failed (the gate's operation lock was lost, say): the work must stop."""


class Meter:
    """Report a long job's steps with a percentage, throttled; optionally folded into one outer step.

    Details of a step in progress start with `NN% · ` so that renderers can draw a bar from them.
    """

    def __init__(
        self, progress: Progress | None, fold_into: str | None = None, interval: float = PROGRESS_INTERVAL
    ) -> None:
        self.progress = progress
        self.fold_into = fold_into
        self.interval = interval
        self._last: dict[str, float] = {}
        self._parts: dict[str, tuple[float | None, str]] = {}

    async def _emit(self, name: str, status: StepStatus, detail: str) -> None:
        if self.progress is None:
            return
        if self.fold_into is None:
            await self._send(name, status, detail)
            return
        # Folded: the inner steps become the detail of the one outer step.
        if status == "running":
            self._parts[name] = (_fraction_of(detail), detail)
        else:
            self._parts[name] = (1.0 if status == "done" else None, f"{status} {detail}".strip())
        fractions = [fraction for fraction, _ in self._parts.values() if fraction is not None]
        head = f"{round(100 * sum(fractions) / len(fractions))}% · " if fractions else ""
        text = "; ".join(f"{part}: {_strip_percent(text)}" for part, (_, text) in self._parts.items())
        await self._send(self.fold_into, "running", head + text)

    async def _send(self, name: str, status: StepStatus, detail: str) -> None:
        assert self.progress is not None
        try:
            await self.progress.step(name, status, detail)
        except Exception as error:
            raise ReportAborted(describe_error(error)) from error

    async def start(self, name: str, detail: str = "") -> None:
        """Report a step started."""
        self._last[name] = time.monotonic()
        await self._emit(name, "running", detail)

    async def advance(self, name: str, done: float, total: float, unit: str = "", note: str = "") -> None:
        """Report progress of a running step, at most once per interval."""
        now = time.monotonic()
        if now - self._last.get(name, 0.0) < self.interval:
            return
        self._last[name] = now
        await self._emit(name, "running", progress_detail(done, total, unit, note))

    async def finish(self, name: str, detail: str = "") -> None:
        """Report a step done."""
        await self._emit(name, "done", detail)

    async def fail(self, name: str, detail: str) -> None:
        """Report a step failed."""
        await self._emit(name, "failed", detail)

    async def skip(self, name: str, detail: str) -> None:
        """Report a step skipped."""
        await self._emit(name, "skipped", detail)


def progress_detail(done: float, total: float, unit: str = "", note: str = "") -> str:
    """Write `42% · 420/1000 objects · note`."""
    fraction = min(1.0, done / total) if total > 0 else 0.0
    amount = f"{_amount(done, unit)}/{_amount(total, unit)}" + (
        f" {unit}" if unit and unit != "bytes" else ""
    )
    parts = [f"{int(fraction * 100)}%", amount]
    if note:
        parts.append(note)
    return " · ".join(parts)


def _amount(value: float, unit: str) -> str:
    if unit == "bytes":
        return format_bytes(value)
    return f"{int(value):,}"


def _fraction_of(detail: str) -> float | None:
    head = detail.split("%", 1)[0]
    return int(head) / 100 if head.isdigit() and "%" in detail else None


def _strip_percent(detail: str) -> str:
    return detail.split(" · ", 1)[1] if _fraction_of(detail) is not None and " · " in detail else detail


# --- arguments ---------------------------------------------------------------------------------------


class BackupArgs(Model):
    """`/backup [full|db|storage]` (or `type=...`)."""

    type: BackupType = "full"


class PruneArgs(Model):
    """`/backup prune [keep-days=N] [dry-run=yes]` (or `--keep-days N`, `--dry-run`)."""

    keep_days: int
    dry_run: bool = False


def parse_type(text: str, usage: str = USAGE) -> BackupType:
    """Read full, db or storage."""
    for kind in _TYPES:
        if text == kind:
            return kind
    raise UsageError(f"`{text[:20]}` is not a backup type: use full, db or storage", usage)


def parse(tokens: list[str], default_keep_days: int = 30) -> BackupArgs | PruneArgs:
    """Read `/backup [T]` or `/backup prune [keep-days=N] [dry-run=yes]`, options anywhere.

    The `--type T`, `--keep-days N` and `--dry-run` spellings are read as the options they name.
    """
    args = Arguments.parse(normalise_flags(tokens, {"type", "keep-days"}, {"dry-run"}, USAGE), USAGE)
    if args.positionals[:1] == ["prune"]:
        args.positionals.pop(0)
        keep = args.option("keep_days", lambda text: parse_positive_int(text, 3650), default_keep_days)
        dry_run = args.option("dry_run", lambda text: text in ("yes", "true", "1"), False)
        args.done()
        return PruneArgs(keep_days=keep, dry_run=dry_run)
    given = "type" in args.options
    kind: BackupType = args.option("type", parse_type, "full")
    bare = args.optional_positional()
    if bare is not None:
        # `/backup db` reads as well as `/backup --type db`.
        if given:
            raise UsageError("give the type once", USAGE)
        kind = parse_type(bare)
    args.done()
    return BackupArgs(type=kind)


# --- taking a backup ---------------------------------------------------------------------------------


@dataclass
class BackupSources:
    """What a backup reads from and writes to."""

    platform_db: PostgresAdapter
    pg: PgTools
    transfer: ObjectTransfer
    buckets: list[str]
    store: BackupStore
    concurrency: int = 8
    dump_timeout: float = 3600.0


@dataclass
class _ObjectsPart:
    entries: list[ObjectEntry] = field(default_factory=list)
    files: dict[str, FileEntry] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0


class BackupFailed(Exception):
    """A backup could not be completed; nothing of it was left in the store."""


async def take_backup(
    sources: BackupSources,
    kind: BackupType,
    made_by: str,
    reason: str = "",
    meter: Meter | None = None,
) -> Manifest:
    """Take a backup of the database and/or the buckets; return its manifest once it is visible."""
    meter = meter or Meter(None)
    created = datetime.now(UTC)
    backup_id = await _free_id(sources.store, created)
    staging = await sources.store.begin(backup_id)
    try:
        database: tuple[DatabasePart, FileEntry] | None = None
        objects = _ObjectsPart()
        # The two parts are independent: run them side by side.
        async with asyncio.TaskGroup() as group:
            dump_task = (
                group.create_task(_dump_database(sources, staging, meter)) if kind != "storage" else None
            )
            copy_task = group.create_task(_copy_objects(sources, staging, meter)) if kind != "db" else None
        if dump_task is not None:
            database = dump_task.result()
        if copy_task is not None:
            objects = copy_task.result()
        files = ([database[1]] if database else []) + sorted(
            objects.files.values(), key=lambda item: item.name
        )
        manifest = Manifest(
            id=backup_id,
            type=kind,
            created_at=created,
            completed_at=datetime.now(UTC),
            made_by=made_by,
            reason=reason,
            database=database[0] if database else None,
            buckets=list(sources.buckets) if kind != "db" else [],
            objects=objects.entries,
            objects_seconds=objects.seconds,
            files=files,
            warnings=objects.warnings,
        ).sealed()
        await meter.start("write manifest")
        await staging.commit(manifest)
        await meter.finish("write manifest", f"{backup_id}, {format_bytes(manifest.total_bytes)}")
    except BaseException as error:
        # Whatever happened, no half backup stays behind (and none was ever visible).
        with contextlib.suppress(Exception):
            await asyncio.shield(staging.abort())
        if isinstance(error, ExceptionGroup):
            aborted, _ = error.split(ReportAborted)
            if aborted is not None:
                raise first_leaf(aborted) from error
            raise BackupFailed(describe_error(first_leaf(error))) from error
        if isinstance(error, Exception) and not isinstance(error, BackupFailed | ReportAborted):
            raise BackupFailed(describe_error(error)) from error
        raise
    return manifest


def first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """Return the first error inside an exception group (groups nest)."""
    for error in group.exceptions:
        return first_leaf(error) if isinstance(error, BaseExceptionGroup) else error
    return group


def describe_error(error: BaseException) -> str:
    if isinstance(error, DependencyError):
        return str(error)
    return f"{type(error).__name__}: {error}"[:300]


async def _free_id(store: BackupStore, created: datetime) -> str:
    # Ids are seconds: a second backup in the same second takes the next free second.
    for offset in range(10):
        candidate = new_backup_id(created + timedelta(seconds=offset))
        if not await store.exists(candidate):
            return candidate
    raise BackupFailed("no free backup id in the next 10 seconds; try again")


async def _dump_database(
    sources: BackupSources, staging: Staging, meter: Meter
) -> tuple[DatabasePart, FileEntry]:
    step = "dump database"
    await meter.start(step)
    started = time.perf_counter()
    path = staging.temp_path()
    await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
    application = f"chatops-backup-{secrets.token_hex(4)}"
    pg_dump_version = await sources.pg.program_version("pg_dump")
    # The dump and the row counts see the same snapshot, exported from this transaction.
    async with (
        sources.platform_db.connection() as conn,
        conn.transaction(isolation="repeatable_read", readonly=True),
    ):
        snapshot = str(await conn.fetchval("SELECT pg_export_snapshot()"))
        server_version = str(await conn.fetchval("SHOW server_version"))
        tables = await conn.fetch(TABLES_SQL)
        # The planner's estimate of the rows until the exact counts are in.
        total = [float(sum(int(row["estimate"]) for row in tables))]
        dump = asyncio.create_task(
            sources.pg.dump(
                path, timeout=sources.dump_timeout, snapshot=snapshot, application_name=application
            )
        )
        watcher = asyncio.create_task(watch_copy(sources.platform_db, application, total, meter, step))
        try:
            counts: dict[str, int] = {}
            for row in tables:
                counts[str(row["name"])] = int(
                    await conn.fetchval(f"SELECT count(*) FROM {row['name']}", timeout=sources.dump_timeout)
                )
            total[0] = float(sum(counts.values()))
            await dump
        finally:
            watcher.cancel()
            dump.cancel()
            await asyncio.gather(watcher, dump, return_exceptions=True)
    await meter.advance(step, 1, 1, note="checksum")
    digest, size = await asyncio.gather(hash_file(path), asyncio.to_thread(lambda: path.stat().st_size))
    await staging.put(path, DATABASE_FILE)
    seconds = round(time.perf_counter() - started, 3)
    rows = sum(counts.values())
    await meter.finish(step, f"{len(counts)} tables, {rows:,} rows, {format_bytes(size)} in {seconds:.1f} s")
    part = DatabasePart(
        name=sources.pg.database,
        server_version=server_version,
        pg_dump_version=pg_dump_version,
        size=size,
        sha256=digest,
        tables=counts,
        seconds=seconds,
    )
    return part, FileEntry(name=DATABASE_FILE, size=size, sha256=digest)


async def watch_copy(
    db: PostgresAdapter, application: str, total: list[float], meter: Meter, step: str
) -> None:
    """Report rows copied by a pg_dump or pg_restore session, from pg_stat_progress_copy.

    `total` is a one-item list so that the caller can refine it while this runs.
    """
    seen: dict[int, int] = {}
    while True:
        await asyncio.sleep(min(1.0, meter.interval))
        try:
            async with db.connection() as conn:
                rows = await conn.fetch(COPY_PROGRESS_SQL, application, timeout=db.timeout)
        except (asyncpg.PostgresError, OSError, TimeoutError, DependencyError):
            rows = []  # progress is best effort; the work itself reports its own failures
        for row in rows:
            seen[int(row["relid"])] = max(seen.get(int(row["relid"]), 0), int(row["rows"]))
        done, whole = float(sum(seen.values())), max(total[0], 1.0)
        # Past the last COPY the program is still busy (indexes, constraints, fsync): say so.
        note = "" if rows or done < whole else "finishing"
        await meter.advance(step, min(done, whole * 0.99), whole, "rows", note)


async def _copy_objects(sources: BackupSources, staging: Staging, meter: Meter) -> _ObjectsPart:
    step = "copy objects"
    await meter.start(step)
    started = time.perf_counter()
    listing: list[tuple[str, ObjectInfo]] = []
    part = _ObjectsPart()
    for bucket in sources.buckets:
        try:
            listing += [(bucket, info) for info in await sources.transfer.list_objects(bucket)]
        except DependencyError as error:
            if error.reason != "not found":
                raise
            # A lost bucket is what a restore may be about: back it up as empty, and say so.
            part.warnings.append(f"bucket {bucket} does not exist")
    total_bytes = sum(info.size for _, info in listing)
    done = {"objects": 0, "bytes": 0}
    claimed: set[str] = set()
    queue: asyncio.Queue[tuple[str, ObjectInfo]] = asyncio.Queue()
    for item in listing:
        queue.put_nowait(item)
    results: list[ObjectEntry] = []

    async def worker() -> None:
        while True:
            try:
                bucket, info = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            path = staging.temp_path()
            try:
                fetched = await sources.transfer.download(bucket, info.key, path)
            except DependencyError as error:
                await asyncio.to_thread(path.unlink, True)
                if error.reason != "not found":
                    raise
                # Deleted between the listing and the copy: the backup says so rather than failing.
                part.warnings.append(f"s3://{bucket}/{info.key} was deleted while the backup ran")
                continue
            entry = ObjectEntry(
                bucket=bucket,
                key=info.key,
                size=fetched.size,
                sha256=fetched.sha256,
                etag=fetched.etag,
                content_type=fetched.content_type,
                metadata=fetched.metadata,
            )
            name = entry.file
            if name in claimed:
                await asyncio.to_thread(path.unlink, True)  # same body as another object
            else:
                claimed.add(name)
                await staging.put(path, name)
                part.files[name] = FileEntry(name=name, size=fetched.size, sha256=fetched.sha256)
            results.append(entry)
            done["objects"] += 1
            done["bytes"] += fetched.size
            await meter.advance(step, done["objects"], len(listing), "objects", format_bytes(done["bytes"]))

    async with asyncio.TaskGroup() as group:
        for _ in range(max(1, min(sources.concurrency, len(listing)))):
            group.create_task(worker())
    part.entries = sorted(results, key=lambda item: (item.bucket, item.key))
    part.seconds = round(time.perf_counter() - started, 3)
    await meter.finish(
        step,
        f"{len(part.entries):,} objects, {format_bytes(total_bytes)} from {len(sources.buckets)} bucket(s)"
        f" in {part.seconds:.1f} s",
    )
    return part


# --- the /backup result ------------------------------------------------------------------------------


class BackupResult(CommandResult):
    """A backup that was taken."""

    id: str
    type: BackupType
    type_label: str
    location: str
    made_by: str
    created_at: datetime
    database: str | None
    tables: int
    rows: int
    database_bytes: int
    objects: int
    objects_bytes: int
    total_bytes: int
    database_seconds: float
    objects_seconds: float
    seconds: float
    warnings: list[str]


def describe(manifest: Manifest, location: str) -> BackupResult:
    """Summarise a manifest as the command's result."""
    database = manifest.database
    return BackupResult(
        id=manifest.id,
        type=manifest.type,
        type_label=TYPE_LABELS[manifest.type],
        location=location,
        made_by=manifest.made_by,
        created_at=manifest.created_at,
        database=database.name if database else None,
        tables=len(database.tables) if database else 0,
        rows=sum(database.tables.values()) if database else 0,
        database_bytes=database.size if database else 0,
        objects=len(manifest.objects),
        objects_bytes=manifest.objects_bytes,
        total_bytes=manifest.total_bytes,
        database_seconds=database.seconds if database else 0.0,
        objects_seconds=manifest.objects_seconds,
        seconds=round((manifest.completed_at - manifest.created_at).total_seconds(), 3),
        warnings=manifest.warnings,
    )


async def run_backup(
    sources: BackupSources, args: BackupArgs, made_by: str, meter: Meter | None
) -> BackupResult:
    """Take a backup for `/backup`; a failure becomes a usage-style message naming the cause."""
    try:
        manifest = await take_backup(sources, args.type, made_by, "manual", meter)
    except BackupFailed as error:
        raise UsageError(f"the backup failed and nothing was kept: {error}") from None
    return describe(manifest, sources.store.location)


# --- prune -------------------------------------------------------------------------------------------


class StoredBackup(Model):
    """A backup in the store, as `/restore list` and prune see it."""

    id: str
    created_at: datetime
    type: BackupType | None
    type_label: str
    size: int
    manifest_ok: bool
    problem: str = ""
    verified_at: datetime | None = None
    reason: str = ""
    made_by: str = ""

    def line(self) -> str:
        """Write the runbook's line: `2025-11-20_02-00-00 | database+storage | 1.2GB | manifest OK`."""
        verdict = "manifest OK" if self.manifest_ok else "manifest BAD"
        text = f"{self.id} | {self.type_label} | {format_bytes(self.size, compact=True)} | {verdict}"
        return text + (f" | {self.reason}" if self.reason and self.reason != "manual" else "")


async def inspect_backup(store: BackupStore, backup_id: str) -> tuple[StoredBackup, Manifest | None]:
    """Read a backup's manifest and check it against the files present (sizes, not hashes)."""
    created = backup_time(backup_id)
    try:
        manifest = load_manifest(await store.read(backup_id, "manifest.json"), backup_id)
    except (ManifestProblem, UsageError) as error:
        text = error.message if isinstance(error, UsageError) else str(error)
        return StoredBackup(
            id=backup_id,
            created_at=created,
            type=None,
            type_label="?",
            size=0,
            manifest_ok=False,
            problem=text,
        ), None
    problems = check_files(manifest, await store.sizes(backup_id))
    verified = read_verified(await store.read(backup_id, VERIFIED), manifest)
    shown = problems[:3] + ([f"and {len(problems) - 3} more"] if len(problems) > 3 else [])
    entry = StoredBackup(
        id=backup_id,
        created_at=manifest.created_at,
        type=manifest.type,
        type_label=TYPE_LABELS[manifest.type],
        size=manifest.total_bytes,
        manifest_ok=not problems,
        problem="; ".join(shown),
        verified_at=verified,
        reason=manifest.reason,
        made_by=manifest.made_by,
    )
    return entry, manifest


async def list_backups(store: BackupStore, concurrency: int = 8) -> list[StoredBackup]:
    """Inspect every complete backup, newest first."""
    ids = await store.ids()
    gate = asyncio.Semaphore(concurrency)

    async def one(backup_id: str) -> StoredBackup:
        async with gate:
            return (await inspect_backup(store, backup_id))[0]

    found = await asyncio.gather(*(one(backup_id) for backup_id in ids))
    return sorted(found, key=lambda item: item.id, reverse=True)


class PruneResult(CommandResult):
    """What prune would delete (dry run), or that there is nothing to delete."""

    keep_days: int
    location: str
    dry_run: bool
    delete: list[StoredBackup]
    kept: list[str]
    leftovers: list[str]
    count: int = 0
    size: int = 0


@dataclass
class PruneChoice:
    """Which backups go and which stay, and why."""

    delete: list[StoredBackup]
    kept: list[str]
    leftovers: list[str]
    count: int = 0
    size: int = 0


async def choose_prune(store: BackupStore, keep_days: int, now: datetime) -> PruneChoice:
    """Pick backups older than `keep_days`, never the newest verified one nor the newest of all."""
    backups = await list_backups(store)
    cutoff = now - timedelta(days=keep_days)
    good = [item for item in backups if item.manifest_ok]
    verified = [item for item in good if item.verified_at is not None]
    protected: dict[str, str] = {}
    if verified:
        protected[verified[0].id] = "the newest verified backup"
    if good:
        protected.setdefault(good[0].id, "the newest backup")
    delete = [item for item in backups if item.created_at < cutoff and item.id not in protected]
    kept = [f"{backup_id}: {why}" for backup_id, why in protected.items()]
    if not verified:
        kept.append("no backup has been verified yet: run /restore verify <id>")
    leftovers = sorted(item.name for item in await store.leftovers() if item.age > ABANDONED_AFTER)
    size = sum(item.size for item in backups)
    return PruneChoice(delete=delete, kept=kept, leftovers=leftovers, count=len(backups), size=size)


async def plan_prune(store: BackupStore, args: PruneArgs, now: datetime) -> PruneResult | Proposal:
    """Show what prune deletes: as a dry run, or as a plan for the gate."""
    choice = await choose_prune(store, args.keep_days, now)
    if args.dry_run or not (choice.delete or choice.leftovers):
        return PruneResult(
            keep_days=args.keep_days,
            location=store.location,
            dry_run=args.dry_run,
            delete=choice.delete,
            kept=choice.kept,
            leftovers=choice.leftovers,
        )
    freed = sum(item.size for item in choice.delete)
    plan = Plan(
        title=f"Delete {len(choice.delete)} backup(s) older than {args.keep_days} days",
        current=[f"{choice.count} backup(s), {format_bytes(choice.size)}, in {store.location}"],
        target=[f"delete {item.line()}" for item in choice.delete]
        + [f"remove unfinished backup {name}" for name in choice.leftovers],
        kept=choice.kept,
        way_back=["none: deleted backups cannot be brought back"],
        warnings=[f"frees about {format_bytes(freed)}"],
        estimated_seconds=5.0 + len(choice.delete),
        state={
            "store": store.location,
            "delete": [item.id for item in choice.delete],
            "leftovers": choice.leftovers,
        },
        details={"delete": [item.id for item in choice.delete], "leftovers": choice.leftovers},
    )
    arguments = ["prune", f"keep-days={args.keep_days}"]
    return Proposal(command="backup", arguments=arguments, plan=plan)


async def execute_prune(store: BackupStore, plan: Plan, progress: Progress) -> Execution:
    """Delete the planned backups and unfinished leftovers (the gate re-planned them just before)."""
    to_delete = [str(item) for item in plan.details.get("delete", [])]
    leftovers = [str(item) for item in plan.details.get("leftovers", [])]
    deleted: list[str] = []
    failed: list[str] = []
    await progress.step("delete backups", "running", f"0/{len(to_delete)}")
    for index, backup_id in enumerate(to_delete, 1):
        try:
            await store.delete(backup_id)
            deleted.append(backup_id)
        except Exception as error:  # one failure must not hide the others' outcome
            failed.append(f"{backup_id}: {describe_error(error)}")
        await progress.step("delete backups", "running", progress_detail(index, len(to_delete), "backups"))
    status: Literal["done", "failed"] = "failed" if failed else "done"
    await progress.step(
        "delete backups", status, f"{len(deleted)} deleted" + (f", {len(failed)} failed" if failed else "")
    )
    if leftovers:
        await progress.step("remove unfinished backups", "running")
        for name in leftovers:
            with contextlib.suppress(Exception):
                await store.remove_leftover(name)
        await progress.step("remove unfinished backups", "done", f"{len(leftovers)} removed")
    remaining = await store.ids()
    return Execution(
        command="backup",
        succeeded=not failed,
        summary=f"deleted {len(deleted)} backup(s)"
        + (f"; {len(failed)} could not be deleted" if failed else ""),
        state=[f"deleted: {backup_id}" for backup_id in deleted]
        + [f"not deleted: {item}" for item in failed]
        + [f"{len(remaining)} backup(s) remain in {store.location}"],
        way_back="",
    )
