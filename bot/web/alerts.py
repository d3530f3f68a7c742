"""Alert intake: Prometheus Alertmanager's webhook (version 4) posted into the incident channel.

Each firing alert becomes one Slack message with buttons to run triage or declare an incident.
Repeats (same fingerprint) edit that message; a resolved alert marks it resolved. While the channel
has an open incident, alerts go to its thread and its timeline. Failures answer 5xx, so that
Alertmanager sends the notification again; what was already posted is then edited, not repeated.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Literal

from pydantic import ValidationError
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from adapters.incident_store import AlertMessage, Incident, IncidentStore
from bot.observability import get_logger
from bot.render.alert import alert_message
from bot.services import Services
from bot.slack.posting import ChannelPacer
from bot.web.alert_triage import AlertTriage
from bot.web.slack_requests import Refusal, read_body
from commands.alert import Alert, Notification

log = get_logger("chatops.alerts")

Outcome = Literal["posted", "updated", "resolved", "ignored", "failed"]


def alerts_endpoint(
    services: Services,
    client: AsyncWebClient,
    triage: AlertTriage | None = None,
    pacer: ChannelPacer | None = None,
) -> Callable[[Request], Awaitable[Response]]:
    """Build the POST /alerts handler; with `triage`, alerts of its severity triage themselves.

    New alerts' posts wait their turn with `pacer`, as every post to a channel does: in an alert
    storm, Slack's one-a-second per channel is kept rather than refused with 429s.
    """
    pacer = pacer or ChannelPacer()
    settings = services.settings
    store = IncidentStore(services.state_db)

    async def receive(request: Request) -> Response:
        token = settings.alertmanager_token
        # Fails closed: without a configured token nobody can post alerts (start-up says so).
        if token is None or not _bearer_ok(request.headers.get("authorization"), token.get_secret_value()):
            services.metrics.slack_requests_refused.labels("401").inc()
            return JSONResponse(
                {"error": "missing or wrong bearer token"},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        try:
            body = await read_body(request)
            notification = Notification.model_validate(json.loads(body))
        except Refusal as refusal:
            services.metrics.slack_requests_refused.labels(str(refusal.status)).inc()
            return JSONResponse({"error": refusal.reason}, status_code=refusal.status)
        except (ValueError, RecursionError, ValidationError) as error:
            return JSONResponse(
                {"error": "not an Alertmanager v4 webhook payload", "detail": str(error)[:2000]}, 400
            )
        channel = settings.incident_channel
        if not channel:
            log.error("alerts_without_channel", setting="CHATOPS_INCIDENT_CHANNEL")
            return JSONResponse({"error": "CHATOPS_INCIDENT_CHANNEL is not set"}, status_code=503)
        outcomes: dict[str, Outcome] = {}
        for alert in notification.alerts:
            outcomes[alert.fingerprint] = await take(store, client, channel, notification, alert, pacer)
            if triage is not None and outcomes[alert.fingerprint] == "posted" and triage.wanted(alert):
                posted = await store.alert_by_fingerprint(alert.fingerprint)
                if posted is not None:
                    triage.start(notification.group_key, posted, alert)
        failed = [fingerprint for fingerprint, outcome in outcomes.items() if outcome == "failed"]
        log.info("alerts_received", group=notification.group_key, outcomes=outcomes)
        # A 5xx makes Alertmanager retry the whole notification; what did get posted is then edited.
        return JSONResponse({"outcomes": outcomes, "failed": failed}, status_code=503 if failed else 200)

    return receive


def _bearer_ok(header: str | None, token: str) -> bool:
    if not header or not header.lower().startswith("bearer "):
        return False
    # Bytes on both sides: compare_digest refuses a non-ASCII str (a 500 for a hostile header).
    return hmac.compare_digest(header[7:].strip().encode("utf-8", "replace"), token.encode())


async def take(
    store: IncidentStore,
    client: AsyncWebClient,
    channel: str,
    notification: Notification,
    alert: Alert,
    pacer: ChannelPacer,
) -> Outcome:
    """Post, edit or resolve one alert's message; never raise (the outcome says what happened)."""
    try:
        # Looked up before the alert's lock: the lock holds a connection, and must not need a second.
        incident = await store.open_in(channel)
        async with store.alert_lock(alert.fingerprint) as conn:
            existing = await store.alert_message(conn, alert.fingerprint)
            fresh = existing is None or (
                existing.status == "resolved"
                and alert.status == "firing"
                and alert.starts_at != existing.starts_at
            )
            if alert.status == "resolved" and (existing is None or existing.status == "resolved"):
                return "ignored"  # nothing of ours to mark, or marked already
            if fresh:
                await pacer.wait_turn(channel)
                saved = await _post(client, channel, notification, alert, incident)
            else:
                assert existing is not None
                saved = await _edit(client, notification, alert, existing)
            await store.save_alert_message(conn, saved)
        # Recorded once posted, so that a notification sent again does not list the alert twice.
        if saved.incident_id is not None and (fresh or alert.status == "resolved"):
            at = alert.starts_at if fresh else alert.ends_at
            details = {"fingerprint": alert.fingerprint, "labels": alert.labels}
            await store.add_event(saved.incident_id, "alert", None, _summary(alert), at=at, details=details)
    except SlackApiError as error:
        log.warning("alert_not_posted", fingerprint=alert.fingerprint, error=error.response.get("error"))
        return "failed"
    except Exception:
        log.exception("alert_not_taken", fingerprint=alert.fingerprint)
        return "failed"
    if fresh:
        return "posted"
    return "resolved" if alert.status == "resolved" else "updated"


def _summary(alert: Alert) -> str:
    summary = alert.annotations.get("summary") or alert.annotations.get("description") or ""
    return f"{alert.name} {alert.status}" + (f": {summary}" if summary else "")


async def _post(
    client: AsyncWebClient, channel: str, notification: Notification, alert: Alert, incident: Incident | None
) -> AlertMessage:
    # While an incident is open in the channel, its alerts belong to its thread and timeline.
    thread_ts = incident.header_ts if incident is not None else None
    message = AlertMessage(
        fingerprint=alert.fingerprint,
        channel_id=channel,
        ts="",
        thread_ts=thread_ts,
        status=alert.status,
        alertname=alert.name,
        starts_at=alert.starts_at,
        ends_at=alert.ends_at,
        alert=alert.model_dump(mode="json", by_alias=True),
        external_url=notification.external_url,
        notifications=1,
        incident_id=incident.id if incident is not None else None,
    )
    rendered = alert_message(message, datetime.now(UTC))
    answer = await client.chat_postMessage(
        channel=channel, text=rendered.text, blocks=rendered.blocks, thread_ts=thread_ts
    )
    return message.model_copy(update={"ts": str(answer["ts"])})


async def _edit(
    client: AsyncWebClient, notification: Notification, alert: Alert, existing: AlertMessage
) -> AlertMessage:
    message = existing.model_copy(
        update={
            "status": alert.status,
            "ends_at": alert.ends_at,
            "alert": alert.model_dump(mode="json", by_alias=True),
            "external_url": notification.external_url,
            "notifications": existing.notifications + 1,
        }
    )
    rendered = alert_message(message, datetime.now(UTC))
    await client.chat_update(
        channel=existing.channel_id, ts=existing.ts, text=rendered.text, blocks=rendered.blocks
    )
    return message
