"""`/rollback`: list the backend's versions, redeploy one, or flip a feature flag, health-gated.

Redeploying does what `docker compose up -d` does for one service whose image tag changed: the
service's container (found by its Compose labels) is copied with the target image, the old one is
stopped and kept under another name, the new one started. Only once the new container is healthy
is the old one removed; if it never gets there, the old one is put back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

from adapters.base import DependencyError
from adapters.engine import ContainerInfo, EngineAdapter, ImageTag
from commands.base import Arguments, CommandResult, Model, UsageError
from commands.destructive import Execution, Plan, Progress, Proposal, StepStatus

if TYPE_CHECKING:  # asyncpg: imported by whoever makes the adapter, not by the grammar
    from adapters.postgres import PostgresAdapter

USAGE = (
    "/rollback list | /rollback <version> | /rollback flag NAME=value"
    " | /rollback flag NAME unset | /rollback flag NAME empty"
)
# The words that say what a flag becomes when it has no value: removed (the image's default
# applies), or set to the empty string. `NAME=` alone says neither, so it is refused.
UNSET, EMPTY = "unset", "empty"
# Flag values reach the container as data through the engine API, never through a shell; the
# narrow alphabet still keeps anything that looks like shell or a path out of the audit trail.
FLAG_VALUE = re.compile(r"[A-Za-z0-9_.,:+-]{0,128}")
# Docker's own limit for a tag, and what a tag may contain at all.
TAG_SHAPE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
HEALTH_POLL_SECONDS = 0.1
# Inspecting costs the engine far more than a refused connection costs the API: while the new
# process starts on the same CPUs, the engine is asked less often (enough to see a crash).
DESCRIBE_EVERY_SECONDS = 1.0
PROGRESS_EVERY_SECONDS = 5.0
# Without a healthcheck or an API to ask, a container counts as up once it stayed running this long.
SETTLE_SECONDS = 2.0
# What a container that stopped by itself shows (Podman says "stopped" where Docker says "exited").
STOPPED = frozenset({"exited", "dead", "stopped", "removing"})

_R = TypeVar("_R")


class EngineUnavailable(UsageError):
    """The engine could not be asked; nothing was changed.

    A UsageError so that Slack and the terminal show the caller this message as it is.
    """


@dataclass(frozen=True)
class RollbackConfig:
    """What /rollback and /restart need from the settings."""

    project: str
    service: str
    image: str
    version_pattern: str
    flags: tuple[str, ...]
    health_timeout: float
    stop_timeout: int
    engine_timeout: float
    read_timeout: float
    environment: str


class Checker(Protocol):
    """The platform API's health probe (`PlatformApiAdapter.ping`)."""

    async def ping(self) -> str:
        """Return a description when healthy; raise otherwise."""
        ...


# --- Arguments -----------------------------------------------------------------------------------


class RollbackArgs(Model):
    """What `/rollback` was asked: list, a version, or one flag."""

    action: Literal["list", "version", "flag"]
    version: str | None = None
    flag: str | None = None
    value: str | None = None


def parse(tokens: list[str], config: RollbackConfig) -> RollbackArgs:
    """Read `list`, `<version>` or `flag ...` (the version is checked against the engine later)."""
    if not tokens:
        raise UsageError("say what to roll back to: `list`, a version, or `flag NAME=value`", USAGE)
    if tokens[0] == "flag":
        # NAME=value after `flag` is the flag's new setting, not an option.
        return parse_flag(tokens[1:], config)
    # Nothing else takes an option: the grammar's reading names any word left over, wherever it is.
    args = Arguments.parse(tokens, USAGE)
    first = args.next_positional("what to roll back to: `list`, a version, or `flag NAME=value`")
    args.done()
    if first == "list":
        return RollbackArgs(action="list")
    return RollbackArgs(action="version", version=first)


