"""Every command the bot knows: how to parse, run and render it, for Slack and the terminal."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from rich.console import Console

from bot import audit_runner, backup_runner, graph_runner, incidents, rollback_runner
from bot import rca as rca_runner
from bot.authz import Role
from bot.render import audit as audit_render
from bot.render import backup as backup_render
from bot.render import graph as graph_render
from bot.render import health as health_render
from bot.render import incident as incident_render
from bot.render import rca as rca_render
from bot.render import rollback as rollback_render
from bot.render import triage as triage_render
from bot.render.common import SlackReply
from bot.services import Services
from commands import audit, backup, graph, health, incident, rca, restart, restore, rollback, triage
from commands.base import CommandResult, tokenize
from commands.destructive import Execution, Plan, Progress
from commands.triage_checklist import DEFAULT_CHECKLIST, load_checklist


@dataclass(frozen=True)
class Invocation:
    """Who ran a command, from where, under which request id."""

    request_id: str
    source: str  # "slack", "cli", or "gate" (re-planning before execution)
    user_id: str | None = None
    channel_id: str | None = None


@dataclass(frozen=True)
class CommandSpec:
    """One command: its grammar, its run, its renderings.

    `run` parses the tokens and returns a result. A destructive command's `run` returns a
    `Proposal` (its plan) for the gate, and `execute` carries the plan out once approved.
    """

    name: str
    summary: str
    usage: str
    run: Callable[[Services, list[str], Invocation], Awaitable[CommandResult]]
    slack: Callable[[Any], SlackReply]
    terminal: Callable[[Any, Console], None]
    role: Role = "viewer"
    execute: Callable[[Services, Plan, Progress], Awaitable[Execution]] | None = None
    timeout_seconds: float = 60.0
    # How Slack's command text becomes tokens; commands taking free text keep it whole (apostrophes).
    tokenize: Callable[[str], list[str]] = tokenize
    # The role one invocation needs when it depends on the arguments (reading versus changing).
    role_for: Callable[[list[str]], Role] | None = None

    def required_role(self, tokens: list[str]) -> Role:
        """Return the role this invocation needs."""
        return self.role_for(tokens) if self.role_for is not None else self.role


async def _run_health(services: Services, tokens: list[str], invocation: Invocation) -> CommandResult:
    health.parse(tokens)
    return await services.single_flight.run(
        "health",
        lambda: health.check_health(
            services.platform_dependencies(),
            services.bot_dependencies(),
            timeout=services.settings.dependency_timeout_seconds,
        ),
    )


async def _run_audit(services: Services, tokens: list[str], invocation: Invocation) -> CommandResult:
    return await audit_runner.run_audit(services, tokens, invocation.source)


async def _run_triage(services: Services, tokens: list[str], invocation: Invocation) -> CommandResult:
    command = triage.parse(tokens)
    settings = services.settings
    sources = triage.TriageSources(
        prometheus=services.prometheus,
        platform_db=services.platform_db,
        redis=services.redis,
        storage=services.storage,
        engine=services.engine,
        log_paths=settings.log_paths,
        backend_service=settings.backend_service,
    )
    checks = triage.run(
        command,
        sources,
        load_checklist(settings.triage_checklist),
        checklist_path=str(settings.triage_checklist or DEFAULT_CHECKLIST.name),
        default_timeout=settings.triage_check_timeout_seconds,
    )
    if invocation.source == "cli" or not isinstance(command, triage.TriageArgs):
        return await checks
    # In Slack the thread also gets the last hour of the 5xx ratio and P95, drawn meanwhile.
    report, picture = await asyncio.gather(checks, graph_runner.key_metrics_report(services))
    if not isinstance(report, triage.TriageReport):
        return report
    return triage_render.TriageWithGraph(**dict(report), graph=picture)


async def _run_graph(services: Services, tokens: list[str], invocation: Invocation) -> CommandResult:
    # The terminal shows sparklines; its picture is drawn only for --png (bot.graphs.picture_of).
    return await graph_runner.run_graph(services, tokens, picture=invocation.source != "cli")


async def _run_rollback(services: Services, tokens: list[str], invocation: Invocation) -> CommandResult:
    return await rollback_runner.run_rollback(services, tokens)


async def _run_restart(services: Services, tokens: list[str], invocation: Invocation) -> CommandResult:
    return await rollback_runner.run_restart(services, tokens)


COMMANDS: dict[str, CommandSpec] = {
    spec.name: spec
    for spec in (
        CommandSpec(
            name="health",
            summary="API, PostgreSQL, Redis, storage, Prometheus, engine and the bot's own dependencies",
            usage=health.USAGE,
            run=_run_health,
            slack=health_render.slack,
            terminal=health_render.terminal,
        ),
        CommandSpec(
            name="audit",
            summary="audit_log by user, IP, request, failed logins, MFA, security; export CSV/JSON",
            usage=audit.USAGE,
            run=_run_audit,
            slack=audit_render.slack,
            terminal=audit_render.terminal,
            # An export of a million rows streams for a while; each fetch has its own statement timeout.
            timeout_seconds=300.0,
        ),
        CommandSpec(
            name="triage",
            summary="the runbook's checks at once, worst first; trace, request and recent log lines",
            usage=triage.USAGE,
            run=_run_triage,
            slack=triage_render.slack,
            terminal=triage_render.terminal,
            # A trace lookup reads every log file; each check has its own, much shorter, timeout.
            timeout_seconds=120.0,
        ),
        CommandSpec(
            name="rollback",
            summary="backend versions present; redeploy one or flip a flag, health-gated with auto-revert",
            usage=rollback.USAGE,
            run=_run_rollback,
            slack=rollback_render.slack,
            terminal=rollback_render.terminal,
            # `list` is read-only; the gate asks for the operator role before anything changes.
            role="viewer",
            execute=rollback_runner.execute_rollback,
        ),
        CommandSpec(
            name="restart",
            summary="restart one Compose service's container, then wait for it to be healthy",
            usage=restart.USAGE,
            run=_run_restart,
            slack=rollback_render.slack,
            terminal=rollback_render.terminal,
            role="operator",
            execute=rollback_runner.execute_restart,
        ),
        CommandSpec(
            name="backup",
            summary="back up the platform database and buckets; prune old backups (through the gate)",
            usage=backup.USAGE,
            run=backup_runner.run_backup,
            slack=backup_render.slack_backup,
            terminal=backup_render.terminal_backup,
            role="responder",
            role_for=backup_runner.backup_role,
            execute=backup_runner.execute_backup,
            # pg_dump and the copy have their own limit (CHATOPS_BACKUP_TIMEOUT_SECONDS).
            timeout_seconds=4 * 3600.0,
        ),
        CommandSpec(
            name="restore",
            summary="list and verify backups; restore one (emergency backup first, RESTORE, two people)",
            usage=restore.USAGE,
            run=backup_runner.run_restore,
            slack=backup_render.slack_restore,
            terminal=backup_render.terminal_restore,
            # `list` and `verify` change nothing; the gate asks again for operators before a restore.
            role="viewer",
            role_for=backup_runner.restore_role,
            execute=backup_runner.execute_restore,
            timeout_seconds=4 * 3600.0,
        ),
        CommandSpec(
            name="incident",
            summary="declare an incident; updates, notes, severity, commander, resolve, timeline, contacts",
            usage=incident.USAGE,
            run=incidents.run_command,
            slack=incident_render.slack,
            terminal=incident_render.terminal,
            role="responder",
            role_for=incidents.required_role,
            tokenize=incidents.slack_text,
        ),
        CommandSpec(
            name="rca",
            summary="RCA draft of an incident from its timeline; preview, then file it as a GitHub issue",
            usage=rca.USAGE,
            run=rca_runner.run_command,
            slack=rca_render.slack,
            terminal=rca_render.terminal,
            role="responder",
        ),
        CommandSpec(
            name="graph",
            summary="5xx, p95, any triage check or PromQL over time: a PNG, thresholds and actions marked",
            usage=graph.USAGE,
            run=_run_graph,
            slack=graph_render.slack,
            terminal=graph_render.terminal,
            # PromQL quotes its label values: the text is kept whole, not split like a shell line.
            tokenize=graph.slack_tokens,
        ),
    )
}

COMMAND_NAMES: tuple[str, ...] = tuple(COMMANDS)
