"""Wire /graph, and the key-metrics graph other commands attach, to Prometheus and the bot's own records.

Markers come from `MARKER_SOURCES`: each entry builds, from the services, a function returning the
markers of a window. Another feature adds its own (incident timeline events, deploys) by appending
one; a source that fails leaves a note under the picture instead of failing the graph.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, cast
from urllib.parse import urlencode

import asyncpg
from slack_sdk.errors import SlackApiError

from adapters.incident_store import Incident
from adapters.postgres import PostgresAdapter
from bot.config import Settings
from bot.gate.authz import Role
from bot.invocation import Invocation
from bot.observability import get_logger
from bot.services import Services
from bot.slack.errors import slack_error_code
from commands import graph
from commands.triage_checklist import Checklist, ChecklistError, load_checklist, render_query

if TYPE_CHECKING:
    from bot.render.common import Upload
    from commands.rca import GraphLink

log = get_logger("chatops.graphs")

# The audit trail's executed actions shown on graphs, and how many of a window at most.
MARKER_LIMIT = 200


def audit_trail_markers(state_db: PostgresAdapter) -> graph.MarkerSource:
    """Mark each action the bot executed (rollback, restore, restart, flag change, drill) at its time."""

    async def source(start: datetime, end: datetime) -> list[graph.Marker]:
        async with state_db.connection() as conn:
            rows = await conn.fetch(
                """SELECT at, action, arguments, outcome FROM audit_trail
                   WHERE decision = 'executed' AND at BETWEEN $1 AND $2 ORDER BY at, id LIMIT $3""",
                start,
                end,
                MARKER_LIMIT,
            )
        return [action_marker(row) for row in rows]

    return source


def action_marker(row: asyncpg.Record | dict[str, object]) -> graph.Marker:
    """Label an executed action: `rollback v2.0.5`, `flag MFA_ENABLED=false`, `restart backend (failed)`."""
    action = str(row["action"])
    arguments = str(row["arguments"] or "").strip()
    kind, label = action, f"{action} {arguments}".strip()
    # `/rollback flag NAME=value` is the runbook's partial rollback: a flag change, not a redeploy.
    if action == "rollback" and arguments.startswith("flag "):
        kind, label = "flag", arguments
    outcome = row["outcome"]
    if outcome and outcome != "succeeded":
        label += f" ({outcome})"
    at = row["at"]
    assert isinstance(at, datetime)
    return graph.Marker(at=at, kind=kind, label=label)


def alert_markers(state_db: PostgresAdapter) -> graph.MarkerSource:
    """Mark when each alert the bot posted started firing and when it was resolved."""

    async def source(start: datetime, end: datetime) -> list[graph.Marker]:
        async with state_db.connection() as conn:
            # Alert intake may not be deployed (its table is missing): then there is nothing to mark.
            if await conn.fetchval("SELECT to_regclass('alert_messages')") is None:
                return []
            rows = await conn.fetch(
                """SELECT alertname, starts_at, ends_at, status, alert FROM alert_messages
                   WHERE starts_at BETWEEN $1 AND $2 OR ends_at BETWEEN $1 AND $2
                   ORDER BY starts_at LIMIT $3""",
                start,
                end,
                MARKER_LIMIT,
            )
        markers = []
        for row in rows:
            name = str(row["alertname"])
            alert = json.loads(row["alert"]) if isinstance(row["alert"], str) else row["alert"]
            severity = str((alert or {}).get("labels", {}).get("severity") or "")
            suffix = f" ({severity})" if severity else ""
            firing = f"alert {name} firing{suffix}"
            markers.append(graph.Marker(at=row["starts_at"], kind="alert", label=firing))
            if row["ends_at"] is not None and row["status"] == "resolved":
                markers.append(graph.Marker(at=row["ends_at"], kind="alert", label=f"alert {name} resolved"))
        return markers

    return source


MarkerFactory = Callable[[Services], graph.MarkerSource]
MARKER_SOURCES: list[MarkerFactory] = [
    lambda services: audit_trail_markers(services.state_db),
    lambda services: alert_markers(services.state_db),
]


def marker_sources(services: Services) -> list[graph.MarkerSource]:
    """Build every registered marker source for these services."""
    return [factory(services) for factory in MARKER_SOURCES]


def checklist_of(services: Services) -> Checklist | None:
    """Return the triage checklist, or None (the built-in graphs only) when it cannot be read."""
    return checklist_for(services.settings)


def checklist_for(settings: Settings) -> Checklist | None:
    """Return the settings' triage checklist, or None when it cannot be read."""
    try:
        return load_checklist(settings.triage_checklist)
    except ChecklistError:
        # Validated at start-up; a file broken since then must not take the graphs down with it.
        return None


