"""The Slack app: slash commands acknowledged at once, then run and answered in the channel."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncRespond
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot import incidents
from bot.commands_registry import COMMANDS, CommandSpec, Invocation
from bot.dispatch import CommandTimeout, execute, new_request_id
from bot.gate import Approval, Refused
from bot.mfa_commands import MFA_USAGE, run_mfa_command
from bot.posting import (
    ChannelPacer,
    Responder,
    ResponseUrl,
    ResponseUrlSpent,
    UploadFailed,
    split_message,
    upload_from_disk,
)
from bot.render.common import Message, SlackReply, error_text, escape
from bot.render.gate import (
    CANCEL_ACTION,
    CONFIRM_ACTION,
    MFA_VIEW,
    TOTP_BLOCK,
    TYPED_WORD_BLOCK,
    awaiting_second_message,
    mfa_modal,
    notice_message,
    outcome_message,
    plan_message,
    progress_message,
)
from bot.runtime import Runtime
from bot.services import Services
from commands.base import CommandResult, UsageError, tokenize
from commands.destructive import Proposal, Step

log = structlog.get_logger("chatops.slack")

# Errors after which posting through the command's response_url still reaches the channel.
_NOT_POSTABLE = {"channel_not_found", "not_in_channel", "is_archived"}


def build_slack_app(runtime: Runtime, client: AsyncWebClient) -> AsyncApp:
    """Build the Bolt app: one handler per command, the gate's buttons and modal, and /mfa."""
    settings = runtime.services.settings
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
        app.command(f"/{spec.name}")(_command_handler(spec, runtime))
    app.command("/mfa")(_mfa_handler(runtime))
    app.action(CONFIRM_ACTION)(_confirm_handler(runtime))
    app.action(CANCEL_ACTION)(_cancel_handler(runtime))
    app.view(MFA_VIEW)(_mfa_view_handler(runtime))
    # Imported here: the incident buttons use this module's post_result and tell_caller.
    from bot.incident_actions import register as register_incident_actions

    register_incident_actions(app, runtime)
    return app


def _command_handler(spec: CommandSpec, runtime: Runtime) -> Callable[..., Awaitable[None]]:
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
        await post_result(client, respond, channel, spec, result, services, user=user, pacer=runtime.pacer)

    handle.__name__ = f"handle_{spec.name}"
    return handle


async def post_result(
    client: AsyncWebClient,
    respond: Responder,
    channel: str,
    spec: CommandSpec,
    result: CommandResult,
    services: Services,
    thread_ts: str | None = None,
    user: str | None = None,
    pacer: ChannelPacer | None = None,
) -> str | None:
    """Post a result for everyone: the main message, then its thread and files; return its ts.

    Messages over Block Kit's limits are split (the rest goes to the thread) rather than
    rejected, and posts to one channel are paced when a pacer is given.
    """
    reply: SlackReply = spec.slack(result)
    try:
        return await _post_reply(client, respond, channel, spec, reply, services, thread_ts, user, pacer)
    finally:
        _remove_spooled_files(reply)


def _remove_spooled_files(reply: SlackReply) -> None:
    """Remove the reply's files spooled on disk (exports): they are its alone, posted or not."""
    for upload in reply.files:
        if upload.path is not None:
            upload.path.unlink(missing_ok=True)


async def _post_reply(
    client: AsyncWebClient,
    respond: Responder,
    channel: str,
    spec: CommandSpec,
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
    incident_thread = await incidents.record(services.state_db, channel, f"/{spec.name}", main.text, user)
    thread_ts = thread_ts or incident_thread
    if pacer is not None:
        await pacer.wait_turn(channel)
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
        if upload.path is None:
            await client.files_upload_v2(
                channel=channel,
                thread_ts=parent,
                filename=upload.filename,
                content=upload.content,
                title=upload.title,
                alt_txt=upload.alt_text or None,
            )
            continue
        try:
            await upload_from_disk(client, channel, parent, upload)
        except UploadFailed as error:
            services.metrics.slack_api_errors.labels("file upload", "upload_failed").inc()
            log.warning("upload_failed", file=upload.filename, reason=str(error))
            # The thread says so: people waiting for the file must not be left guessing.
            text = f":warning: {upload.filename} was not uploaded: {error}"
            await client.chat_postMessage(channel=channel, thread_ts=parent, text=text)
    return ts


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


def _error_code(error: SlackApiError) -> str:
    return str(error.response.get("error", "")) if error.response else ""


# --- The gate in Slack: plan with buttons, the MFA modal, progress in place --------------------------


async def propose(
    runtime: Runtime,
    client: AsyncWebClient,
    respond: Responder | None,
    proposal: Proposal,
    invocation: Invocation,
) -> Approval | None:
    """Record a plan with the gate and post it with Confirm and Cancel buttons."""
    channel = invocation.channel_id or ""
    try:
        approval = await runtime.gate.propose(proposal, invocation)
    except Refused as refusal:
        await tell_caller(client, respond, channel, invocation.user_id or "", error_text(refusal.message))
        return None
    message = plan_message(approval)
    thread_ts = await incidents.record(
        runtime.services.state_db, channel, f"/{approval.command}", message.text, invocation.user_id
    )
    answer = await client.chat_postMessage(
        channel=channel, text=message.text, blocks=message.blocks, thread_ts=thread_ts
    )
    await runtime.gate.attach_message(approval.id, str(answer["ts"]))
    return approval


def _approval_id(raw: Any) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(raw))
    except ValueError:
        return None


