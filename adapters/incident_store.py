"""Incidents, their timelines, alert messages and RCA drafts in the bot's own database.

Every statement runs within the adapter's timeout; the SQL of incidents lives here and nowhere else.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, Literal

import asyncpg
from pydantic import BaseModel, Field

from adapters.postgres import PostgresAdapter

Severity = Literal["P1", "P2", "P3", "P4"]
SEVERITIES: tuple[Severity, ...] = ("P1", "P2", "P3", "P4")
IncidentStatus = Literal["open", "resolved"]

# Two-key advisory locks: (namespace, key). Declares in one channel take turns; so do filings of one RCA.
_DECLARE_LOCK = 7_340_031
_FILING_LOCK = 7_340_032


class Incident(BaseModel):
    """One incident as recorded."""

    id: int
    channel_id: str
    title: str
    severity: Severity
    status: IncidentStatus
    commander: str | None
    declared_by: str
    started_at: datetime
    declared_at: datetime
    resolved_at: datetime | None = None
    summary: str | None = None
    last_update: str | None = None
    last_update_at: datetime | None = None
    header_ts: str | None = None

    @property
    def reference(self) -> str:
        """Return the name people use for it (INC-12)."""
        return f"INC-{self.id}"


class TimelineEvent(BaseModel):
    """One entry of an incident's timeline: what happened, when, and who did it."""

    id: int
    incident_id: int
    at: datetime
    kind: str
    actor: str | None
    text: str
    details: dict[str, Any] = Field(default_factory=dict)


class AlertMessage(BaseModel):
    """The Slack message that shows one alert (by fingerprint)."""

    fingerprint: str
    channel_id: str
    ts: str
    thread_ts: str | None
    status: Literal["firing", "resolved"]
    alertname: str
    starts_at: datetime
    ends_at: datetime | None
    alert: dict[str, Any]
    external_url: str | None
    notifications: int
    incident_id: int | None


class RcaDraft(BaseModel):
    """An RCA draft, kept until filed, and what was filed from it."""

    incident_id: int
    language: str
    title: str
    body: str
    rendered_at: datetime
    rendered_by: str | None = None
    preview_channel: str | None = None
    preview_ts: str | None = None
    issue_number: int | None = None
    issue_url: str | None = None
    filed_at: datetime | None = None
    filed_by: str | None = None
    filed_body_sha256: str | None = None
    create_attempted_at: datetime | None = None
    last_error: str | None = None


class FilingBusy(Exception):
    """Someone else is filing this RCA right now."""


_INCIDENT_COLUMNS = """id, channel_id, title, severity, status, commander, declared_by, started_at,
    declared_at, resolved_at, summary, last_update, last_update_at, header_ts"""


def _incident(row: asyncpg.Record | None) -> Incident | None:
    return Incident(**dict(row)) if row is not None else None


def _event(row: asyncpg.Record) -> TimelineEvent:
    data = dict(row)
    data["details"] = json.loads(data["details"]) if isinstance(data["details"], str) else data["details"]
    return TimelineEvent(**data)


def _alert(row: asyncpg.Record | None) -> AlertMessage | None:
    if row is None:
        return None
    data = dict(row)
    data["alert"] = json.loads(data["alert"]) if isinstance(data["alert"], str) else data["alert"]
    return AlertMessage(**data)


