"""`/restore`: list backups, verify one by a test restore, or restore one with the runbook's DR steps.

The restore itself runs these steps, each reported as it happens:

1. check backup      every file against its SHA-256 (nothing is touched before this passes)
2. stop backend      through the container engine, so that nothing writes while we work
3. emergency backup  of what is about to be overwritten: the way back
4. restore database  `pg_restore --clean --if-exists --single-transaction`: all or nothing
5. restore objects   the buckets made equal to the backup (what goes is in the emergency backup)
6. verify            row counts and objects against the backup's manifest
7. start backend
8. health check

The backend is stopped before the emergency backup (the runbook takes it just before), so that no
write can fall between the emergency backup and the restore. A failure stops the procedure; when
nothing was changed yet the backend is started again. The result says what state each part is in
and gives the one command back to the state before: a restore of the emergency backup.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, Field

from adapters.base import DependencyError, Pingable
from adapters.engine import ServiceAction
from adapters.object_transfer import ObjectInfo
from commands.backup import (
    TABLES_SQL,
    BackupFailed,
    BackupSources,
    Meter,
    ReportAborted,
    StoredBackup,
    describe_error,
    first_leaf,
    inspect_backup,
    list_backups,
    normalise_flags,
    parse_type,
    take_backup,
    watch_copy,
)
from commands.backup_store import (
    DATABASE_FILE,
    TYPE_LABELS,
    VERIFIED,
    BackupType,
    Manifest,
    ObjectEntry,
    parse_backup_id,
    verified_record,
)
from commands.base import Arguments, CommandResult, UsageError
from commands.destructive import Execution, Plan, Progress, Proposal
from commands.formatting import format_bytes

USAGE = "/restore list | /restore verify <backup id> | /restore <backup id> [--type full|db|storage]"
TYPED_WORD = "RESTORE"
T = TypeVar("T")

Part = Literal["db", "storage"]


# --- arguments ---------------------------------------------------------------------------------------


class ListArgs(BaseModel):
    """`/restore list`."""


class VerifyArgs(BaseModel):
    """`/restore verify <id>`."""

    id: str


class RestoreArgs(BaseModel):
    """`/restore <id> [--type T]`: T defaults to everything the backup holds."""

    id: str
    type: BackupType | None = None


def parse(tokens: list[str]) -> ListArgs | VerifyArgs | RestoreArgs:
    """Read the three forms of `/restore`."""
    args = Arguments.parse(normalise_flags(tokens, {"type"}, set()), USAGE)
    first = args.next_positional("`list`, `verify <backup id>` or a backup id")
    if first == "list":
        args.done()
        return ListArgs()
    if first == "verify":
        backup_id = parse_backup_id(args.next_positional("the backup id to verify"), USAGE)
        args.done()
        return VerifyArgs(id=backup_id)
    backup_id = parse_backup_id(first, USAGE)
    kind: BackupType | None = args.option("type", lambda text: parse_type(text, USAGE), None)
    args.done()
    return RestoreArgs(id=backup_id, type=kind)


# --- what a restore works with -----------------------------------------------------------------------


@dataclass
class RestoreDeps:
    """The platform's parts a restore touches, and its limits."""

    sources: BackupSources
    backend: ServiceAction
    health: Pingable
    backend_label: str
    health_timeout: float = 60.0
    stop_seconds: int = 30

    @property
    def restore_timeout(self) -> float:
        """Return the time limit of one pg_restore."""
        return self.sources.dump_timeout


# --- /restore list -----------------------------------------------------------------------------------


class BackupList(CommandResult):
    """Every complete backup in the store, newest first."""

    location: str
    backups: list[StoredBackup]

    @property
    def ok(self) -> bool:
        """Return whether every manifest checks out."""
        return all(item.manifest_ok for item in self.backups)


async def run_list(deps: RestoreDeps) -> BackupList:
    """List backups with the runbook's columns."""
    store = deps.sources.store
    return BackupList(location=store.location, backups=await list_backups(store))


# --- /restore verify ---------------------------------------------------------------------------------


class TableCheck(BaseModel):
    """One table's row count at backup time and after a restore."""

    name: str
    expected: int | None
    found: int | None

    @property
    def ok(self) -> bool:
        """Return whether the counts agree."""
        return self.expected == self.found


