"""`/restore verify`: a backup's checksums, then a test restore into a scratch database and row counts.

The restore itself checks the backup, restores the dump and counts rows with the same functions.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Coroutine
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import Field

from adapters.base import DependencyError
from commands.backup import (
    TABLES_SQL,
    Meter,
    StoredBackup,
    describe_error,
    inspect_backup,
    watch_copy,
)
from commands.backup_store import DATABASE_FILE, VERIFIED, Manifest, verified_record
from commands.base import CommandResult, Model, UsageError
from commands.restore_inputs import USAGE, RestoreDeps

T = TypeVar("T")


class TableCheck(Model):
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


async def restore_dump(
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
            await restore_dump(deps, backup_id, meter, "test restore", sum(expected.values()), scratch, False)
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
