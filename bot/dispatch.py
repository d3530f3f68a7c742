"""Run one command the same way whether it came from Slack or the terminal."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime

from bot.invocation import Invocation
from bot.observability import bind_context, get_logger, unbind_context
from bot.registry import COMMANDS, CommandSpec
from bot.services import Services
from commands.base import CommandResult, UsageError

log = get_logger("chatops.dispatch")

# Recording a run is bookkeeping: it must never delay or fail the command itself.
_RECORD_TIMEOUT = 1.0


class CommandTimeout(Exception):
    """The command as a whole took longer than its limit."""


def new_request_id() -> str:
    """Make a request id for one command."""
    return uuid.uuid4().hex[:16]


def lookup(name: str) -> CommandSpec:
    """Find a command by name (with or without the slash)."""
    spec = COMMANDS.get(name.lstrip("/"))
    if spec is None:
        known = ", ".join(f"/{item}" for item in COMMANDS)
        raise UsageError(f"unknown command `{name[:40]}`; known: {known}")
    return spec


async def execute(
    spec: CommandSpec, services: Services, tokens: list[str], invocation: Invocation
) -> CommandResult:
    """Parse and run a command with its metrics, its log context and its overall time limit."""
    bind_context(request_id=invocation.request_id, command=spec.name)
    started = time.perf_counter()
    started_at = datetime.now(UTC)
    outcome = "error"
    verdict: str | None = None
    try:
        try:
            result = await asyncio.wait_for(
                spec.run(services, tokens, invocation), timeout=spec.timeout_seconds
            )
        except TimeoutError:
            raise CommandTimeout(f"/{spec.name} did not finish within {spec.timeout_seconds:g} s") from None
        outcome = "ok" if result.ok else "degraded"
        found = getattr(result, "verdict", None)
        verdict = found if isinstance(found, str) else None
        return result
    except UsageError:
        outcome = "usage"
        raise
    except Exception:
        services.metrics.command_failures.labels(spec.name).inc()
        log.exception("command_failed")
        raise
    finally:
        elapsed = time.perf_counter() - started
        services.metrics.commands.labels(spec.name, invocation.source, outcome).inc()
        services.metrics.command_duration.labels(spec.name).observe(elapsed)
        log.info(
            "command_done", outcome=outcome, duration_ms=round(elapsed * 1000, 1), source=invocation.source
        )
        await _record_run(services, spec, tokens, invocation, started_at, outcome, verdict)
        unbind_context("request_id", "command")


async def _record_run(
    services: Services,
    spec: CommandSpec,
    tokens: list[str],
    invocation: Invocation,
    started_at: datetime,
    outcome: str,
    verdict: str | None = None,
) -> None:
    try:
        async with asyncio.timeout(_RECORD_TIMEOUT):
            async with services.state_db.connection() as conn:
                await conn.execute(
                    """INSERT INTO command_runs (request_id, command, arguments, source, user_id,
                           channel_id, started_at, finished_at, outcome, verdict)
                       VALUES ($1, $2, $3, $4, $5, $6, $7, now(), $8, $9)""",
                    invocation.request_id,
                    spec.name,
                    " ".join(tokens)[:2000],
                    invocation.source,
                    invocation.user_id,
                    invocation.channel_id,
                    started_at,
                    outcome,
                    verdict,
                )
    except Exception as error:  # the state database being down must not fail the command
        log.warning("command_run_not_recorded", error=type(error).__name__)


async def last_run(services: Services, command: str) -> tuple[str, datetime, str | None] | None:
    """Return the last finished run of a command: its verdict (else its outcome), when, and by whom."""
    async with services.state_db.connection() as conn:
        row = await conn.fetchrow(
            """SELECT coalesce(verdict, outcome) AS verdict, started_at, user_id FROM command_runs
               WHERE command = $1 AND outcome IN ('ok', 'degraded') ORDER BY started_at DESC LIMIT 1""",
            command,
        )
    if row is None:
        return None
    return str(row["verdict"]), row["started_at"], row["user_id"]
