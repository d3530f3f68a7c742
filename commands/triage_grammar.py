"""The /triage grammar: its three forms (checks, lookup by id, recent logs), parsed and written back."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Literal

from commands import logsearch
from commands.base import (
    Arguments,
    Model,
    UsageError,
    format_duration,
    parse_duration,
    parse_positive_int,
)
from commands.ids import json_forms, parse_id

USAGE = (
    "/triage [window=5m] | trace <trace_id> | request <request_id>"
    " | logs [level] [path] [since=15m] [limit=50] | changes [since=2h]"
)

MIN_WINDOW = timedelta(seconds=10)
MAX_WINDOW = timedelta(hours=24)
MAX_LOGS_SINCE = timedelta(days=30)
DEFAULT_LOGS_SINCE = timedelta(minutes=15)
DEFAULT_LOGS_LIMIT = 50
MAX_LOGS_LIMIT = 500

_TRACE_ID = re.compile(r"^[0-9a-f]{32}$")
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")
# An AWS X-Ray trace header: Root=1-<8 hex>-<24 hex>;Parent=...;Sampled=...
_XRAY_HEADER = re.compile(r"(?:^|;)Root=(1-[0-9a-fA-F]{8}-[0-9a-fA-F]{24})(?:;|$)")


class TriageArgs(Model):
    """Run every check; `window` overrides the checklist's rate window."""

    window: timedelta | None = None


class LookupArgs(Model):
    """Find every log line and audit row of one trace or request."""

    kind: Literal["trace", "request"]
    id: str

    def needles(self) -> list[str]:
        """Return the texts the logs and audit rows hold the id as: JSON text (a backslash doubled...)."""
        return json_forms(self.id)


class LogsArgs(Model):
    """Recent log lines, filtered by minimum level and path prefix."""

    level: str | None = None
    path: str | None = None
    since: timedelta = DEFAULT_LOGS_SINCE
    limit: int = DEFAULT_LOGS_LIMIT


class ChangesArgs(Model):
    """What changed in the window, and which breached check it came just before."""

    since: timedelta = timedelta(hours=2)


TriageCommand = TriageArgs | LookupArgs | LogsArgs | ChangesArgs
MAX_CHANGES_SINCE = timedelta(days=7)


def parse(tokens: list[str]) -> TriageCommand:
    """Read `/triage` arguments; anything unexpected is a usage error naming it."""
    args = Arguments.parse(tokens, USAGE)
    sub = args.optional_positional()
    if sub is None:
        window = args.option("window", _window, None)
        args.done()
        return TriageArgs(window=window)
    lowered = sub.lower()
    if lowered == "trace":
        raw = args.next_positional("trace id")
        args.done()
        return LookupArgs(kind="trace", id=parse_trace_id(raw, USAGE))
    if lowered == "request":
        raw = args.next_positional("request id")
        args.done()
        return LookupArgs(kind="request", id=parse_request_id(raw, USAGE))
    if lowered == "logs":
        return _parse_logs(args)
    if lowered == "changes":
        since = args.option("since", lambda text: parse_duration(text, maximum=MAX_CHANGES_SINCE), None)
        args.done()
        return ChangesArgs(since=since) if since is not None else ChangesArgs()
    raise args.fail(f"unknown subcommand `{sub[:40]}` (use trace, request, logs or changes)")


def _window(text: str) -> timedelta:
    window = parse_duration(text, maximum=MAX_WINDOW)
    if window < MIN_WINDOW:
        raise UsageError(f"`{text}` is shorter than the minimum of {format_duration(MIN_WINDOW)}")
    return window


def parse_trace_id(text: str, usage: str = USAGE) -> str:
    """Accept a trace id as platforms write it, and return the id the logs hold.

    Any token of printable characters is an id (X-Ray `1-5759e988-...`, 16-hex, vendor ids ...).
    Headers give their trace id: a W3C traceparent, an X-Ray `Root=...;Parent=...`. A W3C trace id
    (32 hex digits) is written in lower case, as W3C and the logs write it; all zeros is no trace.
    """
    candidate = parse_id(text, "a trace id", usage)
    traceparent = _TRACEPARENT.match(candidate.lower())
    if traceparent:
        candidate = traceparent.group(1)
    xray = _XRAY_HEADER.search(candidate)
    if xray:
        candidate = xray.group(1)
    if _TRACE_ID.match(candidate.lower()):
        candidate = candidate.lower()
        if set(candidate) == {"0"}:
            raise UsageError(
                f"`{text[:60]}` is not a trace id: W3C calls the all-zero trace id invalid", usage
            )
    return candidate


def parse_request_id(text: str, usage: str = USAGE) -> str:
    """Accept a request id as platforms write it (X-Request-ID): any token of printable characters."""
    return parse_id(text, "a request id", usage)


def _parse_logs(args: Arguments) -> LogsArgs:
    level: str | None = None
    path: str | None = None
    while (token := args.optional_positional()) is not None:
        named = logsearch.level_name(token)
        if named is not None:
            if level is not None:
                raise args.fail(f"level given twice (`{level}` and `{token[:40]}`)")
            level = named
        elif token.startswith("/"):
            if path is not None:
                raise args.fail(f"path given twice (`{path}` and `{token[:40]}`)")
            if len(token) > 512 or any(char.isspace() for char in token):
                raise args.fail(f"`{token[:40]}` is not a path (no spaces, at most 512 characters)")
            path = token
        else:
            levels = ", ".join(logsearch.LEVELS)
            raise args.fail(f"`{token[:40]}` is neither a level ({levels}) nor a path (starting with /)")
    since = args.option("since", _logs_since, DEFAULT_LOGS_SINCE)
    limit = args.option("limit", _logs_limit, DEFAULT_LOGS_LIMIT)
    args.done()
    return LogsArgs(level=level, path=path, since=since, limit=limit)


def _logs_since(text: str) -> timedelta:
    return parse_duration(text, maximum=MAX_LOGS_SINCE)


def _logs_limit(text: str) -> int:
    return parse_positive_int(text, MAX_LOGS_LIMIT)


def unparse(command: TriageCommand) -> list[str]:
    """Write arguments back as tokens that `parse` reads to the same arguments."""
    if isinstance(command, TriageArgs):
        return [] if command.window is None else [f"window={format_duration(command.window)}"]
    if isinstance(command, LookupArgs):
        return [command.kind, command.id]
    if isinstance(command, ChangesArgs):
        return ["changes", f"since={format_duration(command.since)}"]
    tokens = ["logs"]
    if command.level:
        tokens.append(command.level)
    if command.path:
        tokens.append(command.path)
    return [*tokens, f"since={format_duration(command.since)}", f"limit={command.limit}"]
