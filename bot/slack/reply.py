"""Answer in Slack: a command's reply for the channel (its thread, its files), or a word to the caller."""

from __future__ import annotations

import structlog
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.render.common import SlackReply, Upload, escape
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

log = structlog.get_logger("chatops.slack")


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
    incident_thread = await incidents.record(services.state_db, channel, f"/{command}", main.text, user)
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
    for message in [*overflow, *(part for item in reply.thread for part in split_message(item))]:
        if pacer is not None:
            await pacer.wait_turn(channel)
        await client.chat_postMessage(
            channel=channel, text=message.text, blocks=message.blocks, thread_ts=parent
        )
    for upload in reply.files:
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
    return ts


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
    """Answer only the person who acted."""
    try:
        await client.chat_postEphemeral(channel=channel, user=user, text=text)
    except SlackApiError:
        if respond is not None:
            try:
                await respond(text=text, response_type="ephemeral")
            except ResponseUrlSpent as spent:
                log.error("answer_undeliverable", channel=channel, reason=str(spent))
