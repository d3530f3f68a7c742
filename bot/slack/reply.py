"""Answer in Slack: a command's reply for the channel (its thread, its files), or a word to the caller."""

from __future__ import annotations

import getpass
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from slack_sdk.errors import SlackApiError

from adapters.postgres import PostgresAdapter
from bot.invocation import Invocation
from bot.observability import get_logger
from bot.render.common import Message, SlackReply, Upload, context, escape
from bot.render.incident import person
from bot.services import Services
from bot.slack import incidents
from bot.slack.errors import NOT_POSTABLE, slack_error_code
from bot.slack.posting import (
    ChannelPacer,
    Responder,
    ResponseUrlSpent,
    UploadFailed,
    split_message,
    upload_from_disk,
)

if TYPE_CHECKING:  # the async client brings aiohttp: loaded by whoever builds one
    from slack_sdk.web.async_client import AsyncWebClient

log = get_logger("chatops.slack")


async def post_reply(
    client: AsyncWebClient,
    respond: Responder,
    channel: str,
    command: str,
    reply: SlackReply,
    services: Services,
    thread_ts: str | None = None,
    user: str | None = None,
    pacer: ChannelPacer | None = None,
) -> str | None:
    """Post a command's reply for everyone: the main message, then its thread and files; return its ts.

    Messages over Block Kit's limits are split (the rest goes to the thread) rather than
    rejected, and posts to one channel are paced when a pacer is given.
    """
    try:
        return await _post(client, respond, channel, command, reply, services, thread_ts, user, pacer)
    finally:
        _remove_spooled_files(reply)


def _remove_spooled_files(reply: SlackReply) -> None:
    """Remove the reply's files spooled on disk (exports): they are its alone, posted or not."""
    for upload in reply.files:
        if upload.path is not None:
            upload.path.unlink(missing_ok=True)


async def _post(
    client: AsyncWebClient,
    respond: Responder,
    channel: str,
    command: str,
    reply: SlackReply,
    services: Services,
    thread_ts: str | None,
    user: str | None,
    pacer: ChannelPacer | None,
) -> str | None:
    first, *overflow = split_message(reply.main)
    main = first
    if reply.ephemeral:  # the command posted what everyone sees itself; this answer is the caller's
        try:
            await respond(
                text=main.text, blocks=main.blocks, response_type="ephemeral", replace_original=False
            )
        except ResponseUrlSpent:
            if user:
                await client.chat_postEphemeral(
                    channel=channel, user=user, text=main.text, blocks=main.blocks
                )
        return None
    # In a channel with an open incident, results go to its thread and into its timeline.
    incident_thread = await record_result(services.state_db, channel, command, reply, user)
    thread_ts = thread_ts or incident_thread
    if pacer is not None:
        await pacer.wait_turn(channel)
    try:
        answer = await client.chat_postMessage(
            channel=channel, text=main.text, blocks=main.blocks, thread_ts=thread_ts
        )
    except SlackApiError as error:
        code = slack_error_code(error)
        services.metrics.slack_api_errors.labels("chat.postMessage", code).inc()
        log.warning("post_failed", error=code)
        if code not in NOT_POSTABLE:
            raise
        # The bot is not in that channel (a private one or a DM): the response_url still works there.
        try:
            await respond(text=main.text, blocks=main.blocks, response_type="in_channel")
        except ResponseUrlSpent as spent:
            log.error("result_undeliverable", channel=channel, reason=str(spent))
        return None
    ts = str(answer.get("ts"))
    parent = thread_ts or ts
    messages = [*overflow, *(part for item in reply.thread for part in split_message(item))]
    await _post_in_thread(client, channel, parent, messages, reply.files, services, pacer)
    return ts


async def record_result(
    state_db: PostgresAdapter, channel: str | None, command: str, reply: SlackReply, user: str | None
) -> str | None:
    """Put a command's result into the timeline of the channel's open incident; return its thread.

    The entry is the reply's one-line fallback text (mrkdwn, escaped by the renderer), the same
    whether the command ran in Slack or at the terminal. None when no incident is open there.
    """
    return await incidents.record(state_db, channel, f"/{command}", reply.main.text, user)


