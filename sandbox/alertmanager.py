"""The sandbox's Alertmanager (Debian's prometheus-alertmanager): the sandbox's Prometheus sends it
the alerts of monitoring/alerts.yml, and it posts them to the bot's `POST /alerts` (webhook v4).

Grouping is short, for a demo: the first notification of a group waits `GROUP_WAIT`, changes to it
are sent after `GROUP_INTERVAL`, and an unchanged firing group is repeated after `REPEAT_INTERVAL`.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import yaml

from sandbox.component import (
    HTTP_TIMEOUT,
    START_TIMEOUT,
    STOP_TIMEOUT,
    ComponentStatus,
    Paths,
    http_ok,
    url_host,
    url_port,
)
from sandbox.processes import SandboxError, find_program, running_pid, spawn, terminate, wait_until

if TYPE_CHECKING:
    from bot.config import Settings

PROGRAM = "prometheus-alertmanager"  # Debian's name for the alertmanager binary
RECEIVER = "chatops"
GROUP_WAIT = "5s"
GROUP_INTERVAL = "10s"
REPEAT_INTERVAL = "4h"
GROUP_BY = ("alertname",)


def webhook_url(settings: Settings) -> str:
    """Return where the sandbox's Alertmanager posts: the setting, else this bot's /alerts."""
    if settings.sandbox_alert_webhook_url:
        return settings.sandbox_alert_webhook_url
    host = settings.http_host if settings.http_host not in ("", "0.0.0.0", "::") else "127.0.0.1"
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{settings.http_port}/alerts"


def alertmanager_config(settings: Settings, receiver: str = RECEIVER) -> str:
    """Return alertmanager.yml: one route, to the webhook, with the bot's bearer token if set.

    Alertmanager remembers per receiver what it last told it (its notification log): a receiver
    of another name starts with a clean slate.
    """
    webhook: dict[str, Any] = {"url": webhook_url(settings), "send_resolved": True, "max_alerts": 0}
    if settings.alertmanager_token is not None:
        webhook["http_config"] = {
            "authorization": {
                "type": "Bearer",
                "credentials": settings.alertmanager_token.get_secret_value(),
            }
        }
    config = {
        "route": {
            "receiver": receiver,
            "group_by": list(GROUP_BY),
            "group_wait": GROUP_WAIT,
            "group_interval": GROUP_INTERVAL,
            "repeat_interval": REPEAT_INTERVAL,
        },
        "receivers": [{"name": receiver, "webhook_configs": [webhook]}],
    }
    return "# Written by the chatops sandbox.\n" + yaml.safe_dump(config, sort_keys=False)


def _base_url(settings: Settings) -> str:
    return settings.sandbox_alertmanager_url.rstrip("/")


def apply_alertmanager_config(settings: Settings, text: str) -> bool:
    """Write `text` as the config (owner-readable only: it holds the token) and, if it changed and
    Alertmanager runs, reload it; return True if it changed. A config it refuses raises."""
    paths = Paths(settings)
    paths.alertmanager.mkdir(parents=True, exist_ok=True)
    path = paths.alertmanager_config
    if path.exists() and path.read_text() == text:
        return False
    temporary = path.with_name(path.name + ".new")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    temporary.replace(path)
    if http_ok(_base_url(settings) + "/-/ready"):
        reload_alertmanager(settings)
    return True


def reload_alertmanager(settings: Settings) -> None:
    """Make a running Alertmanager read its config file again; raise if it refuses the file."""
    try:
        response = httpx.post(_base_url(settings) + "/-/reload", timeout=HTTP_TIMEOUT)
    except httpx.HTTPError as error:
        raise SandboxError(f"alertmanager: reload failed: {type(error).__name__}") from None
    if response.status_code != 200:
        raise SandboxError(f"alertmanager: reload refused: {response.text.strip()[:300]}")


def start_alertmanager(settings: Settings) -> ComponentStatus:
    """Start Alertmanager (if not running) with the config the settings give; wait for /-/ready."""
    paths = Paths(settings)
    paths.make()
    pid = running_pid(paths.pid("alertmanager"), "alertmanager")
    changed = apply_alertmanager_config(settings, alertmanager_config(settings))
    started = False
    if pid is None:
        address = settings.sandbox_alertmanager_url
        listen = f"{url_host(address)}:{url_port(address, 9093)}"
        argv = [
            find_program(PROGRAM),
            f"--config.file={paths.alertmanager_config}",
            f"--storage.path={paths.alertmanager_data}",
            f"--web.listen-address={listen}",
            f"--web.external-url={_base_url(settings)}",
            # No high-availability peers: an empty address turns the cluster port (9094) off.
            "--cluster.listen-address=",
            "--log.level=warn",
        ]
        pid = spawn(argv, paths.pid("alertmanager"), paths.out("alertmanager"), cwd=paths.alertmanager)
        started = True
    wait_until(
        lambda: http_ok(_base_url(settings) + "/-/ready"),
        START_TIMEOUT,
        "alertmanager",
        pid=pid,
        output=paths.out("alertmanager"),
    )
    _write_targets(settings, paths)
    verb = "started" if started else "reloaded" if changed else "reused"
    status = alertmanager_status(settings)
    status.detail += f", {verb}"
    return status


def _write_targets(settings: Settings, paths: Paths) -> None:
    """Tell this sandbox's Prometheus where its Alertmanager is (file_sd, read as it changes)."""
    address = settings.sandbox_alertmanager_url
    text = json.dumps([{"targets": [f"{url_host(address)}:{url_port(address, 9093)}"]}]) + "\n"
    target = paths.alertmanager_targets
    if not target.exists() or target.read_text() != text:
        temporary = target.with_name(target.name + ".new")
        temporary.write_text(text)
        temporary.replace(target)


