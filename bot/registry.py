"""Every command the bot knows: how to parse, run and render it, for Slack and the terminal.

Adding a command: a module in `commands/`, a runner in `bot/runners/` (`run`, and `execute` when it
is destructive), a renderer in `bot/render/`, one `CommandSpec` here, the slash command in `app.yaml`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from rich.console import Console

from bot.config import Settings
from bot.gate.authz import Role
from bot.invocation import Invocation
from bot.render import audit as audit_render
from bot.render import backup as backup_render
from bot.render import graph as graph_render
from bot.render import health as health_render
from bot.render import incident as incident_render
from bot.render import rca as rca_render
from bot.render import rollback as rollback_render
from bot.render import triage as triage_render
from bot.render.common import SlackReply
from bot.runners import audit as audit_runner
from bot.runners import backup as backup_runner
from bot.runners import graph as graph_runner
from bot.runners import health as health_runner
from bot.runners import incident as incident_runner
from bot.runners import rca as rca_runner
from bot.runners import restart as restart_runner
from bot.runners import restore as restore_runner
from bot.runners import rollback as rollback_runner
from bot.runners import triage as triage_runner
from bot.services import Services
from commands import audit, backup, graph, health, incident, rca, restart, restore, rollback, triage
from commands.base import CommandResult, tokenize
from commands.destructive import Execution, Plan, Progress


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
    # A read that costs (any PromQL, a large export) may need more, by the settings: that role and
    # the sentence that says why, or None when this invocation is not such a read.
    cost: Callable[[list[str], Settings], tuple[Role, str] | None] | None = None

    def required_role(self, tokens: list[str]) -> Role:
        """Return the role this invocation needs to read or change what it asks, cost aside.

        Authorising a caller takes `requirement()`, which adds what a costly read needs.
        """
        return self.role_for(tokens) if self.role_for is not None else self.role

    def requirement(self, tokens: list[str], settings: Settings) -> Requirement:
        """Return the role this invocation needs, cost included, and what a caller without it hears."""
        role = self.required_role(tokens)
        refusal = f"you are not allowed to run /{self.name}"
        costly = self.cost(tokens, settings) if self.cost is not None else None
        if costly is not None and _RANK[costly[0]] > _RANK[role]:
            return Requirement(costly[0], f"{refusal}: {costly[1]}")
        return Requirement(role, refusal)


@dataclass(frozen=True)
class Requirement:
    """The role one invocation needs, and what a caller without it is told."""

    role: Role
    refusal: str


# Which of two roles asks more, when a costly read raises what its command needs.
_RANK: dict[Role, int] = {"viewer": 0, "responder": 1, "operator": 2, "mfa_admin": 3}


COMMANDS: dict[str, CommandSpec] = {
    spec.name: spec
    for spec in (
        CommandSpec(
            name="health",
            summary="API, PostgreSQL, Redis, storage, Prometheus, engine and the bot's own dependencies",
            usage=health.USAGE,
            run=health_runner.run,
            slack=health_render.slack,
            terminal=health_render.terminal,
        ),
        CommandSpec(
            name="audit",
            summary="audit_log by user, IP, request, failed logins, MFA, security; export CSV/JSON",
            usage=audit.USAGE,
            run=audit_runner.run,
            slack=audit_render.slack,
            terminal=audit_render.terminal,
            cost=audit_runner.expensive_read,
            # An export of a million rows streams for a while; each fetch has its own statement timeout.
            timeout_seconds=300.0,
        ),
        CommandSpec(
            name="triage",
            summary="the runbook's checks at once, worst first; trace, request and recent log lines",
            usage=triage.USAGE,
            run=triage_runner.run,
            slack=triage_render.slack,
            terminal=triage_render.terminal,
            # A trace lookup reads every log file; each check has its own, much shorter, timeout.
            timeout_seconds=120.0,
        ),
        CommandSpec(
            name="rollback",
            summary="backend versions present; redeploy one or flip a flag, health-gated with auto-revert",
            usage=rollback.USAGE,
            run=rollback_runner.run,
            slack=rollback_render.slack,
            terminal=rollback_render.terminal,
            # `list` is read-only; the gate asks for the operator role before anything changes.
            role="viewer",
            execute=rollback_runner.execute,
        ),
        CommandSpec(
            name="restart",
            summary="restart one Compose service's container, then wait for it to be healthy",
            usage=restart.USAGE,
            run=restart_runner.run,
            slack=rollback_render.slack,
            terminal=rollback_render.terminal,
            role="operator",
            execute=restart_runner.execute,
        ),
        CommandSpec(
            name="backup",
            summary="back up the platform database and buckets; prune old backups (through the gate)",
            usage=backup.USAGE,
            run=backup_runner.run,
            slack=backup_render.slack_backup,
            terminal=backup_render.terminal_backup,
            role="responder",
            role_for=backup_runner.required_role,
            execute=backup_runner.execute,
            # pg_dump and the copy have their own limit (CHATOPS_BACKUP_TIMEOUT_SECONDS).
            timeout_seconds=4 * 3600.0,
        ),
        CommandSpec(
            name="restore",
            summary="list and verify backups; restore one (emergency backup first, RESTORE, two people)",
            usage=restore.USAGE,
            run=restore_runner.run,
            slack=backup_render.slack_restore,
            terminal=backup_render.terminal_restore,
            # `list` and `verify` change nothing; the gate asks again for operators before a restore.
            role="viewer",
            role_for=restore_runner.required_role,
            execute=restore_runner.execute,
            timeout_seconds=4 * 3600.0,
        ),
        CommandSpec(
            name="incident",
            summary="declare an incident; updates, notes, severity, commander, resolve, timeline, contacts",
            usage=incident.USAGE,
            run=incident_runner.run,
            slack=incident_render.slack,
            terminal=incident_render.terminal,
            role="responder",
            role_for=incident_runner.required_role,
            tokenize=incident_runner.slack_text,
        ),
        CommandSpec(
            name="rca",
            summary="RCA draft of an incident from its timeline; preview, then file it as a GitHub issue",
            usage=rca.USAGE,
            run=rca_runner.run,
            slack=rca_render.slack,
            terminal=rca_render.terminal,
            role="responder",
        ),
        CommandSpec(
            name="graph",
            summary="5xx, p95, any triage check or PromQL over time: a PNG, thresholds and actions marked",
            usage=graph.USAGE,
            run=graph_runner.run,
            slack=graph_render.slack,
            terminal=graph_render.terminal,
            cost=graph_runner.expensive_read,
            # PromQL quotes its label values: the text is kept whole, not split like a shell line.
            tokenize=graph.slack_tokens,
        ),
    )
}

COMMAND_NAMES: tuple[str, ...] = tuple(COMMANDS)


def read_only(command: str, text: str) -> bool:
    """Return whether a slash command's text asks only to read (the viewer role suffices).

    When the bot cannot tell whether a request was already run (its database is down), a read is
    still answered: running it twice shows the same thing twice, and changes nothing.
    """
    spec = COMMANDS.get(command.lstrip("/"))
    if spec is None:
        return False
    try:
        # A costly read is still a read: its role is checked when it runs, as every command's is.
        return spec.required_role(spec.tokenize(text)) == "viewer" and not _proposes(spec, text)
    except Exception:  # a text the grammar refuses is not known to be a read
        return False


def _proposes(spec: CommandSpec, text: str) -> bool:
    """Return whether this invocation of a destructive command asks for a plan (not a listing)."""
    if spec.execute is None:
        return False
    words = text.split()
    return not words or words[0] not in ("list", "verify")
