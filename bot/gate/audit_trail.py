"""The bot's append-only audit trail: every destructive attempt and MFA event, chained and keyed.

Three layers, so that someone who can write the bot's database still cannot rewrite history
unnoticed:

- each row chains to the one before it (`prev_hash`, `hash`: SHA-256 of the row with the previous
  hash), so a changed, removed or reordered row breaks the chain;
- each row carries `mac`, an HMAC of its hash with a key that is not in the database (derived from
  CHATOPS_SECRET_KEY), so a chain rewritten with recomputed hashes does not verify;
- after every append the chain's head (count, last id, hash) is anchored outside the database, in
  the anchor store (a bucket or a directory), one object per count, keyed the same way: deleting
  the newest rows, or rolling the whole table back, leaves the trail shorter than its last anchor.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol

import asyncpg

from adapters.postgres import PostgresAdapter
from bot.observability import get_logger

log = get_logger("chatops.audit_trail")

GENESIS = "0" * 64
# Serialises appends so that each row chains to the one before it, across replicas.
_APPEND_LOCK = 7_340_022
ANCHOR_TIMEOUT_SECONDS = 5.0


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
class Anchor:
    """The chain's head as it was after an append, kept outside the database."""

    environment: str
    count: int
    last_id: int
    last_hash: str
    at: str
    mac: str

    def signed_text(self) -> str:
        """Return what the anchor's MAC covers."""
        return f"{self.environment}:{self.count}:{self.last_id}:{self.last_hash}:{self.at}"

    def to_bytes(self) -> bytes:
        """Serialise for the anchor store."""
        return json.dumps(self.__dict__, sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Anchor:
        """Read an anchor written by `to_bytes`; raise ValueError for anything else."""
        try:
            fields = json.loads(data)
            return cls(**{name: fields[name] for name in cls.__dataclass_fields__})
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"not an anchor: {error}") from None


class AnchorStore(Protocol):
    """Where anchors are kept: outside the bot's database, written once each, never overwritten."""

    location: str

    async def put(self, namespace: str, name: str, data: bytes) -> None:
        """Write one anchor object of a trail (`namespace`)."""

    async def latest(self, namespace: str) -> bytes | None:
        """Return a trail's newest anchor, or None when there is none."""


@dataclass(frozen=True)
class VerifyReport:
    """The result of walking the chain and comparing it with its latest anchor."""

    rows: int
    ok: bool
    problems: list[str]
    notes: list[str] = field(default_factory=list)
    anchored_rows: int | None = None


def _canonical(prev_hash: str, at: datetime, entry: TrailEntry) -> bytes:
    return json.dumps(
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
    ).encode()


def trail_key(secret_key: str) -> bytes:
    """Derive the trail's MAC key from the bot's secret key (a key of its own, not the seeds' key)."""
    return hmac.new(secret_key.encode(), b"chatops-audit-trail-v1", hashlib.sha256).digest()


