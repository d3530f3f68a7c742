"""The grammar of `/incident`: an action, its free text, and `key=value` options anywhere in the line.

Options are the words `key=value` whose key is one of the action's options (OPTIONS): they count
wherever they stand, before the action or after it, in the middle of a title or at its end. Every
other word is text, as typed: apostrophes, `=` signs (`api=v2.0.5`) and line breaks stay. A word
whose key is an option of another action (`owner=` in a note) is refused, named, rather than
guessed at; text in double quotes is never read for options (`note "sev=P1 was wrong"`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal, get_args

from adapters.incident_store import SEVERITIES, Severity
from commands.base import Model, UsageError, parse_duration

USAGE = (
    "/incident declare <title> [sev=P1..P4] [place=dedicated|in-place] | update [graph=yes] [text]"
    " | note <text> | sev <P1..P4> | commander <@user> | role comms|scribe <@user|none>"
    " | followup <text> [owner=@user] | resolve [summary] | timeline | contacts | stats [since=90d]"
    "  (inc=<number> for another incident, channel=<id> from the terminal; options go anywhere)"
)
TITLE_LIMIT = 120
TEXT_LIMIT = 2500
STATS_DEFAULT = timedelta(days=90)
STATS_MAXIMUM = timedelta(days=3650)

Action = Literal[
    "declare",
    "update",
    "note",
    "sev",
    "commander",
    "role",
    "followup",
    "resolve",
    "timeline",
    "contacts",
    "stats",
]
ACTIONS: tuple[Action, ...] = get_args(Action)
_ALIASES: dict[str, Action] = {
    "severity": "sev",
    "ic": "commander",
    "close": "resolve",
    "follow-up": "followup",
    "metrics": "stats",
}
RoleName = Literal["commander", "comms", "scribe"]
ROLE_NAMES: dict[str, RoleName] = {
    "commander": "commander",
    "ic": "commander",
    "comms": "comms",
    "communications": "comms",
    "scribe": "scribe",
}
# The people a role is given to by name, and how it is written.
ROLE_TITLES: dict[RoleName, str] = {
    "commander": "Commander",
    "comms": "Communications lead",
    "scribe": "Scribe",
}
Place = Literal["dedicated", "in-place"]

# Every option key, and the actions that take it. `inc` and `channel` name the incident; `channel`
# is also where a declare is made from the terminal.
_TARGET = ("inc", "channel")
OPTIONS: dict[Action, tuple[str, ...]] = {
    "declare": ("sev", "force", "channel", "place"),
    "update": ("graph", *_TARGET),
    "note": _TARGET,
    "sev": ("sev", *_TARGET),
    "commander": _TARGET,
    "role": _TARGET,
    "followup": ("owner", *_TARGET),
    "resolve": _TARGET,
    "timeline": _TARGET,
    "contacts": _TARGET,
    "stats": ("since",),
}
_KEY_ALIASES = {"severity": "sev", "incident": "inc"}
OPTION_KEYS = frozenset(key for keys in OPTIONS.values() for key in keys)
FREE_TEXT: frozenset[Action] = frozenset({"declare", "update", "note", "followup", "resolve"})
# Keys are written in lowercase, as every command's options are (commands/base.py).
_OPTION_WORD = re.compile(r"^([a-z][a-z_-]*)=(.*)$", re.DOTALL)
_WORD = re.compile(r"\S+")
_OPEN_QUOTES = ('"', "“")
_CLOSE_QUOTES = ('"', "”")
_QUOTES = {'"': '"', "'": "'", "“": "”", "‘": "’"}
_CHANNEL_ID = re.compile(r"[CGD][A-Z0-9]{2,}")


class IncidentArgs(Model):
    """What `/incident` was asked to do."""

    action: Action
    text: str = ""
    severity: Severity | None = None
    force: bool = False
    incident_id: int | None = None
    channel_id: str | None = None
    # For an update: attach the current graph of the key metrics to it in the thread.
    graph: bool = False
    # For a role: which one.
    role: RoleName | None = None
    # For a follow-up: who owns it (as typed; a person is looked up when it runs).
    owner: str | None = None
    # For a declare: a channel of its own, or the one it is declared in (None: the setting).
    place: Place | None = None
    # For stats: how far back.
    since: timedelta | None = None
    # For an update: the tactical form's parts (Conditions, Actions, Needs), when it came from it.
    tactical: dict[str, str] | None = None


@dataclass
class _Word:
    start: int
    end: int
    text: str
    quoted: bool


def parse(tokens: list[str]) -> IncidentArgs:
    """Read the action, its options and its free text; tokens may be argv words or [raw Slack text]."""
    raw = _raw_text(tokens)
    words = _words(raw)
    options: dict[str, tuple[str, str]] = {}
    position = 0
    while position < len(words) and _option(words[position]) is not None:
        position += 1
    if position == len(words):
        raise UsageError("say what to do: " + ", ".join(ACTIONS), USAGE)
    verb = words[position].text.lower()
    action = _ALIASES.get(verb, verb)
    if action not in ACTIONS or words[position].quoted:
        raise UsageError(f"unknown action `{words[position].text[:40]}`", USAGE)
    taken: list[_Word] = []
    for index, word in enumerate(words):
        if index == position:
            continue
        found = _option(word)
        if found is None:
            continue
        key, value = found
        if key not in OPTIONS[action]:
            if index < position or action not in FREE_TEXT:
                raise UsageError(_misplaced(word.text, key, action), USAGE)
            raise UsageError(
                _misplaced(word.text, key, action) + " (put the text in double quotes to keep it as words)",
                USAGE,
            )
        if key in options and options[key][0] != value:
            raise UsageError(f"give {key}= once (`{options[key][1][:40]}` and `{word.text[:40]}`)", USAGE)
        options[key] = (value, word.text)
        taken.append(word)
    rest = _without(raw, words[position].end, taken)
    args = IncidentArgs(action=action)
    _apply_options(args, {key: value for key, (value, _) in options.items()})
    return _ACTION_PARSERS[action](args, rest)


def _raw_text(tokens: list[str]) -> str:
    """The text as typed: Slack's raw text kept whole, or argv words re-joined (spaced ones quoted)."""
    if len(tokens) == 1:
        return tokens[0].strip()
    return " ".join(f'"{token}"' if any(char.isspace() for char in token) else token for token in tokens)


