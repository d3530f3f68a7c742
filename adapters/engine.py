"""The container engine through the Docker SDK (Docker or Podman's Docker API), in a thread."""

from __future__ import annotations

import asyncio
import math
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from adapters.base import DependencyError, classify
from adapters.engine_stats import lifetime_cpu

if TYPE_CHECKING:
    # The Docker SDK (with requests and urllib3, about a tenth of a second and 15 MB) is imported
    # where the engine is first talked to: most commands and an idle `chatops serve` never do.
    import docker
    from docker.errors import DockerException

# Pinned so that building the client never calls the engine (version="auto" would).
DOCKER_API_VERSION = "1.41"


class EngineAdapter:
    """The engine that runs the platform's Compose services."""

    name = "engine"

    def __init__(self, base_url: str, compose_project: str, backend_service: str, timeout: float) -> None:
        self.base_url = base_url
        self.compose_project = compose_project
        self.backend_service = backend_service
        self.timeout = timeout
        self._client: docker.DockerClient | None = None

    @property
    def client(self) -> docker.DockerClient:
        """Return the SDK client, made on first use (it opens no connection itself)."""
        if self._client is None:
            import docker

            self._client = docker.DockerClient(
                base_url=self.base_url, version=DOCKER_API_VERSION, timeout=max(1, int(self.timeout + 0.999))
            )
        return self._client

    def service_containers(self, service: str) -> list[Any]:
        """List the containers of one Compose service of the platform's project."""
        return list(
            self.client.containers.list(
                all=True,
                filters={
                    "label": [
                        f"com.docker.compose.project={self.compose_project}",
                        f"com.docker.compose.service={service}",
                    ]
                },
            )
        )

    def _check(self) -> str:
        from docker.errors import DockerException

        try:
            if not self.client.ping():
                raise DependencyError("unexpected answer", "engine ping did not answer OK")
            containers = self.service_containers(self.backend_service)
        except DockerException as error:
            raise DependencyError(*_engine_reason(error)) from None
        if not containers:
            raise DependencyError(
                "not found", f"no container for service {self.compose_project}/{self.backend_service}"
            )
        container = containers[0]
        state = container.attrs.get("State", {})
        status = str(state.get("Status", container.status))
        health = (state.get("Health") or {}).get("Status")
        image = ",".join(container.image.tags) if container.image.tags else container.image.short_id
        summary = f"{self.backend_service} {status}" + (f" ({health})" if health else "") + f", {image}"
        if status != "running":
            raise DependencyError("unexpected answer", summary)
        return summary

    async def ping(self) -> str:
        """Check the engine answers and report the backend container's state."""
        return await asyncio.to_thread(self._check)

    def _platform_stats(self, sample_seconds: float) -> list[ContainerStats]:
        import requests
        from docker.errors import DockerException

        try:
            containers = list(
                self.client.containers.list(
                    all=True, filters={"label": [f"com.docker.compose.project={self.compose_project}"]}
                )
            )
            running = [c for c in containers if c.status == "running"]
            first = {c.id: self.client.api.stats(c.id, stream=False, one_shot=True) for c in running}
            # Docker fills precpu_stats itself; Podman does not, so take a second sample.
            if running and not all(_has_precpu(stats) for stats in first.values()):
                time.sleep(sample_seconds)
                second = {c.id: self.client.api.stats(c.id, stream=False, one_shot=True) for c in running}
            else:
                second = first
            return [self._container_stats(c, first.get(c.id), second.get(c.id)) for c in containers]
        except DockerException as error:
            raise DependencyError(*_engine_reason(error)) from None
        except requests.RequestException as error:  # the SDK lets transport errors through
            raise classify(error) from None

    def _container_stats(self, container: Any, before: Any, after: Any) -> ContainerStats:
        from docker.errors import DockerException

        attrs = container.attrs
        labels = attrs.get("Config", {}).get("Labels") or {}
        image_ref = str(attrs.get("Config", {}).get("Image", ""))
        version: str | None = None
        try:
            image = container.image
            version = (image.labels or {}).get("org.opencontainers.image.version")
            tags = list(image.tags or [])
        except DockerException:
            tags = []
        tag = (tags[0] if tags else image_ref).rsplit("/", 1)[-1]
        if version is None and ":" in tag:
            version = tag.rsplit(":", 1)[1]
        cpu = memory = limit = age = lifetime = None
        state = attrs.get("State", {})
        if isinstance(after, dict):
            cpu = _cpu_percent(before, after)
            memory_stats = after.get("memory_stats") or {}
            memory = int(memory_stats["usage"]) if "usage" in memory_stats else None
            limit = int(memory_stats["limit"]) if memory_stats.get("limit") else None
            age, lifetime = lifetime_cpu(after, str(state.get("StartedAt") or "") or None)
        return ContainerStats(
            name=container.name,
            service=str(labels.get("com.docker.compose.service", "")),
            status=str(state.get("Status", container.status)),
            restart_count=int(attrs.get("RestartCount") or 0),
            image=tag,
            version=version,
            cpu_percent=cpu,
            memory_bytes=memory,
            memory_limit_bytes=limit,
            started_at=str(state.get("StartedAt") or "") or None,
            age_seconds=age,
            lifetime_cpu_percent=lifetime,
        )

    async def platform_stats(self, sample_seconds: float = 0.5) -> list[ContainerStats]:
        """Return state, restarts, image version, CPU and memory of the platform's containers.

        CPU is a percent of one core, as `docker stats` shows it, measured over `sample_seconds`
        when the engine does not give the previous sample itself.
        """
        return await asyncio.to_thread(self._platform_stats, sample_seconds)

    # --- Deploying one Compose service: the steps of `docker compose up -d`, one call each ----------
    # Every call makes its own client with the caller's timeout (stops and health waits need longer
    # than a ping) and runs in a thread, with a backstop in case the socket never answers.

    async def _call(
        self, timeout: float, work: Callable[[docker.DockerClient], _T], grace: float = 0.0
    ) -> _T:
        def run() -> _T:
            import docker

            client = docker.DockerClient(
                base_url=self.base_url, version=DOCKER_API_VERSION, timeout=max(1, math.ceil(timeout))
            )
            try:
                return work(client)
            except DependencyError:
                raise
            except Exception as error:
                raise _operation_error(error) from None
            finally:
                client.close()

        try:
            return await asyncio.wait_for(asyncio.to_thread(run), timeout=timeout + grace + 5)
        except TimeoutError:
            raise DependencyError("timeout", f"engine did not answer within {timeout + grace:g} s") from None

    async def image_tags(self, repository: str, timeout: float) -> list[ImageTag]:
        """List the tags of one image repository present in the engine."""

        def work(client: docker.DockerClient) -> list[ImageTag]:
            wanted = _short_repository(repository)
            found: list[ImageTag] = []
            for image in client.api.images():
                for ref in image.get("RepoTags") or []:
                    name, _, tag = str(ref).rpartition(":")
                    if name and _short_repository(name) == wanted and "/" not in tag:
                        found.append(ImageTag(repository, tag, str(image["Id"]), _iso(image.get("Created"))))
            return found

        return await self._call(timeout, work)

    async def image_id(self, ref: str, timeout: float) -> str | None:
        """Return the id of the image a reference names, or None when it is not present."""

        def work(client: docker.DockerClient) -> str | None:
            from docker.errors import ImageNotFound

            try:
                return str(client.api.inspect_image(ref)["Id"])
            except ImageNotFound:
                return None

        return await self._call(timeout, work)

    async def project_containers(self, timeout: float, service: str | None = None) -> list[ContainerInfo]:
        """Describe every container of the Compose project (or of one of its services)."""

        def work(client: docker.DockerClient) -> list[ContainerInfo]:
            labels = [f"com.docker.compose.project={self.compose_project}"]
            if service is not None:
                labels.append(f"com.docker.compose.service={service}")
            listed = client.api.containers(all=True, filters={"label": labels})
            return [_container_info(client.api.inspect_container(item["Id"])) for item in listed]

        return await self._call(timeout, work)

    async def describe(self, container_id: str, timeout: float) -> ContainerInfo:
        """Describe one container; DependencyError "not found" when it is gone."""
        return await self._call(
            timeout, lambda client: _container_info(client.api.inspect_container(container_id))
        )

    async def rename(self, container_id: str, name: str, timeout: float) -> None:
        """Rename a container (running or not)."""
        await self._call(timeout, lambda client: client.api.rename(container_id, name))

    async def create_like(
        self, source_id: str, image: str, name: str, env: Mapping[str, str | None], timeout: float
    ) -> ContainerInfo:
        """Create (not start) a container configured like `source_id` but from `image`.

        What the source's image supplied (environment, labels, command...) is left for the new
        image to supply; what was set on the container itself is carried over, with `env`
        applied on top (None removes a variable).
        """

        def work(client: docker.DockerClient) -> ContainerInfo:
            from docker.errors import ImageNotFound

            source = client.api.inspect_container(source_id)
            try:
                base = client.api.inspect_image(source["Image"])
            except ImageNotFound:
                base = None  # the old image is gone: everything the container shows is carried
            target_id = str(client.api.inspect_image(image)["Id"])
            body, more_networks = clone_config(source, base, image, target_id, env)
            created = client.api.create_container_from_config(body, name=name)
            new_id = str(created["Id"])
            try:
                for network, endpoint in more_networks.items():
                    client.api.connect_container_to_network(
                        new_id,
                        network,
                        aliases=endpoint.get("Aliases") or None,
                        links=endpoint.get("Links") or None,
                        ipv4_address=(endpoint.get("IPAMConfig") or {}).get("IPv4Address"),
                    )
            except Exception:
                # A half-made container must not linger under the service's name.
                client.api.remove_container(new_id, force=True)
                raise
            return _container_info(client.api.inspect_container(new_id))

        return await self._call(timeout, work)

    async def stop(self, container_id: str, stop_timeout: int, timeout: float) -> None:
        """Stop a container, giving it `stop_timeout` seconds before SIGKILL."""
        await self._call(
            timeout, lambda client: client.api.stop(container_id, timeout=stop_timeout), grace=stop_timeout
        )

    async def start(self, container_id: str, timeout: float) -> None:
        """Start a container."""
        await self._call(timeout, lambda client: client.api.start(container_id))

    async def restart(self, container_id: str, stop_timeout: int, timeout: float) -> None:
        """Restart a container, giving it `stop_timeout` seconds to stop."""
        await self._call(
            timeout, lambda client: client.api.restart(container_id, timeout=stop_timeout), grace=stop_timeout
        )

    async def remove(self, container_id: str, timeout: float) -> None:
        """Remove a container, stopping it first if it runs; a container already gone is fine."""

        def work(client: docker.DockerClient) -> None:
            from docker.errors import NotFound

            try:
                client.api.remove_container(container_id, force=True)
            except NotFound:
                return

        await self._call(timeout, work)

    async def logs_tail(self, container_id: str, lines: int, timeout: float) -> str:
        """Return the last lines a container wrote (stdout and stderr)."""

        def work(client: docker.DockerClient) -> str:
            raw = client.api.logs(container_id, stdout=True, stderr=True, tail=lines)
            return bytes(raw).decode(errors="replace")

        return await self._call(timeout, work)

    def close(self) -> None:
        """Close the SDK client's connections."""
        if self._client is not None:
            self._client.close()


