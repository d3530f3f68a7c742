"""Bind /rollback to the engine, the platform API and the bot's deploy history."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from bot.config import Settings
from bot.invocation import Invocation
from bot.services import Services
from commands import rollback
from commands.base import CommandResult
from commands.destructive import Execution, Plan, Progress


def rollback_config(settings: Settings) -> rollback.RollbackConfig:
    """Take what /rollback and /restart need from the settings."""
    return rollback.RollbackConfig(
        project=settings.compose_project,
        service=settings.backend_service,
        image=settings.backend_image,
        version_pattern=settings.rollback_version_pattern,
        flags=tuple(settings.rollback_flags),
        health_timeout=settings.rollback_health_timeout_seconds,
        stop_timeout=settings.rollback_stop_timeout_seconds,
        engine_timeout=settings.engine_operation_timeout_seconds,
        # Reads in the middle of an operation get a little longer than a /health ping: a slow answer
        # there would otherwise abandon a half-done redeploy.
        read_timeout=max(settings.dependency_timeout_seconds, 5.0),
        environment=settings.environment,
    )


async def run(services: Services, tokens: list[str], invocation: Invocation) -> CommandResult:
    """Answer `/rollback ...`: the version list, or a plan for the gate."""

    async def history() -> Mapping[str, datetime]:
        return await rollback.deploy_history(
            services.state_db, services.settings.environment, services.settings.dependency_timeout_seconds
        )

    return await rollback.run(services.engine, rollback_config(services.settings), tokens, history)


async def execute(services: Services, plan: Plan, progress: Progress) -> Execution:
    """Carry out an approved /rollback plan."""
    return await rollback.execute(
        services.engine, services.api, rollback_config(services.settings), plan, progress
    )
