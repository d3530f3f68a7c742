"""Where changes are seen: the engine's containers of the backend, and the bot's own executed plans."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from bot.services import Services
from commands.base import UsageError, tokenize
from commands.changes import Change, ChangeKind, ChangeSource
from commands.rollback import running_version

# A container started this long after it was created was restarted, not just deployed.
_RESTART_GAP = timedelta(seconds=60)
_FRACTION = re.compile(r"(\.\d{6})\d+")
_KINDS: dict[str, ChangeKind] = {"restart": "restart", "restore": "restore", "backup": "prune"}


def _engine_time(text: str | None) -> datetime | None:
    """Read the engine's timestamps (nanoseconds and `Z` included)."""
    if not text:
        return None
    try:
        parsed = datetime.fromisoformat(_FRACTION.sub(r"\1", text.strip()).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def engine_changes(services: Services) -> ChangeSource:
    """See the backend's deploys and restarts in its containers (created and started times, images)."""
    settings = services.settings
    timeout = settings.dependency_timeout_seconds

    async def source(start: datetime, end: datetime) -> list[Change]:
        containers = await services.engine.project_containers(timeout, service=settings.backend_service)
        tags = await services.engine.image_tags(settings.backend_image, timeout)
        found = []
        for container in containers:
            version = running_version(container, tags) or container.image_ref or container.image_id[:19]
            created = _engine_time(container.created)
            started = _engine_time(container.started_at)
            if created is not None and start <= created <= end:
                found.append(
                    Change(
                        at=created,
                        kind="deploy",
                        label=f"{version} deployed ({container.name} created)",
                        source="engine",
                    )
                )
            restarted = started is not None and created is not None and started - created > _RESTART_GAP
            if restarted and started is not None and start <= started <= end:
                label = f"{container.name} restarted"
                found.append(Change(at=started, kind="restart", label=label, source="engine"))
        return found

    return source


def bot_changes(services: Services) -> ChangeSource:
    """See the bot's own executed plans (rollbacks, flag flips, restarts, restores) with their way back."""
    settings = services.settings

    async def source(start: datetime, end: datetime) -> list[Change]:
        async with services.state_db.connection() as conn:
            rows = await conn.fetch(
                """SELECT command, arguments, plan, updated_at FROM approvals
                   WHERE status = 'succeeded' AND environment = $1 AND updated_at BETWEEN $2 AND $3
                   ORDER BY updated_at""",
                settings.environment,
                start,
                end,
            )
        return [change for row in rows if (change := _plan_change(row)) is not None]

    return source


def _plan_change(row: Mapping[str, Any]) -> Change | None:
    command = str(row["command"])
    arguments = json.loads(str(row["arguments"]))
    plan = json.loads(row["plan"]) if isinstance(row["plan"], str) else row["plan"]
    if not isinstance(plan, dict):
        return None
    kind: ChangeKind = _KINDS.get(command, "action")
    if command == "rollback":
        kind = "flag" if arguments[:1] == ["flag"] else "deploy"
    way_back_command, way_back = _way_back(plan.get("way_back") or [])
    at = row["updated_at"]
    return Change(
        at=at,
        kind=kind,
        label=f"{plan.get('title') or command} (by the bot)",
        source="bot",
        way_back_command=way_back_command,
        way_back=way_back,
    )


def _way_back(lines: list[object]) -> tuple[str | None, list[str]]:
    """Read `afterwards: /rollback v2.0.5` from a plan's way back into (command, tokens)."""
    for line in reversed(lines):
        text = str(line).removeprefix("afterwards:").strip()
        if text.startswith("/"):
            try:
                words = tokenize(text)
            except UsageError:
                return None, []
            return words[0].lstrip("/"), words[1:]
    return None, []


def change_sources(services: Services) -> list[tuple[str, ChangeSource]]:
    """Return every place changes are seen, by name (for the report's problems)."""
    return [("the engine", engine_changes(services)), ("the bot's records", bot_changes(services))]