class IncidentStore:
    """The repository of incidents over the bot's state database."""

    name = "incidents"

    def __init__(self, state_db: PostgresAdapter, timeout: float | None = None) -> None:
        self.state_db = state_db
        # Bookkeeping queries are small; a few seconds is generous and still bounds a hung server.
        self.timeout = timeout if timeout is not None else max(state_db.timeout, 5.0)

    @asynccontextmanager
    async def _conn(self) -> AsyncIterator[asyncpg.Connection]:
        async with asyncio.timeout(self.timeout), self.state_db.connection() as conn:
            yield conn

    # --- incidents ---------------------------------------------------------------------------------

    async def declare(
        self,
        *,
        channel_id: str,
        title: str,
        severity: Severity,
        declared_by: str,
        commander: str | None,
        started_at: datetime,
        declared_at: datetime,
        force: bool,
        first_event: tuple[str, str, dict[str, Any]],
    ) -> tuple[Incident, Incident | None]:
        """Create an incident unless one is open in the channel (and not forced).

        Returns (the new incident, None), or (the open one, the open one) when it refused.
        """
        kind, text, details = first_event
        async with self._conn() as conn, conn.transaction():
            # Two people declaring at once for the same alert: the second one is asked, not duplicated.
            await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", _DECLARE_LOCK, channel_id)
            existing = _incident(
                await conn.fetchrow(
                    f"""SELECT {_INCIDENT_COLUMNS} FROM incidents
                        WHERE channel_id = $1 AND status = 'open' ORDER BY declared_at DESC LIMIT 1""",
                    channel_id,
                )
            )
            if existing is not None and not force:
                return existing, existing
            row = await conn.fetchrow(
                f"""INSERT INTO incidents (channel_id, title, severity, commander, declared_by, started_at,
                        declared_at)
                    VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {_INCIDENT_COLUMNS}""",
                channel_id,
                title,
                severity,
                commander,
                declared_by,
                started_at,
                declared_at,
            )
            incident = _incident(row)
            assert incident is not None
            await self._add_event(conn, incident.id, declared_at, kind, declared_by, text, details)
            return incident, None

    async def get(self, incident_id: int) -> Incident | None:
        """Return an incident by number."""
        async with self._conn() as conn:
            row = await conn.fetchrow(f"SELECT {_INCIDENT_COLUMNS} FROM incidents WHERE id = $1", incident_id)
        return _incident(row)

    async def open_in(self, channel_id: str) -> Incident | None:
        """Return the channel's open incident (the latest declared, if several are open)."""
        async with self._conn() as conn:
            row = await conn.fetchrow(
                f"""SELECT {_INCIDENT_COLUMNS} FROM incidents
                    WHERE channel_id = $1 AND status = 'open' ORDER BY declared_at DESC LIMIT 1""",
                channel_id,
            )
        return _incident(row)

    async def latest_in(self, channel_id: str) -> Incident | None:
        """Return the channel's latest incident, open or resolved."""
        async with self._conn() as conn:
            row = await conn.fetchrow(
                f"""SELECT {_INCIDENT_COLUMNS} FROM incidents
                    WHERE channel_id = $1 ORDER BY declared_at DESC LIMIT 1""",
                channel_id,
            )
        return _incident(row)

    async def change(
        self,
        incident_id: int,
        event: tuple[str, str | None, str, dict[str, Any]],
        at: datetime,
        **fields: Any,
    ) -> tuple[Incident, TimelineEvent]:
        """Change some fields of an open incident and add the timeline entry saying so, atomically."""
        allowed = {
            "severity",
            "commander",
            "last_update",
            "last_update_at",
            "summary",
            "status",
            "resolved_at",
        }
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"cannot change {sorted(unknown)}")
        kind, actor, text, details = event
        async with self._conn() as conn, conn.transaction():
            assignments = ", ".join(f"{name} = ${index}" for index, name in enumerate(fields, start=2))
            sets = f"{assignments}, updated_at = now()" if assignments else "updated_at = now()"
            row = await conn.fetchrow(
                f"""UPDATE incidents SET {sets} WHERE id = $1 AND status = 'open'
                    RETURNING {_INCIDENT_COLUMNS}""",
                incident_id,
                *fields.values(),
            )
            incident = _incident(row)
            if incident is None:
                raise LookupError(f"INC-{incident_id} is not open")
            added = await self._add_event(conn, incident_id, at, kind, actor, text, details)
        return incident, added

    async def set_header(self, incident_id: int, header_ts: str) -> None:
        """Remember the incident's header message."""
        async with self._conn() as conn:
            await conn.execute("UPDATE incidents SET header_ts = $2 WHERE id = $1", incident_id, header_ts)

    async def add_event(
        self,
        incident_id: int,
        kind: str,
        actor: str | None,
        text: str,
        at: datetime | None = None,
        details: dict[str, Any] | None = None,
    ) -> TimelineEvent:
        """Add one entry to an incident's timeline."""
        async with self._conn() as conn:
            return await self._add_event(conn, incident_id, at, kind, actor, text, details or {})

    async def record_in_open(
        self, channel_id: str, kind: str, actor: str | None, text: str, details: dict[str, Any] | None = None
    ) -> Incident | None:
        """Add a timeline entry to the channel's open incident, if there is one; return that incident."""
        async with self._conn() as conn, conn.transaction():
            incident = _incident(
                await conn.fetchrow(
                    f"""SELECT {_INCIDENT_COLUMNS} FROM incidents
                        WHERE channel_id = $1 AND status = 'open' ORDER BY declared_at DESC LIMIT 1""",
                    channel_id,
                )
            )
            if incident is not None:
                await self._add_event(conn, incident.id, None, kind, actor, text, details or {})
        return incident

    async def events(self, incident_id: int) -> list[TimelineEvent]:
        """Return an incident's timeline, oldest first."""
        async with self._conn() as conn:
            rows = await conn.fetch(
                """SELECT id, incident_id, at, kind, actor, text, details FROM incident_events
                   WHERE incident_id = $1 ORDER BY at, id""",
                incident_id,
            )
        return [_event(row) for row in rows]

    async def _add_event(
        self,
        conn: asyncpg.Connection,
        incident_id: int,
        at: datetime | None,
        kind: str,
        actor: str | None,
        text: str,
        details: dict[str, Any],
    ) -> TimelineEvent:
        row = await conn.fetchrow(
            """INSERT INTO incident_events (incident_id, at, kind, actor, text, details)
               VALUES ($1, coalesce($2, now()), $3, $4, $5, $6::jsonb)
               RETURNING id, incident_id, at, kind, actor, text, details""",
            incident_id,
            at,
            kind,
            actor,
            text,
            json.dumps(details, default=str),
        )
        return _event(row)

    # --- alert messages ------------------------------------------------------------------------------

    @asynccontextmanager
    async def alert_lock(self, fingerprint: str) -> AsyncIterator[asyncpg.Connection]:
        """Hold one alert's row while its message is posted, so concurrent repeats update one message."""
        # No overall timeout here: the caller posts to Slack under the lock, with Slack's own timeout.
        async with self.state_db.connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", "alert:" + fingerprint)
            yield conn

    async def alert_message(self, conn: asyncpg.Connection, fingerprint: str) -> AlertMessage | None:
        """Return the message of an alert, inside the alert's lock."""
        return _alert(await conn.fetchrow("SELECT * FROM alert_messages WHERE fingerprint = $1", fingerprint))

    async def alert_by_fingerprint(self, fingerprint: str) -> AlertMessage | None:
        """Return the message of an alert (for its buttons)."""
        async with self._conn() as conn:
            return await self.alert_message(conn, fingerprint)

    async def save_alert_message(self, conn: asyncpg.Connection, message: AlertMessage) -> None:
        """Insert or replace an alert's message, inside the alert's lock."""
        await conn.execute(
            """INSERT INTO alert_messages (fingerprint, channel_id, ts, thread_ts, status, alertname,
                   starts_at, ends_at, alert, external_url, notifications, incident_id)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb, $10, $11, $12)
               ON CONFLICT (fingerprint) DO UPDATE SET channel_id = EXCLUDED.channel_id, ts = EXCLUDED.ts,
                   thread_ts = EXCLUDED.thread_ts, status = EXCLUDED.status,
                   alertname = EXCLUDED.alertname, starts_at = EXCLUDED.starts_at,
                   ends_at = EXCLUDED.ends_at, alert = EXCLUDED.alert,
                   external_url = EXCLUDED.external_url, notifications = EXCLUDED.notifications,
                   incident_id = EXCLUDED.incident_id, last_seen_at = now()""",
            message.fingerprint,
            message.channel_id,
            message.ts,
            message.thread_ts,
            message.status,
            message.alertname,
            message.starts_at,
            message.ends_at,
            json.dumps(message.alert, default=str),
            message.external_url,
            message.notifications,
            message.incident_id,
        )

    async def link_alert(self, fingerprint: str, incident_id: int) -> None:
        """Remember that an incident was declared from an alert."""
        async with self._conn() as conn:
            await conn.execute(
                "UPDATE alert_messages SET incident_id = $2 WHERE fingerprint = $1", fingerprint, incident_id
            )

    # --- RCA drafts ----------------------------------------------------------------------------------

    async def draft(self, incident_id: int) -> RcaDraft | None:
        """Return an incident's RCA draft."""
        async with self._conn() as conn:
            row = await conn.fetchrow("SELECT * FROM rca_drafts WHERE incident_id = $1", incident_id)
        return RcaDraft(**dict(row)) if row is not None else None

    async def save_draft(self, draft: RcaDraft) -> RcaDraft:
        """Store a freshly rendered draft, keeping what is known about its filed issue."""
        async with self._conn() as conn:
            row = await conn.fetchrow(
                """INSERT INTO rca_drafts (incident_id, language, title, body, rendered_at, rendered_by)
                   VALUES ($1, $2, $3, $4, $5, $6)
                   ON CONFLICT (incident_id) DO UPDATE SET language = EXCLUDED.language,
                       title = EXCLUDED.title, body = EXCLUDED.body, rendered_at = EXCLUDED.rendered_at,
                       rendered_by = EXCLUDED.rendered_by
                   RETURNING *""",
                draft.incident_id,
                draft.language,
                draft.title,
                draft.body,
                draft.rendered_at,
                draft.rendered_by,
            )
        return RcaDraft(**dict(row))

    async def update_draft(self, incident_id: int, **fields: Any) -> None:
        """Set bookkeeping fields of a draft (preview message, filing outcome, last error)."""
        allowed = {
            "preview_channel",
            "preview_ts",
            "issue_number",
            "issue_url",
            "filed_at",
            "filed_by",
            "filed_body_sha256",
            "create_attempted_at",
            "last_error",
        }
        unknown = set(fields) - allowed
        if unknown or not fields:
            raise ValueError(f"cannot set {sorted(unknown) or 'nothing'}")
        assignments = ", ".join(f"{name} = ${index}" for index, name in enumerate(fields, start=2))
        async with self._conn() as conn:
            await conn.execute(
                f"UPDATE rca_drafts SET {assignments} WHERE incident_id = $1", incident_id, *fields.values()
            )

    @asynccontextmanager
    async def filing(self, incident_id: int) -> AsyncIterator[None]:
        """Hold the right to file one RCA; raise FilingBusy when someone else holds it.

        A session lock, not a transaction: what is written while filing (the attempt marker above
        all) must be committed at once, so that a crash mid-call still leaves it behind.
        """
        async with self.state_db.connection() as conn:
            got = await conn.fetchval(
                "SELECT pg_try_advisory_lock($1, $2)", _FILING_LOCK, incident_id, timeout=self.timeout
            )
            if not got:
                raise FilingBusy(f"INC-{incident_id}'s RCA is being filed by someone else right now")
            try:
                yield
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1, $2)", _FILING_LOCK, incident_id)
