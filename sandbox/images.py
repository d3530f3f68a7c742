"""The container images: a busybox base built from the host, and a backend image per version."""

from __future__ import annotations

import contextlib
import hashlib
import io
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import TYPE_CHECKING

from sandbox.podman import docker_client
from sandbox.processes import SandboxError

if TYPE_CHECKING:
    import docker

    from bot.config import Settings

VERSIONS = ("v2.0.5", "v2.0.6")
DEFAULT_VERSION = "v2.0.5"
FAULTY_VERSION = "v2.0.6"
# What a `passes-health` faulty release bakes in (sandbox.backend reads FAULT_*): /health answers
# 200 while this share of API requests answers 5xx, so only traffic and its metrics show the fault.
PASSES_HEALTH_ENV = {"FAULT_HEALTH": "ok", "FAULT_ERROR_RATE": "0.3"}
BACKEND_IMAGE = "3dpot-backend"
BASE_IMAGE = "3dpot-base:busybox"
CONTAINER_PORT = 8000
# Where the container sees the host's sandbox package and the backend's log directory.
CONTAINER_CODE_DIR = "/opt/3dpot"
CONTAINER_LOG_DIR = "/var/log/3dpot"
BACKEND_LOG_NAME = "backend.log"
SANDBOX_LABEL = "io.chatops.sandbox"
RECIPE_LABEL = "io.chatops.sandbox.recipe"


def _python_in_container() -> str:
    """Return this venv's interpreter: the container runs it through read-only bind mounts."""
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


def _dockerfile(version: str, faulty_release: str = "fails-health") -> str:
    """Return the backend image's Dockerfile for `version`.

    The faulty release fails /health unless `faulty_release` is `passes-health`: then its image
    sets PASSES_HEALTH_ENV. (The default adds nothing, so existing images are not rebuilt.)
    """
    python = _python_in_container()
    fault = ""
    if version == FAULTY_VERSION and faulty_release == "passes-health":
        fault = "ENV " + " ".join(f"{name}={value}" for name, value in PASSES_HEALTH_ENV.items()) + "\n"
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
{fault}CMD ["{python}", "-m", "sandbox.backend"]
"""


def _recipe(version: str, faulty_release: str = "fails-health") -> str:
    """Return a short hash of the Dockerfile, so that an image built from an older one is rebuilt."""
    return hashlib.sha256(_dockerfile(version, faulty_release).encode()).hexdigest()[:16]


def _image_present(client: docker.DockerClient, ref: str, recipe: str | None = None) -> bool:
    """Return True if image `ref` exists and, given `recipe`, was built from that recipe."""
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
            recipe = _recipe(version, settings.sandbox_faulty_release)
            if not rebuild and _image_present(client, ref, recipe):
                continue
            context = io.BytesIO()
            with tarfile.open(fileobj=context, mode="w") as tar:
                for name, text in (
                    ("Dockerfile", _dockerfile(version, settings.sandbox_faulty_release)),
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


def remove_images(settings: Settings) -> None:
    """Remove the backend images of every version and the base image."""
    import docker.errors

    client = docker_client(settings)
    try:
        for ref in [f"{settings.backend_image}:{v}" for v in VERSIONS] + [BASE_IMAGE]:
            with contextlib.suppress(docker.errors.ImageNotFound, docker.errors.APIError):
                client.images.remove(ref, force=True)
    finally:
        client.close()