def parse_flag(words: list[str], config: RollbackConfig) -> RollbackArgs:
    """Read `NAME=value`, `NAME unset` (or `unset NAME`), `NAME empty` (or `empty NAME`).

    `unset` removes the container's own setting (the image's default applies again); `empty` sets
    the variable to the empty string. `NAME=` is refused: it could mean either.
    """
    example = "give one flag as NAME=value, NAME unset or NAME empty, e.g. `flag MFA_ENABLED=false`"
    keywords = (UNSET, EMPTY)
    lowered = [word.lower() for word in words]
    value: str | None
    if len(words) == 1 and "=" in words[0]:
        name, _, value = words[0].partition("=")
        if not value:
            raise UsageError(
                f"`{words[0][:40]}` says neither: `flag {name[:40]} unset` removes the variable (the"
                f" image's default applies), `flag {name[:40]} empty` sets it to the empty string",
                USAGE,
            )
    elif len(words) == 2 and lowered[1] in keywords and "=" not in words[0]:
        name, value = words[0], "" if lowered[1] == EMPTY else None
    elif len(words) == 2 and lowered[0] in keywords and "=" not in words[1]:
        name, value = words[1], "" if lowered[0] == EMPTY else None
    else:
        raise UsageError(example, USAGE)
    canonical = next((flag for flag in config.flags if flag.upper() == name.upper()), None)
    if canonical is None:
        allowed = ", ".join(config.flags) or "none (set CHATOPS_ROLLBACK_FLAGS)"
        raise UsageError(f"`{name[:40]}` is not a flag /rollback may change; flags: {allowed}", USAGE)
    if value is not None and not FLAG_VALUE.fullmatch(value):
        raise UsageError(
            f"flag values are letters, digits and _ . , : + - (at most 128); `{value[:40]}` is not",
            USAGE,
        )
    return RollbackArgs(action="flag", flag=canonical, value=value)


def flag_words(name: str, value: str | None) -> list[str]:
    """Write a flag's setting as `/rollback flag` reads it back: NAME=value, NAME unset, NAME empty."""
    if value is None:
        return [name, UNSET]
    return [name, EMPTY] if value == "" else [f"{name}={value}"]


def flag_state(name: str, value: str | None) -> str:
    """Say what a flag is: `NAME=value`, `NAME unset`, `NAME empty (set to "")`."""
    if value is None:
        return f"{name} unset"
    return f'{name} empty (set to "")' if value == "" else f"{name}={value}"


# --- Listing versions ------------------------------------------------------------------------------


class VersionInfo(Model):
    """One version of the backend image present in the engine."""

    version: str
    image_id: str
    built_at: str | None
    running: bool
    deployed_at: str | None = None


class RunningContainer(Model):
    """The service's container as it is now."""

    name: str
    id: str
    status: str
    health: str | None
    image: str
    version: str | None
    started_at: str | None


class VersionList(CommandResult):
    """`/rollback list`: the versions present, newest first, and what runs now."""

    service: str
    image: str
    versions: list[VersionInfo]
    running: RunningContainer | None
    other_tags: list[str]
    flags: list[str]

    @property
    def ok(self) -> bool:
        """Return whether the service has a running container."""
        return self.running is not None and self.running.status == "running"


def version_key(tag: str) -> tuple[tuple[int, int | str], ...]:
    """Sort tags as versions: numbers by value (v2.0.10 after v2.0.9), text by text."""
    return tuple((0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"(\d+)", tag) if part)


async def _engine(call: Awaitable[_R]) -> _R:
    try:
        return await call
    except DependencyError as error:
        raise EngineUnavailable(
            f"the container engine did not answer ({error.reason}: {error.detail}); nothing was changed"
        ) from None


async def available_versions(engine: EngineAdapter, config: RollbackConfig) -> list[ImageTag]:
    """Return the image's tags that are versions, newest first."""
    tags = await _engine(engine.image_tags(config.image, config.read_timeout))
    pattern = re.compile(config.version_pattern)
    versions = {tag.tag: tag for tag in tags if pattern.search(tag.tag)}
    return sorted(versions.values(), key=lambda tag: version_key(tag.tag), reverse=True)


async def service_container(engine: EngineAdapter, config: RollbackConfig, service: str) -> ContainerInfo:
    """Find the one container of a Compose service (the running one when old copies linger)."""
    containers = await _engine(engine.project_containers(config.read_timeout, service=service))
    if not containers:
        raise UsageError(f"no container of service `{service}` in Compose project `{config.project}`")
    running = [item for item in containers if item.status == "running"]
    if len(running) > 1:
        names = ", ".join(item.name for item in running)
        raise UsageError(f"{len(running)} containers of `{service}` run ({names}); this handles one")
    if running:
        return running[0]
    return max(containers, key=lambda item: item.created)


