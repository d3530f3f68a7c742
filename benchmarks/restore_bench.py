"""Benchmark /backup and /restore against plain pg_dump/pg_restore and a plain boto3 object copy.

Run: python -m benchmarks.restore_bench [--db-mb 1024] [--objects 1000] [--object-kb 256]
Builds its own database (chatops_bench_restore), bucket (restore-bench-platform), backup store
(/tmp/chatops-restore-bench) and backend container (project 3dpot-restorebench); the shared
sandbox's database, bucket and backend are never touched. Prints figures (and SUMMARY lines for
`python -m benchmarks`); asserts nothing.

What is compared, on the same data:
- backup: `pg_dump -Fc` to a file plus a boto3 copy of every object to files (the same number of
  threads), one after the other as a script would, against `/backup` (the same dump inside an
  exported snapshot with exact row counts, objects hashed on the way, files synced, a manifest).
- restore: `pg_restore --clean --if-exists --single-transaction` plus a boto3 upload of every
  object, against the restore's own steps: checksums of every file first, the same pg_restore,
  the objects, then the verification (row counts and the bucket's listing).
- verification: `/restore verify` (checksums, a test restore into a scratch database, row counts).
- the whole `/restore` procedure with its emergency backup and the backend's stop, start and
  health check, for scale.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import asyncpg

from bot.config import Settings
from bot.gate.progress import StepRecorder
from bot.runners.backup import backup_sources
from bot.runners.restore import restore_deps
from bot.services import Services
from commands import backup, restore
from commands.backup_store import BackupType
from commands.destructive import Step

DATABASE = "chatops_bench_restore"
BUCKET = "restore-bench-platform"
WORK = Path(tempfile.gettempdir()) / "chatops-restore-bench"
PROJECT = "3dpot-restorebench"
ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
DSN = f"postgresql://postgres@127.0.0.1:5432/{DATABASE}"

EVENTS_DDL = """
CREATE TABLE events (
    id bigserial PRIMARY KEY, at timestamptz NOT NULL, user_id uuid, action text NOT NULL,
    ip inet, details jsonb NOT NULL);
CREATE INDEX events_at_idx ON events (at);
CREATE TABLE projects (id bigserial PRIMARY KEY, name text NOT NULL, thumbnail bytea, settings jsonb);
"""
EVENTS_BATCH = """
INSERT INTO events (at, user_id, action, ip, details)
SELECT now() - make_interval(secs => g), md5(g::text)::uuid,
       (ARRAY['LOGIN','LOGOUT','FILE_UPLOAD','PROJECT_UPDATE','MFA_CHALLENGE_SUCCESS'])[1 + g % 5],
       ('10.' || (g % 250) || '.' || (g / 250 % 250) || '.' || (g % 199))::inet,
       jsonb_build_object('request_id', md5((g * 7)::text), 'agent', 'Mozilla/5.0 build ' || (g % 977),
                          'success', g % 11 <> 0, 'note', md5((g * 3)::text) || md5((g * 5)::text))
FROM generate_series($1::bigint, $2::bigint) g
"""
PROJECTS = """
INSERT INTO projects (name, thumbnail, settings)
SELECT 'modelo-' || g, decode(repeat(md5(g::text), 16), 'hex'), jsonb_build_object('g', g)
FROM generate_series(1, 20000) g
"""


def free_port() -> int:
    """Return a loopback port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def settings_for(args: argparse.Namespace, api_port: int) -> Settings:
    """Settings of the benchmark's own database, bucket, store and backend."""
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        platform_database_url=DSN,
        s3_bucket=BUCKET,
        backup_store=str(WORK / "store"),
        backup_concurrency=args.concurrency,
        compose_project=PROJECT,
        api_url=f"http://127.0.0.1:{api_port}",
        sandbox_dir=WORK / "sandbox",
        restore_stop_timeout_seconds=10,
    )


# --- the data -----------------------------------------------------------------------------------------


