"""The audit trail survives someone who can write its database: keyed rows, anchors in S3, two roles.

Each attack is made as such a person would, with SQL on the real database (as its owner, who can
disable triggers), against a trail anchored in the sandbox's real S3 server.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from bot.cli.gate import run_gate_command
from bot.config import Settings
from bot.gate.audit_trail import GENESIS, AuditTrail, TrailEntry, _canonical
from bot.runtime import Runtime
from bot.state import migrate, runtime_role
from sandbox.manager import SandboxStatus
from tests.conftest import ADMIN_DSN, make_settings, recreate_database
from tests.gate_helpers import SECRET_KEY

pytestmark = pytest.mark.usefixtures("postgres")

DATABASE = "chatops_test_trail"
RUNTIME_ROLE = "chatops_test_runtime"


@pytest.fixture
async def runtime(sandbox: SandboxStatus) -> AsyncIterator[Runtime]:
    """The bot's runtime over a fresh database, its trail anchored in a fresh prefix of the S3 server."""
    dsn = await recreate_database(DATABASE)
    settings = make_settings(
        state_database_url=dsn,
        secret_key=SECRET_KEY,
        environment="test",
        trail_anchor_store=f"s3://chatops-trail-tests/{uuid.uuid4().hex}",
    )
    built = Runtime.build(settings)
    await migrate(built.services.state_db)
    try:
        yield built
    finally:
        await built.services.aclose()


async def five_entries(trail: AuditTrail) -> None:
    """Append five entries, as the gate would."""
    for index in range(5):
        await trail.append(
            TrailEntry(action="rollback", decision="executed", actor=f"U0OPS000{index}", outcome="succeeded")
        )


async def as_owner(runtime: Runtime, *statements: str) -> None:
    """Run SQL as the table's owner, triggers disabled: the most a database writer can do."""
    async with runtime.services.state_db.connection() as conn:
        await conn.execute("ALTER TABLE audit_trail DISABLE TRIGGER USER")
        try:
            for statement in statements:
                await conn.execute(statement)
        finally:
            await conn.execute("ALTER TABLE audit_trail ENABLE TRIGGER USER")


async def test_an_intact_trail_verifies_against_its_latest_anchor(runtime: Runtime) -> None:
    await five_entries(runtime.trail)
    report = await runtime.trail.verify()
    assert report.ok, report.problems
    assert (report.rows, report.anchored_rows) == (5, 5)


async def test_deleting_the_newest_entries_is_detected(runtime: Runtime) -> None:
    await five_entries(runtime.trail)
    # The chain that is left is perfectly valid: only the anchor outside the database knows better.
    await as_owner(runtime, "DELETE FROM audit_trail WHERE seq > 3")
    report = await runtime.trail.verify()
    assert not report.ok
    assert report.problems == [
        next(problem for problem in report.problems if "has 3 row(s) but was anchored at 5" in problem)
    ]
    assert "the newest 2 entrie(s) were deleted" in report.problems[0]


async def test_a_chain_rewritten_with_recomputed_hashes_is_detected(runtime: Runtime) -> None:
    await five_entries(runtime.trail)
    # Rewrite history from row 2 on: another actor, every hash recomputed as the code does, the
    # key signature copied over (it cannot be recomputed without the key).
    async with runtime.services.state_db.connection() as conn:
        rows = await conn.fetch("SELECT * FROM audit_trail ORDER BY id")
    statements = []
    prev = GENESIS
    for row in rows:
        actor = "U0SOMEONE1" if row["seq"] >= 2 else row["actor"]
        entry = TrailEntry(
            action=row["action"],
            decision=row["decision"],
            actor=actor,
            command=row["command"],
            arguments=row["arguments"],
            channel_id=row["channel_id"],
            request_id=row["request_id"],
            outcome=row["outcome"],
            details=json.loads(row["details"]),
        )
        digest = hashlib.sha256(_canonical(prev, row["at"], entry)).hexdigest()
        statements.append(
            f"UPDATE audit_trail SET actor = '{actor}', prev_hash = '{prev}', hash = '{digest}'"
            f" WHERE id = {row['id']}"
        )
        prev = digest
    await as_owner(runtime, *statements)
    report = await runtime.trail.verify()
    assert not report.ok
    forged = [problem for problem in report.problems if "not signed with the trail's key" in problem]
    assert [problem.split(":")[0] for problem in forged] == [f"row {row['id']}" for row in rows[1:]]
    assert any("is not the head anchored" in problem for problem in report.problems)
    # The chain itself looks intact: only the key and the anchor tell.
    assert not any("does not follow" in problem or "does not match" in problem for problem in report.problems)


async def test_rows_stripped_of_their_signature_are_detected(runtime: Runtime) -> None:
    await five_entries(runtime.trail)
    await as_owner(runtime, "UPDATE audit_trail SET mac = NULL WHERE seq = 4")
    report = await runtime.trail.verify()
    assert not report.ok
    assert any("1 row(s) carry no key signature (first: row" in problem for problem in report.problems)


