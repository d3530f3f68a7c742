"""The tactical update form: opened from a reminder's button, submitted as an `/incident update`.

`/incident update` alone opens the same form (bot/runners/incident.py). Its submission is an update
like a typed one (same role, same channel rule, same record), with its three parts kept apart in the
timeline so the header, the thread and the stakeholders' announcement show them as such.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from adapters.incident_store import IncidentStore
from bot.dispatch import new_request_id
from bot.invocation import Invocation
from bot.observability import get_logger
from bot.render.common import error_text
from bot.render.incident import confirmation
from bot.render.incident_workspace import REMIND_UPDATE_ACTION, UPDATE_VIEW, update_modal
from bot.runners.incident import present_change
from bot.runtime import Runtime
from bot.slack import incidents
from bot.slack.errors import slack_error_code
from bot.slack.membership import channel_access
from bot.slack.reply import tell_caller
from commands import incident as incident_command
from commands.base import UsageError
from commands.incident import TACTICAL_PARTS, TEXT_LIMIT, IncidentArgs, tactical_text

log = get_logger("chatops.incident_forms")

Handler = Callable[..., Awaitable[None]]


def register(app: AsyncApp, runtime: Runtime) -> None:
    """Attach the form's submission and the reminder's button to the Bolt app."""
    app.view(UPDATE_VIEW)(update_view_handler(runtime))
    app.action(REMIND_UPDATE_ACTION)(remind_button_handler(runtime))


def _invocation(user: str, channel: str | None) -> Invocation:
    return Invocation(request_id=new_request_id(), source="slack", user_id=user, channel_id=channel)


def remind_button_handler(runtime: Runtime) -> Handler:
    """Open the update form from a reminder: the responder role, in the incident's channel."""

    async def on_remind(ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        user = body["user"]["id"]
        channel = (body.get("channel") or {}).get("id") or (body.get("container") or {}).get("channel_id", "")
        try:
            if not await runtime.authorizer.allowed(user, "responder"):
                raise UsageError("you need the responder role to update an incident")
            value = str(body["actions"][0].get("value") or "")
            if not value.isdigit():
                raise UsageError("that button does not belong to an incident")
            args = IncidentArgs(action="update", incident_id=int(value))
            store = IncidentStore(runtime.services.state_db)
            access = channel_access(client, _invocation(user, channel))
            incident = await incident_command.open_target(store, args, channel, access)
            await client.views_open(trigger_id=body["trigger_id"], view=update_modal(incident, channel))
        except UsageError as error:
            await tell_caller(client, None, channel, user, error_text(error.message))
        except SlackApiError as error:
            code = slack_error_code(error)
            text = f"the update form could not open ({code}); /incident update <text> works too"
            await tell_caller(client, None, channel, user, error_text(text))

    return on_remind


def update_view_handler(runtime: Runtime) -> Handler:
    """Take the form: Conditions required; the update recorded and shown like a typed one."""

    async def on_submit(
        ack: AsyncAck, body: dict[str, Any], view: dict[str, Any], client: AsyncWebClient
    ) -> None:
        user = body["user"]["id"]
        values = view.get("state", {}).get("values", {})
        parts = {
            key: str((values.get(key, {}).get("value") or {}).get("value") or "").strip()
            for key, _ in TACTICAL_PARTS
        }
        if not parts["conditions"]:
            await ack(response_action="errors", errors={"conditions": "Say what is happening now"})
            return
        text = tactical_text(parts)
        if len(text) > TEXT_LIMIT:
            await ack(
                response_action="errors",
                errors={"conditions": f"Keep the update under {TEXT_LIMIT} characters"},
            )
            return
        if not await runtime.authorizer.allowed(user, "responder"):
            await ack(response_action="errors", errors={"conditions": "You need the responder role for that"})
            return
        try:
            meta = json.loads(view.get("private_metadata") or "{}")
            incident_id = int(meta["incident"])
        except (ValueError, KeyError, TypeError):
            await ack(
                response_action="errors", errors={"conditions": "This form does not belong to an incident"}
            )
            return
        await ack()
        channel = meta.get("channel") if isinstance(meta.get("channel"), str) else None
        async with runtime.in_flight.track():
            await _post_update(runtime, client, user, channel, incident_id, text, parts)

    return on_submit


async def _post_update(
    runtime: Runtime,
    client: AsyncWebClient,
    user: str,
    channel: str | None,
    incident_id: int,
    text: str,
    parts: dict[str, str],
) -> None:
    services = runtime.services
    store = IncidentStore(services.state_db)
    args = IncidentArgs(action="update", text=text, incident_id=incident_id, tactical=parts)
    answer_in = channel or ""
    try:
        incident = await store.get(incident_id)
        answer_in = channel or (incident.channel_id if incident is not None else "")
        result = await incident_command.run(
            store,
            args,
            actor=user,
            channel_id=answer_in or None,
            contacts=services.settings.incident_contacts,
            resolve_user=incidents.user_resolver(client),
            access=channel_access(client, _invocation(user, answer_in or None)),
        )
        result = await present_change(services, client, store, result)
    except UsageError as error:
        await tell_caller(client, None, answer_in, user, error_text(error.message))
        return
    except Exception as error:  # a form never crashes the bot: the person hears what broke
        log.exception("incident_update_form_failed")
        await tell_caller(client, None, answer_in, user, error_text(f"that failed: {type(error).__name__}"))
        return
    await tell_caller(client, None, answer_in, user, confirmation(result).text)
