"""The bot's append-only, hash-chained audit trail of destructive attempts and MFA events."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import asyncpg

from adapters.postgres import PostgresAdapter

GENESIS = "0" * 64
# Serialises appends so that each row chains to the one before it, across replicas.
_APPEND_LOCK = 7_340_022


@dataclass(frozen=True)
class TrailEntry:
    """One thing that happened: who, what, the decision and its outcome."""

    action: str
    decision: str
    actor: str | None = None
    command: str | None = None
    arguments: str | None = None
    channel_id: str | None = None
    request_id: str | None = None
    outcome: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class VerifyReport:
    """The result of walking the chain."""

    rows: int
    ok: bool
    problems: list[str]


def _digest(prev_hash: str, at: datetime, entry: TrailEntry) -> str:
    canonical = json.dumps(
        {
            "prev": prev_hash,
            "at": at.astimezone(UTC).isoformat(),
            "action": entry.action,
            "decision": entry.decision,
            "actor": entry.actor,
            "command": entry.command,
            "arguments": entry.arguments,
            "channel_id": entry.channel_id,
            "request_id": entry.request_id,
            "outcome": entry.outcome,
            "details": entry.details,
        },
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


async def append(state_db: PostgresAdapter, entry: TrailEntry) -> int:
    """Append one entry, chained to the last one; return its id."""
    async with state_db.connection() as conn, conn.transaction():
        return await append_in(conn, entry)


async def append_in(conn: asyncpg.Connection, entry: TrailEntry) -> int:
    """Append one entry inside the caller's transaction."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", _APPEND_LOCK)
    prev = await conn.fetchval("SELECT hash FROM audit_trail ORDER BY id DESC LIMIT 1") or GENESIS
    # Microseconds only: what PostgreSQL keeps is what the hash must cover.
    at = datetime.now(UTC)
    details = json.loads(json.dumps(entry.details, default=str))
    stored = replace(entry, details=details)
    digest = _digest(prev, at, stored)
    row_id: int = await conn.fetchval(
        """INSERT INTO audit_trail (at, request_id, actor, action, command, arguments, channel_id,
               decision, outcome, details, prev_hash, hash)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::jsonb, $11, $12) RETURNING id""",
        at,
        stored.request_id,
        stored.actor,
        stored.action,
        stored.command,
        stored.arguments,
        stored.channel_id,
        stored.decision,
        stored.outcome,
        json.dumps(details),
        prev,
        digest,
    )
    return row_id


async def verify(state_db: PostgresAdapter) -> VerifyReport:
    """Walk the whole chain; report every row whose content, link or position was changed."""
    problems: list[str] = []
    rows = 0
    expected_prev = GENESIS
    async with state_db.connection() as conn, conn.transaction(readonly=True):
        async for row in conn.cursor("SELECT * FROM audit_trail ORDER BY id"):
            rows += 1
            entry = TrailEntry(
                action=row["action"],
                decision=row["decision"],
                actor=row["actor"],
                command=row["command"],
                arguments=row["arguments"],
                channel_id=row["channel_id"],
                request_id=row["request_id"],
                outcome=row["outcome"],
                details=json.loads(row["details"]),
            )
            if row["prev_hash"] != expected_prev:
                problems.append(f"row {row['id']}: does not follow the row before it (a row was removed?)")
            if _digest(row["prev_hash"], row["at"], entry) != row["hash"]:
                problems.append(f"row {row['id']}: content does not match its hash (changed)")
            expected_prev = row["hash"]
    return VerifyReport(rows=rows, ok=not problems, problems=problems)


async def recent(state_db: PostgresAdapter, limit: int = 20) -> list[dict[str, Any]]:
    """Return the latest entries, newest first."""
    async with state_db.connection() as conn:
        rows = await conn.fetch(
            """SELECT id, at, actor, action, command, arguments, decision, outcome
               FROM audit_trail ORDER BY id DESC LIMIT $1""",
            limit,
        )
    return [dict(row) for row in rows]
