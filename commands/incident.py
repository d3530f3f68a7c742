"""`/incident`: declare an incident and run it — updates, notes, severity, commander, resolution.

Free text (titles, updates, notes, summaries) is taken as typed: apostrophes and `=` signs in it are
text, not grammar. Only `sev=`/`force=` after a title, and `inc=N` / `channel=C…` before the action
(or after it, for the actions without free text: sev, commander, timeline, contacts), are options.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Literal

from pydantic import BaseModel, Field

from adapters.incident_store import SEVERITIES, Incident, IncidentStore, Severity, TimelineEvent
from commands.base import CommandResult, UsageError

USAGE = (
    "/incident declare <title> [sev=P1..P4] | update [graph=yes] <text> | note <text> | sev <P1..P4>"
    " | commander <@user> | resolve [summary] | timeline | contacts"
    "  (inc=<number> for another incident of this channel, channel=<id> from the terminal:"
    " before the action, or last after sev, commander, timeline, contacts)"
)
DEFAULT_SEVERITY: Severity = "P3"
# Only as the first word of an update, so that free text with "graph=" in it stays text.
_GRAPH_OPTION = re.compile(r"^graph=(yes|no)(?:\s+|$)", re.IGNORECASE)
SEVERITY_NAMES: dict[str, str] = {"P1": "Critical", "P2": "High", "P3": "Medium", "P4": "Low"}
TITLE_LIMIT = 120
TEXT_LIMIT = 2500

Action = Literal["declare", "update", "note", "sev", "commander", "resolve", "timeline", "contacts"]
Outcome = Literal[
    "declared", "asked", "updated", "noted", "severity", "commander", "resolved", "timeline", "contacts"
]
_ACTIONS: tuple[Action, ...] = (
    "declare",
    "update",
    "note",
    "sev",
    "commander",
    "resolve",
    "timeline",
    "contacts",
)
_ALIASES: dict[str, Action] = {"severity": "sev", "ic": "commander", "close": "resolve"}
_LEADING = re.compile(r"^(inc|incident|channel)=(\S+)$")
# Actions without free text, whose `inc=` / `channel=` may also come last.
_FIXED_ARGUMENTS: frozenset[Action] = frozenset({"sev", "commander", "timeline", "contacts"})
_DECLARE_OPTION = re.compile(r"^(sev|severity|force)=(\S*)$", re.IGNORECASE)
_MENTION = re.compile(r"^<@([UW][A-Z0-9]+)(?:\|[^>]*)?>$")
_USER_ID = re.compile(r"^[UW][A-Z0-9]{6,}$")
_QUOTES = {'"': '"', "'": "'", "“": "”", "‘": "’"}

UserResolver = Callable[[str], Awaitable[str | None]]
# Whether the caller may act on what lives in a channel (its incidents): given by the bot for Slack,
# where an incident answers only in its own channel; None (the terminal) allows every channel.
ChannelAccess = Callable[[str], Awaitable[bool]]


class Contact(BaseModel):
    """One emergency contact of the runbook: who, for what area, how to reach them."""

    role: str
    area: str
    contact: str


# The runbook's "Contatos de Emergência" table; configuration replaces it (CHATOPS_INCIDENT_CONTACTS).
RUNBOOK_CONTACTS: tuple[Contact, ...] = (
    Contact(role="DevOps Lead", area="Infraestrutura", contact="devops@3dpot.com"),
    Contact(role="Backend Lead", area="API/DB", contact="backend@3dpot.com"),
    Contact(role="Security Lead", area="Incidentes de segurança", contact="security@3dpot.com"),
    Contact(role="On-call (24/7)", area="Produção", contact="oncall@3dpot.com"),
)


class IncidentArgs(BaseModel):
    """What `/incident` was asked to do."""

    action: Action
    text: str = ""
    severity: Severity | None = None
    force: bool = False
    incident_id: int | None = None
    channel_id: str | None = None
    # For an update: attach the current graph of the key metrics to it in the thread.
    graph: bool = False


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


def parse(tokens: list[str]) -> IncidentArgs:
    """Read the action and its free text; tokens may be argv words or [action, raw text]."""
    # The text as typed: argv words re-joined, or the raw Slack text kept whole.
    rest = " ".join(tokens).strip()
    options: dict[str, str] = {}
    word, rest = _first_word(rest)
    while (match := _LEADING.match(word)) is not None:
        _take_option(options, *match.groups())
        word, rest = _first_word(rest)
    if not word:
        raise UsageError(
            "say what to do: declare, update, note, sev, commander, resolve, timeline, contacts", USAGE
        )
    verb = word.lower()
    action = _ALIASES.get(verb, verb)
    if action not in _ACTIONS:
        raise UsageError(f"unknown action `{word[:40]}`", USAGE)
    if action in _FIXED_ARGUMENTS:
        # No free text to take them from: `timeline inc=3` reads as `inc=3 timeline`.
        words = rest.split()
        while words and (match := _LEADING.match(words[-1])) is not None:
            _take_option(options, *match.groups())
            words.pop()
        rest = " ".join(words)
    args = IncidentArgs(
        action=action,
        incident_id=parse_incident_ref(options["inc"]) if "inc" in options else None,
        channel_id=options.get("channel"),
    )
    if action == "declare":
        return _parse_declare(rest, args)
    if action in ("update", "note"):
        graph = _GRAPH_OPTION.match(rest) if action == "update" else None
        if graph:
            args.graph = graph.group(1).lower() == "yes"
            rest = rest[graph.end() :]
        args.text = _required_text(rest, f"{action} needs text: /incident {action} <text>")
    elif action == "resolve":
        args.text = _clip_text(rest)
    elif action == "sev":
        args.severity = parse_severity(re.sub(r"^(sev|severity)=", "", rest, flags=re.IGNORECASE))
    elif action == "commander":
        args.text = _required_text(rest, "commander needs a person: /incident commander @user")
        if len(args.text.split()) != 1:
            raise UsageError("commander takes one person: /incident commander @user", USAGE)
    elif rest:
        raise UsageError(f"{action} takes no arguments", USAGE)
    return args


def _take_option(options: dict[str, str], key: str, value: str) -> None:
    """Keep one `inc=` / `channel=` option, refusing the same one twice."""
    key = "inc" if key == "incident" else key
    if key == "channel" and not re.fullmatch(r"[CGD][A-Z0-9]{2,}", value):
        raise UsageError(f"`{value[:40]}` is not a Slack channel id (C…)", USAGE)
    if key in options and options[key] != value:
        raise UsageError(f"give {key}= once", USAGE)
    options[key] = value


def _first_word(text: str) -> tuple[str, str]:
    """Split off the first word; the rest keeps its spacing."""
    parts = text.split(None, 1)
    if not parts:
        return "", ""
    return parts[0], parts[1].strip() if len(parts) > 1 else ""


def _parse_declare(rest: str, args: IncidentArgs) -> IncidentArgs:
    kept: list[str] = []
    for word in rest.split():
        match = _DECLARE_OPTION.match(word)
        if match is None:
            kept.append(word)
            continue
        key, value = match.group(1).lower(), match.group(2)
        if key == "force":
            args.force = value.lower() in {"yes", "true", "1"}
        else:
            args.severity = parse_severity(value)
    # Remove the options from the raw text without re-spacing what the user typed.
    title = rest
    for word in rest.split():
        if _DECLARE_OPTION.match(word):
            title = title.replace(word, "", 1)
    title = _unquote(" ".join(title.split()))
    if not title:
        raise UsageError("declare needs a title: /incident declare <title> [sev=P1..P4]", USAGE)
    if len(title) > TITLE_LIMIT:
        raise UsageError(f"the title is {len(title)} characters; keep it under {TITLE_LIMIT}", USAGE)
    args.text = title
    return args


def parse_severity(text: str) -> Severity:
    """Read P1..P4 (also p1, 1)."""
    value = text.strip().upper()
    if re.fullmatch(r"[1-4]", value):
        value = "P" + value
    for severity in SEVERITIES:
        if value == severity:
            return severity
    raise UsageError(f"`{text.strip()[:20] or '(nothing)'}` is not a severity; use P1, P2, P3 or P4", USAGE)


def parse_incident_ref(text: str) -> int:
    """Read an incident number: 12, #12 or INC-12."""
    match = re.fullmatch(r"(?:INC-|#)?(\d{1,9})", text.strip(), re.IGNORECASE)
    if match is None:
        raise UsageError(f"`{text[:40]}` is not an incident number (12, #12 or INC-12)", USAGE)
    return int(match.group(1))


