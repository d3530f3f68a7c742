"""`chatops serve`: the Slack app over HTTP or Socket Mode, with /metrics and /healthz."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterator

import aiohttp
import structlog
import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from slack_bolt.async_app import AsyncApp
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bot.config import Settings
from bot.listeners.app import build_slack_app
from bot.runtime import Runtime
from bot.services import Services, build_slack_client
from bot.state import migrate
from bot.web.alerts import alerts_endpoint
from bot.web.fast_ack import FastAck

log = structlog.get_logger("chatops.server")


def build_web_app(services: Services, slack_app: AsyncApp) -> Starlette:
    """Build the HTTP app: Slack events and commands, metrics, liveness."""
    secret = services.settings.slack_signing_secret
    events = FastAck(slack_app, secret.get_secret_value() if secret else None, services.metrics)

    async def slack_events(request: Request) -> Response:
        return await events.handle(request)

    async def metrics(_: Request) -> Response:
        return Response(generate_latest(services.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    app = Starlette(
        routes=[
            Route("/slack/events", slack_events, methods=["POST"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            # Alertmanager's webhook (version 4): alerts into the incident channel.
            Route("/alerts", alerts_endpoint(services, slack_app.client), methods=["POST"]),
        ]
    )
    # serve() waits on it at shutdown: acknowledged requests may still be queued for Bolt.
    app.state.fast_ack = events
    return app


async def prepare(settings: Settings) -> tuple[Runtime, AsyncApp, Starlette]:
    """Build the runtime, migrate the bot's database (best effort) and the apps."""
    runtime = Runtime.build(settings)
    services = runtime.services
    try:
        applied = await asyncio.wait_for(migrate(services.state_db), timeout=30)
        log.info("state_db_migrated", applied=applied)
    except Exception as error:
        # The bot still starts: /health will say the state database is down.
        log.error("state_db_not_migrated", error=f"{type(error).__name__}: {error}")
    client = runtime.slack_client or build_slack_client(settings)
    # One HTTP session for every Slack call: a new one per call means a new TCP+TLS connection.
    client.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=client.timeout))
    slack_app = build_slack_app(runtime, client)
    await report_interrupted(runtime)
    return runtime, slack_app, build_web_app(services, slack_app)


async def report_interrupted(runtime: Runtime) -> None:
    """Say, in each plan's own thread, which operations a previous process left unfinished."""
    try:
        interrupted = await runtime.gate.recover_interrupted()
    except Exception as error:  # the state database may be down at start: /health will say so
        log.error("interrupted_check_failed", error=type(error).__name__)
        return
    for approval in interrupted:
        steps = await runtime.gate.progress_of(approval.id)
        done = [f"{step['name']}: {step['status']}" for step in steps]
        log.warning("operation_interrupted", approval=str(approval.id), command=approval.command, steps=done)
        if runtime.slack_client is None or not approval.channel_id:
            continue
        command = f"/{approval.command} {' '.join(approval.arguments)}"
        text = (
            f":warning: The bot stopped while `{command}` was running."
            f" Last known steps: {'; '.join(done) or 'none started'}. Check the state before retrying."
        )
        try:
            await runtime.slack_client.chat_postMessage(
                channel=approval.channel_id,
                thread_ts=approval.message_ts,
                text=text,
                reply_broadcast=approval.message_ts is not None,
            )
        except Exception as error:
            log.error("interrupted_notice_failed", error=type(error).__name__)


class _DrainingServer(uvicorn.Server):
    """uvicorn, minus its own signal handling: it re-raises SIGTERM when done, which would kill
    the process before acknowledged commands have finished."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Leave signals to `serve`, which drains before exiting."""
        yield

    def request_exit(self) -> None:
        """Stop accepting requests and let uvicorn finish the ones in progress."""
        log.info("shutdown_requested")
        self.should_exit = True


async def serve(settings: Settings) -> int:
    """Run until SIGINT/SIGTERM, then drain and close."""
    if settings.slack_bot_token is None:
        log.error("missing_setting", setting="SLACK_BOT_TOKEN")
        print("chatops serve: SLACK_BOT_TOKEN is not set")
        return 2
    if settings.slack_app_token is None and settings.slack_signing_secret is None:
        print("chatops serve: set SLACK_APP_TOKEN (Socket Mode) or SLACK_SIGNING_SECRET (HTTP mode)")
        return 2
    runtime, slack_app, web_app = await prepare(settings)
    server = _DrainingServer(
        uvicorn.Config(
            web_app, host=settings.http_host, port=settings.http_port, log_level="warning", lifespan="off"
        )
    )
    socket_handler = None
    try:
        if settings.slack_app_token is not None:
            from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

            socket_handler = AsyncSocketModeHandler(slack_app, settings.slack_app_token.get_secret_value())
            await socket_handler.connect_async()  # type: ignore[no-untyped-call]
            log.info("socket_mode_connected")
        log.info("serving", host=settings.http_host, port=settings.http_port)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, server.request_exit)
        # Returns once a signal came and the HTTP requests in progress are answered.
        await server.serve()
    finally:
        if socket_handler is not None:
            await socket_handler.close_async()  # type: ignore[no-untyped-call]
        # Commands already acknowledged still owe their answer: let the queued ones reach their
        # handlers, then let every handler finish.
        await web_app.state.fast_ack.drain(timeout=settings.shutdown_drain_seconds)
        left = await runtime.in_flight.drain(timeout=settings.shutdown_drain_seconds)
        log.info("drained", still_running=left)
        if slack_app.client.session is not None:
            await slack_app.client.session.close()
        await runtime.services.aclose()
    return 0
