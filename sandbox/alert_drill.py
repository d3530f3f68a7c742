"""The sandbox's alerting path end to end, for a test and a benchmark: the faulty release that passes
/health is deployed, the backend's own traffic turns its 5xx into metrics, Prometheus's rule fires,
Alertmanager posts the webhook, and a receiver standing in for the bot's `POST /alerts` gets it.

It changes what the sandbox's Alertmanager posts to and which backend runs: run it alone (it puts
both back, v2.0.5 without faults, before it returns).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import re
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import httpx
from aiohttp import web
from pydantic import SecretStr

from sandbox.alertmanager import GROUP_WAIT, alertmanager_config, apply_alertmanager_config
from sandbox.backend_container import start_backend
from sandbox.component import HTTP_TIMEOUT, Paths
from sandbox.images import DEFAULT_VERSION, FAULTY_VERSION, VERSIONS, ensure_images
from sandbox.podman import docker_client
from sandbox.processes import SandboxError
from sandbox.prometheus import EVALUATION_INTERVAL, rule_rate_window

if TYPE_CHECKING:
    from bot.config import Settings

ALERT = "HighErrorRate"
# The rule's expression: the share of requests answered 5xx over its rate window, over 5 %.
THRESHOLD = 0.05


@dataclass
class Received:
    """One webhook the receiver accepted."""

    at: float  # time.time() when it arrived
    body: dict[str, Any]


@dataclass
class WebhookReceiver:
    """Stands in for the bot's POST /alerts: checks the bearer token, records what it accepts."""

    token: str
    received: list[Received] = field(default_factory=list)
    refused: int = 0
    url: str = ""
    _runner: web.AppRunner | None = None
    _arrived: asyncio.Event | None = None

    async def _alerts(self, request: web.Request) -> web.Response:
        header = request.headers.get("Authorization", "")
        if not hmac.compare_digest(header.encode(), f"Bearer {self.token}".encode()):
            self.refused += 1
            return web.json_response({"error": "missing or wrong bearer token"}, status=401)
        self.received.append(Received(time.time(), await request.json()))
        if self._arrived is not None:
            self._arrived.set()
        return web.json_response({"ok": True})

    async def __aenter__(self) -> WebhookReceiver:
        self._arrived = asyncio.Event()
        app = web.Application()
        app.router.add_post("/alerts", self._alerts)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        await web.SockSite(self._runner, listener).start()
        self.url = f"http://127.0.0.1:{listener.getsockname()[1]}/alerts"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def wait_for(self, wanted: Callable[[Received], bool], timeout: float) -> Received:
        """Return the first webhook (arrived or to come) for which `wanted` is true."""
        assert self._arrived is not None, "use the receiver as `async with`"
        deadline = time.monotonic() + timeout
        while True:
            for item in self.received:
                if wanted(item):
                    return item
            self._arrived.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                raise SandboxError(f"no matching webhook after {timeout:.0f}s ({len(self.received)} others)")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), left)


@dataclass
class DrillResult:
    """When each step happened (time.time()) and the notification that arrived."""

    deployed_at: float  # the faulty release answers /health: the fault is live
    health_status: int  # what its /health answered
    pending_at: float | None  # Prometheus: the rule's expression first true (activeAt)
    firing_at: float  # the alert's startsAt: pending for `for:`, then firing
    webhook_at: float  # the receiver got Alertmanager's notification
    notification: dict[str, Any]
    error_share: float | None  # share of requests answered 5xx over the last minute
    refused: int  # webhooks the receiver refused (a wrong or missing token)

    @property
    def fault_to_webhook(self) -> float:
        """Seconds from the fault going live to the webhook."""
        return self.webhook_at - self.deployed_at


def parse_time(text: str) -> float:
    """Parse Go's RFC 3339 time (up to nanoseconds, Z or an offset) into a POSIX timestamp."""
    text = re.sub(r"(\.\d{6})\d+", r"\1", text.strip()).replace("Z", "+00:00")
    return datetime.fromisoformat(text).timestamp()


def _prometheus(settings: Settings, path: str, **params: str) -> Any:
    response = httpx.get(settings.prometheus_url.rstrip("/") + path, params=params, timeout=HTTP_TIMEOUT)
    response.raise_for_status()
    return response.json()["data"]


def rule_state(settings: Settings, alert: str = ALERT) -> str:
    """Return the state of an alerting rule in the sandbox's Prometheus (inactive, pending, firing)."""
    for group in _prometheus(settings, "/api/v1/rules", type="alert")["groups"]:
        for rule in group["rules"]:
            if rule["name"] == alert:
                return str(rule["state"])
    raise SandboxError(f"Prometheus has no alerting rule {alert}: is the sandbox up with its rules?")


def _active_at(settings: Settings, alert: str = ALERT) -> float | None:
    for item in _prometheus(settings, "/api/v1/alerts")["alerts"]:
        if item["labels"].get("alertname") == alert and item.get("activeAt"):
            return parse_time(item["activeAt"])
    return None


def _error_share(settings: Settings) -> float | None:
    query = 'sum(rate(http_requests_total{status=~"5.."}[1m])) / sum(rate(http_requests_total[1m]))'
    result = _prometheus(settings, "/api/v1/query", query=query)["result"]
    return float(result[0]["value"][1]) if result else None


def _knows_alertmanager(settings: Settings) -> bool:
    found = _prometheus(settings, "/api/v1/alertmanagers")["activeAlertmanagers"]
    port = f":{httpx.URL(settings.sandbox_alertmanager_url).port or 9093}/"
    return any(port in str(item["url"]) for item in found)