class VerifyReport(CommandResult):
    """The outcome of `/restore verify`: checksums, then a test restore and row counts."""

    id: str
    type_label: str
    location: str
    files_checked: int
    bytes_checked: int
    bad_files: list[str]
    checksum_seconds: float
    test_restore: bool
    scratch_database: str | None = None
    restore_seconds: float = 0.0
    tables: list[TableCheck] = Field(default_factory=list)
    problems: list[str] = Field(default_factory=list)
    verified_at: datetime

    @property
    def ok(self) -> bool:
        """Return whether everything checked out."""
        return not self.problems


async def load_checked(deps: RestoreDeps, backup_id: str) -> tuple[StoredBackup, Manifest]:
    """Find a backup and check its manifest and files' sizes; refuse anything else as bad input."""
    store = deps.sources.store
    if backup_id not in await store.ids():
        if await store.exists(backup_id):
            raise UsageError(f"backup {backup_id} is incomplete (it has no manifest); refusing it", USAGE)
        raise UsageError(
            f"there is no backup {backup_id} in {store.location}; `/restore list` shows them", USAGE
        )
    entry, manifest = await inspect_backup(store, backup_id)
    if manifest is None or not entry.manifest_ok:
        raise UsageError(f"backup {backup_id} does not check out: {entry.problem}; refusing it", USAGE)
    return entry, manifest


async def check_checksums(deps: RestoreDeps, manifest: Manifest, meter: Meter, step: str) -> list[str]:
    """Hash every file of a backup and compare with the manifest; return the files that differ."""
    store = deps.sources.store
    total = sum(item.size for item in manifest.files)
    done = [0]
    bad: list[str] = []
    queue = list(manifest.files)

    async def worker() -> None:
        while queue:
            item = queue.pop()
            try:
                digest = await store.sha256(manifest.id, item.name)
            except (OSError, DependencyError) as error:
                bad.append(f"{item.name}: unreadable ({describe_error(error)})")
                continue
            if digest != item.sha256:
                bad.append(f"{item.name}: SHA-256 differs from the manifest")
            done[0] += item.size
            await meter.advance(step, done[0], total, "bytes")

    async with asyncio.TaskGroup() as group:
        for _ in range(max(1, min(deps.sources.concurrency, len(queue)))):
            group.create_task(worker())
    return sorted(bad)


async def count_rows(deps: RestoreDeps, database: str | None) -> dict[str, int]:
    """Count the rows of every table of a database of the platform's server (exact counts)."""
    counts: dict[str, int] = {}
    async with deps.sources.pg.connect(database) as conn:
        for row in await conn.fetch(TABLES_SQL):
            name = str(row["name"])  # quoted by the server itself
            counts[name] = int(
                await conn.fetchval(f"SELECT count(*) FROM {name}", timeout=deps.sources.dump_timeout)
            )
    return counts


def compare_counts(expected: dict[str, int], found: dict[str, int]) -> list[TableCheck]:
    """Pair expected and found counts for every table either side knows."""
    names = sorted(set(expected) | set(found))
    return [TableCheck(name=name, expected=expected.get(name), found=found.get(name)) for name in names]


async def run_watched(work: Coroutine[Any, Any, T], watcher: Coroutine[Any, Any, None]) -> T:
    """Run work with a progress watcher beside it; if the watcher fails (lock lost), stop the work."""
    work_task = asyncio.ensure_future(work)
    watch_task = asyncio.ensure_future(watcher)
    try:
        await asyncio.wait({work_task, watch_task}, return_when=asyncio.FIRST_COMPLETED)
        if watch_task.done() and not work_task.done():
            watch_task.result()
        return await work_task
    finally:
        work_task.cancel()
        watch_task.cancel()
        await asyncio.gather(work_task, watch_task, return_exceptions=True)


async def _restore_dump(
    deps: RestoreDeps, backup_id: str, meter: Meter, step: str, rows: int, database: str | None, clean: bool
) -> None:
    """pg_restore a backup's dump into a database of the platform's server, with progress."""
    application = f"chatops-restore-{secrets.token_hex(4)}"
    async with deps.sources.store.local(backup_id, DATABASE_FILE) as path:
        work = deps.sources.pg.restore(
            path,
            timeout=deps.restore_timeout,
            database=database,
            clean=clean,
            keep_owners=clean,
            application_name=application,
        )
        watcher = watch_copy(deps.sources.platform_db, application, [float(rows)], meter, step)
        await run_watched(work, watcher)


