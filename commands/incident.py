"""`/incident`: declare an incident and run it — updates, notes, severity, roles, follow-ups, resolution.

The grammar (options anywhere, free text as typed) is in `commands/incident_grammar.py`; the metrics
in `commands/incident_stats.py`. This module carries each action out against the incident record.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Literal

from pydantic import Field

from adapters.followup_store import Followup, FollowupStore
from adapters.incident_store import Incident, IncidentStore, Severity, TimelineEvent
from commands.base import CommandResult, UsageError
from commands.incident_contacts import RUNBOOK_CONTACTS, Contact
from commands.incident_grammar import (
    ROLE_TITLES,
    TEXT_LIMIT,
    TITLE_LIMIT,
    USAGE,
    IncidentArgs,
    Place,
    RoleName,
    parse,
    parse_incident_ref,
    parse_severity,
)
from commands.incident_stats import IncidentStats, compute

__all__ = [
    "ROLE_TITLES",
    "RUNBOOK_CONTACTS",
    "TEXT_LIMIT",
    "TITLE_LIMIT",
    "USAGE",
    "Contact",
    "IncidentArgs",
    "Place",
    "RoleName",
    "parse",
    "parse_incident_ref",
    "parse_severity",
]

DEFAULT_SEVERITY: Severity = "P3"
SEVERITY_NAMES: dict[str, str] = {"P1": "Critical", "P2": "High", "P3": "Medium", "P4": "Low"}

Outcome = Literal[
    "declared",
    "asked",
    "updated",
    "noted",
    "severity",
    "commander",
    "role",
    "followup",
    "resolved",
    "timeline",
    "contacts",
    "stats",
    "form",
]
_MENTION = re.compile(r"^<@([UW][A-Z0-9]+)(?:\|[^>]*)?>$")
_USER_ID = re.compile(r"^[UW][A-Z0-9]{6,}$")
# Typed for "nobody has this role now" (communications lead, scribe).
_NOBODY = frozenset({"none", "nobody", "-"})
# The incident's column of each role.
ROLE_FIELDS: dict[RoleName, str] = {"commander": "commander", "comms": "comms_lead", "scribe": "scribe"}
# The tactical update's parts, in order: what is happening, what is being done, what is needed.
TACTICAL_PARTS: tuple[tuple[str, str], ...] = (
    ("conditions", "Conditions"),
    ("actions", "Actions"),
    ("needs", "Needs"),
)

# Slack: "Channel names may only contain lowercase letters, numbers, hyphens, and underscores, and
# must be 80 characters or less" (docs.slack.dev/reference/methods/conversations.create).
CHANNEL_NAME_LIMIT = 80
# The title's part of an incident channel's name, at most (a name people can read in the sidebar).
CHANNEL_SLUG_LIMIT = 40

UserResolver = Callable[[str], Awaitable[str | None]]
# Whether Slack knows a user id: True, False, or None when it cannot say.
UserCheck = Callable[[str], Awaitable[bool | None]]
# Whether the caller may act on what lives in a channel (its incidents): given by the bot for Slack,
# where an incident answers only in its own channel; None (the terminal) allows every channel.
ChannelAccess = Callable[[str], Awaitable[bool]]


class IncidentResult(CommandResult):
    """What `/incident` did, with the incident as it is now."""

    outcome: Outcome
    incident: Incident | None = None
    event: TimelineEvent | None = None
    events: list[TimelineEvent] = Field(default_factory=list)
    contacts: list[Contact] = Field(default_factory=list)
    # For a declare that was asked about instead: what would have been declared.
    pending_title: str | None = None
    pending_severity: Severity | None = None
    previous: str | None = None
    as_of: datetime
    # For a role: which one changed. For a follow-up: the one added. For stats: the figures.
    role: RoleName | None = None
    followup: Followup | None = None
    stats: IncidentStats | None = None
    # The picture of the stats, drawn by the bot for Slack (not part of the JSON).
    png: bytes | None = Field(default=None, exclude=True, repr=False)
    # Where a declare wanted to live, and whether it does (filled by the bot for Slack).
    place: Place | None = None
    # What the bot could not do in Slack (header not posted, pin refused); filled by the bot.
    slack_problems: list[str] = Field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Return whether it did what was asked (a declare that asks first did not, yet)."""
        return self.outcome != "asked"

    @property
    def duration(self) -> timedelta | None:
        """Return how long the incident lasted, or has lasted so far."""
        if self.incident is None:
            return None
        return incident_duration(self.incident, self.as_of)