def running_version(container: ContainerInfo, versions: list[ImageTag]) -> str | None:
    """Name the version a container runs: a version tag of its image, else the tag it was created from."""
    for tag in versions:
        if tag.image_id == container.image_id:
            return tag.tag
    ref = container.image_ref.rsplit("/", 1)[-1]
    return ref.rsplit(":", 1)[1] if ":" in ref else None


async def deploy_history(state_db: PostgresAdapter, environment: str, timeout: float) -> dict[str, datetime]:
    """Return when each version was last deployed by the bot (from its succeeded approvals)."""
    try:
        async with asyncio.timeout(timeout), state_db.connection() as conn:
            rows = await conn.fetch(
                """SELECT arguments, updated_at FROM approvals
                   WHERE command = 'rollback' AND status = 'succeeded' AND environment = $1
                   ORDER BY updated_at""",
                environment,
            )
    except Exception:  # history is a nicety: the list stands without it
        return {}
    found: dict[str, datetime] = {}
    for row in rows:
        arguments = row["arguments"]
        if isinstance(arguments, str):
            arguments = json.loads(arguments)
        if isinstance(arguments, list) and len(arguments) == 1:
            found[str(arguments[0])] = row["updated_at"]
    return found


async def list_versions(
    engine: EngineAdapter, config: RollbackConfig, history: Mapping[str, datetime]
) -> VersionList:
    """Answer `/rollback list`."""
    versions = await available_versions(engine, config)
    tags = await _engine(engine.image_tags(config.image, config.read_timeout))
    containers = await _engine(engine.project_containers(config.read_timeout, service=config.service))
    running_now = [item for item in containers if item.status == "running"]
    container = running_now[0] if running_now else None
    current = running_version(container, versions) if container else None
    listed: list[VersionInfo] = []
    for tag in versions:
        deployed = history.get(tag.tag)
        is_running = container is not None and tag.image_id == container.image_id
        deployed_at = deployed.isoformat() if deployed else None
        if is_running and container is not None and deployed_at is None:
            deployed_at = container.created  # the running container was made then, by whoever
        listed.append(
            VersionInfo(
                version=tag.tag,
                image_id=tag.image_id,
                built_at=tag.created,
                running=is_running,
                deployed_at=deployed_at,
            )
        )
    known = {tag.tag for tag in versions}
    return VersionList(
        service=config.service,
        image=config.image,
        versions=listed,
        running=RunningContainer(
            name=container.name,
            id=container.short_id,
            status=container.status,
            health=container.health,
            image=container.image_ref,
            version=current,
            started_at=container.started_at,
        )
        if container
        else None,
        other_tags=sorted({tag.tag for tag in tags} - known),
        flags=list(config.flags),
    )


# --- Planning ------------------------------------------------------------------------------------


def kept_name(container: ContainerInfo) -> str:
    """Name the old container keeps while the new one proves itself."""
    return f"{container.name}-previous-{container.short_id}"


def describe_container(container: ContainerInfo, version: str | None) -> str:
    """Describe a container in one line for a plan."""
    health = f", {container.health}" if container.health else ""
    shown = version or container.image_id.removeprefix("sha256:")[:12]
    return f"container {container.name} ({container.short_id}) {container.status}{health}, image {shown}"


def kept_lines(container: ContainerInfo) -> list[str]:
    """List the configuration a new container carries over from the old one."""
    return [
        "environment: what was set on the container (the image's own defaults come from the new image)",
        "ports: " + (", ".join(container.ports) or "none published"),
        "networks: " + (", ".join(container.networks) or "none"),
        "volumes and mounts: " + (", ".join(container.mounts) or "none"),
        f"labels: {len(container.labels)} (Compose project and service included)",
        f"restart policy: {container.restart_policy}",
        "healthcheck: " + ("the container's" if container.has_healthcheck else "none (the API's /health)"),
        "command, entrypoint, init, limits: as they are",
    ]