async def wait_quiet(settings: Settings, timeout: float) -> None:
    """Wait until the rule is inactive: a previous fault's 5xx stay in its five-minute window."""
    deadline = time.monotonic() + timeout
    while (state := await asyncio.to_thread(rule_state, settings)) != "inactive":
        if time.monotonic() >= deadline:
            raise SandboxError(f"{ALERT} still {state} after {timeout:.0f}s")
        await asyncio.sleep(2)


def expected_bounds(settings: Settings, error_share: float) -> str:
    """Say what bounds the time from the fault to the webhook, for this error share."""
    window = rule_rate_window(settings)
    crossing = THRESHOLD * window / error_share if error_share > 0 else float("inf")
    return (
        f"the rule's {window:.0f}s rate window reaching 5 % at {error_share:.0%} 5xx (~{crossing:.0f}s)"
        f" + for: {settings.sandbox_alert_for or 'the rule`s own'}"
        f" + evaluation every {EVALUATION_INTERVAL} + group_wait {GROUP_WAIT}"
    )


def drill_settings(settings: Settings) -> Settings:
    """Return the settings of the drill's images: `<backend_image>-drill`, v2.0.6 passing /health."""
    return settings.model_copy(
        update={"backend_image": f"{settings.backend_image}-drill", "sandbox_faulty_release": "passes-health"}
    )


def prepare_drill_images(settings: Settings) -> Settings:
    """Make the drill's images and return their settings (a bot given them deploys the drill's v2.0.6).

    Its v2.0.5 is the sandbox's own v2.0.5 under a second tag (the same image: the backend running
    now counts as v2.0.5, and a way back to it ends on the sandbox's own image); its v2.0.6 is built
    to pass /health and answer 5xx under traffic. The sandbox's own v2.0.6 is left as it is.
    """
    drill = drill_settings(settings)
    client = docker_client(settings, timeout=60)
    try:
        own = client.images.get(f"{settings.backend_image}:{DEFAULT_VERSION}")
        own.tag(drill.backend_image, DEFAULT_VERSION)
    finally:
        client.close()
    ensure_images(drill)
    return drill


def remove_drill_images(settings: Settings) -> None:
    """Remove the drill's image tags (the sandbox's own images stay)."""
    _remove_images(drill_settings(settings))


def _remove_images(settings: Settings) -> None:
    import docker.errors

    client = docker_client(settings, timeout=60)
    try:
        for version in VERSIONS:
            with contextlib.suppress(docker.errors.APIError):
                client.images.remove(f"{settings.backend_image}:{version}")
    finally:
        client.close()


async def faulty_release_drill(
    settings: Settings, *, quiet_timeout: float = 480.0, alert_timeout: float = 420.0
) -> DrillResult:
    """Deploy the faulty release that passes /health and wait for its alert at a receiver.

    The release comes from the drill's images (`prepare_drill_images`), so the sandbox's own v2.0.6
    is left as it is.
    """
    paths = Paths(settings)
    token = secrets.token_urlsafe(24)
    original = paths.alertmanager_config.read_text() if paths.alertmanager_config.exists() else None
    if original is None:
        raise SandboxError("the sandbox's Alertmanager has no config: run `chatops sandbox up`")
    # Prometheus reads the Alertmanager's address from a file; its discovery takes a few seconds.
    deadline = time.monotonic() + 30
    while not await asyncio.to_thread(_knows_alertmanager, settings):
        if time.monotonic() >= deadline:
            raise SandboxError("Prometheus sends nothing to the Alertmanager: run `chatops sandbox up`")
        await asyncio.sleep(1)
    async with WebhookReceiver(token) as receiver:
        routed = settings.model_copy(
            update={"sandbox_alert_webhook_url": receiver.url, "alertmanager_token": SecretStr(token)}
        )
        # A receiver of a new name: Alertmanager has told it nothing yet (see alertmanager_config).
        config = alertmanager_config(routed, receiver=f"chatops-drill-{secrets.token_hex(4)}")
        try:
            await asyncio.to_thread(apply_alertmanager_config, settings, config)
            await wait_quiet(settings, quiet_timeout)
            drill = await asyncio.to_thread(prepare_drill_images, settings)
            await asyncio.to_thread(start_backend, drill, FAULTY_VERSION)
            deployed_at = time.time()
            async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as client:
                health = await client.get(settings.api_url.rstrip("/") + "/health")

            def wanted(item: Received) -> bool:
                return item.body.get("status") == "firing" and any(
                    alert.get("status") == "firing"
                    and alert.get("labels", {}).get("alertname") == ALERT
                    and parse_time(str(alert.get("startsAt"))) >= deployed_at - 1
                    for alert in item.body.get("alerts", [])
                )

            arrived = await receiver.wait_for(wanted, alert_timeout)
            firing_at = max(
                parse_time(str(alert["startsAt"]))
                for alert in arrived.body["alerts"]
                if alert.get("labels", {}).get("alertname") == ALERT
            )
            pending_at = await asyncio.to_thread(_active_at, settings)
            share = await asyncio.to_thread(_error_share, settings)
            return DrillResult(
                deployed_at=deployed_at,
                health_status=health.status_code,
                pending_at=pending_at,
                firing_at=firing_at,
                webhook_at=arrived.at,
                notification=arrived.body,
                error_share=share,
                refused=receiver.refused,
            )
        finally:
            # A new container of v2.0.5 (no faults), the drill's images gone, the config as it was.
            await asyncio.to_thread(start_backend, settings, DEFAULT_VERSION)
            await asyncio.to_thread(remove_drill_images, settings)
            await asyncio.to_thread(apply_alertmanager_config, settings, original)