def expensive_read(tokens: list[str], settings: Settings) -> tuple[Role, str] | None:
    """Return the role any PromQL needs (CHATOPS_PROMQL_ROLE) and why; None for a named graph."""
    if graph.is_named(graph.parse(tokens).target, checklist_for(settings)):
        return None
    role = cast(Role, settings.promql_role)
    return role, (
        f"a PromQL expression needs the {role} role;"
        " the named graphs (5xx, p95, a check id of the triage checklist) need only a viewer"
    )


async def run(services: Services, tokens: list[str], invocation: Invocation) -> graph.GraphReport:
    """Answer `/graph ...`: fetch the series and the markers, then draw the picture for Slack.

    The terminal shows sparklines; its picture is drawn only for --png (render.picture.picture_of).
    """
    settings = services.settings
    args = graph.parse(tokens)
    report = await graph.run(
        args,
        services.prometheus,
        checklist_of(services),
        marker_sources(services),
        default_since=settings.graph_window,
        resolution=timedelta(seconds=settings.graph_step_seconds),
        timeout=settings.graph_timeout_seconds,
    )
    if invocation.source == "cli":
        return report
    from bot.render.picture import render  # the picture: for Slack (the terminal draws sparklines)

    return await render(report)


async def key_metrics_report(
    services: Services,
    since: timedelta | None = None,
    end: datetime | None = None,
    extra: list[graph.Marker] | None = None,
) -> graph.GraphReport:
    """Draw the 5xx ratio and P95 latency (two panels) of the window ending at `end` (default now).

    `extra` markers (an onset, a suspect change) are drawn beside the bot's own actions.
    """
    settings = services.settings
    sources = marker_sources(services)
    if extra:
        fixed = list(extra)

        async def given(start: datetime, stop: datetime) -> list[graph.Marker]:
            return fixed

        sources.append(given)
    report = await graph.key_metrics(
        services.prometheus,
        checklist_of(services),
        sources,
        since=since or settings.graph_window,
        resolution=timedelta(seconds=settings.graph_step_seconds),
        timeout=settings.graph_timeout_seconds,
        end=end,
    )
    from bot.render.picture import render

    return await render(report)


async def key_metrics_upload(
    services: Services, since: timedelta | None = None, end: datetime | None = None
) -> Upload:
    """Return the PNG of the 5xx ratio and P95 latency, ready for `SlackReply.files`.

    Never fails for Prometheus or the state database: the picture says what is missing.
    """
    from bot.render.picture import upload_of

    upload = upload_of(await key_metrics_report(services, since, end))
    assert upload is not None  # rendered just above
    return upload


# Prometheus's graph page draws about this many points by default (its step is the range / 250).
PROMETHEUS_PAGE_POINTS = 250
# An incident's graphs start a little before it, and end a little after its resolution.
INCIDENT_MARGIN = timedelta(minutes=10)


