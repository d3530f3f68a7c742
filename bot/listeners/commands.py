"""Slash commands in Slack: acknowledged at once, run, and answered in the channel or to the caller."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncRespond
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.dispatch import CommandTimeout, execute, new_request_id
from bot.gate.mfa_command import MFA_USAGE
from bot.invocation import Invocation
from bot.listeners.gate import propose
from bot.registry import CommandSpec
from bot.render.common import error_text
from bot.runtime import Runtime
from bot.slack.posting import Responder, ResponseUrl
from bot.slack.reply import post_reply, tell_caller
from commands.base import UsageError, tokenize
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
        invocation = Invocation(request_id=new_request_id(), source="slack", user_id=user, channel_id=channel)
        try:
            tokens = spec.tokenize(command.get("text", ""))
            if not await runtime.authorizer.allowed(user, spec.required_role(tokens)):
                raise UsageError(f"you are not allowed to run /{spec.name}")
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


def mfa_handler(runtime: Runtime) -> Callable[..., Awaitable[None]]:
    async def handle(
        ack: AsyncAck, command: dict[str, Any], client: AsyncWebClient, respond: AsyncRespond
    ) -> None:
        await ack()
        user = command.get("user_id", "")
        channel = command.get("channel_id", "")
        try:
            answer = await runtime.mfa_command.run(user, tokenize(command.get("text", "")))
        except UsageError as error:
            await tell_caller(
                client, respond, channel, user, error_text(error.message, error.usage or MFA_USAGE)
            )
            return
        except Exception as error:
            await tell_caller(
                client, respond, channel, user, error_text(f"/mfa failed: {type(error).__name__}")
            )
            return
        if answer.qr_png is not None:
            # The seed goes to the user's DM only, never to a channel.
            try:
                dm = await client.conversations_open(users=user)
                dm_channel = str(dm["channel"]["id"])
                await client.chat_postMessage(channel=dm_channel, text=answer.text)
                await client.files_upload_v2(
                    channel=dm_channel,
                    filename="chatops-mfa.png",
                    content=answer.qr_png,
                    title="chatops MFA enrollment",
                    alt_txt="QR code of your TOTP enrollment URI",
                )
                await tell_caller(
                    client, respond, channel, user, "I sent your enrollment to our DM. " + answer.next_step
                )
            except SlackApiError:
                await tell_caller(client, respond, channel, user, answer.text)
            return
        await tell_caller(client, respond, channel, user, answer.text)

    return handle
