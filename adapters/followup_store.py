"""Follow-ups of incidents in the bot's own database: what is left to do, and the issue it became.

Beside `incident_store.py` (the incidents themselves); the SQL of follow-ups lives here only.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import asyncpg
from pydantic import BaseModel, ConfigDict

from adapters.incident_store import TimelineEvent
from adapters.postgres import StateRepository

_COLUMNS = """id, incident_id, text, owner, created_by, created_at, issue_number, issue_url, issue_state,
    filed_body_sha256, create_attempted_at, last_error"""
_FILING_FIELDS = frozenset(
    {"issue_number", "issue_url", "issue_state", "filed_body_sha256", "create_attempted_at", "last_error"}
)


class Followup(BaseModel):
    """One follow-up action of an incident, and the GitHub issue it was filed as."""

    model_config = ConfigDict(defer_build=True)  # built when first used, not at import

    id: int
    incident_id: int
    text: str
    owner: str | None = None
    created_by: str
    created_at: datetime
    issue_number: int | None = None
    issue_url: str | None = None
    issue_state: str | None = None
    filed_body_sha256: str | None = None
    create_attempted_at: datetime | None = None
    last_error: str | None = None


def _followup(row: asyncpg.Record | None) -> Followup | None:
    return Followup(**dict(row)) if row is not None else None


class FollowupStore(StateRepository):
    """The repository of follow-ups over the bot's state database."""

    name = "followups"

    async def add(
        self,
        incident_id: int,
        text: str,
        owner: str | None,
        created_by: str,
        at: datetime,
        event: tuple[str, str, dict[str, Any]],
    ) -> tuple[Followup, TimelineEvent]:
        """Add a follow-up and its timeline entry, atomically."""
        kind, event_text, details = event
        async with self._conn() as conn, conn.transaction():
            row = await conn.fetchrow(
                f"""INSERT INTO incident_followups (incident_id, text, owner, created_by, created_at)
                    VALUES ($1, $2, $3, $4, $5) RETURNING {_COLUMNS}""",
                incident_id,
                text,
                owner,
                created_by,
                at,
            )
            followup = _followup(row)
            assert followup is not None
            added = await conn.fetchrow(
                """INSERT INTO incident_events (incident_id, at, kind, actor, text, details)
                   VALUES ($1, $2, $3, $4, $5, $6::jsonb)
                   RETURNING id, incident_id, at, kind, actor, text, details""",
                incident_id,
                at,
                kind,
                created_by,
                event_text,
                json.dumps({**details, "followup": followup.id}, default=str),
            )
        data = dict(added)
        data["details"] = json.loads(data["details"]) if isinstance(data["details"], str) else data["details"]
        return followup, TimelineEvent(**data)

    async def of(self, incident_id: int) -> list[Followup]:
        """Return an incident's follow-ups, in the order they were added."""
        async with self._conn() as conn:
            rows = await conn.fetch(
                f"SELECT {_COLUMNS} FROM incident_followups WHERE incident_id = $1 ORDER BY id", incident_id
            )
        return [item for item in map(_followup, rows) if item is not None]

    async def update(self, followup_id: int, **fields: Any) -> Followup:
        """Set what is known about a follow-up's issue (number, state, what was sent, last error)."""
        unknown = set(fields) - _FILING_FIELDS
        if unknown or not fields:
            raise ValueError(f"cannot set {sorted(unknown) or 'nothing'}")
        assignments = ", ".join(f"{name} = ${index}" for index, name in enumerate(fields, start=2))
        async with self._conn() as conn:
            row = await conn.fetchrow(
                f"UPDATE incident_followups SET {assignments} WHERE id = $1 RETURNING {_COLUMNS}",
                followup_id,
                *fields.values(),
            )
        followup = _followup(row)
        if followup is None:
            raise LookupError(f"there is no follow-up {followup_id}")
        return followup
