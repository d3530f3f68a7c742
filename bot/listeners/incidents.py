"""The buttons of incidents, alerts and RCA previews: triage, declare, the second-declare question, file."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncRespond
from slack_sdk.web.async_client import AsyncWebClient

from adapters.incident_store import IncidentStore
from bot.dispatch import execute, new_request_id
from bot.invocation import Invocation
from bot.observability import get_logger
from bot.registry import COMMANDS
from bot.render.alert import DECLARE_ACTION, TRIAGE_ACTION, alert_message
from bot.render.common import error_text, section
from bot.render.incident import (
    ASK_CANCEL_ACTION,
    ASK_DECLARE_ACTION,
    ASK_NOTE_ACTION,
    ask_message,
    confirmation,
)
from bot.render.rca import FILE_ACTION, answer_text
from bot.runners.incident import present_change
from bot.runners.rca import file_and_show
from bot.runtime import Runtime
from bot.slack import incidents
from bot.slack.membership import channel_access
from bot.slack.reply import post_reply, tell_caller
from commands import incident as incident_command
from commands.alert import Alert
from commands.base import UsageError
from commands.destructive import Proposal
from commands.incident import IncidentArgs, IncidentResult

log = get_logger("chatops.incident_actions")

Handler = Callable[..., Awaitable[None]]


def register(app: AsyncApp, runtime: Runtime) -> None:
    """Attach every incident, alert and RCA button to the Bolt app."""
    app.action(TRIAGE_ACTION)(_guarded(runtime, "viewer", _triage))
    app.action(DECLARE_ACTION)(_guarded(runtime, "responder", _declare_from_alert))
    app.action(ASK_NOTE_ACTION)(_guarded(runtime, "responder", _ask_note))
    app.action(ASK_DECLARE_ACTION)(_guarded(runtime, "responder", _ask_declare))
    app.action(ASK_CANCEL_ACTION)(_cancel)
    app.action(FILE_ACTION)(_guarded(runtime, "responder", _file_rca))


Action = Callable[[Runtime, AsyncWebClient, AsyncRespond, str, str, str], Awaitable[None]]


def _guarded(runtime: Runtime, role: Any, action: Action) -> Handler:
    """Acknowledge at once, check the clicker's role, run the action, and tell them what broke."""

    async def handle(
        ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient, respond: AsyncRespond
    ) -> None:
        await ack()
        user = body["user"]["id"]
        channel = (body.get("channel") or {}).get("id") or (body.get("container") or {}).get("channel_id", "")
        value = str(body["actions"][0].get("value") or "")
        try:
            if not await runtime.authorizer.allowed(user, role):
                raise UsageError(f"you need the {role} role for that")
            await action(runtime, client, respond, user, channel, value)
        except UsageError as error:
            await tell_caller(client, respond, channel, user, error_text(error.message))
        except Exception as error:  # a button never crashes the bot: the clicker hears what broke
            log.exception("incident_action_failed", action=action.__name__)
            await tell_caller(
                client, respond, channel, user, error_text(f"that failed: {type(error).__name__}")
            )

    handle.__name__ = f"on_{action.__name__.lstrip('_')}"
    return handle


def _invocation(user: str, channel: str) -> Invocation:
    return Invocation(request_id=new_request_id(), source="slack", user_id=user, channel_id=channel)


async def _triage(
    runtime: Runtime, client: AsyncWebClient, respond: AsyncRespond, user: str, channel: str, fingerprint: str
) -> None:
    """Run /triage for an alert and post the findings in the alert's thread."""
    spec = COMMANDS.get("triage")
    if spec is None:
        raise UsageError("/triage is not available in this bot yet")
    if not await runtime.authorizer.allowed(user, spec.role):
        raise UsageError("you are not allowed to run /triage")
    services = runtime.services
    message = await IncidentStore(services.state_db).alert_by_fingerprint(fingerprint)
    if message is None:
        raise UsageError("that alert is no longer known to the bot")
    result = await execute(spec, services, [], _invocation(user, message.channel_id))
    if isinstance(result, Proposal):
        raise UsageError("/triage asked for a plan; run it as a command")
    await post_reply(
        client,
        respond,
        message.channel_id,
        spec.name,
        spec.slack(result),
        services,
        thread_ts=message.thread_ts or message.ts,
        pacer=runtime.pacer,
    )


