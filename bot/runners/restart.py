"""Bind /restart to the engine and the platform API (the settings are /rollback's)."""

from __future__ import annotations

from bot.invocation import Invocation
from bot.runners.rollback import rollback_config
from bot.services import Services
from commands import restart
from commands.base import CommandResult
from commands.destructive import Execution, Plan, Progress


async def run(services: Services, tokens: list[str], invocation: Invocation) -> CommandResult:
    """Plan `/restart <service>` for the gate."""
    return await restart.run(services.engine, rollback_config(services.settings), tokens)


async def execute(services: Services, plan: Plan, progress: Progress) -> Execution:
    """Carry out an approved /restart plan."""
    return await restart.execute(
        services.engine, services.api, rollback_config(services.settings), plan, progress
    )
