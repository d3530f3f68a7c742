"""Socket Mode: envelopes over Slack's websocket, each accepted once across every connection.

Slack sends an envelope again when it was not acknowledged in time, possibly to another
connection of the app (another replica): the envelope's request is then run by whichever
connection took it first, and only acknowledged by the others.
"""

from __future__ import annotations

import structlog
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.web.async_client import AsyncWebClient

from bot.observability import BotMetrics
from bot.web.replay import GuardUnavailable, ReplayGuard
from bot.web.slack_requests import once_key

log = structlog.get_logger("chatops.socket_mode")

UNAVAILABLE = (
    "The bot cannot tell whether this request was already run (its own database does not answer),"
    " so it ran nothing. From a terminal: `chatops <command>`."
)


class OnceSocketModeHandler(AsyncSocketModeHandler):
    """Bolt's Socket Mode handler, running each envelope's request once."""

    def __init__(
        self,
        app: AsyncApp,
        app_token: str,
        guard: ReplayGuard,
        metrics: BotMetrics,
        web_client: AsyncWebClient | None = None,
    ) -> None:
        super().__init__(app, app_token, web_client=web_client)
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
            # Acknowledged, or Slack would send it again; a slash command's caller is told why.
            answer = {"text": UNAVAILABLE} if req.type == "slash_commands" else None
            await client.send_socket_mode_response(SocketModeResponse(req.envelope_id, payload=answer))
            return
        if not first:
            self.metrics.requests_deduplicated.labels("redelivered").inc()
            log.info("envelope_already_taken", type=req.type, retry_attempt=req.retry_attempt)
            await client.send_socket_mode_response(SocketModeResponse(req.envelope_id))
            return
        await super().handle(client, req)
