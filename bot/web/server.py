"""`chatops serve`: the Slack app over HTTP or Socket Mode, with /metrics and /healthz."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterator

import aiohttp
import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bot.config import Settings
from bot.listeners.app import build_slack_app
from bot.observability import get_logger
from bot.render.common import escape
from bot.runtime import Runtime
from bot.services import Services, build_slack_client
from bot.slack.errors import slack_error_code
from bot.slack.posting import ChannelPacer
from bot.state import migrate, runtime_role
from bot.web.alert_triage import AlertTriage
from bot.web.alerts import alerts_endpoint
from bot.web.fast_ack import FastAck
from bot.web.reminders import ReminderLoop
from bot.web.replay import ReplayGuard
from bot.web.socket_mode import OnceSocketModeHandler

log = get_logger("chatops.server")


def build_web_app(services: Services, slack_app: AsyncApp, pacer: ChannelPacer | None = None) -> Starlette:
    """Build the HTTP app: metrics, liveness, alerts, and Slack's requests in HTTP mode only.

    `pacer` is the bot's one pacer of posts per channel (the runtime's): alerts, their triages and
    commands' results share each channel's rate.

    In Socket Mode, Slack's requests come over the websocket: /slack/events is not served at all,
    so nothing reaching the port can pass for Slack.
    """
    settings = services.settings
    metrics_registry = services.metrics.registry

    async def metrics(_: Request) -> Response:
        return Response(generate_latest(metrics_registry), media_type=CONTENT_TYPE_LATEST)

    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    pacer = pacer or ChannelPacer()
    triage = AlertTriage(services, slack_app.client, pacer)
    routes = [
        Route("/metrics", metrics, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        # Alertmanager's webhook (version 4): alerts into the incident channel.
        Route("/alerts", alerts_endpoint(services, slack_app.client, triage, pacer), methods=["POST"]),
    ]
    events: FastAck | None = None
    if not settings.socket_mode and settings.slack_signing_secret is not None:
        events = FastAck(
            slack_app,
            settings.slack_signing_secret.get_secret_value(),
            services.metrics,
            ReplayGuard(services.receipts_db),
        )
        routes.insert(0, Route("/slack/events", events.handle, methods=["POST"]))
    app = Starlette(routes=routes)
    # serve() waits on it at shutdown: acknowledged requests may still be queued for Bolt.
    app.state.fast_ack = events
    app.state.alert_triage = triage
    return app


def startup_warnings(settings: Settings) -> list[str]:
    """Say what the server refuses because a setting is missing (logged at start-up)."""
    warnings = []
    if settings.alertmanager_token is None:
        warnings.append("CHATOPS_ALERTMANAGER_TOKEN is not set: POST /alerts refuses every request (401)")
    if settings.secret_key is None:
        warnings.append(
            "CHATOPS_SECRET_KEY is not set: MFA cannot work, so every destructive command is refused,"
            " and the audit trail is chained but not keyed"
        )
    if settings.state_owner_database_url is None:
        warnings.append(
            "CHATOPS_STATE_OWNER_DATABASE_URL is not set: the bot's runtime role owns its tables and could"
            " disable the audit trail's triggers"
        )
    if not settings.trail_anchor_store.strip():
        warnings.append(
            "CHATOPS_TRAIL_ANCHOR_STORE is empty: deleting the newest trail entries cannot be told"
        )
    if settings.socket_mode:
        warnings.append("Socket Mode: /slack/events is not served; Slack's requests come over the websocket")
    elif settings.slack_signing_secret is None:
        warnings.append("SLACK_SIGNING_SECRET is not set: /slack/events is not served")
    return warnings


async def prepare(settings: Settings) -> tuple[Runtime, AsyncApp, Starlette]:
    """Build the runtime, migrate the bot's database (best effort) and the apps."""
    runtime = Runtime.build(settings)
    services = runtime.services
    try:
        applied = await asyncio.wait_for(
            migrate(services.migrations_db(), runtime_role(settings)), timeout=30
        )
        log.info("state_db_migrated", applied=applied)
    except Exception as error:
        # The bot still starts: /health will say the state database is down.
        log.error("state_db_not_migrated", error=f"{type(error).__name__}: {error}")
    client = runtime.slack_client or build_slack_client(settings)
    # One HTTP session for every Slack call: a new one per call means a new TCP+TLS connection.
    client.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=client.timeout))
    slack_app = build_slack_app(runtime, client)
    await report_interrupted(runtime)
    return runtime, slack_app, build_web_app(services, slack_app, runtime.pacer)


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
        # The arguments are as typed and the steps' names the runner's: text, never mentions.
        command = escape(f"/{approval.command} {' '.join(approval.arguments)}")
        known = escape("; ".join(done)) or "none started"
        text = (
            f":warning: The bot stopped while `{command}` was running."
            f" Last known steps: {known}. Check the state before retrying."
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


_REFUSED_TOKEN = frozenset(
    {"invalid_auth", "not_authed", "not_allowed_token_type", "token_revoked", "account_inactive"}
)


async def _check_app_token(client: AsyncWebClient, app_token: str) -> str | None:
    """Ask Slack once for a Socket Mode URL; return why the token is refused (None when it works)."""
    try:
        await client.apps_connections_open(app_token=app_token)
    except SlackApiError as error:
        code = slack_error_code(error)
        if code in {
            "invalid_auth",
            "not_authed",
            "not_allowed_token_type",
            "token_revoked",
            "account_inactive",
        }:
            return f"Slack refused it ({code})"
        log.warning("socket_mode_check_inconclusive", error=code)
    except Exception as error:  # Slack unreachable: the handler retries, as it would anyway
        log.warning("socket_mode_check_inconclusive", error=type(error).__name__)
    return None


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
    for warning in startup_warnings(settings):
        log.warning("startup", message=warning)
    server = _DrainingServer(
        uvicorn.Config(
            web_app, host=settings.http_host, port=settings.http_port, log_level="warning", lifespan="off"
        )
    )
    socket_handler = None
    # Update reminders of open incidents: each replica looks, each reminder is sent once.
    reminders = ReminderLoop(runtime.services, slack_app.client)
    try:
        reminders.start()
        if settings.slack_app_token is not None:
            # Once, up front: a wrong app token would otherwise retry forever and never serve.
            problem = await _check_app_token(slack_app.client, settings.slack_app_token.get_secret_value())
            if problem is not None:
                log.error("socket_mode_refused", reason=problem)
                print(f"chatops serve: SLACK_APP_TOKEN: {problem}")
                return 2
            socket_handler = OnceSocketModeHandler(
                slack_app,
                settings.slack_app_token.get_secret_value(),
                ReplayGuard(runtime.services.receipts_db),
                runtime.services.metrics,
            )
            await socket_handler.connect_async()  # type: ignore[no-untyped-call]
            log.info("socket_mode_connected")
        log.info("serving", host=settings.http_host, port=settings.http_port)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, server.request_exit)
        # Returns once a signal came and the HTTP requests in progress are answered.
        await server.serve()
    finally:
        await reminders.stop()
        if socket_handler is not None:
            await socket_handler.close_async()  # type: ignore[no-untyped-call]
        # Commands already acknowledged still owe their answer: let the queued ones reach their
        # handlers, then let every handler finish.
        if web_app.state.fast_ack is not None:
            await web_app.state.fast_ack.drain(timeout=settings.shutdown_drain_seconds)
        await web_app.state.alert_triage.drain(timeout=settings.shutdown_drain_seconds)
        left = await runtime.in_flight.drain(timeout=settings.shutdown_drain_seconds)
        log.info("drained", still_running=left)
        if slack_app.client.session is not None:
            await slack_app.client.session.close()
        await runtime.services.aclose()
    return 0