def _engine_reason(error: DockerException) -> tuple[Any, str]:
    text = str(error)
    lowered = text.lower()
    if "connection refused" in lowered or "no such file" in lowered or "connectionerror" in lowered:
        return "refused", f"engine at {text[:120]}"
    if "timed out" in lowered or "timeout" in lowered:
        return "timeout", "engine did not answer in time"
    return "error", text[:200]


@dataclass(frozen=True)
class ContainerStats:
    """One container of the platform's Compose project, as the engine describes it."""

    name: str
    service: str
    status: str
    restart_count: int
    image: str
    version: str | None
    cpu_percent: float | None
    memory_bytes: int | None
    memory_limit_bytes: int | None
    started_at: str | None
    # How long it has run (the engine's clock), and its CPU averaged over that whole time: for a
    # container younger than a triage's window, its CPU over the window (a sample would catch start-up).
    age_seconds: float | None = None
    lifetime_cpu_percent: float | None = None


def _has_precpu(stats: Any) -> bool:
    pre = (stats or {}).get("precpu_stats") or {}
    return bool((pre.get("cpu_usage") or {}).get("total_usage")) and bool(pre.get("system_cpu_usage"))


def _cpu_percent(before: Any, after: Any) -> float | None:
    """Compute CPU use as `docker stats` does: 100 is one core busy."""
    now = after.get("cpu_stats") or {}
    # One sample carries its predecessor (Docker); two samples are compared (Podman).
    previous = (after.get("precpu_stats") if before is after else (before or {}).get("cpu_stats")) or {}
    try:
        used = float(now["cpu_usage"]["total_usage"]) - float(previous["cpu_usage"]["total_usage"])
        system = float(now["system_cpu_usage"]) - float(previous["system_cpu_usage"])
    except (KeyError, TypeError, ValueError):
        return None
    cpus = int(now.get("online_cpus") or len(now.get("cpu_usage", {}).get("percpu_usage") or []) or 1)
    if system <= 0:
        return None
    return max(0.0, used / system * cpus * 100.0)


