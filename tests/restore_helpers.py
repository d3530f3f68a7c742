"""What the backup and restore tests share: their own database, buckets, backend and a cuttable S3 proxy.

Nothing here touches the shared sandbox's database (`chatops_platform`), bucket (`3dpot-platform`)
or backend container: the tests run beside other people's, on the same machine, at the same time.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import docker.errors
import pytest

from bot.config import Settings
from bot.runners import backup as backup_runner
from bot.runners import restore as restore_runner
from bot.services import Services
from commands import backup, restore
from commands.backup_store import Manifest
from commands.destructive import Execution, Proposal, Step
from sandbox.backend_container import remove_project, start_backend
from sandbox.images import ensure_images
from sandbox.manager import SandboxStatus
from sandbox.platform_db import seed_audit_log
from sandbox.podman import docker_client
from sandbox.seaweedfs import s3_client
from tests.conftest import make_settings, recreate_database
from tests.gate_helpers import GateWorld, gate_world
from tests.netutil import free_port

PLATFORM_DB = "chatops_test_restore"
STATE_DB = "chatops_test_restore_state"
PLATFORM_BUCKET = "restore-test-platform"
BACKUP_BUCKET = "restore-test-backups"
PROJECT = "3dpot-restoretest"
IMAGE = "3dpot-backend-restoretest"
SANDBOX_DIR = Path("/tmp/chatops-restoretest")
OPS1, OPS2 = "U0OPS0001", "U0OPS0002"
SEED_ROWS = 2000

# Objects of every shape the platform has, plus keys that would be path tricks on a disk.
SEED_OBJECTS: list[tuple[str, bytes, str, dict[str, str]]] = [
    *(
        (
            f"projects/p{i:03d}/project.json",
            json.dumps({"id": i, "name": f"modelo-{i}"}).encode(),
            "application/json",
            {},
        )
        for i in range(20)
    ),
    *(
        (
            f"uploads/u{i:03d}/peca.stl",
            hashlib.sha256(str(i).encode()).digest() * (50 + i),
            "model/stl",
            {"owner": f"user{i % 3}"},
        )
        for i in range(16)
    ),
    ("uploads/big/scan.bin", os.urandom(3 * 1024 * 1024 + 17), "application/octet-stream", {}),
    # SeaweedFS refuses `..` segments in keys; these still spell path tricks on a disk.
    ("..%2F..%2Fescape.txt", b"a key, not a path\n", "text/plain", {}),
    ("..hidden/x", b"dots\n", "text/plain", {}),
    ("dir/with space/ünïcode.txt", b"same body as another object\n", "text/plain", {}),
    ("copies/same.txt", b"same body as another object\n", "text/plain", {}),
    ("empty.txt", b"", "text/plain", {}),
]


# --- the project's own backend ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def project(sandbox: SandboxStatus) -> Iterator[dict[str, Any]]:
    """Settings overrides for our own database, buckets and backend container (removed afterwards)."""
    overrides: dict[str, Any] = {
        "compose_project": PROJECT,
        "backend_image": IMAGE,
        "api_url": f"http://127.0.0.1:{free_port()}",
        "sandbox_dir": SANDBOX_DIR,  # its own log directory, not the shared one
        "platform_database_url": f"postgresql://postgres@127.0.0.1:5432/{PLATFORM_DB}",
        "s3_bucket": PLATFORM_BUCKET,
        "backup_concurrency": 4,
        "restore_stop_timeout_seconds": 10,
        "restore_health_timeout_seconds": 30,
        "restore_lock_timeout_seconds": 10,
    }
    settings = make_settings(**overrides)
    assert settings.compose_project != "3dpot" and settings.s3_bucket != "3dpot-platform"
    remove_project(settings, PROJECT, timeout=30)
    ensure_images(settings)
    start_backend(settings)
    yield overrides
    remove_project(settings, PROJECT, timeout=30)
    client = docker_client(settings, timeout=60)
    try:
        for tag in ("v2.0.5", "v2.0.6"):
            with contextlib.suppress(docker.errors.APIError):
                client.images.remove(f"{IMAGE}:{tag}")
    finally:
        client.close()


def backend_state(overrides: dict[str, Any]) -> str:
    """Return the state of our backend container."""
    settings = make_settings(**overrides)
    client = docker_client(settings, timeout=30)
    try:
        return str(client.containers.get(f"{PROJECT}-backend-1").status)
    finally:
        client.close()


def ensure_backend_running(overrides: dict[str, Any]) -> None:
    """Start our backend again if a test left it stopped."""
    start_backend(make_settings(**overrides))


# --- the platform's data: seed and fingerprint -------------------------------------------------------


async def seed_database(dsn: str, rows: int = SEED_ROWS) -> None:
    """Fill the platform database: the seeded audit_log and a table of awkward types."""
    await seed_audit_log(dsn, rows=rows)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            """CREATE TABLE projects (
                   id bigserial PRIMARY KEY, name text NOT NULL, thumbnail bytea,
                   settings jsonb, tags text[], created_at timestamptz DEFAULT now(), price numeric(12,4));
               INSERT INTO projects (name, thumbnail, settings, tags, price)
               SELECT 'modelo-' || g, decode(md5(g::text), 'hex'), jsonb_build_object('g', g, 'é', 'ü'),
                      ARRAY['a', 'b''c', NULL], g * 1.2345
               FROM generate_series(1, 500) g;
               CREATE INDEX projects_name_idx ON projects (name);"""
        )
    finally:
        await conn.close()


async def db_fingerprint(dsn: str) -> dict[str, tuple[int, str]]:
    """Return every table's row count and a hash of all its rows in key order (byte-identical check)."""
    conn = await asyncpg.connect(dsn)
    try:
        tables = [
            row["name"]
            for row in await conn.fetch(
                "SELECT format('%I.%I', schemaname, relname) AS name FROM pg_stat_user_tables ORDER BY 1"
            )
        ]
        found = {}
        for name in tables:
            row = await conn.fetchrow(
                f"SELECT count(*) AS n, md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), '')) AS h"
                f" FROM {name} t"
            )
            found[name] = (int(row["n"]), str(row["h"]))
        for sequence in await conn.fetch(
            "SELECT format('%I.%I', schemaname, sequencename) AS name FROM pg_sequences"
        ):
            state = await conn.fetchrow(f"SELECT last_value, is_called FROM {sequence['name']}")
            found[f"sequence {sequence['name']}"] = (int(state["last_value"]), str(state["is_called"]))
        return found
    finally:
        await conn.close()


