"""Socket Mode: envelopes over Slack's websocket, each accepted once across every connection.

Slack sends an envelope again when it was not acknowledged in time, possibly to another
connection of the app (another replica): the envelope's request is then run by whichever
connection took it first, and only acknowledged by the others.
"""

from __future__ import annotations

from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.web.async_client import AsyncWebClient

from bot.observability import BotMetrics, get_logger
from bot.registry import read_only
from bot.web.replay import UNAVAILABLE_ANSWER, GuardUnavailable, ReplayGuard
from bot.web.slack_requests import once_key

log = get_logger("chatops.socket_mode")


class OnceSocketModeHandler(AsyncSocketModeHandler):
    """Bolt's Socket Mode handler, running each envelope's request once."""

    def __init__(
        self,
        app: AsyncApp,
        app_token: str,
        guard: ReplayGuard,
        metrics: BotMetrics,
        web_client: AsyncWebClient | None = None,
        ping_interval: float = 10,
    ) -> None:
        # ping_interval: seconds between the client's pings; a connection that dropped without a
        # close frame is noticed (and replaced) within about that long. Bolt's default, 10.
        super().__init__(app, app_token, web_client=web_client, ping_interval=ping_interval)
        self.guard = guard
        self.metrics = metrics

    async def handle(self, client: SocketModeClient, req: SocketModeRequest) -> None:  # type: ignore[override]
        """Acknowledge a request seen before without running it; run a new one through Bolt."""
        payload = req.payload if isinstance(req.payload, dict) else {}
        key = once_key(payload, f"envelope:{req.envelope_id}")
        try:
            first = await self.guard.first_time(key)
        except GuardUnavailable as error:
            log.error("replay_guard_unavailable", error=str(error))
            command, text = str(payload.get("command", "")), str(payload.get("text", ""))
            if req.type == "slash_commands" and read_only(command, text):
                await super().handle(client, req)  # a read changes nothing if run twice
                return
            # Acknowledged, or Slack would send it again; a slash command's caller is told why.
            answer = {"text": UNAVAILABLE_ANSWER} if req.type == "slash_commands" else None
            await client.send_socket_mode_response(SocketModeResponse(req.envelope_id, payload=answer))
            return
        if not first:
            self.metrics.requests_deduplicated.labels("redelivered").inc()
            log.info("envelope_already_taken", type=req.type, retry_attempt=req.retry_attempt)
            await client.send_socket_mode_response(SocketModeResponse(req.envelope_id))
            return
        await super().handle(client, req)
