"""POST /slack/events: verify first, accept once, acknowledge at once, then let Bolt run it.

Every request is checked before anything reads what it asks for: its size while it is read, its
signature and timestamp, its form, and whether it was accepted before (a replay, or Slack's own
retry). Only then is it acknowledged: slash commands and button clicks with an immediate 200 and a
dispatch to Bolt in the background (Bolt acks when its listener gets to it, which under load is
late); modal submissions and anything else in line, because their ack carries the answer. Bolt
checks the signature again: its own verification is never turned off on an app HTTP can reach.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bot.observability import BotMetrics, get_logger
from bot.registry import read_only
from bot.web.replay import UNAVAILABLE_ANSWER, GuardUnavailable, ReplayGuard
from bot.web.slack_requests import Refusal, read_body, verify

log = get_logger("chatops.fast_ack")

# Interaction types whose ack carries nothing the user waits for.
_FIRE_AND_FORGET = {"command", "block_actions"}


class FastAck:
    """The /slack/events endpoint."""

    def __init__(
        self,
        slack_app: AsyncApp,
        signing_secret: str,
        metrics: BotMetrics,
        guard: ReplayGuard,
        max_running: int = 16,
    ) -> None:
        self.slack_app = slack_app
        self.secret = signing_secret.encode()
        self.metrics = metrics
        self.guard = guard
        # Bounded: with a thousand commands in flight, the event loop would reach a new request
        # only after a slice of each of them, and acks would be late. Waiting costs nothing.
        self._running = asyncio.Semaphore(max_running)
        self._tasks: set[asyncio.Task[Any]] = set()

    async def handle(self, request: Request) -> Response:
        """Answer one request from Slack (or from anyone who can reach the port)."""
        started = time.perf_counter()
        try:
            response = await self._handle(request)
        except Refusal as refusal:
            self.metrics.slack_requests_refused.labels(str(refusal.status)).inc()
            log.warning("slack_request_refused", status=refusal.status, reason=refusal.reason)
            response = JSONResponse({"error": "invalid request"}, status_code=refusal.status)
        self.metrics.ack_latency.observe(time.perf_counter() - started)
        return response

    async def _handle(self, request: Request) -> Response:
        body = await read_body(request)
        headers = {key.lower(): value for key, value in request.headers.items()}
        verified = verify(body, headers, self.secret)
        try:
            first = await self.guard.first_time(verified.once_key)
        except GuardUnavailable as error:
            log.error("replay_guard_unavailable", error=str(error))
            command = verified.form.get("command", "")
            if verified.kind == "command" and read_only(command, verified.form.get("text", "")):
                first = True  # a read changes nothing if run twice: the on-call still gets answers
            elif verified.kind == "command":  # the ack's text reaches the caller, and only them
                return JSONResponse({"response_type": "ephemeral", "text": UNAVAILABLE_ANSWER})
            else:
                return JSONResponse({"error": "unavailable"}, status_code=503)
        if not first:
            if verified.retry:
                # Slack's own retry of a delivery already taken: answered, not run again.
                self.metrics.requests_deduplicated.labels("retry").inc()
                return Response(status_code=200, headers={"X-Slack-No-Retry": "1"})
            raise Refusal(401, f"replayed request ({verified.kind})")
        bolt_request = AsyncBoltRequest(
            body=body.decode("utf-8"), query=request.url.query, headers=dict(request.headers)
        )
        if verified.kind in _FIRE_AND_FORGET:
            self._dispatch_later(bolt_request)
            return Response(status_code=200)
        answer = await self.slack_app.async_dispatch(bolt_request)
        return _starlette_response(answer.status, answer.body, answer.headers)

    def _dispatch_later(self, bolt_request: AsyncBoltRequest) -> None:
        task = asyncio.create_task(self._dispatch(bolt_request))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

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


def _starlette_response(status: int, body: str, headers: dict[str, Any]) -> Response:
    """Turn Bolt's answer into Starlette's (Bolt's headers are lists of values)."""
    content_type = next(iter(headers.get("content-type", [])), "text/plain; charset=utf-8")
    return Response(status_code=status, content=body, media_type=content_type)