def _words(raw: str) -> list[_Word]:
    """Split into words, marking those inside double quotes (never options, never the action)."""
    words: list[_Word] = []
    quoting = False
    for match in _WORD.finditer(raw):
        text = match.group(0)
        opens = not quoting and text.startswith(_OPEN_QUOTES)
        quoted = quoting or opens
        words.append(_Word(match.start(), match.end(), text, quoted))
        if opens:
            quoting = not (len(text) > 1 and text.endswith(_CLOSE_QUOTES))
        elif quoting and text.endswith(_CLOSE_QUOTES):
            quoting = False
    return words


def _option(word: _Word) -> tuple[str, str] | None:
    """Return (key, value) when the word is an option of some action, else None (it is text)."""
    if word.quoted:
        return None
    match = _OPTION_WORD.match(word.text)
    if match is None:
        return None
    key = _KEY_ALIASES.get(match.group(1), match.group(1))
    return (key, match.group(2)) if key in OPTION_KEYS else None


def _misplaced(word: str, key: str, action: str) -> str:
    owners = [name for name, keys in OPTIONS.items() if key in keys]
    return f"`{word[:40]}` does not go with {action}: {key}= is an option of {', '.join(owners)}"


def _without(raw: str, start: int, taken: list[_Word]) -> str:
    """Return the text after the action with the option words taken out, spacing otherwise kept."""
    pieces: list[str] = []
    cursor = start
    for word in sorted(taken, key=lambda item: item.start):
        if word.start < start:
            continue
        pieces.append(raw[cursor : word.start])
        cursor = word.end
    pieces.append(raw[cursor:])
    text = "".join(pieces)
    text = re.sub(r"[ \t]{2,}", " ", text)
    return re.sub(r"[ \t]+(?=\n)|(?<=\n)[ \t]+", "", text).strip()


