"""Slash commands in Slack: acknowledged at once, run, and answered in the channel or to the caller."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncRespond
from slack_sdk.web.async_client import AsyncWebClient

from bot.dispatch import CommandTimeout, execute, new_request_id
from bot.gate.audit_trail import TrailEntry
from bot.invocation import Invocation
from bot.listeners.gate import propose
from bot.registry import CommandSpec, asks_for_help
from bot.render.common import error_text, help_text
from bot.runtime import Runtime
from bot.slack.posting import Responder, ResponseUrl
from bot.slack.reply import post_reply, tell_caller
from commands.base import UsageError
from commands.destructive import Proposal


def command_handler(spec: CommandSpec, runtime: Runtime) -> Callable[..., Awaitable[None]]:
    services = runtime.services

    async def handle(
        ack: AsyncAck, command: dict[str, Any], client: AsyncWebClient, respond: AsyncRespond
    ) -> None:
        await ack()  # first, before any I/O: Slack gives us three seconds
        async with runtime.in_flight.track():
            await run_and_answer(command, client, ResponseUrl(respond))

    async def run_and_answer(command: dict[str, Any], client: AsyncWebClient, respond: Responder) -> None:
        channel = command.get("channel_id", "")
        user = command.get("user_id", "")
        invocation = Invocation(
            request_id=new_request_id(),
            source="slack",
            user_id=user,
            channel_id=channel,
            trigger_id=command.get("trigger_id") or None,
        )
        if asks_for_help(str(command.get("text", "")).split()):
            await tell_caller(client, respond, channel, user, help_text(spec.name, spec.summary, spec.usage))
            return
        try:
            tokens = spec.tokenize(command.get("text", ""))
            need = spec.requirement(tokens, services.settings)
            if not await runtime.authorizer.allowed(user, need.role):
                if spec.execute is not None:  # a destructive command: every refusal is in the trail
                    await runtime.trail.append_quietly(
                        TrailEntry(
                            action=spec.name,
                            decision="refused",
                            actor=user,
                            command=spec.name,
                            arguments=" ".join(tokens)[:500],
                            channel_id=channel,
                            request_id=invocation.request_id,
                            outcome="not_authorised",
                            details={"role": need.role},
                        )
                    )
                raise UsageError(need.refusal)
            result = await execute(spec, services, tokens, invocation)
        except UsageError as error:
            await tell_caller(client, respond, channel, user, error_text(error.message, error.usage))
            return
        except CommandTimeout as error:
            await tell_caller(client, respond, channel, user, error_text(str(error)))
            return
        except Exception as error:  # the bot never crashes: the caller hears what broke
            text = f"/{spec.name} failed: {type(error).__name__} (request {invocation.request_id})"
            await tell_caller(client, respond, channel, user, error_text(text))
            return
        if isinstance(result, Proposal):
            await propose(runtime, client, respond, result, invocation)
            return
        await post_reply(
            client, respond, channel, spec.name, spec.slack(result), services, user=user, pacer=runtime.pacer
        )

    handle.__name__ = f"handle_{spec.name}"
    return handle
