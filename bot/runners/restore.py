"""Bind /restore to the backup store, the platform database, its buckets and the backend container."""

from __future__ import annotations

from bot.gate.authz import Role
from bot.invocation import Invocation
from bot.runners.backup import backup_sources, meter_for, who
from bot.services import Services
from commands import restore
from commands.base import CommandResult
from commands.destructive import Execution, Plan, Progress


def restore_deps(services: Services) -> restore.RestoreDeps:
    """Take what a restore touches from the services and settings."""
    settings = services.settings
    return restore.RestoreDeps(
        sources=backup_sources(services),
        backend=services.backup_adapters().backend,
        health=services.api,
        backend_label=f"{settings.compose_project}/{settings.backend_service}",
        health_timeout=settings.restore_health_timeout_seconds,
        stop_seconds=settings.restore_stop_timeout_seconds,
    )


async def run(services: Services, tokens: list[str], invocation: Invocation) -> CommandResult:
    """Answer `/restore`: the list, a verification, or a restore plan for the gate."""
    args = restore.parse(tokens)
    deps = restore_deps(services)
    if isinstance(args, restore.ListArgs):
        return await restore.run_list(deps)
    if isinstance(args, restore.VerifyArgs):
        async with meter_for(invocation) as meter:
            return await restore.verify_backup(deps, args.id, meter)
    return await restore.plan_restore(deps, args, who(services, invocation))


async def execute(services: Services, plan: Plan, progress: Progress) -> Execution:
    """Carry out an approved restore."""
    return await restore.execute_restore(restore_deps(services), plan, progress)


def required_role(tokens: list[str]) -> Role:
    """Return the role `/restore` needs: anyone may list, a test restore is work for responders.

    Read from the parsed arguments, as `run` reads them, wherever the options are.
    """
    args = restore.parse(tokens)
    if isinstance(args, restore.ListArgs):
        return "viewer"
    return "responder" if isinstance(args, restore.VerifyArgs) else "operator"
