"""The Slack app: slash commands acknowledged at once, then run and answered in the channel."""

from __future__ import annotations

from typing import Any

import structlog
from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncRespond
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.commands_registry import COMMANDS, CommandSpec, Invocation
from bot.dispatch import CommandTimeout, execute, new_request_id
from bot.render.common import SlackReply, error_text
from bot.services import Services
from commands.base import CommandResult, UsageError, tokenize

log = structlog.get_logger("chatops.slack")

# Errors after which posting through the command's response_url still reaches the channel.
_NOT_POSTABLE = {"channel_not_found", "not_in_channel", "is_archived"}


def build_slack_app(services: Services, client: AsyncWebClient) -> AsyncApp:
    """Build the Bolt app with one handler per command of the registry."""
    settings = services.settings
    socket_mode = settings.slack_app_token is not None
    app = AsyncApp(
        client=client,
        signing_secret=(
            settings.slack_signing_secret.get_secret_value() if settings.slack_signing_secret else None
        ),
        # Socket Mode messages come over an authenticated socket, not signed HTTP requests.
        request_verification_enabled=not socket_mode,
        process_before_response=False,
    )
    for spec in COMMANDS.values():
        app.command(f"/{spec.name}")(_handler(spec, services))
    return app


def _handler(spec: CommandSpec, services: Services) -> Any:
    async def handle(
        ack: AsyncAck, command: dict[str, Any], client: AsyncWebClient, respond: AsyncRespond
    ) -> None:
        await ack()  # first, before any I/O: Slack gives us three seconds
        channel = command.get("channel_id", "")
        user = command.get("user_id", "")
        invocation = Invocation(request_id=new_request_id(), source="slack", user_id=user, channel_id=channel)
        try:
            tokens = tokenize(command.get("text", ""))
            result = await execute(spec, services, tokens, invocation)
        except UsageError as error:
            await _tell_caller(
                client, respond, channel, user, error_text(error.message, error.usage or spec.usage)
            )
            return
        except CommandTimeout as error:
            await _tell_caller(client, respond, channel, user, error_text(str(error)))
            return
        except Exception as error:  # the bot never crashes: the caller hears what broke
            await _tell_caller(
                client,
                respond,
                channel,
                user,
                error_text(f"/{spec.name} failed: {type(error).__name__} (request {invocation.request_id})"),
            )
            return
        await post_result(client, respond, channel, spec, result, services)

    handle.__name__ = f"handle_{spec.name}"
    return handle


async def post_result(
    client: AsyncWebClient,
    respond: AsyncRespond,
    channel: str,
    spec: CommandSpec,
    result: CommandResult,
    services: Services,
    thread_ts: str | None = None,
) -> str | None:
    """Post a result for everyone: the main message, then its thread and files; return its ts."""
    reply: SlackReply = spec.slack(result)
    main = reply.main
    try:
        answer = await client.chat_postMessage(
            channel=channel, text=main.text, blocks=main.blocks, thread_ts=thread_ts
        )
    except SlackApiError as error:
        code = _error_code(error)
        services.metrics.slack_api_errors.labels("chat.postMessage", code or "unknown").inc()
        log.warning("post_failed", error=code)
        if code not in _NOT_POSTABLE:
            raise
        # The bot is not in that channel (a private one or a DM): the response_url still works there.
        await respond(text=main.text, blocks=main.blocks, response_type="in_channel")
        return None
    ts = str(answer.get("ts"))
    parent = thread_ts or ts
    for message in reply.thread:
        await client.chat_postMessage(
            channel=channel, text=message.text, blocks=message.blocks, thread_ts=parent
        )
    for upload in reply.files:
        await client.files_upload_v2(
            channel=channel,
            thread_ts=parent,
            filename=upload.filename,
            content=upload.content,
            title=upload.title,
            alt_txt=upload.alt_text or None,
        )
    return ts


def _error_code(error: SlackApiError) -> str:
    return str(error.response.get("error", "")) if error.response else ""


async def _tell_caller(
    client: AsyncWebClient, respond: AsyncRespond, channel: str, user: str, text: str
) -> None:
    """Answer only the person who ran the command."""
    try:
        await client.chat_postEphemeral(channel=channel, user=user, text=text)
    except SlackApiError:
        await respond(text=text, response_type="ephemeral")