async def verify_backup(deps: RestoreDeps, backup_id: str, meter: Meter | None = None) -> VerifyReport:
    """Check every checksum, then restore the dump into a scratch database and compare row counts."""
    meter = meter or Meter(None)
    entry, manifest = await load_checked(deps, backup_id)
    store = deps.sources.store
    started = time.perf_counter()
    await meter.start("checksums")
    bad = await check_checksums(deps, manifest, meter, "checksums")
    checksum_seconds = round(time.perf_counter() - started, 3)
    await (meter.fail if bad else meter.finish)("checksums", f"{len(manifest.files)} files")
    problems = [f"checksum: {item}" for item in bad]
    report = VerifyReport(
        id=backup_id,
        type_label=entry.type_label,
        location=store.location,
        files_checked=len(manifest.files),
        bytes_checked=manifest.total_bytes,
        bad_files=bad,
        checksum_seconds=checksum_seconds,
        test_restore=False,
        verified_at=datetime.now(UTC),
    )
    if not bad and manifest.has_database and manifest.database is not None:
        scratch = f"chatops_verify_{backup_id.replace('-', '').replace('_', '')}_{secrets.token_hex(3)}"
        report.scratch_database = scratch
        report.test_restore = True
        await meter.start("test restore")
        started = time.perf_counter()
        try:
            await deps.sources.pg.create_database(scratch)
            expected = manifest.database.tables
            await _restore_dump(
                deps, backup_id, meter, "test restore", sum(expected.values()), scratch, False
            )
            report.restore_seconds = round(time.perf_counter() - started, 3)
            await meter.finish("test restore", f"{report.restore_seconds:.1f} s")
            await meter.start("row counts")
            report.tables = compare_counts(expected, await count_rows(deps, scratch))
            await meter.finish("row counts", f"{len(report.tables)} tables")
        except (DependencyError, OSError) as error:
            problems.append(f"test restore: {describe_error(error)}")
            await meter.fail("test restore", describe_error(error))
        finally:
            # The scratch database never outlives the check, whatever happened.
            await asyncio.shield(_drop_quietly(deps, scratch))
        problems += [
            f"table {item.name}: {item.expected} rows in the backup, {item.found} after the test restore"
            for item in report.tables
            if not item.ok
        ]
    report.problems = problems
    if not problems:
        detail = f"checksums and {'row counts' if report.test_restore else 'files'} match"
        await store.write(backup_id, VERIFIED, verified_record(manifest, report.verified_at, detail))
    return report


async def _drop_quietly(deps: RestoreDeps, name: str) -> None:
    try:
        await deps.sources.pg.drop_database(name)
    except Exception:  # a leftover scratch database is harmless; the verdict matters more
        return


# --- /restore <id>: the plan -------------------------------------------------------------------------


def _parts(manifest: Manifest, requested: BackupType | None) -> list[Part]:
    wanted = requested or manifest.type
    have = {"db": manifest.has_database, "storage": manifest.has_storage}
    needed: list[Part] = {"full": ["db", "storage"], "db": ["db"], "storage": ["storage"]}[wanted]  # type: ignore[assignment]
    missing = [part for part in needed if not have[part]]
    if missing:
        holds = TYPE_LABELS[manifest.type]
        raise UsageError(
            f"backup {manifest.id} holds {holds} only; it cannot restore {TYPE_LABELS[wanted]}"
            f" (ask for --type {manifest.type}, or pick another backup)",
            USAGE,
        )
    return needed


def _parts_type(parts: list[Part]) -> BackupType:
    if parts == ["db"]:
        return "db"
    if parts == ["storage"]:
        return "storage"
    return "full"


def _major(version: str) -> int:
    return int(version.split(".")[0])


def _age(created: datetime, now: datetime) -> str:
    seconds = max(0, int((now - created).total_seconds()))
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 86400 * 2:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


