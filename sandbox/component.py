"""What every sandbox component shares: its status, where its files live, timeouts and HTTP probes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx

if TYPE_CHECKING:
    from bot.config import Settings

HTTP_TIMEOUT = httpx.Timeout(3.0, connect=1.0)
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


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
        return f"{self.name:<12} {state:<8} {self.detail}"


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
        self.alertmanager = self.root / "alertmanager"
        self.alertmanager_data = self.root / "alertmanager" / "data"
        self.alertmanager_config = self.root / "alertmanager" / "alertmanager.yml"
        # Where this sandbox's Prometheus finds its Alertmanager (file_sd): none, no alerts sent.
        self.alertmanager_targets = self.root / "alertmanager" / "prometheus-sd.json"
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
        for directory in (
            self.run,
            self.var,
            self.logs,
            self.s3,
            self.prometheus_data,
            self.alertmanager_data,
        ):
            directory.mkdir(parents=True, exist_ok=True)
        self.prometheus_rules.mkdir(parents=True, exist_ok=True)
        self.podman.mkdir(parents=True, exist_ok=True)
        # The container writes logs as root into a bind mount; keep it writable regardless.
        self.logs.chmod(0o777)


def _socket_path(settings: Settings) -> Path:
    """Return the Podman socket's path: DOCKER_HOST's when it is a unix socket."""
    host = settings.docker_host
    if host.startswith("unix://"):
        return Path(host[len("unix://") :])
    return Path(settings.sandbox_dir) / "podman.sock"


def url_port(url: str, default: int) -> int:
    """Return the port a URL names, or `default`."""
    return urlsplit(url).port or default


def url_host(url: str) -> str:
    """Return the host a URL names, or the loopback address."""
    return urlsplit(url).hostname or "127.0.0.1"


def http_ok(url: str, accept: tuple[int, ...] = (200,), timeout: float = 1.0) -> bool:
    """Return True if `url` answers with a status in `accept` (any status when it is empty)."""
    try:
        response = httpx.get(url, timeout=timeout)
    except httpx.HTTPError:
        return False
    return response.status_code in accept or not accept


def http_answers(url: str, timeout: float = 1.0) -> bool:
    """Return True if anything answers HTTP at `url`, whatever the status."""
    try:
        httpx.get(url, timeout=timeout)
    except httpx.HTTPError:
        return False
    return True
