"""/rollback and /restart against the real engine (Podman's Docker API), on a Compose project of their own.

The shared sandbox backend (project 3dpot) is never touched: these tests run their own backend
containers, from images of their own, under project 3dpot-rbtest on a free port.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import tarfile
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker
import docker.errors
import httpx
import pytest

from adapters.engine import clone_config
from bot.config import Settings
from bot.gate.gate import Refused
from bot.gate.mfa import code_at
from bot.registry import COMMANDS
from bot.render.gate import CONFIRM_ACTION, MFA_VIEW
from commands.base import UsageError, tokenize
from commands.destructive import Execution, Proposal, Step
from commands.rollback import EngineUnavailable, VersionList, deploy_history
from sandbox.backend_container import backend_container_name, remove_project, start_backend
from sandbox.images import BASE_IMAGE, ensure_images
from sandbox.manager import SandboxStatus
from sandbox.podman import docker_client
from tests.conftest import make_settings, recreate_database
from tests.fakes import FakeSlack, block_actions_payload, view_submission_payload
from tests.gate_helpers import SECRET_KEY, FrozenClock, GateWorld, gate_world
from tests.netutil import free_port
from tests.test_gate_slack import interact, totp_values
from tests.test_slack_app import CHANNEL, USER, block_text, post_command, running_bot

PROJECT = "3dpot-rbtest"
IMAGE = "3dpot-backend-rbtest"
BROKEN = "v2.0.7"  # a version whose container cannot start: its command does not exist
OPS1, OPS2 = "U0OPS0001", "U0OPS0002"
# Labels and variables the engine or the image set, which differ by design between two containers.
IMAGE_OWNED_ENV = {"HOSTNAME"}


# --- The project's own backend ----------------------------------------------------------------------


def _build_broken_image(settings: Settings) -> None:
    dockerfile = (
        f"FROM {BASE_IMAGE}\n"
        f'LABEL org.opencontainers.image.version="{BROKEN}"\n'
        'CMD ["/nonexistent/backend"]\n'
    ).encode()
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        tar.addfile(info, io.BytesIO(dockerfile))
    context.seek(0)
    client = docker_client(settings, timeout=120)
    try:
        client.images.build(
            fileobj=context, custom_context=True, tag=f"{IMAGE}:{BROKEN}", rm=True, pull=False
        )
    finally:
        client.close()


def _project_containers(settings: Settings) -> list[Any]:
    client = docker_client(settings, timeout=30)
    try:
        return list(
            client.containers.list(all=True, filters={"label": f"com.docker.compose.project={PROJECT}"})
        )
    finally:
        client.close()


@pytest.fixture(scope="module")
def project(sandbox: SandboxStatus) -> Iterator[dict[str, Any]]:
    """Settings overrides of a Compose project of our own, with its images built; removed afterwards."""
    overrides: dict[str, Any] = {
        "compose_project": PROJECT,
        "backend_image": IMAGE,
        "api_url": f"http://127.0.0.1:{free_port()}",
        "sandbox_dir": Path("/tmp/chatops-rbtest"),  # its own log directory, not the shared one
    }
    settings = make_settings(**overrides)
    assert settings.compose_project != "3dpot"
    remove_project(settings, PROJECT, timeout=30)
    ensure_images(settings)
    _build_broken_image(settings)
    yield overrides
    remove_project(settings, PROJECT, timeout=30)
    client = docker_client(settings, timeout=60)
    try:
        for network in client.networks.list(names=[f"{PROJECT}_extra"]):
            network.remove()
        for tag in ("v2.0.5", "v2.0.6", BROKEN):
            with contextlib.suppress(docker.errors.APIError):
                client.images.remove(f"{IMAGE}:{tag}")
    finally:
        client.close()


def reset(overrides: dict[str, Any], version: str) -> dict[str, Any]:
    """Start from one fresh backend container of `version`; return its inspect."""
    settings = make_settings(**overrides)
    remove_project(settings, PROJECT, timeout=30)
    start_backend(settings, version)
    return inspect(overrides)


def inspect(overrides: dict[str, Any]) -> dict[str, Any]:
    """Return the inspect of the one container named like the service's, asserting it is alone."""
    settings = make_settings(**overrides)
    containers = _project_containers(settings)
    assert [c.name for c in containers] == [backend_container_name(settings)], [c.name for c in containers]
    attrs: dict[str, Any] = containers[0].attrs
    return attrs