async def _current_state(deps: RestoreDeps, parts: list[Part]) -> tuple[list[str], list[str]]:
    """Describe what is there now (best effort: a dependency that is down becomes a warning)."""
    lines: list[str] = []
    warnings: list[str] = []
    sources = deps.sources
    if "db" in parts:
        try:
            async with sources.platform_db.connection() as conn:
                size = int(await conn.fetchval("SELECT pg_database_size(current_database())"))
                tables = await conn.fetch(TABLES_SQL)
            estimate = sum(int(row["estimate"]) for row in tables)
            lines.append(
                f"database {sources.pg.database}: {len(tables)} tables, about {estimate:,} rows,"
                f" {format_bytes(size)}"
            )
        except Exception as error:  # shown in the plan; the executor's own steps will fail properly
            warnings.append(f"database {sources.pg.database} did not answer: {describe_error(error)}")
    if "storage" in parts:
        for bucket in sources.buckets:
            try:
                listing = await sources.transfer.list_objects(bucket)
                total = sum(item.size for item in listing)
                lines.append(f"bucket {bucket}: {len(listing):,} objects, {format_bytes(total)}")
            except Exception as error:
                warnings.append(f"bucket {bucket} did not answer: {describe_error(error)}")
    try:
        states = await deps.backend.states()
        lines.append(
            f"backend {deps.backend_label}: " + ", ".join(f"{name} {state}" for name, state in states)
        )
    except Exception as error:
        problem = describe_error(error)
        warnings.append(f"the container engine did not answer for {deps.backend_label}: {problem}")
    return lines, warnings


def estimate_seconds(manifest: Manifest, parts: list[Part]) -> float:
    """Guess the duration from the backup's own timings (dump and copy times) and its size."""
    seconds = 20.0  # stopping and starting the backend, the health check
    seconds += manifest.total_bytes / 200e6  # reading every file for its checksum
    if "db" in parts and manifest.database is not None:
        # An emergency dump of about the same size, then a restore (indexes make it slower).
        seconds += manifest.database.seconds * 3.5
    if "storage" in parts:
        seconds += manifest.objects_seconds * 2.2
    return round(seconds, 0)


async def plan_restore(
    deps: RestoreDeps, args: RestoreArgs, requested_by: str, now: datetime | None = None
) -> Proposal:
    """Check the backup and build the plan the gate shows: what is overwritten, age, size, way back."""
    now = now or datetime.now(UTC)
    entry, manifest = await load_checked(deps, args.id)
    parts = _parts(manifest, args.type)
    sources = deps.sources
    if "db" in parts and manifest.database is not None:
        restorer = await sources.pg.program_version("pg_restore")
        if _major(restorer) < _major(manifest.database.pg_dump_version):
            raise UsageError(
                f"backup {args.id} was made by pg_dump {manifest.database.pg_dump_version};"
                f" this pg_restore ({restorer}) is older and cannot read it",
                USAGE,
            )
    current, warnings = await _current_state(deps, parts)
    target: list[str] = []
    database = manifest.database
    if "db" in parts and database is not None:
        target.append(
            f"database {sources.pg.database}: overwritten with the backup's {len(database.tables)} tables"
            f" ({sum(database.tables.values()):,} rows, PostgreSQL {database.server_version})"
        )
    if "storage" in parts:
        for bucket in manifest.buckets:
            objects = [item for item in manifest.objects if item.bucket == bucket]
            target.append(
                f"bucket {bucket}: made equal to the backup ({len(objects):,} objects,"
                f" {format_bytes(sum(item.size for item in objects))}); objects not in the backup are removed"
            )
    target.append(f"backend {deps.backend_label}: stopped during the restore, then started again")
    label = "database and objects" if parts == ["db", "storage"] else TYPE_LABELS[_parts_type(parts)]
    age = _age(manifest.created_at, now)
    warnings.insert(
        0,
        f"the backup is {age} old: every change made since {manifest.created_at:%Y-%m-%d %H:%M} UTC"
        " is undone (it stays in the emergency backup)",
    )
    if manifest.warnings:
        warnings.append(f"the backup noted: {'; '.join(manifest.warnings[:3])}")
    if set(manifest.buckets) != set(sources.buckets) and "storage" in parts:
        warnings.append(
            f"the backup holds buckets {', '.join(manifest.buckets)};"
            f" configured now: {', '.join(sources.buckets)}"
        )
    estimate = estimate_seconds(manifest, parts)
    plan = Plan(
        title=f"Restore the {label} from backup {manifest.id}",
        current=[
            *current,
            f"backup {manifest.id}: {entry.type_label}, {format_bytes(entry.size)}, {age} old",
        ],
        target=target,
        kept=[
            "an emergency backup of everything overwritten, taken once the backend is stopped",
            f"backup {manifest.id} itself",
        ],
        way_back=[
            "chatops restore <emergency backup id> — the id is given at the end, and on any failure",
        ],
        warnings=[*warnings, f"the platform is down for about {estimate:.0f} s"],
        estimated_seconds=estimate,
        state={
            "backup": manifest.id,
            "manifest": manifest.checksum,
            "parts": list(parts),
            "store": sources.store.location,
            "database": sources.pg.database,
            "buckets": list(manifest.buckets) if "storage" in parts else [],
            "backend": deps.backend_label,
        },
        details={"backup_id": manifest.id, "parts": list(parts), "requested_by": requested_by},
    )
    arguments = [manifest.id] + ([f"--type={args.type}"] if args.type else [])
    return Proposal(command="restore", arguments=arguments, plan=plan, typed_word=TYPED_WORD)


