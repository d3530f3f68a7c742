"""The backend container (`3dpot-backend-1`, Compose labels) running `sandbox.backend`, and its faults."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from sandbox.component import (
    HTTP_TIMEOUT,
    START_TIMEOUT,
    STOP_TIMEOUT,
    ComponentStatus,
    Paths,
    http_answers,
    url_host,
    url_port,
)
from sandbox.images import (
    BACKEND_LOG_NAME,
    CONTAINER_CODE_DIR,
    CONTAINER_LOG_DIR,
    CONTAINER_PORT,
    DEFAULT_VERSION,
    SANDBOX_LABEL,
    VERSIONS,
)
from sandbox.podman import docker_client, podman_answers, podman_env
from sandbox.processes import SandboxError, find_program, pid_alive, wait_reaped, wait_until

if TYPE_CHECKING:
    import docker
    import docker.models.containers

    from bot.config import Settings

BACKEND_CONTAINER = "3dpot-backend-1"


def backend_container_name(settings: Settings) -> str:
    """Return the backend container's name, Compose style: `<project>-<service>-1`.

    With the default project and service this is BACKEND_CONTAINER; another project (a test's own
    backend beside the shared one) gets a container of its own.
    """
    return f"{settings.compose_project}-{settings.backend_service}-1"


def _find_backend(
    client: docker.DockerClient, name: str = BACKEND_CONTAINER
) -> docker.models.containers.Container | None:
    """Return the container called `name`, or None."""
    import docker.errors

    try:
        return client.containers.get(name)
    except docker.errors.NotFound:
        return None


def container_version(container: docker.models.containers.Container) -> str | None:
    """Return the backend version a container runs, from its image (not the container's labels).

    Container labels include the image's labels as they were at creation, so a container
    recreated from another one's attrs may carry a stale version label; the image cannot.
    """
    import docker.errors

    with contextlib.suppress(docker.errors.DockerException):
        image = container.image
        if image is not None:
            version = (image.labels or {}).get("org.opencontainers.image.version")
            if version:
                return str(version)
    ref = str(container.attrs.get("Config", {}).get("Image", ""))
    return ref.rsplit(":", 1)[-1] if ":" in ref else None


def _init_supported() -> bool:
    """Return True if Podman has its container init (catatonit), needed for init=True."""
    return any(
        Path(p).exists()
        for p in ("/usr/libexec/podman/catatonit", "/usr/bin/catatonit", "/usr/libexec/catatonit")
    )


def _host_mounts() -> list[tuple[str, str]]:
    """Return (host, container) read-only mounts that let the container run this venv's Python."""
    venv = Path(sys.prefix)
    base = Path(os.path.realpath(sys.base_prefix))
    package = Path(__file__).resolve().parent
    mounts = [("/usr", "/usr"), ("/lib", "/lib")]
    if Path("/lib64").exists():
        mounts.append(("/lib64", "/lib64"))
    for path in (base, venv):
        if not str(path).startswith("/usr/"):
            mounts.append((str(path), str(path)))
    # Only the sandbox package, not the repository: the repo may hold a .env with secrets.
    mounts.append((str(package), f"{CONTAINER_CODE_DIR}/sandbox"))
    return mounts


def start_backend(settings: Settings, version: str | None = None) -> ComponentStatus:
    """Run the backend container (default: keep the running one, else v2.0.5); wait for /health.

    An explicit `version` different from the running container's recreates the container.
    """
    if version is not None and version not in VERSIONS:
        raise SandboxError(f"unknown version {version}; known: {', '.join(VERSIONS)}")
    paths = Paths(settings)
    paths.make()
    import docker.errors

    client = docker_client(settings)
    try:
        container = _find_backend(client, backend_container_name(settings))
        action = "reused"
        if container is not None:
            current = container_version(container)
            if version is not None and current != version:
                container.remove(force=True)
                container = None
                action = f"recreated ({current} -> {version})"
            elif container.status != "running":
                container.start()
                action = "restarted"
            elif not pid_alive(main_pid := int(container.attrs.get("State", {}).get("Pid") or 0)):
                # Podman's database outlives its processes: when a session's processes are
                # killed, the container still reads "running" and nothing answers on its port.
                # Podman cannot remove it while its process is an unreaped zombie.
                wait_reaped(main_pid, timeout=10.0)
                container.remove(force=True)
                container = None
                action = "recreated (its process had died)"
        if container is None:
            container = _run_backend(client, settings, paths, version or DEFAULT_VERSION)
            if action == "reused":
                action = "created"
        container_id = container.id
    except docker.errors.DockerException as error:
        raise SandboxError(f"backend: {error}") from None
    finally:
        client.close()
    health_url = settings.api_url.rstrip("/") + "/health"
    try:
        wait_until(lambda: http_answers(health_url), START_TIMEOUT, "backend")
    except SandboxError as error:
        raise SandboxError(f"{error}\n{_container_logs(settings, container_id)}") from None
    status = backend_status(settings)
    status.detail += f", {action}"
    return status


def _run_backend(
    client: docker.DockerClient, settings: Settings, paths: Paths, version: str
) -> docker.models.containers.Container:
    """Create and start the backend container of `version`, labelled as Compose would."""
    host_port = url_port(settings.api_url, 18080)
    volumes: dict[str, dict[str, str]] = {
        host: {"bind": target, "mode": "ro"} for host, target in _host_mounts()
    }
    volumes[str(paths.logs)] = {"bind": CONTAINER_LOG_DIR, "mode": "rw"}
    labels = {
        "com.docker.compose.project": settings.compose_project,
        "com.docker.compose.service": settings.backend_service,
        "com.docker.compose.container-number": "1",
        "com.docker.compose.oneoff": "False",
        SANDBOX_LABEL: "1",
    }
    environment = {
        "APP_VERSION": version,
        "PORT": str(CONTAINER_PORT),
        "LOG_PATH": f"{CONTAINER_LOG_DIR}/{BACKEND_LOG_NAME}",
    }
    api = client.api
    host_config = api.create_host_config(
        binds=volumes,
        port_bindings={CONTAINER_PORT: (url_host(settings.api_url), host_port)},
        restart_policy={"Name": "unless-stopped"},
        init=True if _init_supported() else None,
    )
    # The low-level API, because only it takes stop_timeout: Podman's compat API stores
    # StopTimeout 0 when none is given, and `podman stop` then SIGKILLs at once.
    # No HEALTHCHECK: Podman schedules health checks through systemd timers, and without
    # systemd the state stays "starting" forever, which would mislead the bot.
    created = api.create_container(
        f"{settings.backend_image}:{version}",
        name=backend_container_name(settings),
        detach=True,
        labels=labels,
        environment=environment,
        ports=[CONTAINER_PORT],
        host_config=host_config,
        stop_signal="SIGTERM",
        stop_timeout=int(STOP_TIMEOUT),
    )
    container = client.containers.get(created["Id"])
    container.start()
    container.reload()
    return container


def _container_logs(settings: Settings, container_id: str) -> str:
    """Return the container's last log lines, for the error when it does not come up."""
    import docker.errors

    client = docker_client(settings, timeout=10)
    try:
        logs: bytes = client.containers.get(container_id).logs(tail=20)
        return logs.decode(errors="replace")
    except docker.errors.DockerException:
        return ""
    finally:
        client.close()


def stop_backend(settings: Settings, *, remove: bool = True) -> ComponentStatus:
    """Stop the backend container, and remove it unless `remove` is False."""
    import docker.errors

    if not podman_answers(settings):
        return _stop_backend_with_cli(settings, remove=remove)
    client = docker_client(settings)
    try:
        container = _find_backend(client, backend_container_name(settings))
        if container is None:
            return ComponentStatus("backend", False, "no container")
        with contextlib.suppress(docker.errors.NotFound):
            container.stop(timeout=int(STOP_TIMEOUT))
            if remove:
                container.remove(force=True)
        return ComponentStatus("backend", False, "removed" if remove else "stopped")
    finally:
        client.close()


def remove_project(settings: Settings, project: str, timeout: int = 30) -> None:
    """Remove every container of a Compose project (tests and benchmarks run projects of their own)."""
    import docker.errors

    client = docker_client(settings, timeout=timeout)
    try:
        for container in client.containers.list(
            all=True, filters={"label": f"com.docker.compose.project={project}"}
        ):
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)
    finally:
        client.close()


