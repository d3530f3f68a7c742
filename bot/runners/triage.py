"""Bind /triage to Prometheus, the databases, Redis, storage, the engine and the log files."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Literal

from bot.invocation import Invocation
from bot.services import Services
from commands import triage
from commands.base import CommandResult

if TYPE_CHECKING:
    from commands.changes import ChangesReport
    from commands.graph import Marker
    from commands.triage_checklist import Checklist


def sources(services: Services) -> triage.TriageSources:
    """Take what the checks read from the services and settings."""
    settings = services.settings
    return triage.TriageSources(
        prometheus=services.prometheus,
        platform_db=services.platform_db,
        redis=services.redis,
        storage=services.storage,
        engine=services.engine,
        log_paths=settings.log_paths,
        backend_service=settings.backend_service,
    )


async def run(services: Services, tokens: list[str], invocation: Invocation) -> CommandResult:
    """Run the checklist (or a lookup); in Slack, draw the key metrics meanwhile for the thread."""
    command = triage.parse(tokens)
    settings = services.settings
    if isinstance(command, triage.LookupArgs | triage.LogsArgs):
        # One request's lines, or the recent ones: the logs (and audit_log) only, no checklist read.
        return await triage.run(command, sources(services), None)
    # What only the checklist's runs need, imported here: a lookup starts without it.
    from bot.runners.changes import change_sources
    from commands.changes import what_changed
    from commands.triage_checklist import DEFAULT_CHECKLIST, PromqlCheck, load_checklist

    checklist = load_checklist(settings.triage_checklist)
    checks = triage.run(
        command,
        sources(services),
        checklist,
        checklist_path=str(settings.triage_checklist or DEFAULT_CHECKLIST.name),
        default_timeout=settings.triage_check_timeout_seconds,
    )
    if isinstance(command, triage.ChangesArgs):
        checks.close()  # the checklist is not run: only what changed, and which check broke
        return await what_changed(
            services.prometheus,
            checklist,
            [(check.id, "warn") for check in checklist.checks if isinstance(check, PromqlCheck)],
            change_sources(services),
            since=command.since,
            timeout=settings.dependency_timeout_seconds,
        )
    if not isinstance(command, triage.TriageArgs):
        return await checks
    report = await checks
    if not isinstance(report, triage.TriageReport):
        return report
    report = await with_changes(services, report, checklist, command.window)
    if invocation.source == "cli":
        return report
    # In Slack the thread also gets the last hour of the 5xx ratio and P95, onsets and suspects marked.
    from bot.render.triage import TriageWithGraph
    from bot.runners import graph as graph_runner

    picture = await graph_runner.key_metrics_report(services, extra=change_markers(report.changes))
    return TriageWithGraph(**dict(report), graph=picture)


async def with_changes(
    services: Services, report: triage.TriageReport, checklist: Checklist, window: timedelta | None = None
) -> triage.TriageReport:
    """Add, for breached checks, when each crossed its threshold and what changed just before.

    A PromQL check that could not be read (Prometheus down, say) may be breached too: its onset is
    asked for as well, so that the report names what is missing instead of staying silent.
    """
    from bot.runners.changes import change_sources
    from commands.changes import what_changed
    from commands.triage_checklist import PromqlCheck

    breached: list[tuple[str, Literal["warn", "critical"]]] = [
        (finding.id, finding.status) for finding in report.findings if finding.status in ("warn", "critical")
    ]
    promql = {check.id for check in checklist.checks if isinstance(check, PromqlCheck)}
    blind: list[tuple[str, Literal["warn", "critical"]]] = [
        (finding.id, "warn")
        for finding in report.findings
        if finding.status == "unknown" and finding.id in promql and finding.value is None
    ]
    if not breached and not blind:
        return report
    changes = await what_changed(
        services.prometheus,
        checklist,
        breached + blind,
        change_sources(services),
        timeout=services.settings.dependency_timeout_seconds,
        window=window,
    )
    return report.model_copy(update={"changes": changes})


def change_markers(changes: ChangesReport | None) -> list[Marker]:
    """Mark each onset, and each suspect change, on the key metrics graph."""
    from commands.graph import Marker

    if changes is None:
        return []
    markers = [
        Marker(at=onset.at, kind="onset", label=f"{onset.title} crossed {onset.level}")
        for onset in changes.onsets
        if onset.at is not None
    ]
    markers += [
        Marker(at=suspect.change.at, kind="deploy", label=suspect.change.label)
        for suspect in changes.suspects
    ]
    return markers