# --- /restore <id>: the execution --------------------------------------------------------------------


@dataclass
class _Run:
    """One restore in progress: what has been touched and what state each part is in."""

    deps: RestoreDeps
    manifest: Manifest
    parts: list[Part]
    meter: Meter
    requested_by: str
    emergency: Manifest | None = None
    backend_stopped: bool = False
    database_touched: bool = False
    storage_touched: bool = False
    failure: str = ""
    # Part ("database", "bucket <name>", "backend") -> the state it is in, in words.
    states: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    kept_objects: list[str] = field(default_factory=list)

    @property
    def backend_key(self) -> str:
        """Return the state key of the backend service."""
        return f"backend {self.deps.backend_label}"

    @property
    def database_key(self) -> str:
        """Return the state key of the platform's database."""
        return f"database {self.deps.sources.pg.database}"

    def set_buckets(self, text: str) -> None:
        """Give every bucket of the backup the same state."""
        for bucket in self.manifest.buckets:
            self.states[f"bucket {bucket}"] = text

    async def step(self, name: str, work: Callable[[], Awaitable[str]]) -> bool:
        """Run one step, reporting it; a failure is recorded, never raised (a lost lock aside)."""
        await self.meter.start(name)
        started = time.perf_counter()
        try:
            detail = await work()
        except ReportAborted:
            raise
        except Exception as error:  # each failure is reported with the state it leaves
            self.timings[name] = time.perf_counter() - started
            message = error.message if isinstance(error, UsageError) else describe_error(error)
            self.failure = f"{name}: {message}"
            await self.meter.fail(name, message)
            return False
        self.timings[name] = time.perf_counter() - started
        await self.meter.finish(name, detail)
        return True


async def execute_restore(deps: RestoreDeps, plan: Plan, progress: Progress) -> Execution:
    """Carry out an approved restore plan, step by step."""
    backup_id = str(plan.details["backup_id"])
    wanted = plan.details.get("parts", [])
    parts: list[Part] = [part for part in ("db", "storage") if part in wanted]
    try:
        _, manifest = await load_checked(deps, backup_id)
    except UsageError as error:
        return Execution(
            command="restore",
            succeeded=False,
            summary=f"not started: {error.message}",
            state=["nothing was changed"],
        )
    run = _Run(deps, manifest, parts, Meter(progress), str(plan.details.get("requested_by") or "unknown"))
    if "db" in parts:
        run.states[run.database_key] = "unchanged"
    if "storage" in parts:
        run.set_buckets("unchanged")
    run.states[run.backend_key] = "running (untouched)"
    started = time.perf_counter()
    try:
        succeeded = await _procedure(run)
    except ReportAborted as error:
        # The progress channel failed (the operation lock was lost): touch nothing more.
        run.failure = f"reporting progress failed ({error}); stopped at once"
        succeeded = False
    return _outcome(run, succeeded, time.perf_counter() - started)