class ServiceAction:
    """Stop and start one Compose service's containers, with a time limit per action."""

    def __init__(self, engine: EngineAdapter, action_timeout: float) -> None:
        self.engine = engine
        self.action_timeout = action_timeout

    def _client(self) -> docker.DockerClient:
        import docker

        # Stopping waits for the container to exit: the engine's short ping timeout would cut it off.
        return docker.DockerClient(
            base_url=self.engine.base_url,
            version=DOCKER_API_VERSION,
            timeout=int(self.action_timeout + 0.999),
        )

    def _containers(self, client: docker.DockerClient, service: str) -> list[Any]:
        return list(
            client.containers.list(
                all=True,
                filters={
                    "label": [
                        f"com.docker.compose.project={self.engine.compose_project}",
                        f"com.docker.compose.service={service}",
                    ]
                },
            )
        )

    def _apply(self, service: str, action: str, stop_seconds: int) -> list[tuple[str, str]]:
        from docker.errors import DockerException

        client = self._client()
        try:
            containers = self._containers(client, service)
            if not containers:
                raise DependencyError(
                    "not found", f"no container for service {self.engine.compose_project}/{service}"
                )
            for container in containers:
                if action == "stop" and container.status == "running":
                    container.stop(timeout=stop_seconds)
                elif action == "start" and container.status != "running":
                    container.start()
            states = []
            for container in containers:
                container.reload()
                states.append((str(container.name), str(container.status)))
            return states
        except DockerException as error:
            raise DependencyError(*_engine_reason(error)) from None
        finally:
            client.close()

    async def stop(self, service: str | None = None, stop_seconds: int = 10) -> list[tuple[str, str]]:
        """Stop every container of the service (as `docker compose stop`); return (name, state) pairs."""
        return await asyncio.to_thread(
            self._apply, service or self.engine.backend_service, "stop", stop_seconds
        )

    async def start(self, service: str | None = None) -> list[tuple[str, str]]:
        """Start every container of the service (as `docker compose start`); return (name, state) pairs."""
        return await asyncio.to_thread(self._apply, service or self.engine.backend_service, "start", 0)

    async def states(self, service: str | None = None) -> list[tuple[str, str]]:
        """Return (name, state) of every container of the service."""
        return await asyncio.to_thread(self._apply, service or self.engine.backend_service, "inspect", 0)