async def build_database(megabytes: int) -> tuple[int, int]:
    """Create the benchmark database and fill it to about `megabytes`; return (bytes, rows)."""
    admin = await asyncpg.connect(ADMIN_DSN)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{DATABASE}"')
    finally:
        await admin.close()
    conn = await asyncpg.connect(DSN, command_timeout=3600)
    try:
        await conn.execute(EVENTS_DDL)
        await conn.execute(PROJECTS)
        start, batch = 1, 250_000
        while await conn.fetchval("SELECT pg_database_size(current_database())") < megabytes * 1024 * 1024:
            await conn.execute(EVENTS_BATCH, start, start + batch - 1)
            start += batch
        await conn.execute("VACUUM ANALYZE")
        size = int(await conn.fetchval("SELECT pg_database_size(current_database())"))
        rows = int(await conn.fetchval("SELECT count(*) FROM events")) + 20000
    finally:
        await conn.close()
    return size, rows


def s3(settings: Settings, pool: int) -> Any:
    """Return a plain boto3 client, as a script would make it."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=settings.s3_endpoint_url,
        aws_access_key_id=settings.aws_access_key_id,
        aws_secret_access_key=settings.aws_secret_access_key.get_secret_value(),
        region_name=settings.s3_region,
        config=Config(s3={"addressing_style": "path"}, max_pool_connections=pool),
    )


def fill_bucket(settings: Settings, count: int, kilobytes: int, threads: int) -> int:
    """Make the bucket hold `count` objects of about `kilobytes` each (incompressible bodies)."""
    client = s3(settings, threads)
    with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
        client.create_bucket(Bucket=BUCKET)
    empty(settings, threads)

    def put(index: int) -> int:
        size = max(1, int(kilobytes * 1024 * (0.5 + (index % 10) / 10)))
        client.put_object(Bucket=BUCKET, Key=f"uploads/{index:05d}/model.stl", Body=os.urandom(size))
        return size

    with ThreadPoolExecutor(threads) as pool:
        return sum(pool.map(put, range(count)))


def empty(settings: Settings, threads: int) -> None:
    """Delete every object of the bucket."""
    client = s3(settings, threads)
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=BUCKET, Delete={"Objects": keys, "Quiet": True})


# --- plain tools ---------------------------------------------------------------------------------------


def timed(function: Callable[[], Any]) -> float:
    """Return how long a call took, in seconds."""
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def plain_dump(path: Path) -> None:
    """pg_dump -Fc, as the runbook's script would run it."""
    subprocess.run(["pg_dump", "-Fc", "-f", str(path), f"--dbname={DSN}"], check=True, timeout=7200)


def plain_restore(path: Path) -> None:
    """pg_restore --clean --if-exists --single-transaction."""
    subprocess.run(
        ["pg_restore", "--clean", "--if-exists", "--single-transaction", f"--dbname={DSN}", str(path)],
        check=True,
        timeout=7200,
    )


def plain_copy_down(settings: Settings, target: Path, threads: int) -> None:
    """Copy every object to files with boto3 (as many threads as /backup), nothing more."""
    client = s3(settings, threads)
    target.mkdir(parents=True, exist_ok=True)
    keys = [
        item["Key"]
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
        for item in page.get("Contents", [])
    ]

    def get(index_key: tuple[int, str]) -> None:
        index, key = index_key
        # The leanest copy: one GET per object, streamed to a file (download_file adds a HEAD).
        body = client.get_object(Bucket=BUCKET, Key=key)["Body"]
        with (target / f"{index:05d}").open("wb") as handle:
            for chunk in body.iter_chunks(1024 * 1024):
                handle.write(chunk)

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(get, enumerate(keys)))
    (target / "keys").write_text("\n".join(keys))


def plain_copy_up(settings: Settings, source: Path, threads: int) -> None:
    """Upload every object back with boto3."""
    client = s3(settings, threads)
    keys = (source / "keys").read_text().splitlines()

    def put(index_key: tuple[int, str]) -> None:
        index, key = index_key
        client.put_object(Bucket=BUCKET, Key=key, Body=(source / f"{index:05d}").read_bytes())

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(put, enumerate(keys)))


