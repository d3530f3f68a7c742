"""Bind /health to every dependency the bot knows, each with its own timeout."""

from __future__ import annotations

from bot.invocation import Invocation
from bot.services import Services
from commands import health
from commands.base import CommandResult


async def run(services: Services, tokens: list[str], invocation: Invocation) -> CommandResult:
    """Check every dependency at once; concurrent callers share one run."""
    health.parse(tokens)
    return await services.single_flight.run(
        "health",
        lambda: health.check_health(
            services.platform_dependencies(),
            services.bot_dependencies(),
            timeout=services.settings.dependency_timeout_seconds,
        ),
    )