def image_config(overrides: dict[str, Any], image_id: str) -> dict[str, Any]:
    client = docker_client(make_settings(**overrides), timeout=30)
    try:
        config: dict[str, Any] = client.api.inspect_image(image_id)["Config"]
        return config
    finally:
        client.close()


def api_health(overrides: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    response = httpx.get(overrides["api_url"] + "/health", timeout=5)
    return response.status_code, response.json()


@pytest.fixture
async def world(project: dict[str, Any]) -> AsyncIterator[GateWorld]:
    world = await _world(project)
    yield world
    await world.runtime.services.aclose()


async def _world(project: dict[str, Any], **extra: Any) -> GateWorld:
    world = await gate_world("chatops_test_rollback", **project, **extra)
    await world.enroll(OPS1)
    await world.enroll(OPS2)
    return world


async def propose(world: GateWorld, *tokens: str, user: str = OPS1) -> Proposal:
    result = await COMMANDS[_command(tokens)].run(
        world.runtime.services, list(_args(tokens)), world.invocation(user)
    )
    assert isinstance(result, Proposal), result
    return result


def _command(tokens: tuple[str, ...]) -> str:
    return "restart" if tokens[0] == "/restart" else "rollback"


def _args(tokens: tuple[str, ...]) -> tuple[str, ...]:
    return tokens[1:] if tokens[0] == "/restart" else tokens


def step_names(steps: list[Step]) -> list[tuple[str, str]]:
    return [(step.name, step.status) for step in steps]


# --- Listing -----------------------------------------------------------------------------------------


async def test_list_shows_versions_sorted_and_what_runs(project: dict[str, Any], world: GateWorld) -> None:
    attrs = reset(project, "v2.0.6")
    result = await COMMANDS["rollback"].run(world.runtime.services, ["list"], world.invocation("U0VIEWER1"))
    assert isinstance(result, VersionList)
    assert [item.version for item in result.versions] == [BROKEN, "v2.0.6", "v2.0.5"]
    running = [item for item in result.versions if item.running]
    assert [item.version for item in running] == ["v2.0.6"]
    assert running[0].deployed_at == attrs["Created"]
    assert result.running is not None and result.running.name == f"{PROJECT}-backend-1"
    reply = COMMANDS["rollback"].slack(result)
    assert "*v2.0.6* ← *running*" in block_text(reply.main.blocks)
    assert result.flags == ["MFA_ENABLED", "RATE_LIMIT_ENABLED"]


# --- Rolling back ------------------------------------------------------------------------------------


async def test_rollback_from_the_faulty_version_restores_health(
    project: dict[str, Any], world: GateWorld
) -> None:
    before = reset(project, "v2.0.6")
    assert api_health(project)[0] == 503  # v2.0.6 is the faulty release
    proposal = await propose(world, "v2.0.5")
    plan = proposal.plan
    assert plan.title == "Roll back backend to v2.0.5 (from v2.0.6)"
    assert plan.state["container_id"] == before["Id"] and plan.state["image_id"] == before["Image"]
    assert any("restart policy: unless-stopped" in line for line in plan.kept)
    port = project["api_url"].rsplit(":", 1)[1]
    assert any(f"127.0.0.1:{port}->8000/tcp" in line for line in plan.kept)

    result, published = await world.run(proposal, OPS1)

    assert result.succeeded, result
    assert api_health(project) == (
        200,
        {"status": "healthy", "service": "3dpot-backend", "version": "v2.0.5"},
    )
    after = inspect(project)  # one container, under the service's name: the old copy is gone
    assert after["Id"] != before["Id"] and after["State"]["Status"] == "running"
    assert after["Config"]["Image"].endswith(f"{IMAGE}:v2.0.5")
    assert step_names(result.steps) == [
        (f"check {PROJECT}-backend-1", "done"),
        (f"keep the old container as {PROJECT}-backend-1-previous-{before['Id'][:12]}", "done"),
        (f"create the new container from {IMAGE}:v2.0.5", "done"),
        ("stop the old container (up to 10 s)", "done"),
        ("start the new container", "done"),
        ("wait until healthy", "done"),
        (f"remove the old container {PROJECT}-backend-1-previous-{before['Id'][:12]}", "done"),
    ]
    assert "/health: healthy (v2.0.5)" in result.state[0]
    assert result.way_back == "/rollback v2.0.6"
    history = await deploy_history(world.runtime.services.state_db, "test", 5)
    assert list(history) == ["v2.0.5"]  # what /rollback list shows as deployed, beyond the running one
    # Progress was published as it happened, each step shown running before it was done.
    assert any(steps and steps[-1].status == "running" for steps in published)


async def test_a_rollback_to_the_faulty_version_puts_the_previous_one_back(project: dict[str, Any]) -> None:
    before = reset(project, "v2.0.5")
    world = await _world(project, rollback_health_timeout_seconds=3)
    try:
        result, _ = await world.run(await propose(world, "v2.0.6"), OPS1)
    finally:
        await world.runtime.services.aclose()

    assert not result.succeeded
    assert "v2.0.6 did not become healthy" in result.summary
    assert "put the previous container back; it serves again" in result.summary
    after = inspect(project)  # the very same container, under its own name again
    assert after["Id"] == before["Id"] and after["Name"].lstrip("/") == f"{PROJECT}-backend-1"
    assert after["State"]["Status"] == "running"
    assert api_health(project)[1]["version"] == "v2.0.5"
    assert any("removed" in line for line in result.state)
    assert any("running again, healthy" in line for line in result.state)
    assert ("wait until healthy", "failed") in step_names(result.steps)
    assert ("start the old container again", "done") in step_names(result.steps)


async def test_configuration_is_carried_over_exactly(project: dict[str, Any]) -> None:
    reset(project, "v2.0.6")
    world = await _world(project, rollback_flags=["FAULT_HEALTH"])
    # First a variable set on the container itself, not by its image: the sandbox backend reads
    # FAULT_HEALTH, so this flag also makes the faulty v2.0.6 healthy (as a hotfix flag would).
    flagged, _ = await world.run(await propose(world, "flag", "FAULT_HEALTH=ok"), OPS1)
    assert flagged.succeeded, flagged
    settings = make_settings(**project)
    client = docker_client(settings, timeout=30)
    try:
        network = client.networks.create(f"{PROJECT}_extra", driver="bridge")
        network.connect(backend_container_name(settings), aliases=["backend-extra"])
    finally:
        client.close()
    before = inspect(project)
    try:
        result, _ = await world.run(await propose(world, "v2.0.5"), OPS1)
    finally:
        await world.runtime.services.aclose()
        client = docker_client(settings, timeout=30)
        try:
            client.networks.get(f"{PROJECT}_extra").remove()
        except docker.errors.APIError:
            pass  # still in use when the test failed before the container went
        finally:
            client.close()
    assert result.succeeded, result
    after = inspect(project)

    assert after["HostConfig"] == before["HostConfig"]  # ports, binds, restart policy, limits, init...
    assert sorted(map(str, after["Mounts"])) == sorted(map(str, before["Mounts"]))
    old_image = image_config(project, before["Image"])
    new_image = image_config(project, after["Image"])

    def own_labels(attrs: dict[str, Any], image: dict[str, Any]) -> dict[str, str]:
        labels = image.get("Labels") or {}
        return {k: v for k, v in attrs["Config"]["Labels"].items() if labels.get(k) != v}

    def own_env(attrs: dict[str, Any], image: dict[str, Any]) -> set[str]:
        inherited = set(image.get("Env") or [])
        return {
            e for e in attrs["Config"]["Env"] if e not in inherited and e.split("=")[0] not in IMAGE_OWNED_ENV
        }

    assert own_labels(after, new_image) == own_labels(before, old_image)
    assert "com.docker.compose.service" in own_labels(after, new_image)
    assert own_env(after, new_image) == own_env(before, old_image)
    assert "FAULT_HEALTH=ok" in own_env(after, new_image)  # set on the container, so carried as it was
    for key in ("StopTimeout", "StopSignal", "Cmd", "WorkingDir", "ExposedPorts"):
        assert after["Config"].get(key) == before["Config"].get(key), key

    def networks(attrs: dict[str, Any]) -> dict[str, list[str]]:
        return {
            name: sorted(a for a in endpoint.get("Aliases") or [] if a != attrs["Id"][:12])
            for name, endpoint in attrs["NetworkSettings"]["Networks"].items()
        }

    assert networks(after) == networks(before)
    assert networks(after)[f"{PROJECT}_extra"] == ["backend-extra"]


async def test_a_flag_rollback_changes_exactly_that_variable(
    project: dict[str, Any], world: GateWorld
) -> None:
    before = reset(project, "v2.0.5")
    proposal = await propose(world, "flag", "mfa_enabled=false")  # names match case-insensitively
    assert proposal.plan.title == "Set MFA_ENABLED=false on backend"
    assert proposal.plan.current[-1] == "MFA_ENABLED unset"
    result, _ = await world.run(proposal, OPS1)
    assert result.succeeded, result
    assert result.way_back == "/rollback flag MFA_ENABLED unset"
    after = inspect(project)
    assert after["Image"] == before["Image"]

    old, new = container_env(before), container_env(after)
    changed = {k for k in old.keys() | new.keys() if old.get(k) != new.get(k)}
    assert changed == {"MFA_ENABLED"} and new["MFA_ENABLED"] == "false"
    assert after["HostConfig"] == before["HostConfig"]

    # And back, typed exactly as the way back reads: the variable is removed, not set to "".
    back = await propose(world, *tokenize(result.way_back)[1:])
    assert back.plan.title == "Unset MFA_ENABLED on backend"
    assert back.plan.way_back[-1] == "afterwards: /rollback flag MFA_ENABLED=false"
    result, _ = await world.run(back, OPS1)
    assert result.succeeded, result
    assert container_env(inspect(project)) == old


def container_env(attrs: dict[str, Any]) -> dict[str, str]:
    """The container's variables, the one the engine sets per container left out."""
    return dict(e.split("=", 1) for e in attrs["Config"]["Env"] if not e.startswith("HOSTNAME="))


async def test_a_flag_set_empty_and_a_flag_unset_each_come_back_as_they_were(
    project: dict[str, Any], world: GateWorld
) -> None:
    reset(project, "v2.0.5")
    empty = await propose(world, "flag", "MFA_ENABLED", "empty")
    assert empty.plan.title == "Set MFA_ENABLED to the empty string on backend"
    result, _ = await world.run(empty, OPS1)
    assert result.succeeded, result
    assert result.way_back == "/rollback flag MFA_ENABLED unset"
    assert container_env(inspect(project))["MFA_ENABLED"] == ""  # set, to nothing

    result, _ = await world.run(await propose(world, "flag", "MFA_ENABLED=true"), OPS1)
    assert result.succeeded, result
    assert result.way_back == "/rollback flag MFA_ENABLED empty"
    result, _ = await world.run(await propose(world, *tokenize(result.way_back)[1:]), OPS1)
    assert result.succeeded, result
    assert container_env(inspect(project))["MFA_ENABLED"] == ""

    # `unset NAME` reads as well as `NAME unset`.
    result, _ = await world.run(await propose(world, "flag", "unset", "mfa_enabled"), OPS1)
    assert result.succeeded, result
    assert "MFA_ENABLED" not in container_env(inspect(project))


DATA_DIR = "/var/lib/3dpot-data"


def _exec(settings: Settings, container: str, script: str) -> str:
    client = docker_client(settings, timeout=30)
    try:
        exit_code, output = client.containers.get(container).exec_run(["sh", "-c", script])
        assert exit_code == 0, output
        return bytes(output).decode().strip()
    finally:
        client.close()


async def test_data_in_an_anonymous_volume_survives_a_rollback(project: dict[str, Any]) -> None:
    """A Compose service's `volumes: [/var/lib/3dpot-data]` keeps its data across a rollback."""
    settings = make_settings(**project)
    name = backend_container_name(settings)
    plain = reset(project, "v2.0.6")
    body, _ = clone_config(plain, None, plain["Config"]["Image"], plain["Image"], {})
    # As Compose asks for an anonymous volume: a mount with a target and no source.
    body["HostConfig"].setdefault("Mounts", []).append({"Type": "volume", "Target": DATA_DIR})
    client = docker_client(settings, timeout=60)
    try:
        client.api.remove_container(plain["Id"], force=True)
        client.api.start(client.api.create_container_from_config(body, name=name)["Id"])
    finally:
        client.close()
    _exec(settings, name, f"echo uploads-before-rollback > {DATA_DIR}/marker")
    [volume] = [m["Name"] for m in inspect(project)["Mounts"] if m["Destination"] == DATA_DIR]

    world = await _world(project)
    try:
        result, _ = await world.run(await propose(world, "v2.0.5"), OPS1)
    finally:
        await world.runtime.services.aclose()
    assert result.succeeded, result

    after = inspect(project)
    assert after["Config"]["Labels"].get("org.opencontainers.image.version") == "v2.0.5"
    assert [m["Name"] for m in after["Mounts"] if m["Destination"] == DATA_DIR] == [volume]
    assert _exec(settings, name, f"cat {DATA_DIR}/marker") == "uploads-before-rollback"


def test_docker_anonymous_volumes_are_attached_by_name() -> None:
    """Docker (unlike Podman) lists an image's VOLUME only under Mounts, and a Compose one as a
    sourceless HostConfig.Mounts entry: both must come back by name, named volumes untouched.

    The inspect's shape is Docker Engine API v1.41's ContainerInspect (Mounts, HostConfig.Mounts).
    """
    source = {
        "Id": "f" * 64,
        "Config": {"Image": "3dpot-backend:v2.0.6", "Env": [], "Labels": {}},
        "HostConfig": {
            "Binds": ["3dpot_media:/srv/media:rw"],
            "Mounts": [{"Type": "volume", "Target": "/var/lib/3dpot-data"}],
            "NetworkMode": "bridge",
        },
        "Mounts": [
            {"Type": "volume", "Name": "3dpot_media", "Source": "/var/lib/docker/volumes/3dpot_media/_data",
             "Destination": "/srv/media", "Driver": "local", "Mode": "rw", "RW": True, "Propagation": ""},
            {"Type": "volume", "Name": "a" * 64, "Source": f"/var/lib/docker/volumes/{'a' * 64}/_data",
             "Destination": "/var/lib/3dpot-data", "Driver": "local", "Mode": "", "RW": True,
             "Propagation": ""},
            {"Type": "volume", "Name": "b" * 64, "Source": f"/var/lib/docker/volumes/{'b' * 64}/_data",
             "Destination": "/cache", "Driver": "local", "Mode": "", "RW": False, "Propagation": ""},
        ],
        "NetworkSettings": {"Networks": {}},
    }  # fmt: skip
    body, _ = clone_config(source, None, "3dpot-backend:v2.0.5", "sha256:" + "c" * 64, {})
    host = body["HostConfig"]
    assert host["Binds"] == ["3dpot_media:/srv/media:rw"]
    assert sorted(host["Mounts"], key=lambda m: m["Target"]) == [
        {"Type": "volume", "Source": "b" * 64, "Target": "/cache", "ReadOnly": True},
        {"Type": "volume", "Source": "a" * 64, "Target": "/var/lib/3dpot-data", "ReadOnly": False},
    ]


@pytest.mark.parametrize(
    "tokens",
    [
        ["flag", "DEBUG=1"],
        ["flag", "MFA_ENABLED"],
        ["flag", "MFA_ENABLED=$(id)"],
        ["flag", "MFA_ENABLED=a b"],
        ["flag", "MFA_ENABLED=false", "unset"],
        ["flag", "DEBUG", "unset"],
        ["flag", "MFA_ENABLED", "off"],
    ],
    ids=[
        "unconfigured flag",
        "no value",
        "command substitution",
        "space",
        "value and unset",
        "unset unconfigured",
        "unknown word",
    ],
)
async def test_bad_flags_are_refused(project: dict[str, Any], world: GateWorld, tokens: list[str]) -> None:
    with pytest.raises(UsageError) as refused:
        await COMMANDS["rollback"].run(world.runtime.services, tokens, world.invocation(OPS1))
    assert "flag" in refused.value.message


async def test_an_empty_value_is_refused_naming_unset_and_empty(
    project: dict[str, Any], world: GateWorld
) -> None:
    reset(project, "v2.0.5")
    with pytest.raises(UsageError) as refused:
        await COMMANDS["rollback"].run(
            world.runtime.services, ["flag", "MFA_ENABLED="], world.invocation(OPS1)
        )
    message = refused.value.message
    assert "`flag MFA_ENABLED unset` removes the variable" in message
    assert "`flag MFA_ENABLED empty` sets it to the empty string" in message
    assert "flag NAME unset" in str(refused.value.usage)
    with pytest.raises(UsageError) as refused:
        await COMMANDS["rollback"].run(
            world.runtime.services, ["flag", "MFA_ENABLED", "unset"], world.invocation(OPS1)
        )
    name = backend_container_name(make_settings(**project))
    assert refused.value.message == f"{name} already has MFA_ENABLED unset; nothing to do"


# --- Refusals before any plan ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "version",
    [
        "v2.0.4",
        "2.0.5",
        "latest",
        "v2.0.5; rm -rf /",
        "../../etc/passwd",
        "$(touch /tmp/rbtest-pwned)",
        "v2.0.5\n",
    ],
)
async def test_bad_versions_are_refused_with_the_available_list_and_no_plan(
    project: dict[str, Any], world: GateWorld, version: str
) -> None:
    before = reset(project, "v2.0.6") if version == "v2.0.4" else inspect_or_reset(project)
    with pytest.raises(UsageError) as refused:
        await COMMANDS["rollback"].run(world.runtime.services, [version], world.invocation(OPS1))
    assert f"available: {BROKEN}, v2.0.6, v2.0.5" in refused.value.message
    async with world.runtime.services.state_db.connection() as conn:
        assert await conn.fetchval("SELECT count(*) FROM approvals") == 0
    assert inspect(project)["Id"] == before["Id"]
    assert not Path("/tmp/rbtest-pwned").exists()


