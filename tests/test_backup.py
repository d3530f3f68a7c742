"""/backup against the real PostgreSQL, pg_dump and SeaweedFS: what a backup holds, when it appears,
the S3 store, retention through the gate, the terminal and Slack."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from rich.console import Console

from adapters import pg_tools
from adapters.base import DependencyError
from adapters.pg_tools import split_password
from bot.render.steps import StepBars
from commands.backup import BackupResult, Meter, PruneResult, progress_detail
from commands.backup_store import (
    MANIFEST,
    FileEntry,
    Manifest,
    backup_time,
    load_manifest,
    new_backup_id,
)
from commands.base import UsageError
from commands.destructive import Proposal, Step
from commands.formatting import format_bytes
from commands.restore import BackupList, VerifyReport
from tests.fakes import FakeSlack
from tests.gate_helpers import drill_command  # noqa: F401  (autouse fixture of the gate helpers)
from tests.netutil import free_port
from tests.restore_helpers import (
    BACKUP_BUCKET,
    OPS1,
    PLATFORM_BUCKET,
    PLATFORM_DB,
    SEED_OBJECTS,
    Platform,
    bucket_fingerprint,
    change_everything,
    db_fingerprint,
    empty_bucket,
    platform,
    project,  # noqa: F401  (module fixture)
)
from tests.test_slack_app import block_text, post_command, running_bot

RUNBOOK_LINE = re.compile(
    r"^\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2} \| (database\+storage|database|storage)"
    r" \| [\d.]+(B|KB|MB|GB) \| manifest (OK|BAD)$"
)


@pytest.fixture
async def plat(project: dict[str, Any], tmp_path: Path) -> Any:  # noqa: F811
    async with platform(project, tmp_path) as world:
        yield world


# --- what a backup holds ------------------------------------------------------------------------------


async def test_a_backup_records_every_file_its_checksum_the_row_counts_and_who_made_it(
    plat: Platform,
) -> None:
    result = await plat.backup()
    assert isinstance(result, BackupResult)
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}", result.id)
    assert abs(backup_time(result.id) - datetime.now(UTC)) < timedelta(minutes=1)
    root = Path(plat.settings.backup_store) / result.id
    manifest = load_manifest((root / MANIFEST).read_bytes(), result.id)
    assert manifest.type == "full" and manifest.made_by == OPS1
    database = manifest.database
    assert database is not None and database.name == PLATFORM_DB
    assert database.server_version.startswith("15") and database.pg_dump_version.startswith("15")
    assert database.tables == {"public.audit_log": 2000, "public.projects": 500}
    # Every file on disk is in the manifest with its size and SHA-256, and nothing else is there.
    on_disk = {
        str(path.relative_to(root)): path
        for path in root.rglob("*")
        if path.is_file() and path.name != MANIFEST
    }
    assert set(on_disk) == {item.name for item in manifest.files}
    for item in manifest.files:
        data = on_disk[item.name].read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (item.size, item.sha256)
    # Objects: each key with its body's hash, type and metadata; bodies by hash, never by key.
    assert {item.key for item in manifest.objects} == {key for key, *_ in SEED_OBJECTS}
    for key, body, content_type, metadata in SEED_OBJECTS:
        entry = next(item for item in manifest.objects if item.key == key)
        assert entry.sha256 == hashlib.sha256(body).hexdigest() and entry.size == len(body)
        assert (entry.content_type, entry.metadata) == (content_type, metadata)
    assert all(re.fullmatch(r"objects/[0-9a-f]{64}|database\.dump", name) for name in on_disk)
    assert len({item.sha256 for item in manifest.objects}) == len(manifest.objects) - 1  # two equal bodies
    assert result.total_bytes == sum(item.size for item in manifest.files)


async def test_row_counts_match_the_dump_even_with_writes_during_the_backup(plat: Platform) -> None:
    async with plat.services.platform_db.connection() as conn:
        await conn.execute(
            "CREATE TABLE bulk AS SELECT g AS id, md5(g::text) AS body FROM generate_series(1, 400000) g"
        )
    stop = asyncio.Event()

    async def keep_writing() -> int:
        written = 0
        conn = await asyncpg.connect(plat.dsn)
        try:
            while not stop.is_set():
                await conn.execute("INSERT INTO audit_log (action, details) VALUES ('DURING_BACKUP', '{}')")
                await conn.execute("INSERT INTO bulk VALUES (-1, 'during')")
                written += 1
                await asyncio.sleep(0.005)
        finally:
            await conn.close()
        return written

    writer = asyncio.create_task(keep_writing())
    try:
        result = await plat.backup("db")
    finally:
        stop.set()
    assert await writer > 0
    report = await plat.restore_run("verify", result.id)
    assert isinstance(report, VerifyReport) and report.ok, report.problems
    assert all(item.ok for item in report.tables)


async def test_a_backup_is_invisible_until_its_manifest_is_written(plat: Platform) -> None:
    async with plat.services.platform_db.connection() as conn:
        await conn.execute(
            "CREATE TABLE bulk AS SELECT g AS id, md5(g::text) AS body FROM generate_series(1, 800000) g"
        )
    store = Path(plat.settings.backup_store)
    task = asyncio.create_task(plat.backup())
    seen_staging = False
    while not task.done():
        listing = await plat.restore_run("list")
        assert isinstance(listing, BackupList) and listing.backups == []
        if store.exists():
            names = [path.name for path in store.iterdir()]
            seen_staging |= any(name.startswith(".staging-") for name in names)
            assert not [name for name in names if not name.startswith(".")]
        await asyncio.sleep(0.05)
    result = await task
    assert seen_staging
    assert [path.name for path in store.iterdir()] == [result.id]


async def test_a_failed_backup_leaves_nothing_behind(plat: Platform) -> None:
    plat.services.settings = plat.settings.model_copy(
        update={"s3_endpoint_url": f"http://127.0.0.1:{free_port()}"}
    )
    plat.services.backups = None
    with pytest.raises(UsageError, match="the backup failed and nothing was kept"):
        await plat.backup()
    store = Path(plat.settings.backup_store)
    assert not store.exists() or list(store.iterdir()) == []
    # The database part alone still works against the same dead S3.
    result = await plat.backup("db")
    assert [path.name for path in store.iterdir()] == [result.id]


async def test_the_database_missing_fails_the_backup_cleanly(plat: Platform) -> None:
    gone = plat.dsn.rsplit("/", 1)[0] + "/chatops_test_restore_missing"
    plat.services.settings = plat.settings.model_copy(update={"platform_database_url": gone})
    plat.services.backups = None
    plat.services.platform_db.dsn = gone
    await plat.services.platform_db.aclose()
    with pytest.raises(UsageError, match="nothing was kept"):
        await plat.backup("db")
    store = Path(plat.settings.backup_store)
    assert not store.exists() or list(store.iterdir()) == []


# --- the S3 store ---------------------------------------------------------------------------------------


async def test_an_s3_backup_store_round_trip(project: dict[str, Any], tmp_path: Path) -> None:  # noqa: F811
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    location = f"s3://{BACKUP_BUCKET}/{prefix}"
    async with platform(project, tmp_path, backup_store=location) as plat:
        try:
            db_before = await db_fingerprint(plat.dsn)
            objects_before = await asyncio.to_thread(bucket_fingerprint, plat.settings, PLATFORM_BUCKET)
            taken = await plat.backup()
            listing = await plat.restore_run("list")
            assert isinstance(listing, BackupList) and listing.location == location + "/"
            assert [item.line() for item in listing.backups] == [
                f"{taken.id} | database+storage"
                f" | {format_bytes(taken.total_bytes, compact=True)} | manifest OK"
            ]
            report = await plat.restore_run("verify", taken.id)
            assert isinstance(report, VerifyReport) and report.ok, report.problems
            await change_everything(plat.settings, plat.dsn)
            result, _ = await plat.restore(taken.id)
            assert result.succeeded, (result.summary, result.state)
            assert {
                k: v for k, v in (await db_fingerprint(plat.dsn)).items() if "created_later" not in k
            } == db_before
            assert (
                await asyncio.to_thread(bucket_fingerprint, plat.settings, PLATFORM_BUCKET) == objects_before
            )
            # The emergency backup went to the S3 store too.
            assert len((await plat.restore_run("list")).backups) == 2
        finally:
            await asyncio.to_thread(empty_bucket, plat.settings, BACKUP_BUCKET, prefix + "/")


# --- retention -----------------------------------------------------------------------------------------


def _age(store: Path, backup_id: str, days: float) -> str:
    """Make a backup look `days` old: a new id and times, the manifest resealed."""
    created = datetime.now(UTC) - timedelta(days=days)
    new_id = new_backup_id(created)
    old = store / backup_id
    manifest = Manifest.model_validate_json((old / MANIFEST).read_bytes())
    aged = manifest.model_copy(update={"id": new_id, "created_at": created, "completed_at": created}).sealed()
    (old / MANIFEST).write_bytes(aged.to_bytes())
    old.rename(store / new_id)
    return new_id


async def test_prune_keeps_the_newest_verified_backup_and_goes_through_the_gate(plat: Platform) -> None:
    store = Path(plat.settings.backup_store)
    ids = {}
    for days in (45, 40, 35, 31, 2):
        taken = await plat.backup("db")
        ids[days] = _age(store, taken.id, days)
    verified = await plat.restore_run("verify", ids[40])
    assert isinstance(verified, VerifyReport) and verified.ok
    # An unfinished backup from two days ago is removed too; one from an hour ago may still be running.
    old_staging, new_staging = store / ".staging-x-1", store / ".staging-y-2"
    for path in (old_staging, new_staging):
        path.mkdir()
    two_days_ago = time.time() - 2 * 86400
    os.utime(old_staging, (two_days_ago, two_days_ago))

    dry = await plat.backup_prune("prune", "--keep-days", "30", "--dry-run")
    assert isinstance(dry, PruneResult)
    assert {item.id for item in dry.delete} == {ids[45], ids[35], ids[31]}
    assert any(ids[40] in line and "newest verified" in line for line in dry.kept)
    assert any(ids[2] in line and "newest backup" in line for line in dry.kept)
    assert len(list(store.iterdir())) == 7  # a dry run deletes nothing

    proposal = await plat.backup_prune("prune", "--keep-days", "30")
    assert isinstance(proposal, Proposal) and proposal.command == "backup"
    assert len(proposal.plan.target) == 4  # three backups and one unfinished staging directory
    result, _ = await plat.world.run(proposal, OPS1)
    assert result.succeeded, result.state
    assert sorted(path.name for path in store.iterdir()) == sorted([ids[40], ids[2], new_staging.name])

    # Nothing old enough left: no plan, just the answer.
    again = await plat.backup_prune("prune", "--keep-days", "30")
    assert isinstance(again, PruneResult) and not again.delete


async def test_prune_without_any_verified_backup_keeps_the_newest(plat: Platform) -> None:
    store = Path(plat.settings.backup_store)
    first = _age(store, (await plat.backup("db")).id, 50)
    second = _age(store, (await plat.backup("db")).id, 40)
    dry = await plat.backup_prune("prune", "--keep-days", "30", "--dry-run")
    assert isinstance(dry, PruneResult)
    assert [item.id for item in dry.delete] == [first]
    assert any(second in line for line in dry.kept)
    assert any("no backup has been verified" in line for line in dry.kept)


# --- the terminal and Slack --------------------------------------------------------------------------


def _cli(overrides: dict[str, Any], *argv: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("CHATOPS_")}
    for key, value in overrides.items():
        env[f"CHATOPS_{key.upper()}"] = str(value)
    chatops = Path(sys.executable).parent / "chatops"
    return subprocess.run(
        [str(chatops), *argv], capture_output=True, text=True, timeout=180, env=env, cwd="/tmp", check=False
    )


async def test_the_terminal_backs_up_with_progress_and_lists_in_the_runbooks_format(plat: Platform) -> None:
    overrides = {
        key: plat.overrides[key]
        for key in ("platform_database_url", "s3_bucket", "backup_store", "compose_project")
    }
    overrides["state_database_url"] = plat.settings.state_database_url
    made = await asyncio.to_thread(_cli, overrides, "backup", "db")
    assert made.returncode == 0, made.stderr
    assert "[done] dump database" in made.stderr  # progress on stderr (plain lines without a terminal)
    assert re.search(r"Backup \d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2} \(database\)", made.stdout)
    listing = await asyncio.to_thread(_cli, overrides, "restore", "list")
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.strip().splitlines()
    assert len(lines) == 1 and RUNBOOK_LINE.match(lines[0]), lines
    as_json = await asyncio.to_thread(_cli, overrides, "restore", "list", "--json")
    assert json.loads(as_json.stdout)["backups"][0]["manifest_ok"] is True
    tricked = await asyncio.to_thread(_cli, overrides, "restore", "../../etc/passwd")
    assert tricked.returncode == 2 and "is not a backup id" in tricked.stderr


async def test_slack_backup_list_and_refusals(plat: Platform, fake_slack: FakeSlack) -> None:
    overrides = {
        key: plat.overrides[key]
        for key in (
            "platform_database_url",
            "s3_bucket",
            "backup_store",
            "compose_project",
            "api_url",
            "sandbox_dir",
        )
    }
    async with running_bot(fake_slack, **overrides) as (url, _):
        assert (await post_command(url, "/backup", "db")).status_code == 200
        done = await fake_slack.wait_for_call_async("chat.postMessage", timeout=60)
        assert "database" in done.params["text"] and "done" in done.params["text"]
        fake_slack.calls.clear()
        assert (await post_command(url, "/restore", "list")).status_code == 200
        listed = await fake_slack.wait_for_call_async("chat.postMessage", timeout=30)
        lines = [line.strip("`").split("`")[0] for line in block_text(listed.params["blocks"]).splitlines()]
        assert any(RUNBOOK_LINE.match(line) for line in lines), lines
        fake_slack.calls.clear()
        assert (await post_command(url, "/restore", "verify ../../etc")).status_code == 200
        refused = await fake_slack.wait_for_call_async("chat.postEphemeral", timeout=30)
        assert "is not a backup id" in refused.params["text"]
        fake_slack.calls.clear()
        # A restore needs an operator: nobody is one in this bot.
        backup_id = lines[0].split(" | ")[0] if " | " in lines[0] else "2025-11-20_02-00-00"
        assert (await post_command(url, "/restore", backup_id)).status_code == 200
        denied = await fake_slack.wait_for_call_async("chat.postEphemeral", timeout=30)
        assert "not allowed to run /restore" in denied.params["text"]


# --- pieces -------------------------------------------------------------------------------------------


def test_manifests_refuse_file_names_outside_the_backup() -> None:
    for name in ("../../etc/passwd", "/etc/passwd", "objects/../../x", "objects/ABC", "manifest.json"):
        with pytest.raises(ValueError):
            FileEntry(name=name, size=1, sha256="0" * 64)
    FileEntry(name="objects/" + "a" * 64, size=1, sha256="0" * 64)


def test_sizes_read_like_the_runbook() -> None:
    assert [format_bytes(n, compact=True) for n in (0, 999, 2048, 1.2 * 1024**3, 340 * 1024**2)] == [
        "0B",
        "999B",
        "2.0KB",
        "1.2GB",
        "340MB",
    ]
    assert progress_detail(420, 1000, "objects") == "42% · 420/1,000 objects"


async def test_a_folded_meter_reports_one_outer_step_with_the_parts_in_its_detail() -> None:
    seen: list[tuple[str, str, str]] = []

    class Recorder:
        async def step(self, name: str, status: Any, detail: str = "") -> None:
            seen.append((name, status, detail))

    meter = Meter(Recorder(), fold_into="emergency backup", interval=0)
    await meter.start("dump database")
    await meter.advance("dump database", 50, 100, "rows")
    await meter.start("copy objects")
    await meter.finish("dump database", "done")
    assert {name for name, _, _ in seen} == {"emergency backup"}
    assert all(status == "running" for _, status, _ in seen)
    assert seen[1][2].startswith("50% · dump database: 50/100 rows")
    assert "copy objects" in seen[-1][2]


async def test_step_bars_print_plain_lines_without_a_terminal() -> None:
    console = Console(file=open(os.devnull, "w"), force_terminal=False, record=True)  # noqa: SIM115
    with StepBars(console) as bars:
        await bars.publish([Step(name="restore objects", status="running", detail="42% · 420/1,000 objects")])
        await bars.publish([Step(name="restore objects", status="running", detail="50% · 500/1,000 objects")])
        await bars.publish([Step(name="restore objects", status="done", detail="1,000 written")])
    assert console.export_text().splitlines() == [
        "  [running] restore objects 42% · 420/1,000 objects",
        "  [done] restore objects 1,000 written",
    ]


def test_the_password_is_taken_out_of_the_url() -> None:
    url, password = split_password("postgresql://app:s%40cret@db.example:5433/platform?sslmode=require")
    assert (url, password) == ("postgresql://app@db.example:5433/platform?sslmode=require", "s@cret")
    url, password = split_password("postgresql://app@[::1]/platform?password=other&application_name=x")
    assert (url, password) == ("postgresql://app@[::1]/platform?application_name=x", "other")
    assert split_password("postgresql://postgres@127.0.0.1/x") == ("postgresql://postgres@127.0.0.1/x", None)


async def test_pg_dump_gets_the_password_in_its_environment_never_in_its_arguments(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seen: dict[str, Any] = {}

    async def capture(*argv: str, **kwargs: Any) -> Any:
        seen["argv"], seen["env"] = argv, kwargs["env"]
        raise FileNotFoundError(argv[0])

    monkeypatch.setattr(pg_tools.asyncio, "create_subprocess_exec", capture)
    tools = pg_tools.PgTools("postgresql://app:hunter2@127.0.0.1:5432/platform", 2.0)
    with pytest.raises(DependencyError):
        await tools.dump(tmp_path / "x.dump", timeout=5)
    assert not any("hunter2" in part for part in seen["argv"])
    assert seen["env"]["PGPASSWORD"] == "hunter2"
    with pytest.raises(DependencyError):
        await tools.restore(tmp_path / "x.dump", timeout=5)
    assert not any("hunter2" in part for part in seen["argv"])
    assert seen["argv"][:2] == ("pg_restore", "--single-transaction") and "--clean" in seen["argv"]