async def _procedure(run: _Run) -> bool:
    if not await run.step("check backup", lambda: _check_step(run)):
        return False
    if not await run.step("stop backend", lambda: _stop_step(run)):
        await _recover(run)
        return False
    if not await run.step("emergency backup", lambda: _emergency_step(run)):
        await _recover(run)
        return False
    if "db" not in run.parts:
        await run.meter.skip("restore database", "not part of this restore")
    elif not await run.step("restore database", lambda: _database_step(run)):
        await _confirm_database_unchanged(run)
        if not run.database_touched:
            await _recover(run)
        return False
    if "storage" not in run.parts:
        await run.meter.skip("restore objects", "not part of this restore")
    elif not await run.step("restore objects", lambda: _objects_step(run)):
        run.states[run.backend_key] = "stopped, and kept stopped: the data is only partly restored"
        return False
    if not await run.step("verify", lambda: _verify_step(run)):
        run.states[run.backend_key] = "stopped, and kept stopped: the restored data does not match the backup"
        return False
    if not await run.step("start backend", lambda: _start_step(run)):
        return False
    if not await run.step("health check", lambda: _health_step(run)):
        return False
    record = verified_record(run.manifest, datetime.now(UTC), "restored; row counts and objects matched")
    try:
        await run.deps.sources.store.write(run.manifest.id, VERIFIED, record)
    except Exception:  # the restore succeeded; failing to note it must not say otherwise
        run.notes.append(f"could not record that backup {run.manifest.id} was verified")
    return True


async def _check_step(run: _Run) -> str:
    bad = await check_checksums(run.deps, run.manifest, run.meter, "check backup")
    if bad:
        raise UsageError(f"backup {run.manifest.id} is damaged ({'; '.join(bad[:3])}); refusing it")
    return f"{len(run.manifest.files)} files, {format_bytes(run.manifest.total_bytes)}, checksums match"


async def _stop_step(run: _Run) -> str:
    run.backend_stopped = True  # set first: a stop that fails halfway still needs a start
    states = await run.deps.backend.stop(stop_seconds=run.deps.stop_seconds)
    shown = ", ".join(f"{name} {state}" for name, state in states)
    running = [name for name, state in states if state == "running"]
    if running:
        run.states[run.backend_key] = f"still running: {shown}"
        raise DependencyError("unexpected answer", f"still running after stop: {', '.join(running)}")
    run.states[run.backend_key] = f"stopped ({shown})"
    return shown


async def _emergency_step(run: _Run) -> str:
    folded = Meter(run.meter.progress, fold_into="emergency backup", interval=run.meter.interval)
    try:
        run.emergency = await take_backup(
            run.deps.sources,
            _parts_type(run.parts),
            made_by=run.requested_by,
            reason=f"emergency: the state before restoring {run.manifest.id}",
            meter=folded,
        )
    except BackupFailed as error:
        raise UsageError(f"the emergency backup failed, so nothing was changed: {error}") from None
    emergency = run.emergency
    run.notes.append(
        f"emergency backup {emergency.id} ({TYPE_LABELS[emergency.type]},"
        f" {format_bytes(emergency.total_bytes)}) holds the state before the restore"
    )
    return f"{emergency.id}, {format_bytes(emergency.total_bytes)}"


async def _database_step(run: _Run) -> str:
    database = run.manifest.database
    assert database is not None
    run.database_touched = True
    rows = sum(database.tables.values())
    await _restore_dump(run.deps, run.manifest.id, run.meter, "restore database", rows, None, True)
    run.states[run.database_key] = f"restored from {run.manifest.id} (not yet verified)"
    return f"{len(database.tables)} tables, {rows:,} rows"


async def _confirm_database_unchanged(run: _Run) -> None:
    """After a failed pg_restore, check that its single transaction left the database as before."""
    emergency = run.emergency.database if run.emergency else None
    if emergency is None:
        run.database_touched = False
        run.states[run.database_key] = "unchanged: the restore ran in one transaction and was rolled back"
        return
    try:
        counts = await count_rows(run.deps, None)
    except Exception as error:
        run.states[run.database_key] = (
            "should be unchanged (one transaction, rolled back) but could not be checked:"
            f" {describe_error(error)}; restore the emergency backup to be sure"
        )
        return
    differing = [item for item in compare_counts(emergency.tables, counts) if not item.ok]
    if differing:
        run.states[run.database_key] = (
            f"DIFFERS from before: {len(differing)} table(s), e.g. {differing[0].name}"
            f" ({differing[0].expected} rows before, {differing[0].found} now)"
        )
        return
    run.database_touched = False
    run.states[run.database_key] = (
        f"unchanged: rolled back; the row counts of all {len(counts)} tables equal the emergency backup's"
    )