# --- Deploying: what the engine says about images and containers, and how to copy a container ------

_T = TypeVar("_T")

# Variables the engine itself puts in a container's environment: never carried to a new container.
_ENGINE_ENV = {"HOSTNAME"}
_ENGINE_ENV_ENTRIES = {"container=podman"}
# Settings the image supplies unless the container overrides them.
_IMAGE_DEFAULTS = ("Cmd", "Entrypoint", "WorkingDir", "User", "Healthcheck", "Volumes", "Shell")
# Host settings copied as they are when set (a zero, empty or false value is the engine's default).
_HOST_SETTINGS = (
    "Binds",
    "Mounts",
    "PortBindings",
    "PublishAllPorts",
    "RestartPolicy",
    "Init",
    "AutoRemove",
    "VolumesFrom",
    "Links",
    "CapAdd",
    "CapDrop",
    "Dns",
    "DnsOptions",
    "DnsSearch",
    "ExtraHosts",
    "GroupAdd",
    "Privileged",
    "ReadonlyRootfs",
    "SecurityOpt",
    "Sysctls",
    "Tmpfs",
    "Devices",
    "OomScoreAdj",
    "Memory",
    "MemoryReservation",
    "MemorySwap",
    "NanoCpus",
    "CpuShares",
    "CpuQuota",
    "CpuPeriod",
    "CpusetCpus",
    "CpusetMems",
    "PidsLimit",
    "ShmSize",
    "CgroupParent",
)
# Namespace modes that only restate the default, as Podman reports them.
_DEFAULT_MODES = {"", "private", "shareable", "default"}
_DEFAULT_NETWORKS = {"bridge", "podman", "default"}