def incident_duration(incident: Incident, now: datetime) -> timedelta:
    """Return the incident's duration: to its resolution, or to now while open."""
    end = incident.resolved_at or now
    return max(end - incident.started_at, timedelta(0))


def format_minutes(duration: timedelta) -> str:
    """Write a duration for people: 45 min, 2 h 05 min, 1 d 3 h."""
    minutes = int(duration.total_seconds() // 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes:02d} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


def channel_name(prefix: str, number: int, title: str) -> str:
    """Name an incident's own channel: inc-12-checkout-returns-5xx (what Slack allows, cut at a word)."""
    folded = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode().lower()
    slug = re.sub(r"[^a-z0-9]+", "-", folded).strip("-")
    base = f"{prefix}-{number}"
    room = min(CHANNEL_SLUG_LIMIT, CHANNEL_NAME_LIMIT - len(base) - 1)
    if len(slug) > room:
        cut = slug[: room + 1]
        slug = cut.rsplit("-", 1)[0] if "-" in cut else slug[:room]
    slug = slug.strip("-")
    return f"{base}-{slug}" if slug else base


def is_user_id(who: str) -> bool:
    """Return whether a string is a Slack user id (rendered as a mention)."""
    return bool(_USER_ID.match(who))


async def normalize_person(raw: str, resolve: UserResolver | None, exists: UserCheck | None = None) -> str:
    """Turn `<@U…|name>`, `U…` or `@name` into a Slack user id.

    With Slack (a resolver given), someone Slack does not know is refused, named; without it (the
    terminal with no Slack), a typed name is kept as typed.
    """
    raw = raw.strip()
    match = _MENTION.match(raw)
    if match:
        return match.group(1)
    if is_user_id(raw):
        if exists is not None and await exists(raw) is False:
            raise UsageError(f"there is no Slack user {raw}", USAGE)
        return raw
    if resolve is not None:
        found = await resolve(raw.lstrip("@"))
        if found:
            return found
        raise UsageError(
            f"there is no Slack user called {raw[:40]}; mention them (type @ and pick the name)", USAGE
        )
    return raw


async def target(
    store: IncidentStore, args: IncidentArgs, channel_id: str | None, open_only: bool = True
) -> Incident | None:
    """Find the incident an action is about: by number, else the channel's open (or latest) one."""
    if args.incident_id is not None:
        incident = await store.get(args.incident_id)
        if incident is None:
            raise UsageError(f"there is no incident INC-{args.incident_id}", USAGE)
        return incident
    channel = args.channel_id or channel_id
    if channel is None:
        raise UsageError(
            "which incident? run this in the incident's channel, or give inc=<number> or channel=<id>"
            " (the terminal uses CHATOPS_INCIDENT_CHANNEL)",
            USAGE,
        )
    found = await store.open_in(channel) if open_only else await store.latest_in(channel)
    if found is None:
        moved = await store.open_declared_from(channel)
        if moved is not None:
            where = f"#{moved.channel_name}" if moved.channel_name else moved.channel_id
            raise UsageError(
                f"{moved.reference} was declared here and lives in its own channel, {where}:"
                f" run this there, or add inc={moved.id}",
                USAGE,
            )
    return found


async def check_access(incident: Incident, access: ChannelAccess | None) -> None:
    """Refuse an incident of another channel unless `access` allows that channel (None: all do)."""
    if access is not None and not await access(incident.channel_id):
        raise UsageError(f"{incident.reference} belongs to another channel; run this there", USAGE)


async def run(
    store: IncidentStore,
    args: IncidentArgs,
    *,
    actor: str,
    channel_id: str | None,
    contacts: list[Contact],
    resolve_user: UserResolver | None = None,
    now: datetime | None = None,
    access: ChannelAccess | None = None,
    user_exists: UserCheck | None = None,
    followups: FollowupStore | None = None,
) -> IncidentResult:
    """Carry out one `/incident` action against the incident record and its timeline.

    With `access`, an incident (or a `channel=`) of a channel it does not allow is refused before
    anything is read or changed.
    """
    now = now or datetime.now(UTC)
    if args.channel_id is not None and access is not None and not await access(args.channel_id):
        raise UsageError(f"channel={args.channel_id} is another channel; run this there", USAGE)
    if args.action == "stats":
        since = args.since or timedelta(days=90)
        figures = compute(await store.declared_since(now - since), since, now)
        return IncidentResult(outcome="stats", stats=figures, as_of=now)
    if args.action == "contacts":
        incident = await _maybe_target(store, args, channel_id)
        if incident is not None:
            await check_access(incident, access)
        return IncidentResult(outcome="contacts", incident=incident, contacts=contacts, as_of=now)
    if args.action == "declare":
        channel = args.channel_id or channel_id
        if channel is None:
            raise UsageError(
                "declare in a channel, or give channel=<id> (or set CHATOPS_INCIDENT_CHANNEL)", USAGE
            )
        return await declare(
            store,
            channel_id=channel,
            title=args.text,
            severity=args.severity or DEFAULT_SEVERITY,
            actor=actor,
            force=args.force,
            contacts=contacts,
            now=now,
        )
    # Reading works on the latest incident, resolved or not, as do follow-ups (during or after it);
    # changing needs an open one.
    if args.action in ("timeline", "followup"):
        incident = await target(store, args, channel_id, open_only=False)
        if incident is None:
            raise UsageError(
                "there is no incident in this channel; give its number (inc=12) or declare one", USAGE
            )
        await check_access(incident, access)
        if args.action == "followup":
            return await _followup(followups, incident, args, actor, contacts, now, resolve_user, user_exists)
        events = await store.events(incident.id)
        return IncidentResult(
            outcome="timeline", incident=incident, events=events, contacts=contacts, as_of=now
        )
    incident = await open_target(store, args, channel_id, access)
    return await _change(store, incident, args, actor, contacts, now, resolve_user, user_exists)


async def open_target(
    store: IncidentStore, args: IncidentArgs, channel_id: str | None, access: ChannelAccess | None
) -> Incident:
    """Find the open incident a change is about, refusing another channel's or a resolved one."""
    incident = await target(store, args, channel_id, open_only=True)
    if incident is None:
        raise UsageError(
            "there is no open incident in this channel; declare one: /incident declare <title>", USAGE
        )
    await check_access(incident, access)
    if incident.status != "open":
        raise UsageError(f"{incident.reference} is resolved; it can no longer change", USAGE)
    return incident


async def _change(
    store: IncidentStore,
    incident: Incident,
    args: IncidentArgs,
    actor: str,
    contacts: list[Contact],
    now: datetime,
    resolve_user: UserResolver | None,
    user_exists: UserCheck | None,
) -> IncidentResult:
    """Change an open incident: update, note, severity, a role, or its resolution."""
    changed: tuple[Incident, TimelineEvent]
    previous: str | None = None
    if args.action == "update":
        if not args.text:
            raise UsageError(
                "update needs text: /incident update <text> (in Slack, /incident update alone opens"
                " the form: Conditions · Actions · Needs)",
                USAGE,
            )
        details = {"tactical": args.tactical} if args.tactical else {}
        changed = await store.change(
            incident.id,
            ("update", actor, args.text, details),
            now,
            last_update=args.text,
            last_update_at=now,
        )
        outcome: Outcome = "updated"
    elif args.action == "note":
        changed = await store.change(incident.id, ("note", actor, args.text, {}), now)
        outcome = "noted"
    elif args.action == "sev":
        assert args.severity is not None
        previous = incident.severity
        text = f"Severity {incident.severity} → {args.severity}"
        changed = await store.change(
            incident.id,
            ("severity", actor, text, {"from": previous, "to": args.severity}),
            now,
            severity=args.severity,
        )
        outcome = "severity"
    elif args.action in ("commander", "role"):
        role: RoleName = args.role or "commander"
        person = await _person_for(role, args.text, resolve_user, user_exists)
        previous = getattr(incident, ROLE_FIELDS[role])
        title = ROLE_TITLES[role]
        text = f"{title} {who(previous)} → {who(person)}"
        kind = "commander" if role == "commander" else "role"
        fields = {ROLE_FIELDS[role]: person}
        change: dict[str, str | None] = {"from": previous, "to": person, "role": role}
        changed = await store.change(incident.id, (kind, actor, text, change), now, **fields)
        outcome = "commander" if role == "commander" else "role"
        updated, event = changed
        return IncidentResult(
            outcome=outcome,
            incident=updated,
            event=event,
            contacts=contacts,
            previous=previous,
            role=role,
            as_of=now,
        )
    else:
        changed = await _resolve(store, incident, args.text, actor, now)
        outcome = "resolved"
    updated, event = changed
    return IncidentResult(
        outcome=outcome, incident=updated, event=event, contacts=contacts, previous=previous, as_of=now
    )


async def _person_for(
    role: RoleName, typed: str, resolve_user: UserResolver | None, user_exists: UserCheck | None
) -> str | None:
    """Read who takes a role: a person, or nobody (`none`) for the roles beside the commander."""
    if typed.lower() in _NOBODY:
        if role == "commander":
            raise UsageError("an incident always has a commander: /incident commander @user", USAGE)
        return None
    return await normalize_person(typed, resolve_user, user_exists)


async def _followup(
    followups: FollowupStore | None,
    incident: Incident,
    args: IncidentArgs,
    actor: str,
    contacts: list[Contact],
    now: datetime,
    resolve_user: UserResolver | None,
    user_exists: UserCheck | None,
) -> IncidentResult:
    """Record a follow-up (during the incident or after it); filing the RCA files it as an issue."""
    if followups is None:
        raise UsageError("follow-ups are not available here", USAGE)
    owner = await normalize_person(args.owner, resolve_user, user_exists) if args.owner else None
    text = f"Follow-up: {args.text}"
    followup, event = await followups.add(
        incident.id, args.text, owner, actor, now, ("followup", text, {"owner": owner})
    )
    return IncidentResult(
        outcome="followup", incident=incident, event=event, followup=followup, contacts=contacts, as_of=now
    )


def tactical_text(parts: dict[str, str]) -> str:
    """Write a tactical update (Conditions · Actions · Needs) as the update's text, one part a line."""
    lines = [f"{label}: {parts[key].strip()}" for key, label in TACTICAL_PARTS if parts.get(key, "").strip()]
    return "\n".join(lines)


async def declare(
    store: IncidentStore,
    *,
    channel_id: str,
    title: str,
    severity: Severity,
    actor: str,
    force: bool,
    contacts: list[Contact],
    now: datetime,
    started_at: datetime | None = None,
    origin: str | None = None,
) -> IncidentResult:
    """Declare an incident, or ask when one is already open in the channel (unless forced)."""
    commander = actor if is_user_id(actor) else None
    text = f"Declared: {title} ({severity})" + (f" from {origin}" if origin else "")
    incident, existing = await store.declare(
        channel_id=channel_id,
        title=title,
        severity=severity,
        declared_by=actor,
        commander=commander,
        started_at=min(started_at or now, now),
        declared_at=now,
        force=force,
        first_event=("declared", text, {"severity": severity, "origin": origin}),
    )
    if existing is not None:
        return IncidentResult(
            outcome="asked",
            incident=existing,
            contacts=contacts,
            pending_title=title,
            pending_severity=severity,
            as_of=now,
        )
    events = await store.events(incident.id)
    return IncidentResult(
        outcome="declared",
        incident=incident,
        event=events[-1] if events else None,
        contacts=contacts,
        as_of=now,
    )


async def _resolve(
    store: IncidentStore, incident: Incident, summary: str, actor: str, now: datetime
) -> tuple[Incident, TimelineEvent]:
    duration = format_minutes(incident_duration(incident, now))
    text = f"Resolved after {duration}" + (f": {summary}" if summary else "")
    return await store.change(
        incident.id,
        ("resolved", actor, text, {"summary": summary}),
        now,
        status="resolved",
        resolved_at=now,
        summary=summary or None,
    )


async def _maybe_target(store: IncidentStore, args: IncidentArgs, channel_id: str | None) -> Incident | None:
    if args.incident_id is None and args.channel_id is None and channel_id is None:
        return None
    return await target(store, args, channel_id, open_only=False)


def who(person: str | None) -> str:
    """Write a person for Slack mrkdwn: a mention for a user id, else as typed."""
    if not person:
        return "(nobody)"
    return f"<@{person}>" if is_user_id(person) else person