async def record_terminal_result(
    services: Services,
    command: str,
    render: Callable[[Any], SlackReply],
    result: Any,
    invocation: Invocation,
) -> None:
    """From the terminal: put a result into the open incident of CHATOPS_INCIDENT_CHANNEL, as Slack does.

    The timeline gets the entry a Slack run records; when Slack is configured, the Slack rendering
    is also posted in the incident's thread, marked as run from the terminal (files from memory
    only: a file on disk is the terminal's own output). With no incident open there, nothing is
    recorded or posted (the terminal does not post in the channel). Never raises: bookkeeping must
    not break the command.
    """
    channel = services.settings.incident_channel
    if not channel:
        return
    try:
        reply = render(result)
        if reply.ephemeral:  # the command told the incident itself (/incident, /rca), as from Slack
            return
        actor = invocation.user_id or terminal_user()
        thread = await record_result(services.state_db, channel, command, reply, actor)
        client = services.slack.client if services.slack is not None else None
        if thread is None or client is None:
            return
        origin = context(f"`/{escape(command)}` run from the terminal by {person(actor)}")
        main = Message(text=reply.main.text, blocks=[*reply.main.blocks, origin])
        messages = [*split_message(main), *(part for item in reply.thread for part in split_message(item))]
        files = [upload for upload in reply.files if upload.path is None]
        await _post_in_thread(client, channel, thread, messages, files, services, None)
    except Exception as error:
        code = slack_error_code(error) if isinstance(error, SlackApiError) else type(error).__name__
        log.warning("terminal_result_not_shared", command=command, error=code)


def terminal_user() -> str:
    """Name whoever runs the terminal without CHATOPS_CLI_USER: the machine account and host."""
    try:
        return f"{getpass.getuser()}@{socket.gethostname()} (terminal)"
    except OSError:  # no user name in the environment or the password database
        return "terminal"


async def _post_in_thread(
    client: AsyncWebClient,
    channel: str,
    parent: str,
    messages: list[Message],
    files: list[Upload],
    services: Services,
    pacer: ChannelPacer | None,
) -> None:
    """Post a reply's other messages and its files in its thread."""
    for message in messages:
        if pacer is not None:
            await pacer.wait_turn(channel)
        await client.chat_postMessage(
            channel=channel, text=message.text, blocks=message.blocks, thread_ts=parent
        )
    for upload in files:
        try:
            if upload.path is None:
                await _upload_from_memory(client, channel, parent, upload)
            else:
                await upload_from_disk(client, channel, parent, upload)
        except UploadFailed as error:
            services.metrics.slack_api_errors.labels("file upload", "upload_failed").inc()
            log.warning("upload_failed", file=upload.filename, reason=str(error))
            # The thread says so: people waiting for the file must not be left guessing.
            text = f":warning: {escape(upload.filename)} was not uploaded: {escape(str(error))}"
            await client.chat_postMessage(channel=channel, thread_ts=parent, text=text)


async def _upload_from_memory(client: AsyncWebClient, channel: str, thread_ts: str, upload: Upload) -> None:
    """Post a small file (a graph) into a thread; raise UploadFailed with Slack's reason."""
    try:
        await client.files_upload_v2(
            channel=channel,
            thread_ts=thread_ts,
            filename=upload.filename,
            content=upload.content,
            title=upload.title,
            alt_txt=upload.alt_text or None,
        )
    except SlackApiError as error:
        raise UploadFailed(f"files.completeUploadExternal: {slack_error_code(error)}") from None


async def tell_caller(
    client: AsyncWebClient, respond: Responder | None, channel: str, user: str, text: str
) -> None:
    """Answer only the person who acted (from the Home tab, where there is no channel: by DM)."""
    if not channel:
        try:
            await client.chat_postMessage(channel=user, text=text)
        except SlackApiError as error:
            log.error("answer_undeliverable", channel="dm", reason=slack_error_code(error))
        return
    try:
        await client.chat_postEphemeral(channel=channel, user=user, text=text)
    except SlackApiError:
        if respond is not None:
            try:
                await respond(text=text, response_type="ephemeral")
            except ResponseUrlSpent as spent:
                log.error("answer_undeliverable", channel=channel, reason=str(spent))