def _confirm_handler(runtime: Runtime) -> Callable[..., Awaitable[None]]:
    async def on_confirm(ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        user = body["user"]["id"]
        channel = (body.get("channel") or {}).get("id", "")
        approval_id = _approval_id(body["actions"][0].get("value"))
        if approval_id is None:
            await tell_caller(
                client, None, channel, user, error_text("that button does not belong to a plan")
            )
            return
        try:
            approval = await runtime.gate.may_confirm(approval_id, user, channel)
        except Refused as refusal:
            await tell_caller(client, None, channel, user, error_text(refusal.message))
            return
        view = mfa_modal(approval, second=approval.status == "awaiting_second")
        await client.views_open(trigger_id=body["trigger_id"], view=view)

    return on_confirm


def _cancel_handler(runtime: Runtime) -> Callable[..., Awaitable[None]]:
    async def on_cancel(ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        user = body["user"]["id"]
        channel = (body.get("channel") or {}).get("id", "")
        approval_id = _approval_id(body["actions"][0].get("value"))
        if approval_id is None:
            return
        try:
            approval = await runtime.gate.cancel(approval_id, user)
        except Refused as refusal:
            await tell_caller(client, None, channel, user, error_text(refusal.message))
            return
        notice = notice_message(
            f"Cancelled: {approval.plan.title}", f"Cancelled by <@{user}>; nothing was changed."
        )
        await _update_plan_message(client, approval, notice)

    return on_cancel


def _mfa_view_handler(runtime: Runtime) -> Callable[..., Awaitable[None]]:
    async def on_submit(
        ack: AsyncAck, body: dict[str, Any], view: dict[str, Any], client: AsyncWebClient
    ) -> None:
        user = body["user"]["id"]
        approval_id = _approval_id(view.get("private_metadata"))
        values = view.get("state", {}).get("values", {})
        code = str((values.get(TOTP_BLOCK, {}).get("value") or {}).get("value") or "")
        typed = (values.get(TYPED_WORD_BLOCK, {}).get("value") or {}).get("value")
        if approval_id is None:
            await ack(response_action="errors", errors={TOTP_BLOCK: "this form does not belong to a plan"})
            return
        try:
            confirmation = await runtime.gate.confirm(approval_id, user, code, typed)
        except Refused as refusal:
            block = TYPED_WORD_BLOCK if refusal.reason == "typed_word" else TOTP_BLOCK
            await ack(response_action="errors", errors={block: refusal.message[:150]})
            return
        approval = confirmation.approval
        if confirmation.kind == "mfa_failed":
            verification = confirmation.verification
            assert verification is not None
            await ack(response_action="errors", errors={TOTP_BLOCK: verification.message[:150]})
            if verification.just_locked and approval.channel_id:
                await incidents.post_in_thread(
                    client,
                    runtime.services.state_db,
                    approval.channel_id,
                    "mfa",
                    f":rotating_light: <@{user}> is locked out of MFA step-up after"
                    f" {verification.failures} wrong codes in a row (until"
                    f" {verification.locked_until:%H:%M:%S} UTC).",
                    user,
                )
            return
        await ack()
        if confirmation.kind == "awaiting_second":
            await _update_plan_message(client, approval, awaiting_second_message(approval))
            return
        async with runtime.in_flight.track():
            await run_approved(runtime, client, approval)

    return on_submit


async def run_approved(runtime: Runtime, client: AsyncWebClient, approval: Approval) -> None:
    """Execute an approved plan, updating its message in place at every step."""
    title = approval.plan.title
    approvers = f"<@{approval.requester}>" + (
        f" and <@{approval.second_approver}>" if approval.second_approver else ""
    )
    footer = f"`/{approval.command} {' '.join(approval.arguments)}` · approved by {approvers}"

    async def publish(steps: list[Step]) -> None:
        await _update_plan_message(client, approval, progress_message(title, steps, footer))

    await publish([])
    try:
        result = await runtime.gate.execute(approval, publish)
    except Refused as refusal:
        await _update_plan_message(
            client, approval, notice_message(f"Not run: {title}", escape(refusal.message))
        )
        if refusal.new_plan is not None and approval.channel_id:
            invocation = Invocation(
                request_id=new_request_id(),
                source="slack",
                user_id=approval.requester,
                channel_id=approval.channel_id,
            )
            await propose(runtime, client, None, refusal.new_plan, invocation)
        return
    except Exception as error:
        log.exception("execution_failed")
        text = escape(f"{type(error).__name__}: {error}"[:500])
        await _update_plan_message(client, approval, notice_message(f"Failed: {title}", text))
        return
    outcome = outcome_message(title, result, footer)
    await _update_plan_message(client, approval, outcome)
    state_db = runtime.services.state_db
    await incidents.record(
        state_db, approval.channel_id, f"/{approval.command}", outcome.text, approval.requester
    )


async def _update_plan_message(client: AsyncWebClient, approval: Approval, message: Message) -> None:
    if not approval.channel_id:
        return
    if approval.message_ts:
        await client.chat_update(
            channel=approval.channel_id, ts=approval.message_ts, text=message.text, blocks=message.blocks
        )
    else:
        await client.chat_postMessage(channel=approval.channel_id, text=message.text, blocks=message.blocks)


# --- /mfa ------------------------------------------------------------------------------------------


def _mfa_handler(runtime: Runtime) -> Callable[..., Awaitable[None]]:
    async def handle(
        ack: AsyncAck, command: dict[str, Any], client: AsyncWebClient, respond: AsyncRespond
    ) -> None:
        await ack()
        user = command.get("user_id", "")
        channel = command.get("channel_id", "")
        try:
            answer = await run_mfa_command(runtime, user, tokenize(command.get("text", "")), now=None)
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