def _stop_backend_with_cli(settings: Settings, *, remove: bool) -> ComponentStatus:
    """Stop the container with the podman CLI: the API service may be the thing that is down."""
    paths = Paths(settings)
    name = backend_container_name(settings)
    argv = [find_program("podman"), "rm", "-f", "-t", str(int(STOP_TIMEOUT)), name]
    if not remove:
        argv = [find_program("podman"), "stop", "-t", str(int(STOP_TIMEOUT)), name]
    try:
        result = subprocess.run(
            argv, capture_output=True, text=True, timeout=STOP_TIMEOUT + 20, env=podman_env(paths)
        )
    except subprocess.TimeoutExpired:
        return ComponentStatus("backend", False, "podman CLI timed out stopping the container")
    if result.returncode != 0:
        if "no such container" in result.stderr or "no container with" in result.stderr:
            return ComponentStatus("backend", False, "no container")
        return ComponentStatus("backend", False, f"podman CLI failed: {result.stderr.strip()[:200]}")
    return ComponentStatus("backend", False, "removed (podman CLI)" if remove else "stopped (podman CLI)")


def backend_status(settings: Settings) -> ComponentStatus:
    """Report the container's state, its version, and what /health says."""
    import docker.errors

    info: dict[str, Any] = {}
    parts: list[str] = []
    running = False
    if podman_answers(settings):
        client = docker_client(settings, timeout=10)
        try:
            name = backend_container_name(settings)
            container = _find_backend(client, name)
            if container is None:
                parts.append(f"no container {name}")
            else:
                version = container_version(container)
                info.update(container=container.name, state=container.status, version=version)
                running = container.status == "running"
                parts.append(f"{container.name} {container.status} {version}")
        except docker.errors.DockerException as error:
            parts.append(f"podman error: {type(error).__name__}")
        finally:
            client.close()
    else:
        parts.append("podman not answering")
    health_url = settings.api_url.rstrip("/") + "/health"
    try:
        response = httpx.get(health_url, timeout=HTTP_TIMEOUT)
        health = response.json().get("status", "?")
        info["health"] = health
        info["health_version"] = response.json().get("version")
        parts.append(f"/health {response.status_code} {health}")
        if "container" not in info:
            # Podman's API is down, but the container (kept alive by conmon) still serves.
            running = True
    except (httpx.HTTPError, ValueError) as error:
        info["health"] = None
        parts.append(f"/health unreachable ({type(error).__name__})")
    parts.append(settings.api_url)
    return ComponentStatus("backend", running, ", ".join(parts), info)


def set_faults(settings: Settings, **faults: Any) -> dict[str, Any]:
    """Change the running backend's faults (error_rate, latency_ms, auth_burst, health)."""
    response = httpx.post(
        settings.api_url.rstrip("/") + "/_sandbox/faults", json=faults, timeout=HTTP_TIMEOUT
    )
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


async def set_faults_async(settings: Settings, **faults: Any) -> dict[str, Any]:
    """Change the running backend's faults without blocking the event loop."""
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as client:
        response = await client.post(settings.api_url.rstrip("/") + "/_sandbox/faults", json=faults)
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


def get_faults(settings: Settings) -> dict[str, Any]:
    """Return the running backend's faults."""
    response = httpx.get(settings.api_url.rstrip("/") + "/_sandbox/faults", timeout=HTTP_TIMEOUT)
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result