def inspect_or_reset(project: dict[str, Any]) -> dict[str, Any]:
    try:
        return inspect(project)
    except AssertionError:
        return reset(project, "v2.0.6")


async def test_the_running_version_is_refused_as_nothing_to_do(
    project: dict[str, Any], world: GateWorld
) -> None:
    reset(project, "v2.0.5")
    with pytest.raises(UsageError) as refused:
        await COMMANDS["rollback"].run(world.runtime.services, ["v2.0.5"], world.invocation(OPS1))
    assert "already runs v2.0.5" in refused.value.message


async def test_shell_and_path_characters_stay_inert_even_with_a_loose_pattern(
    project: dict[str, Any],
) -> None:
    marker = Path(f"/tmp/rbtest-{uuid.uuid4().hex[:8]}")
    before = inspect_or_reset(project)
    world = await _world(project, rollback_version_pattern=".*")
    services = world.runtime.services
    try:
        for text in (
            f"'v2.0.5;touch {marker}'",
            f'"$(touch {marker})"',
            f"v2.0.5`touch {marker}`",
            "../v2.0.5",
            "3dpot-base:busybox",
            "v2.0.5@sha256:0000",
        ):
            with pytest.raises(UsageError):
                await COMMANDS["rollback"].run(services, tokenize(text), world.invocation(OPS1))
        for text in (f"'backend;touch {marker}'", "../backend", "'back end'", f"backend;touch {marker}"):
            with pytest.raises(UsageError) as refused:
                await COMMANDS["restart"].run(services, tokenize(text), world.invocation(OPS1))
            message = refused.value.message
            assert "services: backend" in message or "unexpected argument" in message, message
    finally:
        await services.aclose()
    assert not marker.exists()
    assert inspect(project)["Id"] == before["Id"]