# --- the bot --------------------------------------------------------------------------------------------


class Quiet:
    """A progress sink that keeps the steps (for their durations) and shows nothing."""

    def __init__(self, before_restore: Callable[[], Awaitable[None]] | None = None) -> None:
        self.recorder = StepRecorder(self._publish)
        self.before_restore = before_restore

    async def _publish(self, steps: list[Step]) -> None:
        return None

    async def step(self, name: str, status: Any, detail: str = "") -> None:
        started = any(item.name == name for item in self.recorder.steps)
        if name == "restore database" and not started and self.before_restore is not None:
            await self.before_restore()  # before the step's clock starts, as for the plain restore
        await self.recorder.step(name, status, detail)

    def seconds(self, name: str) -> float:
        step = next(item for item in self.recorder.steps if item.name == name)
        return (step.duration_ms or 0.0) / 1000


async def our_backup(services: Services, kind: BackupType = "full") -> tuple[float, backup.BackupResult]:
    """Take a backup as /backup does; return the wall time and the result."""
    sources = backup_sources(services)
    started = time.perf_counter()
    result = await backup.run_backup(sources, backup.BackupArgs(type=kind), "benchmark", None)
    return time.perf_counter() - started, result


async def checkpoint() -> None:
    """Flush dirty pages first, so that no measurement pays for the one before it."""
    conn = await asyncpg.connect(ADMIN_DSN)
    try:
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()


async def our_restore(services: Services, backup_id: str) -> tuple[float, Quiet, restore.RestoreArgs]:
    """Run the whole restore procedure (without the gate); return its wall time and step timings."""
    deps = restore_deps(services)
    args = restore.RestoreArgs(id=backup_id)
    proposal = await restore.plan_restore(deps, args, "benchmark")
    quiet = Quiet(checkpoint)
    started = time.perf_counter()
    result = await restore.execute_restore(deps, proposal.plan, quiet)
    seconds = time.perf_counter() - started
    if not result.succeeded:
        raise RuntimeError(f"restore failed: {result.summary}; {result.state}")
    return seconds, quiet, args


async def run(args: argparse.Namespace) -> None:
    from sandbox.backend_container import start_backend, stop_backend
    from sandbox.images import ensure_images

    settings = settings_for(args, free_port())
    shutil.rmtree(WORK, ignore_errors=True)
    (WORK / "plain").mkdir(parents=True)
    print(f"building: a {args.db_mb} MB database and {args.objects} objects of ~{args.object_kb} KB ...")
    started = time.perf_counter()
    (db_bytes, rows), object_bytes = await asyncio.gather(
        build_database(args.db_mb),
        asyncio.to_thread(fill_bucket, settings, args.objects, args.object_kb, args.concurrency),
    )
    print(
        f"  database {db_bytes / 1e6:.0f} MB ({rows:,} rows), objects {object_bytes / 1e6:.0f} MB,"
        f" in {time.perf_counter() - started:.0f} s"
    )
    await asyncio.to_thread(ensure_images, settings)
    await asyncio.to_thread(start_backend, settings)
    services = Services.build(settings)
    threads = args.concurrency
    figures: dict[str, list[float]] = {}
    try:
        # Warm the caches the same for everyone: read every table once.
        async with services.platform_db.connection() as conn:
            await conn.execute("SELECT count(*) FROM events; SELECT count(*) FROM projects")
        round_number = attempts = 0
        while round_number < args.rounds:
            try:
                measured = await one_round(round_number, services, settings, threads)
            except Exception as error:
                # Other people's tests restart PostgreSQL and S3 on this machine: measure that round again.
                attempts += 1
                print(f"  round {round_number + 1} interrupted ({type(error).__name__}: {str(error)[:120]})")
                if attempts > 3:
                    raise
                await asyncio.sleep(10)
                continue
            for name, value in measured.items():
                figures.setdefault(name, []).append(value)
            print(f"  round {round_number + 1} done", flush=True)
            round_number += 1
    finally:
        await services.aclose()
        await asyncio.to_thread(stop_backend, settings)
        if not args.keep:
            await clean_up(settings, args.concurrency)
    report_figures(figures, db_bytes, object_bytes, args)


