"""/restore against real PostgreSQL, pg_dump/pg_restore, SeaweedFS and Podman, through the gate.

Each test has its own platform database, bucket, backup store and backend container (see
restore_helpers): nothing here touches what other people's tests use.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest

from adapters.engine import EngineAdapter
from bot.gate.gate import Refused
from bot.services import BackupAdapters
from commands.backup_store import DATABASE_FILE, MANIFEST, Manifest
from commands.base import UsageError
from commands.destructive import Proposal, Step
from commands.restore import BackupList, VerifyReport
from sandbox.seaweedfs import s3_client
from tests.conftest import make_settings
from tests.gate_helpers import drill_command  # noqa: F401  (autouse fixture of the gate helpers)
from tests.netutil import free_port
from tests.restore_helpers import (
    OPS1,
    OPS2,
    PLATFORM_BUCKET,
    PLATFORM_DB,
    Platform,
    S3Proxy,
    backend_state,
    bucket_fingerprint,
    change_everything,
    db_fingerprint,
    empty_bucket,
    platform,
    project,  # noqa: F401  (module fixture)
    step_names,
)

RESTORE_STEPS = [
    "check backup",
    "stop backend",
    "emergency backup",
    "restore database",
    "restore objects",
    "verify",
    "start backend",
    "health check",
]


@pytest.fixture
async def plat(project: dict[str, Any], tmp_path: Path) -> Any:  # noqa: F811
    async with platform(project, tmp_path) as world:
        yield world


def _original_tables(found: dict[str, tuple[int, str]]) -> dict[str, tuple[int, str]]:
    return {name: value for name, value in found.items() if "created_later" not in name}


# --- the round trip ------------------------------------------------------------------------------------


async def test_round_trip_loses_nothing_and_the_emergency_backup_holds_later_writes(plat: Platform) -> None:
    db_before = await db_fingerprint(plat.dsn)
    objects_before = await asyncio.to_thread(bucket_fingerprint, plat.settings, PLATFORM_BUCKET)
    taken = await plat.backup()
    await change_everything(plat.settings, plat.dsn)
    db_changed = await db_fingerprint(plat.dsn)
    objects_changed = await asyncio.to_thread(bucket_fingerprint, plat.settings, PLATFORM_BUCKET)
    assert db_changed != db_before and objects_changed != objects_before

    proposal = await plat.propose_restore(taken.id)
    assert proposal.typed_word == "RESTORE"
    assert any("overwritten" in line for line in proposal.plan.target)
    assert any("old" in line for line in proposal.plan.warnings) and proposal.plan.estimated_seconds
    result, published = await plat.world.run(proposal, OPS1, typed_word="RESTORE", second=OPS2)

    assert result.succeeded, (result.summary, result.state)
    assert step_names(published) == [(name, "done") for name in RESTORE_STEPS]
    # Rows byte-identical in every table of the backup; the table made later is left, and said so.
    db_after = await db_fingerprint(plat.dsn)
    assert _original_tables(db_after) == db_before
    assert any("created_later" in line for line in result.state)
    # Objects byte-identical, with their content types and metadata; later objects gone.
    assert await asyncio.to_thread(bucket_fingerprint, plat.settings, PLATFORM_BUCKET) == objects_before
    assert backend_state(plat.overrides) == "running"
    assert any("/health healthy" in line for line in result.state), result.state

    # The emergency backup holds exactly the state the restore replaced, writes after the backup included.
    emergency_id = result.way_back.removeprefix("chatops restore ")
    assert result.way_back == f"chatops restore {emergency_id}"
    emergency = await plat.manifest(emergency_id)
    assert emergency.reason == f"emergency: the state before restoring {taken.id}"
    assert emergency.made_by == OPS1
    keys = {item.key for item in emergency.objects}
    assert "uploads/late/after-backup.stl" in keys and "uploads/u000/peca.stl" not in keys
    assert emergency.database is not None
    assert emergency.database.tables["public.audit_log"] == db_changed["public.audit_log"][0]

    # The way back is real: restoring the emergency backup brings the later writes back, all of them.
    back, _ = await plat.restore(emergency_id)
    assert back.succeeded, (back.summary, back.state)
    assert _original_tables(await db_fingerprint(plat.dsn)) == _original_tables(db_changed)
    assert await asyncio.to_thread(bucket_fingerprint, plat.settings, PLATFORM_BUCKET) == objects_changed
    async with plat.services.platform_db.connection() as conn:
        assert await conn.fetchval("SELECT count(*) FROM audit_log WHERE action = 'AFTER_BACKUP'") == 1


async def test_a_restore_needs_typed_restore_and_a_second_operator(plat: Platform) -> None:
    taken = await plat.backup("db")
    proposal = await plat.propose_restore(taken.id)
    world = plat.world
    approval = await world.propose(proposal, OPS1)
    assert approval.needs_second_approver and approval.typed_word == "RESTORE"
    with pytest.raises(Refused) as wrong_word:
        await world.runtime.gate.confirm(approval.id, OPS1, world.code(OPS1), "restore")
    assert wrong_word.value.reason == "typed_word"
    first = await world.confirm(approval, OPS1, "RESTORE")
    assert first.kind == "awaiting_second"
    with pytest.raises(Refused) as same:
        await world.runtime.gate.confirm(approval.id, OPS1, world.code(OPS1))
    assert same.value.reason == "same_person"
    with pytest.raises(Refused) as early:
        await world.runtime.gate.execute(first.approval, _ignore)
    assert early.value.reason == "not_approved"


async def _ignore(steps: list[Step]) -> None:
    return None


async def test_a_db_only_restore_leaves_the_buckets_alone(plat: Platform) -> None:
    taken = await plat.backup("db")
    await change_everything(plat.settings, plat.dsn)
    objects_changed = await asyncio.to_thread(bucket_fingerprint, plat.settings, PLATFORM_BUCKET)
    result, published = await plat.restore(taken.id)
    assert result.succeeded, result.state
    assert ("restore objects", "skipped") in step_names(published)
    assert await asyncio.to_thread(bucket_fingerprint, plat.settings, PLATFORM_BUCKET) == objects_changed
    assert result.way_back.endswith("type=db")
    async with plat.services.platform_db.connection() as conn:
        assert await conn.fetchval("SELECT count(*) FROM audit_log WHERE action = 'AFTER_BACKUP'") == 0


# --- refused before anything is touched --------------------------------------------------------------


@pytest.mark.parametrize(
    "tokens",
    [
        ["../etc"],
        ["2025-11-20_02-00-00/../../etc"],
        ["../2025-11-20_02-00-00"],
        ["2025-11-20_02-00-00\n"],
        ["2025-13-45_25-61-61"],
        ["verify", "../../tmp"],
        ["verify"],
        ["list", "extra"],
        ["2025-11-20_02-00-00", "--type", "everything"],
        [],
    ],
)
async def test_malformed_ids_and_path_tricks_are_refused(plat: Platform, tokens: list[str]) -> None:
    with pytest.raises(UsageError):
        await plat.restore_run(*tokens)


async def test_unknown_incomplete_and_wrong_type_backups_are_refused(plat: Platform) -> None:
    with pytest.raises(UsageError, match="there is no backup 2025-11-20_02-00-00"):
        await plat.restore_run("2025-11-20_02-00-00")
    store = Path(plat.settings.backup_store)
    (store / "2025-11-21_02-00-00").mkdir(parents=True)
    (store / "2025-11-21_02-00-00" / DATABASE_FILE).write_bytes(b"half a dump")
    with pytest.raises(UsageError, match="incomplete"):
        await plat.restore_run("2025-11-21_02-00-00")
    # A backup planted as a symbolic link to somewhere else is not followed.
    real = await plat.backup("db")
    (store / "2025-11-22_02-00-00").symlink_to(store / real.id)
    with pytest.raises(UsageError, match=r"symbolic link"):
        await plat.restore_run("2025-11-22_02-00-00")
    with pytest.raises(UsageError, match="holds database only"):
        await plat.restore_run(real.id, "--type", "full")
    with pytest.raises(UsageError, match="holds database only"):
        await plat.restore_run(real.id, "--type", "storage")
    storage_only = await plat.backup("--type", "storage")
    with pytest.raises(UsageError, match="holds storage only"):
        await plat.restore_run(storage_only.id, "--type", "db")
    # Without --type, a restore restores what the backup holds.
    assert isinstance(await plat.restore_run(storage_only.id), Proposal)
    listing = await plat.restore_run("list")
    assert isinstance(listing, BackupList)
    assert {item.id for item in listing.backups} == {real.id, storage_only.id}


async def test_a_damaged_backup_is_detected_and_refused_before_anything_is_touched(plat: Platform) -> None:
    taken = await plat.backup()
    store = Path(plat.settings.backup_store) / taken.id
    await change_everything(plat.settings, plat.dsn)
    db_changed = await db_fingerprint(plat.dsn)
    objects_changed = await asyncio.to_thread(bucket_fingerprint, plat.settings, PLATFORM_BUCKET)

    # One flipped byte in the middle of the dump: same size, so only the checksums can tell.
    dump = store / DATABASE_FILE
    data = bytearray(dump.read_bytes())
    data[len(data) // 2] ^= 0x01
    dump.write_bytes(bytes(data))
    listing = await plat.restore_run("list")
    assert isinstance(listing, BackupList) and listing.backups[0].manifest_ok  # sizes still match
    report = await plat.restore_run("verify", taken.id)
    assert isinstance(report, VerifyReport) and not report.ok
    assert report.bad_files == [f"{DATABASE_FILE}: SHA-256 differs from the manifest"]
    assert not report.test_restore

    proposal = await plat.propose_restore(taken.id)
    result, published = await plat.world.run(proposal, OPS1, typed_word="RESTORE", second=OPS2)
    assert not result.succeeded
    assert step_names(published) == [("check backup", "failed")]
    assert "nothing was changed" in result.summary and "damaged" in result.summary
    assert await db_fingerprint(plat.dsn) == db_changed
    assert await asyncio.to_thread(bucket_fingerprint, plat.settings, PLATFORM_BUCKET) == objects_changed
    assert backend_state(plat.overrides) == "running"
    assert result.way_back == ""  # nothing to undo

    # A manifest edited by hand (a row count changed) no longer matches its own checksum: BAD.
    manifest = store / MANIFEST
    manifest.write_text(manifest.read_text().replace('"public.audit_log": ', '"public.audit_log": 1', 1))
    listing = await plat.restore_run("list")
    assert isinstance(listing, BackupList)
    assert listing.backups[0].line().endswith("manifest BAD")
    with pytest.raises(UsageError, match="does not check out"):
        await plat.restore_run(taken.id)


async def test_a_damaged_object_is_detected(plat: Platform) -> None:
    taken = await plat.backup("storage")
    objects = sorted((Path(plat.settings.backup_store) / taken.id / "objects").iterdir())
    target = objects[len(objects) // 2]
    data = bytearray(target.read_bytes() or b"\0")
    data[0] ^= 0xFF
    target.write_bytes(bytes(data))
    report = await plat.restore_run("verify", taken.id)
    assert isinstance(report, VerifyReport) and not report.ok
    assert report.problems and target.name in report.problems[0]


# --- failing midway ------------------------------------------------------------------------------------


async def test_a_broken_pg_restore_rolls_back_and_the_backend_comes_back(plat: Platform) -> None:
    taken = await plat.backup()
    await change_everything(plat.settings, plat.dsn)
    # A view made after the backup depends on audit_log: pg_restore --clean cannot drop the table.
    async with plat.services.platform_db.connection() as conn:
        await conn.execute("CREATE VIEW recent_logins AS SELECT * FROM audit_log WHERE action = 'LOGIN'")
    db_changed = await db_fingerprint(plat.dsn)
    objects_changed = await asyncio.to_thread(bucket_fingerprint, plat.settings, PLATFORM_BUCKET)

    result, published = await plat.restore(taken.id)
    assert not result.succeeded
    steps = dict(step_names(published))
    assert steps["restore database"] == "failed" and "restore objects" not in steps
    assert steps["start backend"] == "done" and steps["health check"] == "done"
    assert "nothing was changed" in result.summary
    assert await db_fingerprint(plat.dsn) == db_changed
    assert await asyncio.to_thread(bucket_fingerprint, plat.settings, PLATFORM_BUCKET) == objects_changed
    database_line = next(line for line in result.state if line.startswith(f"database {PLATFORM_DB}"))
    assert "unchanged" in database_line and "equal the emergency backup" in database_line
    assert backend_state(plat.overrides) == "running"
    emergency_id = result.way_back.removeprefix("chatops restore ")
    assert emergency_id in {item.id for item in (await plat.restore_run("list")).backups}


async def test_a_killed_database_connection_rolls_back(plat: Platform) -> None:
    async with plat.services.platform_db.connection() as conn:
        # Enough rows that pg_restore is still copying when its session is killed.
        await conn.execute(
            "CREATE TABLE bulk AS SELECT g AS id, md5(g::text) AS body FROM generate_series(1, 1500000) g"
        )
    taken = await plat.backup("db")
    await change_everything(plat.settings, plat.dsn)
    db_changed = await db_fingerprint(plat.dsn)
    killed: list[int] = []
    killer: list[asyncio.Task[None]] = []

    async def kill_when_copying() -> None:
        conn = await asyncpg.connect(plat.dsn)
        try:
            for _ in range(600):
                found = await conn.fetchval(
                    """SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                       WHERE datname = $1 AND application_name LIKE 'chatops-restore-%'
                         AND query LIKE 'COPY%'""",
                    PLATFORM_DB,
                )
                if found:
                    killed.append(int(found))
                    return
                await asyncio.sleep(0.02)
        finally:
            await conn.close()

    async def hook(steps: list[Step]) -> None:
        if any(step.name == "restore database" and step.status == "running" for step in steps) and not killer:
            killer.append(asyncio.create_task(kill_when_copying()))

    result, published = await plat.restore(taken.id, on_steps=hook)
    await asyncio.gather(*killer)
    assert killed, "the restore finished before its connection could be killed"
    assert not result.succeeded
    assert dict(step_names(published))["restore database"] == "failed"
    assert await db_fingerprint(plat.dsn) == db_changed
    assert any("unchanged" in line for line in result.state)
    assert backend_state(plat.overrides) == "running"


async def test_s3_dying_midway_through_the_objects_reports_each_part_and_the_way_back_works(
    project: dict[str, Any],  # noqa: F811
    tmp_path: Path,
) -> None:
    proxy = S3Proxy(urlsplit(make_settings().s3_endpoint_url).port or 8333)
    await proxy.start()
    try:
        async with platform(project, tmp_path, s3_endpoint_url=proxy.url) as plat:
            taken = await plat.backup()
            # Every object changes after the backup, so the restore has many to write.
            # The test itself talks to S3 directly: the proxy serves on this event loop.
            direct = make_settings(**{**plat.overrides, "s3_endpoint_url": make_settings().s3_endpoint_url})
            await asyncio.to_thread(_change_every_object, direct)
            await change_everything(direct, plat.dsn)
            db_changed = await db_fingerprint(plat.dsn)
            objects_changed = await asyncio.to_thread(bucket_fingerprint, direct, PLATFORM_BUCKET)

            async def hook(steps: list[Step]) -> None:
                started = any(step.name == "restore objects" and step.status == "running" for step in steps)
                if started and proxy.cut_after_puts is None:
                    proxy.cut_after_puts = proxy.puts + 8

            result, published = await plat.restore(taken.id, on_steps=hook)
            assert proxy.dead
            assert not result.succeeded
            steps = dict(step_names(published))
            assert steps["restore database"] == "done" and steps["restore objects"] == "failed"
            assert "start backend" not in steps
            assert "data WAS changed" in result.summary
            bucket_line = next(line for line in result.state if line.startswith(f"bucket {PLATFORM_BUCKET}"))
            assert "PARTLY restored" in bucket_line
            assert any(line.startswith("backend") and "kept stopped" in line for line in result.state)
            assert backend_state(plat.overrides) == "exited"
            emergency_id = result.way_back.removeprefix("chatops restore ")

            # S3 is back: the one command of the way back returns everything to before the restore.
            proxy.cut_after_puts = None
            await proxy.start()
            back, _ = await plat.restore(emergency_id)
            assert back.succeeded, (back.summary, back.state)
            assert _original_tables(await db_fingerprint(plat.dsn)) == _original_tables(db_changed)
            assert (
                await asyncio.to_thread(bucket_fingerprint, plat.settings, PLATFORM_BUCKET) == objects_changed
            )
            assert backend_state(plat.overrides) == "running"
    finally:
        await proxy.cut()


def _change_every_object(settings: Any) -> None:
    client = s3_client(settings)
    for item in client.list_objects_v2(Bucket=PLATFORM_BUCKET)["Contents"]:
        client.put_object(Bucket=PLATFORM_BUCKET, Key=item["Key"], Body=b"changed " + item["Key"].encode())


async def test_a_dead_s3_endpoint_stops_before_anything_changes(plat: Platform) -> None:
    taken = await plat.backup()
    db_before = await db_fingerprint(plat.dsn)
    proposal = await plat.propose_restore(taken.id)
    # From here on the bot sees S3 at an address where nothing listens.
    _use_settings(plat, s3_endpoint_url=f"http://127.0.0.1:{free_port()}")
    result, published = await plat.world.run(proposal, OPS1, typed_word="RESTORE", second=OPS2)
    assert not result.succeeded
    steps = step_names(published)
    assert ("emergency backup", "failed") in steps and ("start backend", "done") in steps
    assert ("restore database", "failed") not in steps and "restore database" not in dict(steps)
    assert "nothing was changed" in result.summary
    assert await db_fingerprint(plat.dsn) == db_before
    assert backend_state(plat.overrides) == "running"
    listing = await plat.restore_run("list")
    assert isinstance(listing, BackupList)
    assert [item.id for item in listing.backups] == [taken.id]  # no half emergency backup left
    assert not [p.name for p in Path(plat.settings.backup_store).iterdir() if p.name.startswith(".")]


def _use_settings(plat: Platform, **changes: Any) -> None:
    """Point the running bot at other settings (its adapters for backups are rebuilt from them)."""
    plat.services.settings = plat.settings.model_copy(update=changes)
    plat.services.backups = None


async def test_an_engine_that_cannot_stop_the_backend_stops_before_anything_changes(plat: Platform) -> None:
    taken = await plat.backup()
    db_before = await db_fingerprint(plat.dsn)
    proposal = await plat.propose_restore(taken.id)
    # The engine's API is gone (its socket does not exist): the backend cannot be stopped.
    dead = plat.settings.model_copy(update={"docker_host": f"unix://{plat.settings.sandbox_dir}/no.sock"})
    engine = EngineAdapter(dead.docker_host, dead.compose_project, dead.backend_service, 2.0)
    plat.services.backups = BackupAdapters.build(dead, engine)
    result, published = await plat.world.run(proposal, OPS1, typed_word="RESTORE", second=OPS2)
    assert not result.succeeded
    assert step_names(published)[:2] == [("check backup", "done"), ("stop backend", "failed")]
    assert "nothing was changed" in result.summary
    assert await db_fingerprint(plat.dsn) == db_before
    assert backend_state(plat.overrides) == "running"


# --- verify --------------------------------------------------------------------------------------------


async def test_verify_restores_into_a_scratch_database_and_compares_row_counts(plat: Platform) -> None:
    taken = await plat.backup()
    report = await plat.restore_run("verify", taken.id)
    assert isinstance(report, VerifyReport) and report.ok, report.problems
    assert report.test_restore and report.files_checked == len((await plat.manifest(taken.id)).files)
    assert {item.name for item in report.tables} == {"public.audit_log", "public.projects"}
    assert all(item.ok for item in report.tables)
    async with plat.services.platform_db.connection() as conn:
        leftovers = await conn.fetchval(
            "SELECT count(*) FROM pg_database WHERE datname = $1", report.scratch_database
        )
    assert leftovers == 0
    listing = await plat.restore_run("list")
    assert isinstance(listing, BackupList) and listing.backups[0].verified_at is not None


async def test_the_plan_is_refused_when_the_backup_changed_after_it_was_shown(plat: Platform) -> None:
    taken = await plat.backup()
    proposal = await plat.propose_restore(taken.id)
    # Another valid manifest under the same id (resealed): the plan shown no longer describes it.
    path = Path(plat.settings.backup_store) / taken.id / MANIFEST
    manifest = Manifest.model_validate_json(path.read_bytes())
    path.write_bytes(manifest.model_copy(update={"reason": "edited"}).sealed().to_bytes())
    with pytest.raises(Refused) as refused:
        await plat.world.run(proposal, OPS1, typed_word="RESTORE", second=OPS2)
    assert refused.value.reason == "plan_changed" and refused.value.new_plan is not None


async def test_a_lost_bucket_is_recreated_from_the_backup(plat: Platform) -> None:
    objects_before = await asyncio.to_thread(bucket_fingerprint, plat.settings, PLATFORM_BUCKET)
    taken = await plat.backup("storage")
    await asyncio.to_thread(empty_bucket, plat.settings, PLATFORM_BUCKET)
    await asyncio.to_thread(s3_client(plat.settings).delete_bucket, Bucket=PLATFORM_BUCKET)
    result, _ = await plat.restore(taken.id)
    assert result.succeeded, (result.summary, result.state)
    assert await asyncio.to_thread(bucket_fingerprint, plat.settings, PLATFORM_BUCKET) == objects_before
    emergency = await plat.manifest(result.way_back.removeprefix("chatops restore ").split()[0])
    assert emergency.objects == [] and emergency.warnings == [f"bucket {PLATFORM_BUCKET} does not exist"]