# --- Faults ------------------------------------------------------------------------------------------


async def test_a_new_container_that_cannot_start_leaves_the_old_one_serving(
    project: dict[str, Any], world: GateWorld
) -> None:
    before = reset(project, "v2.0.5")
    result, _ = await world.run(await propose(world, BROKEN), OPS1)
    assert not result.succeeded
    steps = step_names(result.steps)
    # Without a container init the engine refuses to start it; with one (catatonit) it starts and
    # dies at once. Either way the new one is removed and the old one brought back.
    if ("start the new container", "failed") in steps:
        assert result.summary.startswith("start the new container failed (")
        assert "nonexistent" in result.summary
        assert result.summary.endswith("the previous container serves again")
    else:
        assert result.summary.startswith(f"{BROKEN} did not become healthy (the container ")
        assert result.summary.endswith("put the previous container back; it serves again")
        assert any(line.startswith("new container") and "removed" in line for line in result.state)
    assert ("remove the new container", "done") in steps
    assert ("start the old container again", "done") in steps
    after = inspect(project)  # the new one is gone, the old one is back under its name
    assert after["Id"] == before["Id"] and after["State"]["Status"] == "running"
    assert api_health(project) == (
        200,
        {"status": "healthy", "service": "3dpot-backend", "version": "v2.0.5"},
    )
    assert any(
        line.startswith(f"old container {PROJECT}-backend-1 ({before['Id'][:12]}) running again, healthy")
        for line in result.state
    )