async def one_round(
    round_number: int, services: Services, settings: Settings, threads: int
) -> dict[str, float]:
    """Measure everything once; return the round's figures."""
    figures: dict[str, float] = {}

    def add(name: str, value: float) -> None:
        figures[name] = value

    from sandbox.backend_container import start_backend

    await asyncio.to_thread(start_backend, settings)  # an interrupted round may have left it stopped
    plain = WORK / "plain" / f"round{round_number}"
    shutil.rmtree(plain, ignore_errors=True)
    plain.mkdir()
    await checkpoint()
    add(
        "plain pg_dump",
        await asyncio.to_thread(timed, functools.partial(plain_dump, plain / "db.dump")),
    )
    add(
        "plain copy down",
        await asyncio.to_thread(timed, functools.partial(plain_copy_down, settings, plain / "o", threads)),
    )
    # Each part alone (its true overhead), then the two side by side as /backup runs them.
    await checkpoint()
    add("our db backup alone", (await our_backup(services, "db"))[0])
    add("our storage backup alone", (await our_backup(services, "storage"))[0])
    await checkpoint()
    seconds, taken = await our_backup(services)
    add("our backup", seconds)
    add("our dump part", taken.database_seconds)
    add("our objects part", taken.objects_seconds)

    # Restores: the bucket emptied first each time, so that every object is written again.
    await asyncio.to_thread(empty, settings, threads)
    await checkpoint()
    add(
        "plain pg_restore",
        await asyncio.to_thread(timed, functools.partial(plain_restore, plain / "db.dump")),
    )
    add(
        "plain copy up",
        await asyncio.to_thread(timed, functools.partial(plain_copy_up, settings, plain / "o", threads)),
    )
    await asyncio.to_thread(empty, settings, threads)
    seconds, quiet, _ = await our_restore(services, taken.id)
    add("our restore procedure", seconds)
    for name in ("check backup", "stop backend", "emergency backup", "restore database",
                 "restore objects", "verify", "start backend", "health check"):  # fmt: skip
        add(f"step {name}", quiet.seconds(name))

    await checkpoint()
    started = time.perf_counter()
    report = await restore.verify_backup(restore_deps(services), taken.id)
    add("our verify command", time.perf_counter() - started)
    add("verify checksums", report.checksum_seconds)
    add("verify test restore", report.restore_seconds)
    if not report.ok:
        print(f"  (verify reported problems: {report.problems})")
    shutil.rmtree(plain, ignore_errors=True)
    shutil.rmtree(WORK / "store", ignore_errors=True)  # four backups a round: keep the disk free
    return figures


async def clean_up(settings: Settings, threads: int) -> None:
    """Drop the benchmark's database, bucket and files: a gigabyte is not left on a shared machine."""
    admin = await asyncpg.connect(ADMIN_DSN)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
    finally:
        await admin.close()
    await asyncio.to_thread(empty, settings, threads)
    await asyncio.to_thread(s3(settings, threads).delete_bucket, Bucket=BUCKET)
    shutil.rmtree(WORK, ignore_errors=True)