async def _declare_from_alert(
    runtime: Runtime, client: AsyncWebClient, respond: AsyncRespond, user: str, channel: str, fingerprint: str
) -> None:
    """Declare an incident from an alert: its title and severity, started when the alert did."""
    services = runtime.services
    settings = services.settings
    store = IncidentStore(services.state_db)
    alert = await store.alert_by_fingerprint(fingerprint)
    if alert is None:
        raise UsageError("that alert is no longer known to the bot")
    parsed = Alert.model_validate(alert.alert)
    now = datetime.now(UTC)
    result = await incident_command.declare(
        store,
        channel_id=alert.channel_id,
        title=parsed.title(),
        severity=parsed.severity(),
        actor=user,
        force=False,
        contacts=settings.incident_contacts,
        now=now,
        started_at=alert.starts_at,
        origin=f"alert {alert.alertname}",
    )
    if result.outcome == "asked":
        answer = ask_message(result)
        await respond(
            text=answer.text, blocks=answer.blocks, response_type="ephemeral", replace_original=False
        )
        return
    assert result.incident is not None
    incident = result.incident
    text = f"{alert.alertname} firing" + (
        f": {parsed.annotations['summary']}" if "summary" in parsed.annotations else ""
    )
    await store.add_event(
        incident.id, "alert", None, text, at=alert.starts_at, details={"fingerprint": fingerprint}
    )
    await store.link_alert(fingerprint, incident.id)
    result = result.model_copy(update={"place": settings.incident_workspace})
    published = await present_change(services, client, store, result)
    linked = alert.model_copy(update={"incident_id": incident.id})
    rendered = alert_message(linked, now)
    await client.chat_update(
        channel=alert.channel_id, ts=alert.ts, text=rendered.text, blocks=rendered.blocks
    )
    await tell_caller(client, respond, alert.channel_id, user, confirmation(published).text)


async def _ask_note(
    runtime: Runtime, client: AsyncWebClient, respond: AsyncRespond, user: str, channel: str, value: str
) -> None:
    """Answer "same incident": the would-be title becomes a note of the open incident."""
    data = _json(value)
    args = IncidentArgs(action="note", text=str(data["text"]), incident_id=int(data["incident"]))
    await _run_and_replace(runtime, client, respond, user, channel, args)


async def _ask_declare(
    runtime: Runtime, client: AsyncWebClient, respond: AsyncRespond, user: str, channel: str, value: str
) -> None:
    """Answer "different incident": declare it although another one is open here."""
    data = _json(value)
    severity = incident_command.parse_severity(str(data.get("severity") or incident_command.DEFAULT_SEVERITY))
    args = IncidentArgs(action="declare", text=str(data["title"]), severity=severity, force=True)
    await _run_and_replace(runtime, client, respond, user, channel, args)


async def _run_and_replace(
    runtime: Runtime,
    client: AsyncWebClient,
    respond: AsyncRespond,
    user: str,
    channel: str,
    args: IncidentArgs,
) -> None:
    services = runtime.services
    settings = services.settings
    store = IncidentStore(services.state_db)
    result: IncidentResult = await incident_command.run(
        store,
        args,
        actor=user,
        channel_id=channel,
        contacts=settings.incident_contacts,
        resolve_user=incidents.user_resolver(client),
        user_exists=incidents.user_checker(client),
        access=channel_access(client, _invocation(user, channel)),
    )
    if args.action == "declare":
        result = result.model_copy(update={"place": settings.incident_workspace})
    result = await present_change(services, client, store, result)
    answer = confirmation(result)
    await respond(text=answer.text, blocks=answer.blocks, replace_original=True)


async def _cancel(ack: AsyncAck, respond: AsyncRespond) -> None:
    await ack()
    text = "Nothing was declared."
    await respond(text=text, blocks=[section(text)], replace_original=True)


async def _file_rca(
    runtime: Runtime, client: AsyncWebClient, respond: AsyncRespond, user: str, channel: str, value: str
) -> None:
    """File (or update) the RCA whose preview was clicked."""
    services = runtime.services
    store = IncidentStore(services.state_db)
    try:
        incident_id = int(value)
    except ValueError:
        raise UsageError("that button does not belong to an RCA") from None
    incident = await store.get(incident_id)
    if incident is None:
        raise UsageError(f"there is no incident INC-{incident_id}")
    await incident_command.check_access(incident, channel_access(client, _invocation(user, channel)))
    result = await file_and_show(services, client, store, incident, user)
    await tell_caller(client, respond, channel, user, answer_text(result))


def _json(value: str) -> dict[str, Any]:
    try:
        data = json.loads(value)
    except ValueError:
        raise UsageError("that button does not belong to a question") from None
    if not isinstance(data, dict):
        raise UsageError("that button does not belong to a question")
    return data
