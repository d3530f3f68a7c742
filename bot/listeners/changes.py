"""The "Plan the way back" button under what changed: the ordinary plan, for an operator, through the gate."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncRespond
from slack_sdk.web.async_client import AsyncWebClient

from bot.dispatch import CommandTimeout, execute, new_request_id
from bot.gate.audit_trail import TrailEntry
from bot.invocation import Invocation
from bot.listeners.gate import propose
from bot.observability import get_logger
from bot.registry import COMMANDS
from bot.render.changes import read_way_back
from bot.render.common import error_text
from bot.runtime import Runtime
from bot.slack.reply import tell_caller
from commands.base import UsageError
from commands.destructive import Proposal

log = get_logger("chatops.slack.changes")


def way_back_handler(runtime: Runtime) -> Callable[..., Awaitable[None]]:
    """Build the listener: make the plan the button names, as the clicker, and show it with Confirm."""

    async def on_click(
        ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient, respond: AsyncRespond
    ) -> None:
        await ack()
        user = body["user"]["id"]
        channel = (body.get("channel") or {}).get("id") or (body.get("container") or {}).get("channel_id", "")
        message = body.get("message") or {}
        thread_ts = message.get("thread_ts") or message.get("ts")
        parsed = read_way_back(str(body["actions"][0].get("value") or ""))
        spec = COMMANDS.get(parsed[0]) if parsed is not None else None
        # Only a destructive command's plan: the button never runs anything, the gate does.
        if parsed is None or spec is None or spec.execute is None:
            await tell_caller(client, respond, channel, user, error_text("that button does not name a plan"))
            return
        invocation = Invocation(request_id=new_request_id(), source="slack", user_id=user, channel_id=channel)
        if not await runtime.authorizer.allowed(user, "operator"):
            await runtime.trail.append_quietly(
                TrailEntry(
                    action=spec.name,
                    decision="refused",
                    actor=user,
                    command=spec.name,
                    arguments=" ".join(parsed[1]),
                    channel_id=channel,
                    request_id=invocation.request_id,
                    outcome="not_authorised",
                    details={"from": "way back button"},
                )
            )
            await tell_caller(
                client, respond, channel, user, error_text("planning the way back needs an operator")
            )
            return
        try:
            result = await execute(spec, runtime.services, parsed[1], invocation)
        except (UsageError, CommandTimeout) as error:
            text = error.message if isinstance(error, UsageError) else str(error)
            await tell_caller(client, respond, channel, user, error_text(text))
            return
        if not isinstance(result, Proposal):
            await tell_caller(client, respond, channel, user, error_text(f"/{spec.name} made no plan"))
            return
        await propose(runtime, client, respond, result, invocation, thread_ts=thread_ts)

    return on_click
