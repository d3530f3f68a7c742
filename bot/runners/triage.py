"""Bind /triage to Prometheus, the databases, Redis, storage, the engine and the log files."""

from __future__ import annotations

import asyncio

from bot.invocation import Invocation
from bot.render.triage import TriageWithGraph
from bot.runners import graph as graph_runner
from bot.services import Services
from commands import triage
from commands.base import CommandResult
from commands.triage_checklist import DEFAULT_CHECKLIST, load_checklist


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
    checks = triage.run(
        command,
        sources(services),
        load_checklist(settings.triage_checklist),
        checklist_path=str(settings.triage_checklist or DEFAULT_CHECKLIST.name),
        default_timeout=settings.triage_check_timeout_seconds,
    )
    if invocation.source == "cli" or not isinstance(command, triage.TriageArgs):
        return await checks
    report, picture = await asyncio.gather(checks, graph_runner.key_metrics_report(services))
    if not isinstance(report, triage.TriageReport):
        return report
    return TriageWithGraph(**dict(report), graph=picture)