async def make_plan(engine: EngineAdapter, config: RollbackConfig, args: RollbackArgs) -> Proposal:
    """Make the plan of a version or flag rollback; refuse bad input before any plan."""
    versions = await available_versions(engine, config)
    names = ", ".join(tag.tag for tag in versions) or "none"
    container = await service_container(engine, config, config.service)
    current = running_version(container, versions)
    warnings = []
    if container.status != "running":
        warnings.append(f"{container.name} is {container.status}, not running: nothing serves now")
    warnings.append("the service does not answer between stopping the old container and the new one starting")
    state: dict[str, Any] = {
        "service": config.service,
        "container_id": container.id,
        "image_id": container.image_id,
        "running": container.status == "running",
    }
    details: dict[str, Any] = {
        "service": config.service,
        "container_id": container.id,
        "container_name": container.name,
        "kept_name": kept_name(container),
        "previous_version": current,
        "check_api": True,
        "stop_timeout": container.stop_timeout or config.stop_timeout,
    }
    way_back_auto = (
        f"if the new container is not healthy within {config.health_timeout:g} s, the bot puts"
        f" {container.name} back by itself"
    )
    if args.action == "version":
        version = args.version or ""
        if not TAG_SHAPE.fullmatch(version) or not re.search(config.version_pattern, version):
            raise UsageError(
                f"`{version[:40]}` is not a version (expected {config.version_pattern}); available: {names}",
                USAGE,
            )
        target = next((tag for tag in versions if tag.tag == version), None)
        if target is None:
            raise UsageError(f"{version} is not present in the engine; available: {names}", USAGE)
        if target.image_id == container.image_id and container.status == "running":
            raise UsageError(
                f"{config.service} already runs {version} ({container.name}); nothing to do."
                f" To restart it: /restart {config.service}",
                USAGE,
            )
        image = f"{config.image}:{version}"
        older = current is not None and version_key(version) < version_key(current)
        verb = "Roll back" if older else "Move"
        title = f"{verb} {config.service} to {version}" + (f" (from {current})" if current else "")
        state["target_image_id"] = target.image_id
        details.update(image=image, target_image_id=target.image_id, outcome=version, env={})
        target_lines = [
            f"new container {container.name} from {image} ({target.image_id.removeprefix('sha256:')[:12]})",
            f"old container kept as {kept_name(container)} until the new one is healthy, then removed",
        ]
        back = f"/rollback {current}" if current else f"recreate from image {container.image_id[:19]}"
        return Proposal(
            command="rollback",
            arguments=[version],
            plan=Plan(
                title=title,
                current=[describe_container(container, current)],
                target=target_lines,
                kept=kept_lines(container),
                way_back=[way_back_auto, f"afterwards: {back}"],
                warnings=warnings,
                estimated_seconds=10.0,
                state=state,
                details=details,
            ),
        )
    assert args.flag is not None
    before = container.env.get(args.flag)
    if before == args.value:
        raise UsageError(
            f"{container.name} already has {flag_state(args.flag, args.value)}; nothing to do", USAGE
        )
    after = flag_state(args.flag, args.value) + (" (image default)" if args.value is None else "")
    state.update(flag=args.flag, flag_value=before)
    # The same image, by id, so that a tag moved meanwhile cannot slip another build in.
    details.update(
        image=container.image_id,
        target_image_id=container.image_id,
        outcome=after,
        env={args.flag: args.value},
    )
    if args.value is None:
        title = f"Unset {args.flag}"
    elif args.value == "":
        title = f"Set {args.flag} to the empty string"
    else:
        title = f"Set {args.flag}={args.value}"
    # The way back is written in the grammar `parse` reads, so that it can be typed as shown.
    back = " ".join(flag_words(args.flag, before))
    return Proposal(
        command="rollback",
        # Read again by `parse` when the plan is made again at execution.
        arguments=["flag", *flag_words(args.flag, args.value)],
        plan=Plan(
            title=f"{title} on {config.service}",
            current=[describe_container(container, current), flag_state(args.flag, before)],
            target=[
                f"new container {container.name}, same image, with {after}",
                f"old container kept as {kept_name(container)} until the new one is healthy, then removed",
            ],
            kept=kept_lines(container),
            way_back=[way_back_auto, f"afterwards: /rollback flag {back}"],
            warnings=warnings,
            estimated_seconds=10.0,
            state=state,
            details=details,
        ),
    )