@dataclass(frozen=True)
class ImageTag:
    """One tag of an image repository present in the engine."""

    repository: str
    tag: str
    image_id: str
    created: str | None


@dataclass(frozen=True)
class ContainerInfo:
    """One container as the engine describes it, reduced to what deploying needs."""

    id: str
    name: str
    project: str
    service: str
    image_id: str
    image_ref: str
    status: str
    health: str | None
    created: str
    started_at: str | None
    exit_code: int | None
    error: str
    stop_timeout: int | None
    restart_count: int
    env: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    ports: list[str] = field(default_factory=list)
    networks: list[str] = field(default_factory=list)
    mounts: list[str] = field(default_factory=list)
    restart_policy: str = ""
    has_healthcheck: bool = False

    @property
    def short_id(self) -> str:
        """Return the 12-character id the engine's tools show."""
        return self.id[:12]


def _container_info(attrs: dict[str, Any]) -> ContainerInfo:
    config = attrs.get("Config") or {}
    host = attrs.get("HostConfig") or {}
    state = attrs.get("State") or {}
    labels = {str(k): str(v) for k, v in (config.get("Labels") or {}).items()}
    env: dict[str, str] = {}
    for entry in config.get("Env") or []:
        key, _, value = str(entry).partition("=")
        env[key] = value
    health = (state.get("Health") or {}).get("Status") or None
    started = str(state.get("StartedAt") or "")
    stop_timeout = config.get("StopTimeout")
    return ContainerInfo(
        id=str(attrs["Id"]),
        name=str(attrs.get("Name", "")).lstrip("/"),
        project=labels.get("com.docker.compose.project", ""),
        service=labels.get("com.docker.compose.service", ""),
        image_id=str(attrs.get("Image", "")),
        image_ref=str(config.get("Image", "")),
        status=str(state.get("Status", "")),
        health=str(health) if health else None,
        created=str(attrs.get("Created", "")),
        started_at=None if not started or started.startswith("0001-") else started,
        exit_code=int(state["ExitCode"]) if state.get("ExitCode") is not None else None,
        error=str(state.get("Error") or ""),
        stop_timeout=int(stop_timeout) if stop_timeout is not None else None,
        restart_count=int(attrs.get("RestartCount") or 0),
        env=env,
        labels=labels,
        ports=sorted(
            f"{binding.get('HostIp') or '*'}:{binding.get('HostPort')}->{port}"
            for port, bindings in (host.get("PortBindings") or {}).items()
            for binding in bindings or []
        ),
        networks=sorted(((attrs.get("NetworkSettings") or {}).get("Networks") or {}).keys()),
        mounts=sorted(
            f"{mount.get('Name') or mount.get('Source')}:{mount.get('Destination')}"
            + ("" if mount.get("RW", True) else ":ro")
            for mount in attrs.get("Mounts") or []
        ),
        restart_policy=str((host.get("RestartPolicy") or {}).get("Name") or "no"),
        has_healthcheck=bool((config.get("Healthcheck") or {}).get("Test")),
    )