def _apply_options(args: IncidentArgs, options: dict[str, str]) -> None:
    if "inc" in options:
        args.incident_id = parse_incident_ref(options["inc"])
    if "channel" in options:
        value = options["channel"]
        if not _CHANNEL_ID.fullmatch(value):
            raise UsageError(f"`channel={value[:40]}` is not a Slack channel id (C…)", USAGE)
        args.channel_id = value
    if "sev" in options:
        args.severity = parse_severity(options["sev"])
    if "force" in options:
        args.force = _yes_no("force", options["force"])
    if "graph" in options:
        args.graph = _yes_no("graph", options["graph"])
    if "owner" in options:
        if not options["owner"].strip():
            raise UsageError("owner= needs a person: owner=@alice", USAGE)
        args.owner = options["owner"].strip()
    if "place" in options:
        value = options["place"].lower().replace("_", "-")
        if value not in ("dedicated", "in-place"):
            raise UsageError(f"`place={options['place'][:40]}`: use place=dedicated or place=in-place", USAGE)
        args.place = "dedicated" if value == "dedicated" else "in-place"
    if "since" in options:
        try:
            args.since = parse_duration(options["since"], maximum=STATS_MAXIMUM)
        except UsageError as error:
            raise UsageError(f"since: {error.message}", USAGE) from None


def _yes_no(key: str, value: str) -> bool:
    lowered = value.lower()
    if lowered not in ("yes", "no", "true", "false", "1", "0"):
        raise UsageError(f"`{key}={value[:40]}`: use {key}=yes or {key}=no", USAGE)
    return lowered in ("yes", "true", "1")


# --- each action's own words -------------------------------------------------------------------


def _declare(args: IncidentArgs, rest: str) -> IncidentArgs:
    title = _unquote(" ".join(rest.split()))
    if not title:
        raise UsageError("declare needs a title: /incident declare <title> [sev=P1..P4]", USAGE)
    if len(title) > TITLE_LIMIT:
        raise UsageError(f"the title is {len(title)} characters; keep it under {TITLE_LIMIT}", USAGE)
    args.text = title
    return args


def _update(args: IncidentArgs, rest: str) -> IncidentArgs:
    # Without text: in Slack, the tactical form (Conditions · Actions · Needs) opens instead.
    args.text = _clip_text(rest)
    return args


def _note(args: IncidentArgs, rest: str) -> IncidentArgs:
    args.text = _required_text(rest, "note needs text: /incident note <text>")
    return args


def _followup(args: IncidentArgs, rest: str) -> IncidentArgs:
    args.text = _required_text(rest, "followup needs text: /incident followup <what to do> [owner=@user]")
    return args


def _resolve(args: IncidentArgs, rest: str) -> IncidentArgs:
    args.text = _clip_text(rest)
    return args


def _sev(args: IncidentArgs, rest: str) -> IncidentArgs:
    words = rest.split()
    if len(words) > 1:
        raise UsageError(f"sev takes one severity; `{words[1][:40]}` is one word too many", USAGE)
    if words:
        given = parse_severity(words[0])
        if args.severity is not None and args.severity != given:
            raise UsageError("give the severity once", USAGE)
        args.severity = given
    if args.severity is None:
        raise UsageError("sev needs a severity: /incident sev P1", USAGE)
    return args


def _commander(args: IncidentArgs, rest: str) -> IncidentArgs:
    args.text = _required_text(rest, "commander needs a person: /incident commander @user")
    if len(args.text.split()) != 1:
        raise UsageError("commander takes one person: /incident commander @user", USAGE)
    return args


def _role(args: IncidentArgs, rest: str) -> IncidentArgs:
    words = rest.split()
    known = ", ".join(sorted(set(ROLE_NAMES.values())))
    if not words:
        raise UsageError(
            f"role needs a role and a person: /incident role comms @user (roles: {known})", USAGE
        )
    role = ROLE_NAMES.get(words[0].lower())
    if role is None:
        raise UsageError(f"unknown role `{words[0][:40]}`; the roles are {known}", USAGE)
    if len(words) != 2:
        raise UsageError(f"role {role} takes one person: /incident role {role} @user", USAGE)
    args.role = role
    args.text = words[1]
    return args


def _no_arguments(args: IncidentArgs, rest: str) -> IncidentArgs:
    if rest:
        raise UsageError(f"{args.action} takes no arguments; `{rest.split()[0][:40]}` is not one", USAGE)
    return args


def _stats(args: IncidentArgs, rest: str) -> IncidentArgs:
    _no_arguments(args, rest)
    args.since = args.since or STATS_DEFAULT
    return args


_ACTION_PARSERS = {
    "declare": _declare,
    "update": _update,
    "note": _note,
    "followup": _followup,
    "resolve": _resolve,
    "sev": _sev,
    "commander": _commander,
    "role": _role,
    "timeline": _no_arguments,
    "contacts": _no_arguments,
    "stats": _stats,
}


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