async def test_engine_down_is_a_clear_error_and_nothing_changes(project: dict[str, Any]) -> None:
    before = inspect_or_reset(project)
    dead = f"unix:///tmp/chatops-rbtest-{uuid.uuid4().hex[:8]}.sock"
    world = await _world(project, docker_host=dead)
    services = world.runtime.services
    try:
        for command, tokens in (("rollback", ["list"]), ("rollback", ["v2.0.5"]), ("restart", ["backend"])):
            with pytest.raises(EngineUnavailable) as refused:
                await COMMANDS[command].run(services, tokens, world.invocation(OPS1))
            assert "the container engine did not answer (refused" in refused.value.message
            assert "nothing was changed" in refused.value.message
    finally:
        await services.aclose()
    assert inspect(project)["Id"] == before["Id"]


async def test_the_engine_going_away_after_the_plan_changes_nothing(project: dict[str, Any]) -> None:
    before = reset(project, "v2.0.6")
    world = await _world(project)
    try:
        approval = await world.propose(await propose(world, "v2.0.5"), OPS1)
        confirmation = await world.confirm(approval, OPS1)
        # The engine vanishes between the approval and the execution: the gate's re-planning fails.
        world.runtime.services.engine.base_url = "unix:///tmp/chatops-rbtest-gone.sock"
        world.runtime.services.engine._client = None

        async def publish(steps: list[Step]) -> None:
            return None

        with pytest.raises(EngineUnavailable):
            await world.runtime.gate.execute(confirmation.approval, publish)
    finally:
        await world.runtime.services.aclose()
    assert inspect(project)["Id"] == before["Id"]


