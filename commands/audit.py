"""`/audit`: the runbook's audit-log investigations as read-only, parameterized, indexed queries.

This module reads the arguments and runs a form; the request models are in `audit_request`, the
results in `audit_results`, the SQL in `audit_queries`, exports in `audit_export`.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from commands.audit_forms import query_form
from commands.audit_queries import (
    BREAKDOWN_LIMIT,
    CLIENT_TIMEOUT_MARGIN,
    Budget,
    FormAnswer,
    Params,
    ReadOnlyDatabase,
    prepare_session,
    unavailable,
    where_clause,
)
from commands.audit_request import (
    DEFAULT_EXPORT_SINCE,
    DEFAULT_MIN_FAILURES,
    DEFAULT_SINCE,
    FORMS,
    MAX_TEXT,
    MFA_ACTIONS,
    SECURITY_ACTIONS,
    AuditFilter,
    AuditQuery,
    AuditRequest,
    ExportFormat,
    ExportRequest,
    Form,
    IndexesRequest,
    Network,
    check_text,
    clip,
    form_filter,
    ip_fields,
    request_fields,
    user_fields,
)
from commands.audit_results import (
    AuditExport,
    AuditReport,
    AuditRow,
    AuditUnavailable,
    Breakdown,
    Estimate,
    Group,
    Totals,
)
from commands.base import (
    Arguments,
    CommandResult,
    UsageError,
    format_duration,
    options_last,
    parse_duration,
    parse_positive_int,
)

# The names /audit has always offered, wherever they are defined now.
__all__ = [
    "BREAKDOWN_LIMIT",
    "CLIENT_TIMEOUT_MARGIN",
    "DEFAULT_EXPORT_SINCE",
    "DEFAULT_MIN_FAILURES",
    "DEFAULT_SINCE",
    "FORMS",
    "KNOWN_OPTION",
    "MAX_TEXT",
    "MFA_ACTIONS",
    "SECURITY_ACTIONS",
    "USAGE",
    "AuditExport",
    "AuditFilter",
    "AuditQuery",
    "AuditReport",
    "AuditRequest",
    "AuditRow",
    "AuditUnavailable",
    "Breakdown",
    "Budget",
    "Estimate",
    "ExportFormat",
    "ExportRequest",
    "Form",
    "FormAnswer",
    "Group",
    "IndexesRequest",
    "Limits",
    "Network",
    "Params",
    "ReadOnlyDatabase",
    "Totals",
    "check_text",
    "parse",
    "prepare_session",
    "run",
    "unavailable",
    "where_clause",
]

USAGE = (
    "/audit user <id|username> | ip <address|CIDR> | request <request id> | failed-logins [min=5]"
    " | mfa | security   [since=24h] [limit=20]\n"
    "/audit export csv|json [user <x> | ip <x> | request <x> | failed-logins | mfa | security]"
    " [user=…] [ip=…] [request=…] [action=A,B] [since=7d] [limit=N] [output=FILE (terminal)]\n"
    "/audit indexes"
)

_ACTION = re.compile(r"[A-Z][A-Z0-9_]{0,63}")
_OPTION_NAMES = ("since", "limit", "min", "output", "user", "ip", "request", "action")
KNOWN_OPTION = re.compile(r"^(?:--)?(?:" + "|".join(_OPTION_NAMES) + r")=", re.IGNORECASE)


# ---------------------------------------------------------------- arguments


@dataclass(frozen=True)
class Limits:
    """Bounds from the settings that a request is checked against."""

    default_limit: int = 20
    max_limit: int = 200
    max_window: timedelta = timedelta(days=30)
    export_max_rows: int = 1_000_000


def parse(tokens: list[str], limits: Limits = Limits()) -> AuditRequest:
    """Read `/audit` arguments; anything malformed is refused here, before any query runs."""
    # Options anywhere in the line: the words are read first, then the options.
    tokens = options_last(tokens)
    if not tokens:
        raise UsageError("say what to look at: " + ", ".join(FORMS) + ", export or indexes", USAGE)
    head, rest = tokens[0].lower(), list(tokens[1:])
    if head == "indexes":
        Arguments.parse(rest, USAGE).done()
        return IndexesRequest()
    if head == "export":
        return _parse_export(rest, limits)
    form = _form(head)
    subject, rest = _take_subject(form, rest)
    args = Arguments.parse(rest, USAGE)
    since = args.option("since", lambda text: parse_duration(text, limits.max_window), DEFAULT_SINCE)
    limit = args.option(
        "limit", lambda text: parse_positive_int(text, limits.max_limit), limits.default_limit
    )
    min_failures = DEFAULT_MIN_FAILURES
    if form == "failed-logins":
        min_failures = args.option("min", _parse_min, DEFAULT_MIN_FAILURES)
    args.done()
    query_filter, note = form_filter(form, subject)
    return AuditQuery(
        form=form,
        subject=subject,
        filter=query_filter,
        since=since,
        limit=limit,
        min_failures=min_failures,
        note=note,
    )


def _parse_export(tokens: list[str], limits: Limits) -> ExportRequest:
    tokens = _join_output_flag(tokens)
    if not tokens or KNOWN_OPTION.match(tokens[0]):
        raise UsageError("export needs a format: csv or json", USAGE)
    fmt = tokens[0].lower()
    if fmt not in ("csv", "json"):
        raise UsageError(f"`{clip(tokens[0], 40)}` is not an export format: use csv or json", USAGE)
    rest = tokens[1:]
    form: Form | None = None
    export_filter = AuditFilter()
    # Options may come before the form (`--output FILE` is often typed first).
    leading = 0
    while leading < len(rest) and KNOWN_OPTION.match(rest[leading]):
        leading += 1
    if leading < len(rest):
        form = _form(rest[leading].lower())
        subject, after = _take_subject(form, rest[leading + 1 :])
        rest = rest[:leading] + after
        export_filter, _ = form_filter(form, subject)
    args = Arguments.parse(rest, USAGE)
    updates: dict[str, Any] = {}
    for name, reader in (("user", user_fields), ("ip", ip_fields), ("request", request_fields)):
        if name in args.options:
            empty: dict[str, Any] = {}
            fields = args.option(name, reader, empty)
            if any(getattr(export_filter, key) not in (None, False) for key in fields):
                raise UsageError(f"`{name}` is given twice (as the form and as {name}=)", USAGE)
            updates.update(fields)
    if "action" in args.options:
        no_actions: list[str] = []
        actions = args.option("action", _parse_actions, no_actions)
        if export_filter.actions:
            # A form's actions and action= both hold: keep the actions common to both.
            actions = [action for action in export_filter.actions if action in actions]
            if not actions:
                raise UsageError("action= leaves none of this form's actions", USAGE)
        updates["actions"] = actions
    since = args.option("since", lambda text: parse_duration(text, limits.max_window), DEFAULT_EXPORT_SINCE)
    limit = args.option(
        "limit", lambda text: parse_positive_int(text, limits.export_max_rows), limits.export_max_rows
    )
    output = args.option("output", _parse_output, None)
    args.done()
    return ExportRequest(
        format="csv" if fmt == "csv" else "json",
        form=form,
        filter=export_filter.model_copy(update=updates),
        since=since,
        limit=limit,
        output=output,
    )


def _join_output_flag(tokens: list[str]) -> list[str]:
    """Turn the terminal's `--output FILE` / `-o FILE` into the grammar's `output=FILE`."""
    joined: list[str] = []
    index = 0
    while index < len(tokens):
        token = tokens[index]
        if token in ("--output", "-o"):
            if index + 1 >= len(tokens):
                raise UsageError(f"{token} needs a file name", USAGE)
            joined.append("output=" + tokens[index + 1])
            index += 2
            continue
        joined.append(token)
        index += 1
    return joined


def _form(word: str) -> Form:
    for form in FORMS:
        if word == form:
            return form
    raise UsageError(
        f"unknown form `{clip(word, 40)}`: use " + ", ".join(FORMS) + ", export or indexes", USAGE
    )


def _take_subject(form: Form, tokens: list[str]) -> tuple[str, list[str]]:
    """Take the form's subject verbatim (any text is data), or refuse when it is missing."""
    if form not in ("user", "ip", "request"):
        return "", tokens
    what = {"user": "a user id or username", "ip": "an address or CIDR", "request": "a request id"}[form]
    if not tokens or KNOWN_OPTION.match(tokens[0]):
        raise UsageError(f"`{form}` needs {what}", USAGE)
    return tokens[0], tokens[1:]