async def run(
    engine: EngineAdapter,
    config: RollbackConfig,
    tokens: list[str],
    history: Callable[[], Awaitable[Mapping[str, datetime]]],
) -> CommandResult:
    """Answer `/rollback ...`: the version list, or a plan for the gate."""
    args = parse(tokens, config)
    if args.action == "list":
        return await list_versions(engine, config, await history())
    return await make_plan(engine, config, args)


# --- Executing -----------------------------------------------------------------------------------


@dataclass
class Health:
    """The outcome of waiting for a container to be healthy."""

    healthy: bool
    detail: str
    seconds: float


async def wait_healthy(
    engine: EngineAdapter,
    api: Checker | None,
    container_id: str,
    timeout: float,
    read_timeout: float,
    progress: Progress,
    step: str,
) -> Health:
    """Poll until the container is healthy (its healthcheck or the API's /health), or give up."""
    started = time.monotonic()
    last_report = started
    detail = "no answer yet"
    running_since: float | None = None
    restarts: int | None = None
    seen = False
    described = 0.0
    info: ContainerInfo | None = None
    while True:
        elapsed = time.monotonic() - started
        if api is not None and seen:
            # The API first: once it answers healthy nothing else matters, and while the new process
            # is not listening yet a refused connection costs a millisecond. Asked even when the
            # container has a healthcheck: without systemd, Podman leaves that "starting" forever.
            try:
                answer = await asyncio.wait_for(api.ping(), timeout=read_timeout)
                return Health(True, f"/health: {answer}", time.monotonic() - started)
            except Exception as error:
                detail = f"/health: {error}"[:200]
        if time.monotonic() - described < DESCRIBE_EVERY_SECONDS:
            await asyncio.sleep(HEALTH_POLL_SECONDS)
            continue
        described = time.monotonic()
        try:
            info = await engine.describe(container_id, read_timeout)
        except DependencyError as error:
            detail = f"engine: {error.reason}: {error.detail}"
            info = None
        if info is not None:
            seen = True
            restarts = info.restart_count if restarts is None else restarts
            if info.status in STOPPED:
                code = f" with code {info.exit_code}" if info.exit_code is not None else ""
                why = f": {info.error}" if info.error else ""
                return Health(False, f"the container {info.status}{code}{why}", elapsed)
            if info.restart_count > restarts:
                # Its restart policy brought it back after a crash: a crash loop, not a slow start.
                return Health(False, f"the container crashed and restarted ({info.restart_count})", elapsed)
            if info.health == "healthy":
                return Health(True, "container healthcheck: healthy", elapsed)
            if info.health == "unhealthy":
                # The engine says so only after the healthcheck's own retries: waiting longer is moot.
                return Health(False, "container healthcheck: unhealthy", elapsed)
            if info.status == "running" and api is None and not info.has_healthcheck:
                running_since = running_since or time.monotonic()
                if time.monotonic() - running_since >= SETTLE_SECONDS:
                    return Health(True, "running (no healthcheck to ask)", time.monotonic() - started)
            elif info.status != "running" or api is None:
                detail = f"container {info.status}" + (f", {info.health}" if info.health else "")
        if elapsed >= timeout:
            return Health(False, f"not healthy within {timeout:g} s; last: {detail}", elapsed)
        if time.monotonic() - last_report >= PROGRESS_EVERY_SECONDS:
            last_report = time.monotonic()
            await progress.step(step, "running", f"{elapsed:.0f} s of {timeout:g} s; last: {detail}")
        await asyncio.sleep(HEALTH_POLL_SECONDS)


async def _quietly(progress: Progress, name: str, status: StepStatus, detail: str = "") -> None:
    """Report a step while putting things back: a failed report must not stop the repair."""
    try:
        await progress.step(name, status, detail)
    except Exception:
        return


@dataclass
class Swap:
    """How far a redeploy got: what must be undone to put the old container back."""

    old_id: str
    old_name: str
    old_healthy: bool
    old_status: str = "running"
    new_id: str | None = None
    renamed: bool = False
    stopped: bool = False


