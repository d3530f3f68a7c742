"""The gate in Slack: the plan posted with Confirm and Cancel, the MFA modal, progress shown in place."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.async_app import AsyncAck
from slack_sdk.web.async_client import AsyncWebClient

from bot.dispatch import new_request_id
from bot.gate.gate import Approval, Refused
from bot.invocation import Invocation
from bot.observability import get_logger
from bot.render.common import Message, error_text, escape
from bot.render.gate import (
    TOTP_BLOCK,
    TYPED_WORD_BLOCK,
    awaiting_second_message,
    execution_footer,
    mfa_modal,
    notice_message,
    outcome_message,
    plan_message,
    progress_message,
)
from bot.runtime import Runtime
from bot.slack import incidents
from bot.slack.posting import Responder
from bot.slack.reply import tell_caller
from commands.destructive import Proposal, Step

log = get_logger("chatops.slack.gate")


async def propose(
    runtime: Runtime,
    client: AsyncWebClient,
    respond: Responder | None,
    proposal: Proposal,
    invocation: Invocation,
    thread_ts: str | None = None,
) -> Approval | None:
    """Record a plan with the gate and post it with Confirm and Cancel buttons (in `thread_ts` if given)."""
    channel = invocation.channel_id or ""
    try:
        approval = await runtime.gate.propose(proposal, invocation)
    except Refused as refusal:
        await tell_caller(client, respond, channel, invocation.user_id or "", error_text(refusal.message))
        return None
    message = plan_message(approval)
    incident_thread = await incidents.record(
        runtime.services.state_db, channel, f"/{approval.command}", message.text, invocation.user_id
    )
    thread_ts = thread_ts or incident_thread
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


def confirm_handler(runtime: Runtime) -> Callable[..., Awaitable[None]]:
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


def cancel_handler(runtime: Runtime) -> Callable[..., Awaitable[None]]:
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


def mfa_view_handler(runtime: Runtime) -> Callable[..., Awaitable[None]]:
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
    footer = execution_footer(approval)

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