def _short_repository(name: str) -> str:
    """Drop the default registry prefixes the engine adds (Podman shows docker.io/library/x)."""
    for prefix in ("docker.io/library/", "docker.io/", "localhost/"):
        if name.startswith(prefix):
            return name[len(prefix) :]
    return name


def _iso(created: Any) -> str | None:
    if isinstance(created, int | float) and created > 0:
        return datetime.fromtimestamp(created, UTC).isoformat()
    return str(created) if created else None


def _signal_name(value: Any) -> str | None:
    """Name a stop signal: Podman reports numbers ("15"), create takes names."""
    text = str(value or "")
    if text.isdigit():
        try:
            return signal.Signals(int(text)).name
        except ValueError:
            return None
    return text or None


def _operation_error(error: BaseException) -> DependencyError:
    from docker.errors import APIError, DockerException, NotFound

    if isinstance(error, NotFound):
        return DependencyError("not found", str(error.explanation or error)[:200])
    if isinstance(error, APIError):
        return DependencyError("error", str(error.explanation or error)[:300])
    if isinstance(error, DockerException) and not isinstance(error, APIError):
        reason, detail = _engine_reason(error)
        return DependencyError(reason, detail)
    return classify(error)


def _keep_anonymous_volumes(source: dict[str, Any], host_config: dict[str, Any]) -> None:
    """Attach the source's anonymous volumes to the clone by name, so their data comes along.

    An image's VOLUME, or a Compose service's `- /path`, is reached only through the container
    that made it: created again, Docker would hand the new container an empty volume. Compose
    carries them over when it recreates a container; so does this. (Podman lists them in Binds
    by name already, which is carried as it is.)
    """
    covered = {str(bind).split(":")[1] for bind in host_config.get("Binds") or [] if ":" in str(bind)}
    covered |= {m.get("Target") for m in host_config.get("Mounts") or [] if m.get("Source")}
    anonymous = [
        mount
        for mount in source.get("Mounts") or []
        if mount.get("Type") == "volume" and mount.get("Name") and mount.get("Destination") not in covered
    ]
    if not anonymous:
        return
    targets = {mount["Destination"] for mount in anonymous}
    kept = [
        m
        for m in host_config.get("Mounts") or []
        if not (m.get("Type") == "volume" and not m.get("Source") and m.get("Target") in targets)
    ]
    host_config["Mounts"] = kept + [
        {
            "Type": "volume",
            "Source": mount["Name"],
            "Target": mount["Destination"],
            "ReadOnly": not mount.get("RW", True),
        }
        for mount in anonymous
    ]


