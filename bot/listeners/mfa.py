"""/mfa in Slack: answered to the caller only; the seed shown in a modal; a reset asks the admin's code."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncRespond
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.gate.mfa_command import MFA_SUMMARY, MFA_USAGE, MfaAnswer
from bot.observability import get_logger
from bot.registry import asks_for_help
from bot.render.common import error_text, help_text, mention
from bot.render.mfa import CODE_BLOCK, enroll_modal, enrollment_message, reset_metadata, reset_modal
from bot.runtime import Runtime
from bot.slack.errors import slack_error_code
from bot.slack.gate_notices import announce_reset
from bot.slack.incidents import user_resolver
from bot.slack.reply import tell_caller
from commands.base import UsageError, tokenize
from commands.incident import is_user_id

log = get_logger("chatops.slack.mfa")


def mfa_handler(runtime: Runtime) -> Callable[..., Awaitable[None]]:
    """Build the /mfa listener."""

    async def handle(
        ack: AsyncAck, command: dict[str, Any], client: AsyncWebClient, respond: AsyncRespond
    ) -> None:
        await ack()
        user = command.get("user_id", "")
        channel = command.get("channel_id", "")
        if asks_for_help(str(command.get("text", "")).split()):
            await tell_caller(client, respond, channel, user, help_text("mfa", MFA_SUMMARY, MFA_USAGE))
            return
        try:
            answer = await runtime.mfa_command.run(
                user, tokenize(command.get("text", "")), resolve_user=user_resolver(client)
            )
        except UsageError as error:
            await tell_caller(
                client, respond, channel, user, error_text(error.message, error.usage or MFA_USAGE)
            )
            return
        except Exception as error:
            log.exception("mfa_failed")
            await tell_caller(
                client, respond, channel, user, error_text(f"/mfa failed: {type(error).__name__}")
            )
            return
        trigger = str(command.get("trigger_id") or "")
        if answer.enrollment is not None:
            await _show_enrollment(client, respond, channel, user, trigger, answer)
        elif answer.reset_target is not None:
            await _ask_reset_code(client, respond, channel, user, trigger, answer)
        else:
            await tell_caller(client, respond, channel, user, answer.text)

    return handle


async def _show_enrollment(
    client: AsyncWebClient, respond: AsyncRespond, channel: str, user: str, trigger: str, answer: MfaAnswer
) -> None:
    """Open the enrollment modal; where Slack refuses, show it ephemerally (still kept nowhere)."""
    assert answer.enrollment is not None
    try:
        await client.views_open(trigger_id=trigger, view=enroll_modal(answer.enrollment, answer.text))
        return
    except SlackApiError as error:
        log.warning("enroll_modal_not_opened", error=slack_error_code(error))
    message = enrollment_message(answer.enrollment, answer.text)
    try:
        await client.chat_postEphemeral(channel=channel, user=user, text=message.text, blocks=message.blocks)
    except SlackApiError:
        await respond(text=message.text, blocks=message.blocks, response_type="ephemeral")


async def _ask_reset_code(
    client: AsyncWebClient, respond: AsyncRespond, channel: str, user: str, trigger: str, answer: MfaAnswer
) -> None:
    assert answer.reset_target is not None
    try:
        await client.views_open(trigger_id=trigger, view=reset_modal(answer.reset_target, channel))
    except SlackApiError as error:
        text = f"could not open the form that asks your code ({slack_error_code(error)}); try again"
        await tell_caller(client, respond, channel, user, error_text(text))


def _code(view: dict[str, Any]) -> str:
    values = view.get("state", {}).get("values", {})
    return str((values.get(CODE_BLOCK, {}).get("value") or {}).get("value") or "")


def enroll_view_handler(runtime: Runtime) -> Callable[..., Awaitable[None]]:
    """Build the listener of the enrollment modal: its code confirms the enrollment."""

    async def on_submit(ack: AsyncAck, body: dict[str, Any], view: dict[str, Any]) -> None:
        user = body["user"]["id"]
        try:
            answer = await runtime.mfa_command.confirm(user, _code(view))
        except UsageError as error:
            await ack(response_action="errors", errors={CODE_BLOCK: error.message[:150]})
            return
        if not answer.ok:
            await ack(response_action="errors", errors={CODE_BLOCK: answer.text[:150]})
            return
        await ack(response_action="update", view=_done_view(answer.text))

    return on_submit


def reset_view_handler(runtime: Runtime) -> Callable[..., Awaitable[None]]:
    """Build the listener of the reset modal: the admin's own code, then the reset and its notices."""

    async def on_submit(
        ack: AsyncAck, body: dict[str, Any], view: dict[str, Any], client: AsyncWebClient
    ) -> None:
        admin = body["user"]["id"]
        found = reset_metadata(str(view.get("private_metadata") or ""))
        if found is None or not is_user_id(found[0]):
            await ack(response_action="errors", errors={CODE_BLOCK: "this form does not belong to a reset"})
            return
        target, channel = found
        try:
            done = await runtime.mfa_command.reset(admin, target, _code(view))
        except UsageError as error:
            await ack(response_action="errors", errors={CODE_BLOCK: error.message[:150]})
            return
        outcome = (
            f"The MFA enrollment of {mention(target)} was removed."
            if done.removed
            else f"{mention(target)} was not enrolled."
        )
        await ack(response_action="update", view=_done_view(outcome))
        problems = await announce_reset(client, runtime.services.state_db, done, admin, channel or None)
        for problem in problems:
            log.warning("reset_notice_failed", problem=problem)

    return on_submit


def _done_view(text: str) -> dict[str, Any]:
    """Replace a modal by its outcome (nothing of the seed stays on screen)."""
    return {
        "type": "modal",
        "title": {"type": "plain_text", "text": "MFA"},
        "close": {"type": "plain_text", "text": "Close"},
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}],
    }