async def _objects_step(run: _Run) -> str:
    deps, manifest = run.deps, run.manifest
    transfer = deps.sources.transfer
    before: dict[tuple[str, str], ObjectEntry] = {}
    if run.emergency is not None:
        before = {(item.bucket, item.key): item for item in run.emergency.objects}
    wanted: dict[str, dict[str, ObjectEntry]] = {bucket: {} for bucket in manifest.buckets}
    for item in manifest.objects:
        wanted.setdefault(item.bucket, {})[item.key] = item
    puts: list[ObjectEntry] = []
    deletions: dict[str, list[str]] = {}
    equal = 0
    for bucket, objects in wanted.items():
        await transfer.ensure_bucket(bucket)
        now = {info.key: info for info in await transfer.list_objects(bucket)}
        for key, item in objects.items():
            current = now.get(key)
            saved = before.get((bucket, key))
            if current is None:
                puts.append(item)
            elif not _unchanged_since(saved, current):
                # Written after the emergency backup: replacing it would lose it. Keep it, say so.
                run.kept_objects.append(f"s3://{bucket}/{key}")
            elif _same_body(saved, item):
                equal += 1
            else:
                puts.append(item)
        for key, current in now.items():
            if key in objects:
                continue
            if _unchanged_since(before.get((bucket, key)), current):
                deletions.setdefault(bucket, []).append(key)
            else:
                run.kept_objects.append(f"s3://{bucket}/{key}")
    removals = sum(len(keys) for keys in deletions.values())
    total = len(puts) + removals
    done = [0]
    queue = list(puts)

    async def worker() -> None:
        while queue:
            item = queue.pop()
            async with deps.sources.store.local(manifest.id, item.file) as path:
                await transfer.upload(item.bucket, item.key, path, item.content_type, item.metadata)
            done[0] += 1
            await run.meter.advance("restore objects", done[0], max(total, 1), "changes")

    if total:
        run.storage_touched = True
    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(max(1, min(deps.sources.concurrency, len(queue)))):
                group.create_task(worker())
        # Removals come last: a failure before them leaves extra objects, never missing ones.
        for bucket, keys in deletions.items():
            await transfer.delete(bucket, keys)
            done[0] += len(keys)
    except BaseException as error:
        run.set_buckets(
            f"PARTLY restored: {done[0]} of {total} changes made ({len(puts)} objects to write,"
            f" {removals} to remove)"
        )
        if isinstance(error, BaseExceptionGroup):
            leaf = first_leaf(error)
            if isinstance(leaf, Exception):
                raise leaf from None
        raise
    run.set_buckets(f"restored from {manifest.id} (not yet verified)")
    return f"{len(puts)} written, {removals} removed, {equal} already equal"


def _unchanged_since(saved: ObjectEntry | None, current: ObjectInfo) -> bool:
    """Return whether an object is what the emergency backup saw (so it may be replaced)."""
    return saved is not None and saved.etag == current.etag and saved.size == current.size


def _same_body(saved: ObjectEntry | None, wanted: ObjectEntry) -> bool:
    return (
        saved is not None
        and saved.sha256 == wanted.sha256
        and saved.content_type == wanted.content_type
        and saved.metadata == wanted.metadata
    )


