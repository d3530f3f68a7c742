"""`/restart <service>`: restart one Compose service's container, then wait for it to be healthy."""

from __future__ import annotations

import re
from typing import Any

from adapters.base import DependencyError
from adapters.engine import EngineAdapter
from commands.base import Arguments, UsageError
from commands.destructive import Execution, Plan, Progress, Proposal
from commands.rollback import (
    Checker,
    EngineUnavailable,
    RollbackConfig,
    describe_container,
    service_container,
    wait_healthy,
)

USAGE = "/restart <service>"
# Compose service names; anything else (shell, paths) is refused before the engine is asked.
SERVICE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


async def _services(engine: EngineAdapter, config: RollbackConfig) -> list[str]:
    try:
        containers = await engine.project_containers(config.read_timeout)
    except DependencyError as error:
        raise EngineUnavailable(
            f"the container engine did not answer ({error.reason}: {error.detail}); nothing was changed"
        ) from None
    return sorted({item.service for item in containers if item.service})


def parse(tokens: list[str]) -> str:
    """Read `/restart <service>`: one word; anything else is named in the error."""
    args = Arguments.parse(tokens, USAGE)
    service = args.next_positional("the service to restart (one Compose service)")
    args.done()
    return service


async def run(engine: EngineAdapter, config: RollbackConfig, tokens: list[str]) -> Proposal:
    """Plan the restart of one service's container; refuse unknown services before any plan."""
    service = parse(tokens)
    known = await _services(engine, config)
    listed = ", ".join(known) or "none"
    if not SERVICE_NAME.fullmatch(service) or service not in known:
        raise UsageError(
            f"`{service[:40]}` is not a service of Compose project {config.project}; services: {listed}",
            USAGE,
        )
    container = await service_container(engine, config, service)
    stop_timeout = container.stop_timeout or config.stop_timeout
    check_api = service == config.service
    health = "the API's /health" if check_api and not container.has_healthcheck else "its healthcheck"
    if not check_api and not container.has_healthcheck:
        health = f"it staying up (it has no healthcheck) for a few seconds, up to {config.health_timeout:g} s"
    state: dict[str, Any] = {"service": service, "container_id": container.id, "image_id": container.image_id}
    return Proposal(
        command="restart",
        arguments=[service],
        plan=Plan(
            title=f"Restart {service}",
            current=[describe_container(container, None)],
            target=[
                f"{container.name} ({container.short_id}) stopped (up to {stop_timeout} s) and started again",
                f"then wait for {health}",
            ],
            kept=["the same container: configuration, volumes and image unchanged"],
            way_back=[
                "nothing to undo; if it does not come back healthy, the reply says what state it is in"
            ],
            warnings=[f"{service} does not answer while it restarts"],
            estimated_seconds=float(stop_timeout) + 5.0,
            state=state,
            details={
                "service": service,
                "container_id": container.id,
                "container_name": container.name,
                "stop_timeout": stop_timeout,
                "check_api": check_api,
            },
        ),
    )


async def execute(
    engine: EngineAdapter, api: Checker | None, config: RollbackConfig, plan: Plan, progress: Progress
) -> Execution:
    """Restart the container, then wait until it is healthy and report what state it is in."""
    details = plan.details
    container_id = str(details["container_id"])
    name = str(details["container_name"])
    stop_timeout = int(details["stop_timeout"])
    step = f"restart {name} (stop up to {stop_timeout} s)"
    await progress.step(step, "running")
    try:
        await engine.restart(container_id, stop_timeout, config.engine_timeout)
    except DependencyError as error:
        await progress.step(step, "failed", error.detail)
        state = await _state(engine, config, container_id, name)
        return Execution(
            command="restart", succeeded=False, summary=f"the restart failed: {error.detail}", state=state
        )
    await progress.step(step, "done")
    step = "wait until healthy"
    await progress.step(step, "running")
    health = await wait_healthy(
        engine,
        api if details.get("check_api") else None,
        container_id,
        config.health_timeout,
        config.read_timeout,
        progress,
        step,
    )
    await progress.step(step, "done" if health.healthy else "failed", health.detail)
    state = await _state(engine, config, container_id, name)
    if not health.healthy:
        return Execution(
            command="restart",
            succeeded=False,
            summary=f"{name} restarted but is not healthy: {health.detail}",
            state=state,
        )
    return Execution(
        command="restart",
        succeeded=True,
        summary=f"{name} restarted and healthy after {health.seconds:.1f} s ({health.detail})",
        state=state,
    )


async def _state(engine: EngineAdapter, config: RollbackConfig, container_id: str, name: str) -> list[str]:
    try:
        info = await engine.describe(container_id, config.read_timeout)
    except DependencyError as error:
        return [f"{name}: unknown, the engine did not answer ({error.reason})"]
    started = f", started {info.started_at}" if info.started_at else ""
    return [describe_container(info, None) + started]