def stop_alertmanager(settings: Settings) -> ComponentStatus:
    """Stop Alertmanager; its data (silences, notification log) stays. Prometheus stops sending."""
    paths = Paths(settings)
    with contextlib.suppress(FileNotFoundError):
        paths.alertmanager_targets.unlink()
    was = terminate(paths.pid("alertmanager"), "alertmanager", STOP_TIMEOUT)
    return ComponentStatus("alertmanager", False, "stopped" if was else "was not running")


def _configured_webhook(path: Path) -> tuple[str, bool]:
    """Return the webhook URL the config file names and whether it sends a bearer token."""
    with contextlib.suppress(OSError, yaml.YAMLError, KeyError, IndexError, TypeError):
        config = yaml.safe_load(path.read_text())
        webhook = config["receivers"][0]["webhook_configs"][0]
        token = bool(((webhook.get("http_config") or {}).get("authorization") or {}).get("credentials"))
        return str(webhook["url"]), token
    return "unknown", False


def alertmanager_status(settings: Settings) -> ComponentStatus:
    """Report readiness, where alerts go (and whether with a token), and the alerts it holds."""
    paths = Paths(settings)
    pid = running_pid(paths.pid("alertmanager"), "alertmanager")
    base = _base_url(settings)
    if not http_ok(base + "/-/ready"):
        return ComponentStatus("alertmanager", False, f"{base} not ready")
    url, token = _configured_webhook(paths.alertmanager_config)
    alerts: list[str] = []
    with contextlib.suppress(httpx.HTTPError, ValueError, AttributeError, TypeError):
        found = httpx.get(base + "/api/v2/alerts", params={"active": "true"}, timeout=HTTP_TIMEOUT).json()
        alerts = sorted({str(alert["labels"].get("alertname", "?")) for alert in found})
    parts = [base + (f", pid {pid}" if pid else " (not started by sandbox)")]
    parts.append(
        f"posts to {url} " + ("with a bearer token" if token else "WITHOUT a token (the bot refuses: 401)")
    )
    parts.append(f"group_wait {GROUP_WAIT}, group_interval {GROUP_INTERVAL}")
    parts.append("alerts: " + (", ".join(alerts) if alerts else "none"))
    info = {"pid": pid, "webhook_url": url, "token": token, "alerts": alerts}
    return ComponentStatus("alertmanager", True, ", ".join(parts), info)