async def _verify_step(run: _Run) -> str:
    deps, manifest = run.deps, run.manifest
    problems: list[str] = []
    database = manifest.database
    if "db" in run.parts and database is not None:
        checks = compare_counts(database.tables, await count_rows(deps, None))
        extra = [item.name for item in checks if item.expected is None]
        wrong = [item for item in checks if item.expected is not None and not item.ok]
        problems += [
            f"table {item.name}: {item.found} rows, the backup has {item.expected}" for item in wrong
        ]
        if wrong:
            run.states[run.database_key] = f"restored from {manifest.id} but {len(wrong)} table(s) differ"
        else:
            run.states[run.database_key] = (
                f"restored from {manifest.id}; the row counts of all {len(database.tables)} tables match"
                f" ({sum(database.tables.values()):,} rows)"
            )
        if extra:
            run.notes.append(
                f"{len(extra)} table(s) that are not in the backup were left in place: {', '.join(extra[:5])}"
            )
    if "storage" in run.parts:
        kept = set(run.kept_objects)
        for bucket in manifest.buckets:
            wanted = {item.key: item.size for item in manifest.objects if item.bucket == bucket}
            found = {
                info.key: info.size
                for info in await deps.sources.transfer.list_objects(bucket)
                if f"s3://{bucket}/{info.key}" not in kept
            }
            missing = [key for key in wanted if key not in found]
            extra_keys = [key for key in found if key not in wanted]
            resized = [key for key in wanted if key in found and found[key] != wanted[key]]
            wrong_bucket = False
            for label, keys in (
                ("missing", missing),
                ("not in the backup", extra_keys),
                ("of the wrong size", resized),
            ):
                if keys:
                    wrong_bucket = True
                    problems.append(f"bucket {bucket}: {len(keys)} object(s) {label}, e.g. {keys[0]}")
            run.states[f"bucket {bucket}"] = (
                f"restored from {manifest.id} but does not match it"
                if wrong_bucket
                else f"equals backup {manifest.id} ({len(wanted):,} objects)"
            )
        if run.kept_objects:
            run.notes.append(
                f"{len(run.kept_objects)} object(s) written after the emergency backup were kept as they are,"
                f" e.g. {run.kept_objects[0]}"
            )
    if problems:
        raise DependencyError("unexpected answer", "; ".join(problems[:4]))
    return "row counts and objects match the backup"


async def _start_step(run: _Run) -> str:
    states = await run.deps.backend.start()
    shown = ", ".join(f"{name} {state}" for name, state in states)
    if any(state != "running" for _, state in states):
        run.states[run.backend_key] = f"not running: {shown}"
        raise DependencyError("unexpected answer", f"not running after start: {shown}")
    run.backend_stopped = False
    run.states[run.backend_key] = f"running ({shown})"
    return shown


async def _health_step(run: _Run) -> str:
    deadline = time.monotonic() + run.deps.health_timeout
    while True:
        try:
            answer = await asyncio.wait_for(run.deps.health.ping(), timeout=5.0)
        except Exception as error:  # keep asking until the deadline; the last answer is reported
            last = describe_error(error)
        else:
            run.states[run.backend_key] = f"running, /health {answer}"
            return answer
        if time.monotonic() >= deadline:
            run.states[run.backend_key] = f"running but not healthy: {last}"
            raise DependencyError("timeout", f"not healthy after {run.deps.health_timeout:g} s: {last}")
        await run.meter.advance("health check", 0, 1, note=last[:80])
        await asyncio.sleep(1.0)


async def _recover(run: _Run) -> None:
    """Nothing was changed: start the backend again if it was stopped."""
    if run.backend_stopped and await run.step("start backend", lambda: _start_step(run)):
        await run.step("health check", lambda: _health_step(run))


def _outcome(run: _Run, succeeded: bool, seconds: float) -> Execution:
    manifest, emergency = run.manifest, run.emergency
    way_back = ""
    if emergency is not None:
        suffix = "" if emergency.type == "full" else f" --type {emergency.type}"
        way_back = f"chatops restore {emergency.id}{suffix}"
    timings = ", ".join(f"{name} {value:.1f} s" for name, value in run.timings.items() if value >= 0.05)
    if succeeded:
        summary = f"restored backup {manifest.id} in {seconds:.0f} s ({timings})"
    else:
        changed = run.database_touched or run.storage_touched
        summary = f"stopped at {run.failure or 'an unknown step'}; " + (
            "data WAS changed: see the state of each part and the way back"
            if changed
            else "nothing was changed"
        )
    lines = [f"{part}: {state}" for part, state in run.states.items()]
    if emergency is None and not succeeded:
        lines.append("no emergency backup was taken, and none is needed: nothing was changed")
    lines += run.notes
    return Execution(command="restore", succeeded=succeeded, summary=summary, state=lines, way_back=way_back)
