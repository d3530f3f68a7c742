"""Incidents, their timelines, alert messages and RCA drafts in the bot's own database.

Every statement runs within the adapter's timeout; the SQL of incidents lives here and nowhere else.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any, Literal

import asyncpg
from pydantic import BaseModel, ConfigDict, Field

from adapters.postgres import StateRepository
from adapters.severity import SEVERITIES, Severity

__all__ = ["SEVERITIES", "Severity"]
IncidentStatus = Literal["open", "resolved"]

# Two-key advisory locks: (namespace, key). Declares in one channel take turns; so do filings of one RCA.
_DECLARE_LOCK = 7_340_031
_FILING_LOCK = 7_340_032


class Incident(BaseModel):
    """One incident as recorded."""

    model_config = ConfigDict(defer_build=True)  # built when first used, not at import

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
    # Where it was declared (None: as `channel_id`); `channel_id` is where it lives: its own channel
    # (named `channel_name`, with a link `origin_ts` where it was declared), or that same channel.
    origin_channel_id: str | None = None
    channel_name: str | None = None
    origin_ts: str | None = None
    # Roles beside the commander: the communications lead and the scribe.
    comms_lead: str | None = None
    scribe: str | None = None
    # When it first had a commander (the time to commander of the metrics).
    acknowledged_at: datetime | None = None
    # Its one message in the stakeholder channel, edited in place.
    announcement_channel: str | None = None
    announcement_ts: str | None = None
    # Its channel's bookmarks by what they are (runbook, graphs, rca) -> Slack's bookmark id.
    bookmarks: dict[str, str] = Field(default_factory=dict)
    last_reminded_at: datetime | None = None

    @property
    def reference(self) -> str:
        """Return the name people use for it (INC-12)."""
        return f"INC-{self.id}"

    @property
    def declared_in(self) -> str:
        """Return the channel it was declared in."""
        return self.origin_channel_id or self.channel_id

    @property
    def has_own_channel(self) -> bool:
        """Return whether it lives in a channel of its own (not the one it was declared in)."""
        return self.declared_in != self.channel_id


class TimelineEvent(BaseModel):
    """One entry of an incident's timeline: what happened, when, and who did it."""

    model_config = ConfigDict(defer_build=True)  # built when first used, not at import

    id: int
    incident_id: int
    at: datetime
    kind: str
    actor: str | None
    text: str
    details: dict[str, Any] = Field(default_factory=dict)