def _unquote(text: str) -> str:
    if len(text) >= 2 and _QUOTES.get(text[0]) == text[-1]:
        return text[1:-1].strip()
    return text


def _required_text(text: str, message: str) -> str:
    text = _clip_text(text)
    if not text:
        raise UsageError(message, USAGE)
    return text


def _clip_text(text: str) -> str:
    text = _unquote(text.strip())
    if len(text) > TEXT_LIMIT:
        raise UsageError(f"that is {len(text)} characters; keep it under {TEXT_LIMIT}", USAGE)
    return text


def is_user_id(who: str) -> bool:
    """Return whether a string is a Slack user id (rendered as a mention)."""
    return bool(_USER_ID.match(who))


async def normalize_person(raw: str, resolve: UserResolver | None) -> str:
    """Turn `<@U…|name>`, `U…` or `@name` into a user id where possible, else keep what was typed."""
    raw = raw.strip()
    match = _MENTION.match(raw)
    if match:
        return match.group(1)
    if is_user_id(raw):
        return raw
    if resolve is not None:
        found = await resolve(raw.lstrip("@"))
        if found:
            return found
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
    return await store.open_in(channel) if open_only else await store.latest_in(channel)


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
) -> IncidentResult:
    """Carry out one `/incident` action against the incident record and its timeline.

    With `access`, an incident (or a `channel=`) of a channel it does not allow is refused before
    anything is read or changed.
    """
    now = now or datetime.now(UTC)
    if args.channel_id is not None and access is not None and not await access(args.channel_id):
        raise UsageError(f"channel={args.channel_id} is another channel; run this there", USAGE)
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
    # Reading works on the latest incident, resolved or not; changing needs an open one.
    incident = await target(store, args, channel_id, open_only=args.action != "timeline")
    if incident is None:
        raise UsageError(
            "there is no open incident in this channel; declare one: /incident declare <title>", USAGE
        )
    await check_access(incident, access)
    if args.action == "timeline":
        events = await store.events(incident.id)
        return IncidentResult(
            outcome="timeline", incident=incident, events=events, contacts=contacts, as_of=now
        )
    if incident.status != "open":
        raise UsageError(f"{incident.reference} is resolved; it can no longer change", USAGE)
    changed: tuple[Incident, TimelineEvent]
    previous: str | None = None
    if args.action == "update":
        changed = await store.change(
            incident.id, ("update", actor, args.text, {}), now, last_update=args.text, last_update_at=now
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
    elif args.action == "commander":
        person = await normalize_person(args.text, resolve_user)
        previous = incident.commander
        text = f"Commander {who(previous)} → {who(person)}"
        changed = await store.change(
            incident.id, ("commander", actor, text, {"from": previous, "to": person}), now, commander=person
        )
        outcome = "commander"
    else:
        changed = await _resolve(store, incident, args.text, actor, now)
        outcome = "resolved"
    updated, event = changed
    return IncidentResult(
        outcome=outcome, incident=updated, event=event, contacts=contacts, previous=previous, as_of=now
    )


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
