"""`/health`: every dependency of the platform and of the bot, concurrently, then one verdict."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Literal

from adapters.base import Pingable, Reason, classify
from commands.base import Arguments, CommandResult, Model
from commands.formatting import elapsed_ms

USAGE = "/health — no arguments"

Group = Literal["platform", "bot"]
Verdict = Literal["healthy", "degraded", "down"]


class Check(Model):
    """One dependency's answer."""

    name: str
    group: Group
    status: Literal["ok", "down"]
    latency_ms: float
    detail: str
    reason: Reason | None = None


class HealthReport(CommandResult):
    """Every check and the verdict drawn from them."""

    verdict: Verdict
    checks: list[Check]
    checked_at: datetime
    duration_ms: float
    timeout_seconds: float

    @property
    def ok(self) -> bool:
        """Return whether every dependency answered as expected."""
        return self.verdict == "healthy"


class HealthArgs(Model):
    """`/health` takes no arguments."""


def parse(tokens: list[str]) -> HealthArgs:
    """Accept no arguments."""
    Arguments.parse(tokens, USAGE).done()
    return HealthArgs()


async def probe(dependency: Pingable, group: Group, timeout: float) -> Check:
    """Ping one dependency within its timeout; any failure becomes a `down` check with a reason."""
    started = time.perf_counter()
    try:
        detail = await asyncio.wait_for(dependency.ping(), timeout=timeout)
    except Exception as error:  # every failure is reported, never raised: the command must not crash
        failure = classify(error)
        return Check(
            name=dependency.name,
            group=group,
            status="down",
            latency_ms=elapsed_ms(started),
            detail=failure.detail if failure.reason != "timeout" else f"no answer within {timeout:g} s",
            reason=failure.reason,
        )
    return Check(
        name=dependency.name, group=group, status="ok", latency_ms=elapsed_ms(started), detail=detail
    )


async def check_health(
    platform: Sequence[Pingable],
    bot: Sequence[Pingable],
    timeout: float,
    essential: frozenset[str] = frozenset({"api"}),
) -> HealthReport:
    """Probe every dependency concurrently and draw the verdict.

    `down` when an essential platform dependency (the API users hit) is down, `degraded`
    when anything else is, `healthy` otherwise.
    """
    started = time.perf_counter()
    checked_at = datetime.now(UTC)
    probes = [probe(item, "platform", timeout) for item in platform]
    probes += [probe(item, "bot", timeout) for item in bot]
    checks = list(await asyncio.gather(*probes))
    failed = {check.name for check in checks if check.status == "down"}
    verdict: Verdict = "healthy"
    if failed & essential:
        verdict = "down"
    elif failed:
        verdict = "degraded"
    return HealthReport(
        verdict=verdict,
        checks=checks,
        checked_at=checked_at,
        duration_ms=elapsed_ms(started),
        timeout_seconds=timeout,
    )