async def _put_back(
    engine: EngineAdapter, api: Checker | None, config: RollbackConfig, progress: Progress, swap: Swap
) -> tuple[bool, list[str]]:
    """Put the old container back in service; return whether it serves and what each part is."""
    state: list[str] = []
    ok = True
    timeout = config.engine_timeout
    old = f"{swap.old_name} ({swap.old_id[:12]})"
    if swap.new_id is not None:
        # Removed before the old one starts: Podman holds a failed container's port until then.
        step = "remove the new container"
        await _quietly(progress, step, "running")
        try:
            await engine.remove(swap.new_id, timeout)
            await _quietly(progress, step, "done")
            state.append(f"new container {swap.new_id[:12]} removed")
        except DependencyError as error:
            ok = False
            await _quietly(progress, step, "failed", error.detail)
            state.append(f"new container {swap.new_id[:12]} could not be removed: {error.detail}")
    if swap.renamed:
        step = f"give the old container its name back ({swap.old_name})"
        await _quietly(progress, step, "running")
        try:
            await engine.rename(swap.old_id, swap.old_name, timeout)
            await _quietly(progress, step, "done")
        except DependencyError as error:
            ok = False
            await _quietly(progress, step, "failed", error.detail)
            state.append(f"old container {swap.old_id[:12]} still has its temporary name: {error.detail}")
    if not swap.stopped:
        if swap.old_status == "running":
            state.append(f"old container {old} kept running throughout")
        else:
            state.append(f"old container {old} left {swap.old_status}, as it was before")
        return ok, state
    step = "start the old container again"
    await _quietly(progress, step, "running")
    try:
        await engine.start(swap.old_id, timeout)
        await _quietly(progress, step, "done")
    except DependencyError as error:
        await _quietly(progress, step, "failed", error.detail)
        state.append(f"old container {old} is STOPPED: it could not be started: {error.detail}")
        return False, state
    # A container that was not healthy before is not waited on for health, only for staying up.
    step = "wait until the old container is " + ("healthy" if swap.old_healthy else "up")
    await _quietly(progress, step, "running")
    health = await wait_healthy(
        engine,
        api if swap.old_healthy else None,
        swap.old_id,
        config.health_timeout,
        config.read_timeout,
        _Quiet(progress),
        step,
    )
    await _quietly(progress, step, "done" if health.healthy else "failed", health.detail)
    if not swap.old_healthy:
        verdict = "up" if health.healthy else "NOT up"
        state.append(f"old container {old} running again, {verdict}; it was not healthy before either")
    else:
        verdict = "healthy" if health.healthy else "NOT healthy"
        state.append(f"old container {old} running again, {verdict} ({health.detail})")
    return ok and health.healthy, state


class _Quiet:
    """A Progress that never raises (used while putting things back)."""

    def __init__(self, inner: Progress) -> None:
        self.inner = inner

    async def step(self, name: str, status: StepStatus, detail: str = "") -> None:
        """Pass the step on, swallowing any failure to report it."""
        try:
            await self.inner.step(name, status, detail)
        except Exception:
            return