def report_figures(
    figures: dict[str, list[float]], db_bytes: int, object_bytes: int, args: argparse.Namespace
) -> None:
    """Print the medians and the ratios the issue asks for."""
    m = {name: statistics.median(values) for name, values in figures.items()}
    plain_backup = m["plain pg_dump"] + m["plain copy down"]
    plain_restore_s = m["plain pg_restore"] + m["plain copy up"]
    restore_core = (
        m["step check backup"] + m["step restore database"] + m["step restore objects"] + m["step verify"]
    )
    print(
        f"\n/backup and /restore, {args.rounds} round(s), medians; database {db_bytes / 1e6:.0f} MB,"
        f" {args.objects} objects ({object_bytes / 1e6:.0f} MB), {args.concurrency} threads for objects"
    )
    print("backup")
    print(f"  plain pg_dump -Fc            {m['plain pg_dump']:8.1f} s")
    print(f"  plain boto3 copy down        {m['plain copy down']:8.1f} s")
    print(f"  plain, one after the other   {plain_backup:8.1f} s")
    print(f"  /backup                      {m['our backup']:8.1f} s  (dump part {m['our dump part']:.1f} s,"
          f" objects part {m['our objects part']:.1f} s, side by side)")  # fmt: skip
    print(f"  ratio /backup : plain        {m['our backup'] / plain_backup:8.2f}")
    alone = m["our db backup alone"] + m["our storage backup alone"]
    print(f"  /backup db alone             {m['our db backup alone']:8.1f} s"
          f"  ratio : pg_dump {m['our db backup alone'] / m['plain pg_dump']:.2f}")  # fmt: skip
    print(f"  /backup storage alone        {m['our storage backup alone']:8.1f} s"
          f"  ratio : boto3 copy {m['our storage backup alone'] / m['plain copy down']:.2f}")  # fmt: skip
    print(f"  the two alone, one after the other {alone:.1f} s: overhead {alone / plain_backup - 1:+.1%}")
    print("restore")
    print(f"  plain pg_restore             {m['plain pg_restore']:8.1f} s")
    print(f"  plain boto3 copy up          {m['plain copy up']:8.1f} s")
    print(f"  plain, one after the other   {plain_restore_s:8.1f} s")
    for name in ("check backup", "restore database", "restore objects", "verify"):
        print(f"  step {name:<24}{m['step ' + name]:8.1f} s")
    print(f"  restore incl. verification   {restore_core:8.1f} s")
    print(f"  ratio : plain restore        {restore_core / plain_restore_s:8.2f}")
    verification = m["step check backup"] + m["step verify"]
    share = verification / plain_restore_s
    print(f"  cost of verification         {verification:8.1f} s ({share:.0%} of a plain restore)")
    print("whole /restore procedure (adds what the runbook also does around the restore)")
    for name in ("stop backend", "emergency backup", "start backend", "health check"):
        print(f"  step {name:<24}{m['step ' + name]:8.1f} s")
    print(f"  procedure                    {m['our restore procedure']:8.1f} s")
    print("/restore verify (checksums, test restore into a scratch database, row counts)")
    print(f"  checksums                    {m['verify checksums']:8.1f} s")
    print(f"  test restore                 {m['verify test restore']:8.1f} s")
    print(f"  total                        {m['our verify command']:8.1f} s"
          f" ({m['our verify command'] / plain_restore_s:.2f} x a plain restore)")  # fmt: skip
    print(f"SUMMARY\t/backup : plain pg_dump + boto3 copy\t{m['our backup'] / plain_backup:.2f}")
    print(f"SUMMARY\t/backup parts one after the other : plain\t{alone / plain_backup:.2f}")
    ratio = restore_core / plain_restore_s
    print(f"SUMMARY\t/restore incl. verification : plain pg_restore + boto3 copy\t{ratio:.2f}")


def main() -> None:
    """Parse the size flags and run."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--db-mb", type=int, default=1024, help="database size to build, in MB")
    parser.add_argument("--objects", type=int, default=1000)
    parser.add_argument("--object-kb", type=int, default=256, help="average object size, in KB")
    parser.add_argument("--concurrency", type=int, default=8, help="threads for objects, both sides")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the database, bucket and files")
    parser.add_argument("--quick", action="store_true", help="a 100 MB database and 200 objects")
    args = parser.parse_args()
    if args.quick:
        args.db_mb, args.objects = 100, 200
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