def reset_bucket(
    settings: Settings, bucket: str, objects: list[tuple[str, bytes, str, dict[str, str]]]
) -> None:
    """Make the bucket hold exactly these objects."""
    client = s3_client(settings)
    with contextlib.suppress(
        client.exceptions.BucketAlreadyOwnedByYou, client.exceptions.BucketAlreadyExists
    ):
        client.create_bucket(Bucket=bucket)
    empty_bucket(settings, bucket)
    for key, body, content_type, metadata in objects:
        client.put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type, Metadata=metadata)


def empty_bucket(settings: Settings, bucket: str, prefix: str = "") -> None:
    """Delete every object of a bucket (under a prefix)."""
    client = s3_client(settings)
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})


def bucket_fingerprint(settings: Settings, bucket: str) -> dict[str, tuple[str, str, dict[str, str]]]:
    """Return key -> (SHA-256 of the body, content type, metadata) for every object."""
    client = s3_client(settings)
    found = {}
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            answer = client.get_object(Bucket=bucket, Key=item["Key"])
            body = answer["Body"].read()
            found[item["Key"]] = (
                hashlib.sha256(body).hexdigest(),
                str(answer.get("ContentType")),
                dict(answer.get("Metadata") or {}),
            )
    return found


async def change_everything(settings: Settings, dsn: str) -> None:
    """Write to the platform after a backup: rows in, rows out, rows changed; objects new, changed, gone."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            """INSERT INTO audit_log (action, username, details)
               VALUES ('AFTER_BACKUP', 'late.writer', '{"marker": "written after the backup"}');
               DELETE FROM audit_log WHERE id % 7 = 0;
               UPDATE projects SET name = name || '-changed' WHERE id <= 50;
               CREATE TABLE IF NOT EXISTS created_later (id int);"""
        )
    finally:
        await conn.close()
    client = s3_client(settings)
    client.put_object(Bucket=settings.s3_bucket, Key="uploads/late/after-backup.stl", Body=b"solid late\n")
    client.put_object(Bucket=settings.s3_bucket, Key="projects/p000/project.json", Body=b'{"changed": true}')
    client.delete_object(Bucket=settings.s3_bucket, Key="uploads/u000/peca.stl")


# --- driving commands ---------------------------------------------------------------------------------


@dataclass
class Platform:
    """A test's world: the gate, the settings, the platform's DSN."""

    world: GateWorld
    overrides: dict[str, Any]

    @property
    def services(self) -> Services:
        return self.world.runtime.services

    @property
    def settings(self) -> Settings:
        return self.services.settings

    @property
    def dsn(self) -> str:
        return self.settings.platform_database_url

    def deps(self) -> restore.RestoreDeps:
        return restore_runner.restore_deps(self.services)

    async def backup(self, *tokens: str) -> backup.BackupResult:
        result = await backup_runner.run(self.services, list(tokens), self.world.invocation(OPS1))
        assert isinstance(result, backup.BackupResult), result
        return result

    async def backup_prune(self, *tokens: str) -> Any:
        return await backup_runner.run(self.services, list(tokens), self.world.invocation(OPS1))

    async def restore_run(self, *tokens: str, user: str = OPS1) -> Any:
        return await restore_runner.run(self.services, list(tokens), self.world.invocation(user))

    async def propose_restore(self, *tokens: str) -> Proposal:
        result = await self.restore_run(*tokens)
        assert isinstance(result, Proposal), result
        return result

    async def restore(self, *tokens: str, on_steps: Any = None) -> tuple[Execution, list[list[Step]]]:
        """Propose a restore and take it through the gate: RESTORE, OPS1's code, then OPS2's."""
        proposal = await self.propose_restore(*tokens)
        if on_steps is None:
            return await self.world.run(proposal, OPS1, typed_word="RESTORE", second=OPS2)
        return await run_with_hook(self.world, proposal, on_steps)

    async def manifest(self, backup_id: str) -> Manifest:
        _, manifest = await backup.inspect_backup(self.deps().sources.store, backup_id)
        assert manifest is not None
        return manifest


async def run_with_hook(
    world: GateWorld, proposal: Proposal, hook: Any
) -> tuple[Execution, list[list[Step]]]:
    """Like GateWorld.run for a two-person restore, calling `hook(steps)` at every published change."""
    approval = await world.propose(proposal, OPS1)
    first = await world.confirm(approval, OPS1, "RESTORE")
    assert first.kind == "awaiting_second", first
    second = await world.confirm(first.approval, OPS2)
    assert second.kind == "approved", second
    published: list[list[Step]] = []

    async def publish(steps: list[Step]) -> None:
        published.append(steps)
        await hook(steps)

    result = await world.runtime.gate.execute(second.approval, publish)
    return result, published


@contextlib.asynccontextmanager
async def platform(project: dict[str, Any], tmp_path: Path, **extra: Any) -> AsyncIterator[Platform]:
    """A freshly seeded database and bucket, a local backup store under tmp_path, and the gate."""
    overrides = {**project, "backup_store": str(tmp_path / "backups"), **extra}
    dsn = await recreate_database(PLATFORM_DB)
    assert dsn == overrides["platform_database_url"]
    await seed_database(dsn)
    settings = make_settings(**overrides)
    await asyncio.to_thread(reset_bucket, settings, PLATFORM_BUCKET, SEED_OBJECTS)
    ensure_backend_running(project)
    world = await gate_world(STATE_DB, **overrides)
    await world.enroll(OPS1)
    await world.enroll(OPS2)
    try:
        yield Platform(world, overrides)
    finally:
        await world.runtime.services.aclose()
        with contextlib.suppress(Exception):
            shutil.rmtree(tmp_path / "backups", ignore_errors=True)


def step_names(published: list[list[Step]]) -> list[tuple[str, str]]:
    """Return the final (name, status) of every step, in order."""
    return [(step.name, step.status) for step in published[-1]] if published else []


# --- an S3 endpoint that can be cut ------------------------------------------------------------------


class S3Proxy:
    """A TCP proxy in front of the S3 server: cut it at once, or after N PUT requests, then resume.

    Only this test's client goes through it, so cutting it is an S3 outage nobody else sees.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.cut_after_puts: int | None = None
        self.puts = 0
        self.dead = False
        self._server: asyncio.Server | None = None
        self._transports: set[asyncio.BaseTransport] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.dead = False
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, reuse_address=True)

    async def cut(self) -> None:
        """Refuse new connections and drop every open one, as a crashed server would."""
        self.dead = True
        if self._server is not None:
            self._server.close()
            self._server = None
        for transport in list(self._transports):
            transport.abort()
        self._transports.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.dead:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._transports |= {writer.transport, up_writer.transport}

        async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter, requests: bool) -> None:
            try:
                while data := await source.read(65536):
                    if requests:
                        self.puts += data.count(b"PUT /")
                        if self.cut_after_puts is not None and self.puts > self.cut_after_puts:
                            await self.cut()
                            return
                    sink.write(data)
                    await sink.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                sink.transport.abort()

        await asyncio.gather(pump(reader, up_writer, True), pump(up_reader, writer, False))
