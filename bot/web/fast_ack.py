"""Acknowledge slash commands and button clicks the moment they arrive, then let Bolt run them.

Bolt acknowledges when the listener calls ack(), which is only as soon as the event loop gets to
that listener: with many commands in flight, their work queues acks behind it. Here a verified
request is answered 200 at once and dispatched to Bolt in the background, where ack() becomes a
no-op. Modal submissions still go through Bolt in line: their ack carries the answer (errors).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any
from urllib.parse import parse_qs

import structlog
from slack_bolt.adapter.starlette.async_handler import AsyncSlackRequestHandler
from slack_bolt.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.signature import SignatureVerifier
from starlette.requests import Request
from starlette.responses import Response

from bot.observability import BotMetrics

log = structlog.get_logger("chatops.fast_ack")

# Interaction types whose ack carries nothing the user waits for.
_FIRE_AND_FORGET = {"block_actions"}


def _ackable(body: bytes) -> bool:
    """Return whether this request can be acknowledged before it runs."""
    form = parse_qs(body.decode("utf-8", errors="replace"))
    if "command" in form:
        return True
    payload = form.get("payload")
    if not payload:
        return False
    try:
        kind = json.loads(payload[0]).get("type")
    except (ValueError, AttributeError):
        return False
    return kind in _FIRE_AND_FORGET


class FastAck:
    """The /slack/events endpoint: verify, answer 200, run in the background."""

    def __init__(
        self, slack_app: AsyncApp, signing_secret: str | None, metrics: BotMetrics, max_running: int = 16
    ) -> None:
        self.slack_app = slack_app
        # Bounded: with a thousand commands in flight, the event loop would reach a new request
        # only after a slice of each of them, and acks would be late. Waiting costs nothing.
        self._running = asyncio.Semaphore(max_running)
        self.handler = AsyncSlackRequestHandler(slack_app)
        self.verifier = SignatureVerifier(signing_secret) if signing_secret else None
        self.metrics = metrics
        self._tasks: set[asyncio.Task[Any]] = set()

    async def handle(self, request: Request) -> Response:
        """Answer a Slack request: at once when it can be, else through Bolt."""
        started = time.perf_counter()
        body = await request.body()
        if self.verifier is None or not _ackable(body):
            response = await self.handler.handle(request)
        elif not self.verifier.is_valid_request(body, dict(request.headers)):
            # The same answer Bolt gives: a bad signature or a stale timestamp runs nothing.
            response = Response(status_code=401, content='{"error":"invalid request"}')
        else:
            bolt_request = AsyncBoltRequest(
                body=body.decode("utf-8"), query=request.url.query, headers=dict(request.headers)
            )
            task = asyncio.create_task(self._dispatch(bolt_request))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            response = Response(status_code=200)
        self.metrics.ack_latency.observe(time.perf_counter() - started)
        return response

    async def _dispatch(self, bolt_request: AsyncBoltRequest) -> None:
        try:
            async with self._running:
                answer = await self.slack_app.async_dispatch(bolt_request)
            if answer.status != 200:
                log.warning("dispatch_refused", status=answer.status)
        except Exception:
            log.exception("dispatch_failed")

    async def drain(self, timeout: float) -> None:
        """Wait for dispatched requests to reach their listeners (used at shutdown)."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)