def prometheus_links(services: Services, start: datetime, end: datetime) -> list[GraphLink]:
    """Link Prometheus's own graph page for the 5xx ratio and P95 over a window (live, zoomable).

    `$window` is filled as /graph fills it: the checklist's window, widened to two of the page's steps.
    """
    from commands.rca import GraphLink  # the RCA's model (and its GitHub client): for RCAs only

    checklist = checklist_of(services)
    named = graph.named_targets(checklist)
    minutes = max(1, int((end - start).total_seconds() // 60) + 1)
    page_step = max(
        timedelta(seconds=services.settings.graph_step_seconds),
        timedelta(minutes=minutes) / PROMETHEUS_PAGE_POINTS,
    )
    rate = graph.rate_window(checklist, page_step)
    links = []
    for key in (graph.FIVE_XX, graph.P95):
        target = named[key]
        query = urlencode(
            {
                "g0.expr": render_query(target.query, rate),
                "g0.tab": "0",
                "g0.range_input": f"{minutes}m",
                "g0.end_input": f"{end.astimezone(UTC):%Y-%m-%d %H:%M:%S}",
            }
        )
        url = f"{services.settings.prometheus_url.rstrip('/')}/graph?{query}"
        links.append(GraphLink(title=f"{target.title} in Prometheus", url=url))
    return links


def incident_graphs_link(services: Services, incident: Incident, now: datetime) -> tuple[str, str] | None:
    """Link Prometheus's graph page with the 5xx ratio and P95 of an incident's window (both panels).

    While it is open the page ends at the moment it is opened (a live view from just before the
    start); once resolved, it is the window itself. None when Prometheus has no named graphs.
    """
    checklist = checklist_of(services)
    named = graph.named_targets(checklist)
    start = incident.started_at - INCIDENT_MARGIN
    end = incident.resolved_at + INCIDENT_MARGIN if incident.resolved_at is not None else None
    minutes = max(1, int(((end or now) - start).total_seconds() // 60) + 1)
    page_step = max(
        timedelta(seconds=services.settings.graph_step_seconds),
        timedelta(minutes=minutes) / PROMETHEUS_PAGE_POINTS,
    )
    rate = graph.rate_window(checklist, page_step)
    fields: dict[str, str] = {}
    for index, key in enumerate((graph.FIVE_XX, graph.P95)):
        if key not in named:
            return None
        fields |= {
            f"g{index}.expr": render_query(named[key].query, rate),
            f"g{index}.tab": "0",
            f"g{index}.range_input": f"{minutes}m",
        }
        if end is not None:
            fields[f"g{index}.end_input"] = f"{end.astimezone(UTC):%Y-%m-%d %H:%M:%S}"
    url = f"{services.settings.prometheus_url.rstrip('/')}/graph?{urlencode(fields)}"
    title = "Graphs: 5xx and P95 " + ("of the window" if end is not None else "since the start (live)")
    return title, url


async def incident_graph_links(
    services: Services, channel: str | None, thread_ts: str | None, start: datetime, end: datetime
) -> list[GraphLink]:
    """Draw the incident's window into its thread (when Slack is there) and link it with Prometheus's."""
    from commands.rca import GraphLink

    links = prometheus_links(services, start, end)
    client = services.slack.client if services.slack is not None else None
    if client is None or not channel:
        return links
    upload = await key_metrics_upload(services, since=max(end - start, timedelta(minutes=5)), end=end)
    try:
        answer = await client.files_upload_v2(
            channel=channel,
            thread_ts=thread_ts,
            filename=upload.filename,
            content=upload.content,
            title=upload.title,
            alt_txt=upload.alt_text or None,
        )
    except SlackApiError as error:
        log.warning("incident_graph_not_uploaded", error=slack_error_code(error))
        return links
    files = answer.get("files") or [answer.get("file") or {}]
    permalink = next(
        (item.get("permalink") for item in files if isinstance(item, dict) and item.get("permalink")), None
    )
    if permalink:
        links.insert(
            0, GraphLink(title=f"{upload.title} (picture in the incident's Slack thread)", url=str(permalink))
        )
    return links
