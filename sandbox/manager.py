"""Bring the local stand-in for the 3dPot platform up, report on it, and take it down.

Components, each in a module of its own with start/stop/status functions so tests can break and
mend them:

- db (`sandbox.platform_db`): the platform database (seeded `audit_log`) and the bot's empty
  state database in the local PostgreSQL;
- s3 (`sandbox.seaweedfs`): SeaweedFS (`weed mini`) serving S3 with the configured access key,
  bucket seeded;
- podman (`sandbox.podman`): `podman system service` on a unix socket speaking the Docker
  Engine API;
- backend (`sandbox.backend_container`, images from `sandbox.images`): the `3dpot-backend-1`
  container (Compose labels) running `sandbox.backend`;
- prometheus (`sandbox.prometheus`): scraping the backend every second, evaluating a copy of the
  runbook's alerting rules (monitoring/alerts.yml);
- alertmanager (`sandbox.alertmanager`): what those rules fire, posted to the bot's /alerts.

Everything lives under `settings.sandbox_dir`.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sandbox.alertmanager import alertmanager_status, start_alertmanager, stop_alertmanager
from sandbox.backend_container import (
    BACKEND_CONTAINER,
    backend_container_name,
    backend_status,
    get_faults,
    set_faults,
    start_backend,
    stop_backend,
)
from sandbox.component import ComponentStatus, Paths
from sandbox.images import ensure_images, remove_images
from sandbox.platform_db import db_status, drop_database, provision_db
from sandbox.podman import docker_client, podman_answers, podman_status, start_podman, stop_podman
from sandbox.processes import SandboxError, file_lock
from sandbox.prometheus import backfill_prometheus, prometheus_status, start_prometheus, stop_prometheus
from sandbox.seaweedfs import s3_client, s3_status, start_s3, stop_s3

if TYPE_CHECKING:
    from bot.config import Settings

# Besides its own names (SandboxStatus, up, status, down), this module re-exports the types they
# return and raise, and the component functions and names that tests reach as `manager.<name>`
# to break and mend one component.
__all__ = [
    "BACKEND_CONTAINER",
    "ComponentStatus",
    "SandboxError",
    "SandboxStatus",
    "backend_container_name",
    "backfill_prometheus",
    "docker_client",
    "down",
    "get_faults",
    "s3_client",
    "s3_status",
    "set_faults",
    "start_alertmanager",
    "start_backend",
    "start_podman",
    "start_prometheus",
    "start_s3",
    "status",
    "stop_alertmanager",
    "stop_backend",
    "stop_podman",
    "stop_prometheus",
    "stop_s3",
    "up",
]


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
        db, s3, backend, prometheus, alertmanager = await asyncio.gather(
            provision_db(settings, reseed=reseed),
            asyncio.to_thread(start_s3, settings),
            asyncio.to_thread(containers),
            asyncio.to_thread(start_prometheus, settings),
            asyncio.to_thread(start_alertmanager, settings),
        )
        podman = await asyncio.to_thread(podman_status, settings)
    return SandboxStatus(
        paths.root, [db, s3, podman, backend, prometheus, alertmanager], time.monotonic() - started
    )


async def status(settings: Settings) -> SandboxStatus:
    """Return every component's status."""
    started = time.monotonic()
    db, s3, podman, backend, prometheus, alertmanager = await asyncio.gather(
        db_status(settings),
        asyncio.to_thread(s3_status, settings),
        asyncio.to_thread(podman_status, settings),
        asyncio.to_thread(backend_status, settings),
        asyncio.to_thread(prometheus_status, settings),
        asyncio.to_thread(alertmanager_status, settings),
    )
    return SandboxStatus(
        Path(settings.sandbox_dir),
        [db, s3, podman, backend, prometheus, alertmanager],
        time.monotonic() - started,
    )


async def down(settings: Settings, *, purge: bool = False) -> SandboxStatus:
    """Stop what `up` started; with `purge`, also delete data, images and the platform database."""
    started = time.monotonic()
    paths = Paths(settings)
    with file_lock(paths.lock):
        # The container goes first, while the Podman API that manages it still runs.
        backend = await asyncio.to_thread(stop_backend, settings)
        if purge and podman_answers(settings):
            await asyncio.to_thread(remove_images, settings)
        podman, s3, prometheus, alertmanager = await asyncio.gather(
            asyncio.to_thread(stop_podman, settings),
            asyncio.to_thread(stop_s3, settings),
            asyncio.to_thread(stop_prometheus, settings),
            asyncio.to_thread(stop_alertmanager, settings),
        )
        db = ComponentStatus("db", True, "left running (the machine's PostgreSQL)")
        if purge:
            dropped = await drop_database(settings.platform_database_url)
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
    return SandboxStatus(
        paths.root, [db, s3, podman, backend, prometheus, alertmanager], time.monotonic() - started
    )