# --- Concurrency and staleness ---------------------------------------------------------------------


async def test_two_rollbacks_at_once_exactly_one_proceeds(project: dict[str, Any], world: GateWorld) -> None:
    reset(project, "v2.0.6")
    first = await world.confirm(await world.propose(await propose(world, "v2.0.5"), OPS1), OPS1)
    second = await world.confirm(await world.propose(await propose(world, "v2.0.5", user=OPS2), OPS2), OPS2)

    async def publish(steps: list[Step]) -> None:
        return None

    outcomes = await asyncio.gather(
        world.runtime.gate.execute(first.approval, publish),
        world.runtime.gate.execute(second.approval, publish),
        return_exceptions=True,
    )
    succeeded = [item for item in outcomes if isinstance(item, Execution) and item.succeeded]
    refused = [item for item in outcomes if isinstance(item, Refused)]
    assert len(succeeded) == 1 and len(refused) == 1, outcomes
    assert refused[0].reason in ("locked", "plan_changed")
    assert api_health(project)[1]["version"] == "v2.0.5"
    inspect(project)  # exactly one container


async def test_a_container_changed_after_the_plan_makes_it_stale(
    project: dict[str, Any], world: GateWorld
) -> None:
    reset(project, "v2.0.6")
    confirmation = await world.confirm(await world.propose(await propose(world, "v2.0.5"), OPS1), OPS1)
    replaced = reset(project, "v2.0.6")  # someone recreated the container meanwhile

    async def publish(steps: list[Step]) -> None:
        return None

    with pytest.raises(Refused) as refused:
        await world.runtime.gate.execute(confirmation.approval, publish)
    assert refused.value.reason == "plan_changed"
    assert refused.value.new_plan is not None
    assert refused.value.new_plan.plan.state["container_id"] == replaced["Id"]
    assert inspect(project)["Id"] == replaced["Id"]