def _parse_actions(text: str) -> list[str]:
    actions = [part.strip().upper() for part in text.split(",") if part.strip()]
    if not actions:
        raise UsageError("name at least one action, e.g. action=LOGIN,PERMISSION_DENIED")
    for action in actions:
        if not _ACTION.fullmatch(action):
            raise UsageError(f"`{clip(action, 40)}` is not an action name (letters, digits and _)")
    return sorted(set(actions))


def _parse_min(text: str) -> int:
    if not re.fullmatch(r"\d{1,7}", text.strip()):
        raise UsageError(f"`{clip(text, 40)}` is not a whole number")
    return int(text)


def _parse_output(text: str) -> str:
    return check_text(text, "the output file")


# ---------------------------------------------------------------- running a form


async def run(
    db: ReadOnlyDatabase, query: AuditQuery, statement_timeout: float, budget: Budget | None = None
) -> CommandResult:
    """Answer one investigation form in a single read-only snapshot.

    At most `budget.exact_rows` matching rows are counted exactly; beyond that, the figures are
    estimated from a sample of about `budget.sample_rows` rows and the report says which.
    """
    started = time.perf_counter()
    queried_at = datetime.now(UTC)
    timeout = statement_timeout + CLIENT_TIMEOUT_MARGIN
    try:
        async with db.read_only(statement_timeout) as conn:
            await prepare_session(conn, timeout)
            answer = await query_form(conn, query, timeout, budget or Budget())
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
        return unavailable(error, db.database, statement_timeout)
    return AuditReport(
        form=query.form,
        subject=query.subject,
        description=query.filter.describe() if query.form in ("user", "ip", "request") else query.form,
        note=query.note,
        since=format_duration(query.since),
        limit=query.limit,
        min_failures=query.min_failures if query.form == "failed-logins" else None,
        totals=answer.totals,
        breakdowns=answer.breakdowns,
        rows=answer.rows,
        omitted=answer.omitted,
        omitted_what=answer.omitted_what,
        omitted_estimated=answer.omitted_estimated,
        export_arguments=query.export_arguments() if answer.omitted else None,
        estimate=answer.estimate,
        missing_index=answer.missing_index,
        database=db.database,
        queried_at=queried_at,
        duration_ms=round((time.perf_counter() - started) * 1000, 1),
    )