def clone_config(
    source: dict[str, Any],
    source_image: dict[str, Any] | None,
    image: str,
    image_id: str,
    env: Mapping[str, str | None],
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Build the create body of a container like `source` from `image`; also its further networks.

    `source` is the old container's inspect, `source_image` its image's (None if gone). Values the
    old image supplied are left out, so that the new image supplies its own.
    """
    config = source.get("Config") or {}
    host = source.get("HostConfig") or {}
    base = (source_image or {}).get("Config") or {}
    short = str(source.get("Id", ""))[:12]
    body: dict[str, Any] = {"Image": image}

    inherited = set(base.get("Env") or [])
    variables: dict[str, str] = {}
    for entry in config.get("Env") or []:
        key, _, value = str(entry).partition("=")
        if entry in inherited or key in _ENGINE_ENV or entry in _ENGINE_ENV_ENTRIES:
            continue
        variables[key] = value
    for name, change in env.items():
        if change is None:
            variables.pop(name, None)
        else:
            variables[name] = change
    body["Env"] = [f"{name}={value}" for name, value in variables.items()]

    image_labels = base.get("Labels") or {}
    labels = {k: v for k, v in (config.get("Labels") or {}).items() if image_labels.get(k) != v}
    if "com.docker.compose.image" in labels:
        labels["com.docker.compose.image"] = image_id  # Compose records the image it ran
    body["Labels"] = labels

    for key in _IMAGE_DEFAULTS:
        if config.get(key) and config[key] != base.get(key):
            body[key] = config[key]
    exposed = {
        k: v
        for k, v in (config.get("ExposedPorts") or {}).items()
        if k not in (base.get("ExposedPorts") or {})
    }
    if exposed:
        body["ExposedPorts"] = exposed
    for key in ("Tty", "OpenStdin", "StdinOnce", "Domainname"):
        if config.get(key):
            body[key] = config[key]
    hostname = str(config.get("Hostname") or "")
    if hostname and not str(source.get("Id", "")).startswith(hostname):
        body["Hostname"] = hostname  # set on purpose; the default is the container's own id
    stop_signal = _signal_name(config.get("StopSignal"))
    if stop_signal:
        body["StopSignal"] = stop_signal
    if config.get("StopTimeout") is not None:
        # Always explicit: Podman's compat API stores 0 when none is given, then SIGKILLs at once.
        body["StopTimeout"] = int(config["StopTimeout"])

    host_config: dict[str, Any] = {k: host[k] for k in _HOST_SETTINGS if host.get(k)}
    _keep_anonymous_volumes(source, host_config)
    if (host_config.get("RestartPolicy") or {}).get("Name") in ("", "no", None):
        host_config.pop("RestartPolicy", None)
    ulimits = [
        {**item, "Name": str(item.get("Name", "")).lower().removeprefix("rlimit_")}
        for item in host.get("Ulimits") or []
    ]
    if ulimits:
        host_config["Ulimits"] = ulimits  # Podman reports RLIMIT_NOFILE, create takes nofile
    log_config = host.get("LogConfig") or {}
    if log_config.get("Type") and log_config.get("Config"):
        host_config["LogConfig"] = log_config
    for key in ("IpcMode", "PidMode", "UTSMode", "UsernsMode", "CgroupnsMode"):
        if str(host.get(key) or "") not in _DEFAULT_MODES:
            host_config[key] = host[key]

    networks: dict[str, dict[str, Any]] = {}
    for network, endpoint in ((source.get("NetworkSettings") or {}).get("Networks") or {}).items():
        aliases = [a for a in endpoint.get("Aliases") or [] if a not in (short, hostname)]
        networks[network] = {
            key: value
            for key, value in (
                ("Aliases", aliases),
                ("IPAMConfig", endpoint.get("IPAMConfig")),
                ("Links", endpoint.get("Links")),
            )
            if value
        }
    mode = str(host.get("NetworkMode") or "")
    more: dict[str, dict[str, Any]] = {}
    if mode in ("host", "none") or mode.startswith(("container:", "ns:")):
        host_config["NetworkMode"] = mode
    elif networks:
        # Podman reports "bridge" even for a Compose network: the networks themselves are the truth.
        primary = mode if mode in networks else next(iter(networks))
        if primary not in _DEFAULT_NETWORKS:
            host_config["NetworkMode"] = primary
        body["NetworkingConfig"] = {"EndpointsConfig": {primary: networks[primary]}}
        more = {name: endpoint for name, endpoint in networks.items() if name != primary}
    body["HostConfig"] = host_config
    return body, more