# --- /restart ----------------------------------------------------------------------------------------


async def test_restart_restarts_the_container_and_waits_for_health(
    project: dict[str, Any], world: GateWorld
) -> None:
    before = reset(project, "v2.0.5")
    proposal = await propose(world, "/restart", "backend")
    assert proposal.plan.title == "Restart backend"
    result, _ = await world.run(proposal, OPS1)
    assert result.succeeded, result
    assert "restarted and healthy" in result.summary and "/health: healthy (v2.0.5)" in result.summary
    after = inspect(project)
    assert after["Id"] == before["Id"]
    assert after["State"]["StartedAt"] != before["State"]["StartedAt"]
    assert api_health(project)[0] == 200
    with pytest.raises(UsageError) as refused:
        await COMMANDS["restart"].run(world.runtime.services, ["db"], world.invocation(OPS1))
    assert "services: backend" in refused.value.message


# --- Through Slack -----------------------------------------------------------------------------------


async def test_rollback_through_slack_plan_confirm_totp_progress_outcome(
    project: dict[str, Any], fake_slack: FakeSlack
) -> None:
    reset(project, "v2.0.6")
    dsn = await recreate_database("chatops_test_rollback_slack")
    async with running_bot(
        fake_slack, state_database_url=dsn, secret_key=SECRET_KEY, operators=[USER], **project
    ) as (url, runtime):
        clock = FrozenClock(now=datetime(2026, 11, 29, 12, 0, tzinfo=UTC))
        runtime.gate.clock = clock
        enrollment = await runtime.mfa.enroll(USER)
        assert (
            await runtime.mfa.verify(USER, code_at(enrollment.secret, clock.now), clock.now, confirming=True)
        ).accepted
        clock.advance(30)

        await post_command(url, "/rollback", "v2.0.5")
        plan_post = await fake_slack.wait_for_call_async("chat.postMessage", timeout=15)
        plan_text = block_text(plan_post.params["blocks"])
        assert "Plan: Roll back backend to v2.0.5 (from v2.0.6)" in plan_text
        assert "restart policy: unless-stopped" in plan_text
        buttons = plan_post.params["blocks"][-1]["elements"]
        assert buttons[0]["action_id"] == CONFIRM_ACTION
        approval_id, plan_ts = buttons[0]["value"], plan_post.response["ts"]

        await interact(url, block_actions_payload(CONFIRM_ACTION, approval_id, message_ts=plan_ts))
        opened = await fake_slack.wait_for_call_async("views.open", timeout=10)
        assert opened.params["view"]["callback_id"] == MFA_VIEW

        code = code_at(enrollment.secret, clock.now)
        await interact(
            url, view_submission_payload(MFA_VIEW, totp_values(code), private_metadata=approval_id)
        )
        final = await fake_slack.wait_for_call_async(
            "chat.update",
            predicate=lambda call: "Succeeded" in block_text(call.params["blocks"]),
            timeout=60,
        )
    assert final.params["ts"] == plan_ts and final.params["channel"] == CHANNEL
    final_text = block_text(final.params["blocks"])
    assert "backend runs v2.0.5 and is healthy" in final_text
    assert "/health: healthy (v2.0.5)" in final_text
    assert "/rollback v2.0.6" in final_text  # the way back
    updates = [block_text(call.params["blocks"]) for call in fake_slack.calls_to("chat.update")]
    assert any(":hourglass_flowing_sand: stop the old container" in text for text in updates)
    assert any(":hourglass_flowing_sand: wait until healthy" in text for text in updates)
    assert api_health(project)[1]["version"] == "v2.0.5"