class AlertMessage(BaseModel):
    """The Slack message that shows one alert (by fingerprint)."""

    model_config = ConfigDict(defer_build=True)  # built when first used, not at import

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

    model_config = ConfigDict(defer_build=True)  # built when first used, not at import

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
    declared_at, resolved_at, summary, last_update, last_update_at, header_ts, origin_channel_id,
    channel_name, origin_ts, comms_lead, scribe, acknowledged_at, announcement_channel, announcement_ts,
    bookmarks, last_reminded_at"""
# What the bot itself keeps about an incident's Slack presence (no timeline entry of their own).
_BOOKKEEPING = frozenset(
    {"header_ts", "channel_id", "channel_name", "origin_ts", "announcement_channel", "announcement_ts"}
)
# An update reminder is due when the incident's severity has an interval and that long has passed
# since its last update (or its declaration) and since the last reminder. $1 is now; $2..$5 the
# intervals of P1..P4 (NULL: no reminders for that severity).
_REMINDER_DUE = """status = 'open'
    AND (CASE severity WHEN 'P1' THEN $2::interval WHEN 'P2' THEN $3::interval
                       WHEN 'P3' THEN $4::interval ELSE $5::interval END) IS NOT NULL
    AND greatest(coalesce(last_update_at, declared_at), coalesce(last_reminded_at, '-infinity'))
        + (CASE severity WHEN 'P1' THEN $2::interval WHEN 'P2' THEN $3::interval
                         WHEN 'P3' THEN $4::interval ELSE $5::interval END) <= $1"""


def _incident(row: asyncpg.Record | None) -> Incident | None:
    if row is None:
        return None
    data = dict(row)
    if isinstance(data.get("bookmarks"), str):
        data["bookmarks"] = json.loads(data["bookmarks"])
    return Incident(**data)


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


class IncidentStore(StateRepository):
    """The repository of incidents over the bot's state database."""

    name = "incidents"

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
            # Open here, or declared from here and living in a channel of its own.
            existing = _incident(
                await conn.fetchrow(
                    f"""SELECT {_INCIDENT_COLUMNS} FROM incidents
                        WHERE (channel_id = $1 OR origin_channel_id = $1) AND status = 'open'
                        ORDER BY declared_at DESC LIMIT 1""",
                    channel_id,
                )
            )
            if existing is not None and not force:
                return existing, existing
            row = await conn.fetchrow(
                f"""INSERT INTO incidents (channel_id, title, severity, commander, declared_by, started_at,
                        declared_at, origin_channel_id, acknowledged_at)
                    VALUES ($1, $2, $3, $4, $5, $6, $7, $1,
                            CASE WHEN $4::text IS NULL THEN NULL ELSE $7::timestamptz END)
                    RETURNING {_INCIDENT_COLUMNS}""",
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

    async def open_declared_from(self, channel_id: str) -> Incident | None:
        """Return the open incident declared in this channel that lives in a channel of its own."""
        async with self._conn() as conn:
            row = await conn.fetchrow(
                f"""SELECT {_INCIDENT_COLUMNS} FROM incidents
                    WHERE origin_channel_id = $1 AND channel_id <> $1 AND status = 'open'
                    ORDER BY declared_at DESC LIMIT 1""",
                channel_id,
            )
        return _incident(row)

    async def open_incidents(self, limit: int = 20) -> list[Incident]:
        """Return the open incidents, the most severe first, then the newest."""
        async with self._conn() as conn:
            rows = await conn.fetch(
                f"""SELECT {_INCIDENT_COLUMNS} FROM incidents WHERE status = 'open'
                    ORDER BY severity, declared_at DESC LIMIT $1""",
                limit,
            )
        return [item for item in map(_incident, rows) if item is not None]

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
            "comms_lead",
            "scribe",
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
            values: list[Any] = [incident_id, *fields.values()]
            parts = [f"{name} = ${index}" for index, name in enumerate(fields, start=2)]
            if fields.get("commander"):
                # The first commander ends the time to commander; a later change does not move it.
                values.append(at)
                parts.append(f"acknowledged_at = coalesce(acknowledged_at, ${len(values)})")
            sets = ", ".join([*parts, "updated_at = now()"])
            row = await conn.fetchrow(
                f"""UPDATE incidents SET {sets} WHERE id = $1 AND status = 'open'
                    RETURNING {_INCIDENT_COLUMNS}""",
                *values,
            )
            incident = _incident(row)
            if incident is None:
                raise LookupError(f"INC-{incident_id} is not open")
            added = await self._add_event(conn, incident_id, at, kind, actor, text, details)
        return incident, added

    async def set_header(self, incident_id: int, header_ts: str) -> None:
        """Remember the incident's header message."""
        await self.keep(incident_id, header_ts=header_ts)

    async def keep(self, incident_id: int, **fields: str | None) -> Incident:
        """Remember where the incident shows in Slack (its channel, header, link, announcement)."""
        unknown = set(fields) - _BOOKKEEPING
        if unknown or not fields:
            raise ValueError(f"cannot keep {sorted(unknown) or 'nothing'}")
        assignments = ", ".join(f"{name} = ${index}" for index, name in enumerate(fields, start=2))
        async with self._conn() as conn:
            row = await conn.fetchrow(
                f"UPDATE incidents SET {assignments} WHERE id = $1 RETURNING {_INCIDENT_COLUMNS}",
                incident_id,
                *fields.values(),
            )
        incident = _incident(row)
        if incident is None:
            raise LookupError(f"there is no incident INC-{incident_id}")
        return incident

    async def set_bookmark(self, incident_id: int, kind: str, bookmark_id: str) -> None:
        """Remember one bookmark of the incident's channel (to edit it later)."""
        async with self._conn() as conn:
            await conn.execute(
                "UPDATE incidents SET bookmarks = bookmarks || jsonb_build_object($2::text, $3::text)"
                " WHERE id = $1",
                incident_id,
                kind,
                bookmark_id,
            )

    # --- reminders and metrics -----------------------------------------------------------------------

    async def claim_due_reminders(
        self, now: datetime, intervals: Mapping[Severity, timedelta | None], limit: int = 20
    ) -> list[Incident]:
        """Claim the open incidents whose update reminder is due, marking them reminded at `now`.

        One conditional UPDATE: of replicas asking at once, each due incident goes to one of them
        (the others skip the rows it holds, and find them no longer due once it commits).
        """
        every = [intervals.get(severity) for severity in SEVERITIES]
        if not any(every):
            return []
        async with self._conn() as conn:
            rows = await conn.fetch(
                f"""UPDATE incidents SET last_reminded_at = $1
                    WHERE id IN (SELECT id FROM incidents WHERE {_REMINDER_DUE}
                                 ORDER BY declared_at LIMIT $6 FOR UPDATE SKIP LOCKED)
                      AND {_REMINDER_DUE}
                    RETURNING {_INCIDENT_COLUMNS}""",
                now,
                *every,
                limit,
            )
        return [item for item in map(_incident, rows) if item is not None]

    async def declared_since(self, since: datetime) -> list[Incident]:
        """Return the incidents declared since a moment (for the metrics), oldest first."""
        async with self._conn() as conn:
            rows = await conn.fetch(
                f"""SELECT {_INCIDENT_COLUMNS} FROM incidents WHERE declared_at >= $1
                    ORDER BY declared_at, id""",
                since,
            )
        return [item for item in map(_incident, rows) if item is not None]

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
            "body",
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
