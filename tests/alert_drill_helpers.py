"""The alert drill with the real bot: served in-process against the fake Slack, the sandbox's
Alertmanager pointed at its /alerts, an operator enrolled in MFA, and the gate driven as Slack would.

Used by tests/test_alert_drill.py and benchmarks/alert_drill_bench.py. It swaps the shared backend
and changes what Alertmanager posts to: run it alone (under `flock -x /tmp/sandbox.lock`); it puts
v2.0.5 without faults and Alertmanager's config back before it returns.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import httpx
import pyotp
from aiohttp import web
from pydantic import SecretStr

from bot.render.changes import WAY_BACK_ACTION
from bot.render.gate import CONFIRM_ACTION, MFA_VIEW, TOTP_BLOCK
from sandbox.alert_drill import ALERT, prepare_drill_images, remove_drill_images, wait_quiet
from sandbox.alertmanager import alertmanager_config, apply_alertmanager_config
from sandbox.backend_container import backend_status, start_backend
from sandbox.component import Paths
from sandbox.images import DEFAULT_VERSION
from tests.conftest import SIGNING_SECRET, make_settings
from tests.fakes import FakeSlack, SlackCall, block_actions_payload, signed_interaction_request
from tests.fakes import view_submission_payload as submission
from tests.incident_helpers import ALERT_TOKEN, CHANNEL, USER, Bot, block_text, incident_bot

DRILL_DB = "chatops_test_alert_drill"


@dataclass
class Relay:
    """Stands between Alertmanager and the bot's /alerts: notes when each webhook arrived and its
    body, and passes it on unchanged (the benchmark times from here, and re-posts what came)."""

    target: str
    arrived: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    url: str = ""
    _runner: web.AppRunner | None = None

    async def _alerts(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.arrived.append((time.monotonic(), json.loads(body)))
        async with httpx.AsyncClient(timeout=30) as client:
            answer = await client.post(
                self.target,
                content=body,
                headers={
                    "Content-Type": "application/json",
                    "Authorization": request.headers.get("Authorization", ""),
                },
            )
        return web.Response(status=answer.status_code, body=answer.content)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/alerts", self._alerts)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/alerts"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@dataclass
class Drill:
    """The bot with its fakes, the operator's TOTP seed, and where Alertmanager posts."""

    bot: Bot
    seed: str
    relay: Relay | None
    last_step: int = 0

    def code(self) -> str:
        """The operator's authenticator: the current code, or the next when the current was used."""
        now = int(time.time() // 30)
        step = max(now, self.last_step + 1)
        if step > now + 1:
            time.sleep((step - 1) * 30 - time.time() + 0.5)
        self.last_step = step
        return str(pyotp.TOTP(self.seed).at(step * 30))

    async def interact(self, payload: dict[str, Any]) -> httpx.Response:
        body, headers = signed_interaction_request(SIGNING_SECRET, payload)
        async with httpx.AsyncClient(timeout=30) as client:
            return await client.post(f"{self.bot.url}/slack/events", content=body, headers=headers)

    async def confirm(self, plan: SlackCall, timeout: float = 120) -> SlackCall:
        """Click Confirm on a plan, type the code in the modal; return the plan's final update."""
        [approval_id] = [
            element["value"]
            for block in plan.params["blocks"]
            if block["type"] == "actions"
            for element in block["elements"]
            if element["action_id"] == CONFIRM_ACTION
        ]
        plan_ts = str((plan.response or {})["ts"])
        await self.interact(
            block_actions_payload(CONFIRM_ACTION, approval_id, user_id=USER, message_ts=plan_ts)
        )
        await self.bot.slack.wait_for_call_async(
            "views.open", lambda call: call.params["view"]["private_metadata"] == approval_id, timeout=30
        )
        values = {TOTP_BLOCK: {"value": {"type": "plain_text_input", "value": self.code()}}}
        answer = await self.interact(submission(MFA_VIEW, values, private_metadata=approval_id, user_id=USER))
        assert answer.status_code == 200 and answer.text in ("", "null"), answer.text  # the modal closed
        return await self.bot.slack.wait_for_call_async(
            "chat.update",
            lambda call: (
                call.params.get("ts") == plan_ts
                and any(word in block_text(call.params["blocks"]) for word in ("Succeeded", "Failed"))
            ),
            timeout=timeout,
        )

    async def deploy(self, version: str) -> SlackCall:
        """`/rollback <version>` as the operator, through the gate; return the plan's final update."""
        await self.bot.command("/rollback", version, user=USER)
        plan = await self.bot.posted(
            lambda call: (
                f"to {version}" in str(call.params.get("text", ""))
                and "Plan" in str(call.params.get("text", ""))
            ),
            timeout=60,
        )
        return await self.confirm(plan)

    async def click_way_back(self, findings: SlackCall, button: dict[str, Any]) -> SlackCall:
        """Click "Plan the way back" on the findings in the alert's thread; return the plan posted."""
        message = {
            "type": "message",
            "ts": str((findings.response or {})["ts"]),
            "thread_ts": findings.params["thread_ts"],
            "text": findings.params.get("text", ""),
            "blocks": findings.params["blocks"],
        }
        payload = block_actions_payload(
            WAY_BACK_ACTION,
            button["value"],
            block_id="changes_way_back",
            user_id=USER,
            channel_id=CHANNEL,
            message_ts=message["ts"],
            message=message,
        )
        await self.interact(payload)
        return await self.bot.posted(
            lambda call: (
                call.params.get("thread_ts") == findings.params["thread_ts"]
                and "Plan" in str(call.params.get("text", ""))
            ),
            timeout=60,
        )


def is_alert(call: SlackCall) -> bool:
    """The drill's alert, as the bot first posts it."""
    text = str(call.params.get("text", ""))
    return "thread_ts" not in call.params and text.startswith("FIRING") and ALERT in text


def findings_in(thread: str) -> Any:
    """Match the triage posted in an alert's thread."""
    return lambda call: (
        call.params.get("thread_ts") == thread and str(call.params.get("text", "")).startswith("Triage:")
    )


def way_back_button(call: SlackCall) -> dict[str, Any] | None:
    """Return the "Plan the way back" button of a message, if it has one."""
    for block in call.params.get("blocks", []):
        for element in block.get("elements", []) if block.get("type") == "actions" else []:
            if element.get("action_id") == WAY_BACK_ACTION:
                return dict(element)
    return None


@asynccontextmanager
async def drill_bot(fake_slack: FakeSlack, *, relay: bool = False, **overrides: Any) -> AsyncIterator[Drill]:
    """Serve the bot for the drill, Alertmanager posting to it (through a Relay if asked), the
    operator enrolled; afterwards v2.0.5 without faults and Alertmanager's own config again."""
    settings = make_settings()
    paths = Paths(settings)
    original = paths.alertmanager_config.read_text()
    await wait_quiet(settings, 300)  # an earlier fault's alert must be over, or it would not fire anew
    drill_images = await asyncio.to_thread(prepare_drill_images, settings)
    relay_server: Relay | None = None
    try:
        async with incident_bot(
            fake_slack,
            database=DRILL_DB,
            alert_triage_severity="critical",
            secret_key="drill-secret-key-for-totp-seeds",
            operators=[USER],
            backend_image=drill_images.backend_image,
            **overrides,
        ) as bot:
            enrollment = await bot.runtime.mfa.enroll(USER)
            drill = Drill(bot, enrollment.secret, None)
            confirmed = await bot.runtime.mfa.verify(USER, drill.code(), _now(), confirming=True)
            assert confirmed.accepted, confirmed
            url = f"{bot.url}/alerts"
            if relay:
                relay_server = Relay(url)
                await relay_server.start()
                url, drill.relay = relay_server.url, relay_server
            routed = settings.model_copy(
                update={"sandbox_alert_webhook_url": url, "alertmanager_token": SecretStr(ALERT_TOKEN)}
            )
            # A receiver of a new name: Alertmanager has told it nothing yet (its notification log).
            receiver = f"chatops-drill-{secrets.token_hex(4)}"
            await asyncio.to_thread(
                apply_alertmanager_config, settings, alertmanager_config(routed, receiver)
            )
            yield drill
            # The alert's resolution reaches the bot only while Alertmanager still posts to it.
    finally:
        await asyncio.to_thread(apply_alertmanager_config, settings, original)
        if relay_server is not None:
            await relay_server.stop()
        status = await asyncio.to_thread(backend_status, settings)
        if status.info.get("version") != DEFAULT_VERSION:
            await asyncio.to_thread(start_backend, settings, DEFAULT_VERSION)
        with suppress(Exception):
            await asyncio.to_thread(remove_drill_images, settings)


def _now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)