class AuditTrail:
    """Append to, verify and read the trail."""

    def __init__(
        self,
        state_db: PostgresAdapter,
        key: bytes | None,
        anchors: AnchorStore | None,
        environment: str,
    ) -> None:
        self.state_db = state_db
        self.key = key
        self.anchors = anchors
        self.environment = environment
        self._namespace: str | None = None

    async def namespace(self) -> str:
        """Return where this trail's anchors live: its environment and its database's trail id."""
        if self._namespace is None:
            async with self.state_db.connection() as conn:
                trail_id = await conn.fetchval("SELECT id FROM trail_identity ORDER BY created_at LIMIT 1")
            self._namespace = f"{self.environment}/{trail_id}"
        return self._namespace

    def _mac(self, text: str) -> str | None:
        if self.key is None:
            return None
        return hmac.new(self.key, text.encode(), hashlib.sha256).hexdigest()

    async def append(self, entry: TrailEntry) -> int:
        """Append one entry, chained to the last one, then anchor the new head; return its id."""
        async with self.state_db.connection() as conn, conn.transaction():
            row_id, count, digest = await self._insert(conn, entry)
        await self._anchor(count, row_id, digest)
        return row_id

    async def append_quietly(self, entry: TrailEntry) -> None:
        """Append, logging instead of raising: a refusal stands even when it cannot be written down."""
        try:
            await self.append(entry)
        except Exception as error:
            log.error("audit_trail_write_failed", action=entry.action, error=type(error).__name__)

    async def _insert(self, conn: asyncpg.Connection, entry: TrailEntry) -> tuple[int, int, str]:
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _APPEND_LOCK)
        last = await conn.fetchrow("SELECT hash, seq FROM audit_trail ORDER BY seq DESC LIMIT 1")
        prev = last["hash"] if last is not None else GENESIS
        count = int(last["seq"]) + 1 if last is not None else 1
        # Microseconds only: what PostgreSQL keeps is what the hash must cover.
        at = datetime.now(UTC)
        details = json.loads(json.dumps(entry.details, default=str))
        stored = replace(entry, details=details)
        digest = hashlib.sha256(_canonical(prev, at, stored)).hexdigest()
        row_id: int = await conn.fetchval(
            """INSERT INTO audit_trail (at, request_id, actor, action, command, arguments, channel_id,
                   decision, outcome, details, prev_hash, hash, mac, seq)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::jsonb, $11, $12, $13, $14) RETURNING id""",
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
            self._mac(digest),
            count,
        )
        return row_id, count, digest

    async def _anchor(self, count: int, row_id: int, digest: str) -> None:
        """Keep the new head outside the database; a failure is logged, never raised."""
        if self.anchors is None or self.key is None:
            return
        at = datetime.now(UTC).isoformat()
        unsigned = Anchor(self.environment, count, row_id, digest, at, "")
        anchor = replace(unsigned, mac=self._mac(unsigned.signed_text()) or "")
        try:
            async with asyncio.timeout(ANCHOR_TIMEOUT_SECONDS):
                await self.anchors.put(await self.namespace(), f"{count:012d}.json", anchor.to_bytes())
        except Exception as error:  # the entry is written; verify will say the anchor is behind
            log.error("trail_anchor_failed", count=count, error=f"{type(error).__name__}: {error}"[:300])

    async def verify(self) -> VerifyReport:
        """Walk the chain, check each row's link, hash and key, then compare with the latest anchor."""
        problems: list[str] = []
        notes: list[str] = []
        heads: dict[int, tuple[int, str]] = {}  # count -> (row id, hash), for the anchor's count only
        anchor, anchor_problem = await self._latest_anchor()
        if anchor_problem:
            problems.append(anchor_problem)
        rows = 0
        unkeyed: list[int] = []
        expected_prev = GENESIS
        async with self.state_db.connection() as conn, conn.transaction(readonly=True):
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
                    problems.append(
                        f"row {row['id']}: does not follow the row before it (a row was removed?)"
                    )
                if hashlib.sha256(_canonical(row["prev_hash"], row["at"], entry)).hexdigest() != row["hash"]:
                    problems.append(f"row {row['id']}: content does not match its hash (changed)")
                if self.key is not None:
                    if row["mac"] is None:
                        unkeyed.append(row["id"])
                    elif not hmac.compare_digest(row["mac"], self._mac(row["hash"]) or ""):
                        problems.append(
                            f"row {row['id']}: not signed with the trail's key (rewritten by someone"
                            " who could write the database)"
                        )
                if anchor is not None and rows == anchor.count:
                    heads[rows] = (row["id"], row["hash"])
                expected_prev = row["hash"]
            owns = await conn.fetchval(
                """SELECT pg_get_userbyid(relowner) = current_user FROM pg_class
                   WHERE oid = to_regclass('audit_trail')"""
            )
        if owns:
            notes.append(
                "the bot's runtime role owns audit_trail: with its password, its triggers can be disabled;"
                " run migrations as an owner role (CHATOPS_STATE_OWNER_DATABASE_URL)"
            )
        if unkeyed:
            problems.append(
                f"{len(unkeyed)} row(s) carry no key signature (first: row {unkeyed[0]}): written before"
                " the trail was keyed, or forged"
            )
        if self.key is None:
            notes.append("no CHATOPS_SECRET_KEY: rows are chained but not keyed; a rewrite cannot be told")
        problems += self._compare_with_anchor(anchor, rows, heads, notes)
        return VerifyReport(
            rows=rows,
            ok=not problems,
            problems=problems,
            notes=notes,
            anchored_rows=anchor.count if anchor is not None else None,
        )

    async def _latest_anchor(self) -> tuple[Anchor | None, str | None]:
        if self.anchors is None or self.key is None:
            return None, None
        try:
            async with asyncio.timeout(ANCHOR_TIMEOUT_SECONDS):
                data = await self.anchors.latest(await self.namespace())
        except Exception as error:
            return None, f"the anchor store {self.anchors.location} cannot be read: {type(error).__name__}"
        if data is None:
            return None, None
        try:
            anchor = Anchor.from_bytes(data)
        except ValueError as error:
            return None, f"the latest anchor in {self.anchors.location} is unreadable: {error}"
        expected = self._mac(replace(anchor, mac="").signed_text()) or ""
        if not hmac.compare_digest(anchor.mac, expected) or anchor.environment != self.environment:
            return None, f"the latest anchor in {self.anchors.location} is not signed with the trail's key"
        return anchor, None

    def _compare_with_anchor(
        self, anchor: Anchor | None, rows: int, heads: dict[int, tuple[int, str]], notes: list[str]
    ) -> list[str]:
        if self.anchors is None or self.key is None:
            notes.append("no anchor store: deleting the newest entries could not be told")
            return []
        if anchor is None:
            if rows:
                return [
                    f"{rows} row(s) but no anchor in {self.anchors.location}: the trail cannot be checked"
                    " for deleted entries (was it anchored elsewhere?)"
                ]
            return []
        if rows < anchor.count:
            return [
                f"the trail has {rows} row(s) but was anchored at {anchor.count} on {anchor.at}:"
                f" the newest {anchor.count - rows} entrie(s) were deleted (or the table rolled back)"
            ]
        row_id, digest = heads[anchor.count]
        if digest != anchor.last_hash or row_id != anchor.last_id:
            return [
                f"row {row_id} (entry {anchor.count}) is not the head anchored on {anchor.at}: the chain"
                " was rewritten"
            ]
        if rows > anchor.count:
            notes.append(f"{rows - anchor.count} entrie(s) after the latest anchor (anchoring failed?)")
        return []

    async def recent(self, limit: int = 20) -> list[dict[str, Any]]:
        """Return the latest entries, newest first."""
        async with self.state_db.connection() as conn:
            rows = await conn.fetch(
                """SELECT id, at, actor, action, command, arguments, decision, outcome
                   FROM audit_trail ORDER BY id DESC LIMIT $1""",
                limit,
            )
        return [dict(row) for row in rows]