async def test_a_forged_anchor_is_not_believed(runtime: Runtime) -> None:
    await five_entries(runtime.trail)
    anchors = runtime.services.trail_anchors
    assert anchors is not None
    forged = {
        "environment": "test",
        "count": 3,
        "last_id": 3,
        "last_hash": "0" * 64,
        "at": "2030-01-01T00:00:00+00:00",
        "mac": "f" * 64,
    }
    await anchors.put(await runtime.trail.namespace(), f"{10**11:012d}.json", json.dumps(forged).encode())
    report = await runtime.trail.verify()
    assert not report.ok
    assert any("is not signed with the trail's key" in problem for problem in report.problems)


async def test_truncate_is_refused_even_for_the_owner(runtime: Runtime) -> None:
    await five_entries(runtime.trail)
    async with runtime.services.state_db.connection() as conn:
        with pytest.raises(asyncpg.RaiseError, match="TRUNCATE refused"):
            await conn.execute("TRUNCATE audit_trail")
        with pytest.raises(asyncpg.RaiseError, match="append-only"):
            await conn.execute("DELETE FROM audit_trail")
        assert await conn.fetchval("SELECT count(*) FROM audit_trail") == 5


async def test_a_trail_with_no_anchor_says_so(runtime: Runtime) -> None:
    await five_entries(runtime.trail)
    blind = AuditTrail(runtime.services.state_db, runtime.trail.key, None, "test")
    report = await blind.verify()
    assert report.ok and report.anchored_rows is None
    assert any("deleting the newest entries could not be told" in note for note in report.notes)


# --- two roles: the owner migrates, the bot runs as a role that can only read and append ----------------


@pytest.fixture
async def two_roles(sandbox: SandboxStatus) -> AsyncIterator[tuple[Settings, Runtime]]:
    """A database owned by `postgres` (migrations) and used by a runtime role of its own."""
    admin = await asyncpg.connect(ADMIN_DSN)
    try:
        exists = await admin.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", RUNTIME_ROLE)
        if not exists:
            await admin.execute(f"CREATE ROLE {RUNTIME_ROLE} LOGIN")
    finally:
        await admin.close()
    owner_dsn = await recreate_database(DATABASE)
    settings = make_settings(
        state_database_url=owner_dsn.replace("postgres@", f"{RUNTIME_ROLE}@"),
        state_owner_database_url=owner_dsn,
        secret_key=SECRET_KEY,
        environment="test",
        trail_anchor_store=f"s3://chatops-trail-tests/{uuid.uuid4().hex}",
    )
    built = Runtime.build(settings)
    assert runtime_role(settings) == RUNTIME_ROLE
    await migrate(built.services.migrations_db(), runtime_role(settings))
    try:
        yield settings, built
    finally:
        await built.services.aclose()


@pytest.mark.parametrize(
    "attempt",
    [
        "ALTER TABLE audit_trail DISABLE TRIGGER USER",
        "DROP TRIGGER audit_trail_no_update ON audit_trail",
        "UPDATE audit_trail SET actor = 'U0SOMEONE1'",
        "DELETE FROM audit_trail",
        "TRUNCATE audit_trail",
        "UPDATE trail_identity SET id = gen_random_uuid()",
        "DROP TABLE audit_trail",
    ],
)
async def test_the_runtime_role_cannot_alter_the_trail(
    two_roles: tuple[Settings, Runtime], attempt: str
) -> None:
    settings, runtime = two_roles
    await five_entries(runtime.trail)  # it can append
    conn = await asyncpg.connect(settings.state_database_url)
    try:
        assert await conn.fetchval("SELECT current_user") == RUNTIME_ROLE
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(attempt)
    finally:
        await conn.close()
    report = await runtime.trail.verify()
    assert report.ok and report.rows == 5
    assert not any("owns audit_trail" in note for note in report.notes)


async def test_the_runtime_role_still_runs_the_gate(two_roles: tuple[Settings, Runtime]) -> None:
    _, runtime = two_roles
    enrollment = await runtime.mfa.enroll("U0OPS00001")
    assert enrollment.secret
    # Approvals, locks, receipts: everything but the trail stays writable.
    async with runtime.services.state_db.connection() as conn:
        await conn.execute("INSERT INTO request_receipts (key) VALUES ('test:1')")
        await conn.execute("DELETE FROM request_receipts WHERE key = 'test:1'")


async def test_verify_names_a_runtime_role_that_owns_the_trail(runtime: Runtime) -> None:
    report = await runtime.trail.verify()
    assert any("runtime role owns audit_trail" in note for note in report.notes)


async def test_the_terminal_says_what_verify_found(
    runtime: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    await five_entries(runtime.trail)
    await as_owner(runtime, "DELETE FROM audit_trail WHERE seq = 5")
    code = await run_gate_command(runtime.services.settings, "audit-trail", ["verify"], as_json=False)
    out = capsys.readouterr().out
    assert code == 1
    assert "audit trail: 4 rows, anchored at 5: TAMPERED" in out
    assert "problem: the trail has 4 row(s) but was anchored at 5" in out