async def execute(
    engine: EngineAdapter, api: Checker | None, config: RollbackConfig, plan: Plan, progress: Progress
) -> Execution:
    """Carry out a version or flag rollback: copy, stop, start, wait for health; put back on failure."""
    details = plan.details
    old_id = str(details["container_id"])
    old_name = str(details["container_name"])
    kept = str(details["kept_name"])
    image = str(details["image"])
    target_image_id = str(details["target_image_id"])
    env: dict[str, str | None] = dict(details.get("env") or {})
    stop_timeout = int(details["stop_timeout"])
    target = str(details.get("outcome") or image)
    previous = details.get("previous_version")
    way_back = str(plan.way_back[-1]).removeprefix("afterwards: ") if plan.way_back else ""
    timeout = config.engine_timeout

    def failed(summary: str, state: list[str]) -> Execution:
        return Execution(command="rollback", succeeded=False, summary=summary, state=state)

    step = f"check {old_name}"
    await progress.step(step, "running")
    try:
        old = await engine.describe(old_id, config.read_timeout)
    except DependencyError as error:
        await progress.step(step, "failed", error.detail)
        return failed(f"could not read {old_name}: {error.reason}; nothing was changed", [error.detail])
    if old.image_id != plan.state.get("image_id"):
        await progress.step(step, "failed", "its image changed since the plan")
        return failed("the container changed since the plan; nothing was changed", [])
    was_running = old.status == "running"
    healthy_before = old.health == "healthy"
    if was_running and api is not None and not healthy_before:
        try:
            await asyncio.wait_for(api.ping(), timeout=config.read_timeout)
            healthy_before = True
        except Exception:
            healthy_before = False
    shown = "healthy" if healthy_before else "not healthy"
    await progress.step(step, "done", f"{old.status}, {shown}, image {old.image_ref}")

    swap = Swap(old_id=old_id, old_name=old_name, old_healthy=healthy_before, old_status=old.status)
    new: ContainerInfo | None = None
    try:
        step = f"keep the old container as {kept}"
        await progress.step(step, "running")
        await engine.rename(old_id, kept, timeout)
        swap.renamed = True
        await progress.step(step, "done")

        source = image if image.startswith(config.image) else "the same image"
        step = f"create the new container from {source}"
        await progress.step(step, "running")
        # From the image id the plan showed, never from a tag that may have moved since.
        new = await engine.create_like(old_id, target_image_id, old_name, env, timeout)
        swap.new_id = new.id
        await progress.step(step, "done", new.short_id)

        step = f"stop the old container (up to {stop_timeout} s)"
        await progress.step(step, "running")
        if was_running:
            await engine.stop(old_id, stop_timeout, timeout)
            swap.stopped = True
            await progress.step(step, "done")
        else:
            await progress.step(step, "skipped", f"it was {old.status}")

        step = "start the new container"
        await progress.step(step, "running")
        await engine.start(new.id, timeout)
        await progress.step(step, "done")

        step = "wait until healthy"
        await progress.step(step, "running")
        health = await wait_healthy(
            engine, api, new.id, config.health_timeout, config.read_timeout, progress, step
        )
    except Exception as error:
        # Anything, the lock lost included: the service must not be left half-switched.
        reason = error.detail if isinstance(error, DependencyError) else f"{type(error).__name__}: {error}"
        await _quietly(progress, step, "failed", reason[:300])
        serving, state = await _put_back(engine, api, config, progress, swap)
        if not swap.stopped and serving:
            outcome = f"nothing was changed: {old_name} kept serving throughout"
        elif serving:
            outcome = "the previous container serves again"
        else:
            outcome = "the previous container could NOT be fully put back (see its state)"
        return failed(f"{step} failed ({reason[:200]}); {outcome}", state)

    if not health.healthy:
        await progress.step(step, "failed", health.detail)
        logs = ""
        with contextlib.suppress(DependencyError):
            logs = (await engine.logs_tail(new.id, 5, config.read_timeout)).strip()
        serving, state = await _put_back(engine, api, config, progress, swap)
        if logs:
            state.append("last lines of the new container: " + " | ".join(logs.splitlines()[-5:])[:400])
        if serving:
            verdict = "put the previous container back; it serves again"
            if not swap.old_healthy:
                verdict = "put the previous container back; it runs again (it was not healthy before either)"
        else:
            verdict = "tried to put the previous container back, but it is NOT serving (see its state)"
        return failed(f"{target} did not become healthy ({health.detail}); {verdict}", state)
    await progress.step(step, "done", f"{health.detail} after {health.seconds:.1f} s")

    state = [f"{old_name} ({new.short_id}) running {target}, healthy: {health.detail}"]
    step = f"remove the old container {kept}"
    await progress.step(step, "running")
    try:
        await engine.remove(old_id, timeout)
        await progress.step(step, "done")
        state.append(f"previous container {old_id[:12]} ({previous or old.image_ref}) removed")
    except DependencyError as error:
        await progress.step(step, "failed", error.detail)
        state.append(f"previous container {kept} left in place (remove it by hand): {error.detail}")
    return Execution(
        command="rollback",
        succeeded=True,
        summary=f"{config.service} runs {target} and is healthy",
        state=state,
        way_back=way_back,
    )
