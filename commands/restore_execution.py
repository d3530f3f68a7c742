"""`/restore <id>`, once approved: the runbook's DR steps, each reported as it happens.

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
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from adapters.base import DependencyError
from adapters.object_transfer import ObjectInfo
from commands.backup import BackupFailed, Meter, ReportAborted, describe_error, first_leaf, take_backup
from commands.backup_store import TYPE_LABELS, VERIFIED, Manifest, ObjectEntry, verified_record
from commands.base import UsageError
from commands.destructive import Execution, Plan, Progress
from commands.formatting import format_bytes
from commands.restore_inputs import Part, RestoreDeps, parts_type
from commands.restore_verify import check_checksums, compare_counts, count_rows, load_checked, restore_dump


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
            parts_type(run.parts),
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
    await restore_dump(run.deps, run.manifest.id, run.meter, "restore database", rows, None, True)
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
        suffix = "" if emergency.type == "full" else f" type={emergency.type}"
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
