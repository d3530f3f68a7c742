"""What the gate tells Slack besides a command's answer: a plan's message changed in place, a reset."""

from __future__ import annotations

from typing import TYPE_CHECKING

from slack_sdk.errors import SlackApiError

from adapters.postgres import PostgresAdapter
from bot.gate.gate import Approval
from bot.gate.mfa_command import ResetDone
from bot.observability import get_logger
from bot.render.common import Message, mention
from bot.render.gate import notice_message
from bot.slack import incidents
from bot.slack.errors import slack_error_code

if TYPE_CHECKING:
    # The Slack SDK's async client brings aiohttp: the terminal, without Slack, never loads it.
    from slack_sdk.web.async_client import AsyncWebClient

log = get_logger("chatops.slack.gate")


async def update_plan_message(client: AsyncWebClient, approval: Approval, message: Message) -> None:
    """Replace a plan's message in place (or post one when it has none)."""
    if not approval.channel_id:
        return
    if approval.message_ts:
        await client.chat_update(
            channel=approval.channel_id, ts=approval.message_ts, text=message.text, blocks=message.blocks
        )
    else:
        await client.chat_postMessage(channel=approval.channel_id, text=message.text, blocks=message.blocks)


async def announce_reset(
    client: AsyncWebClient, state_db: PostgresAdapter, done: ResetDone, admin: str, channel: str | None
) -> list[str]:
    """Tell the user whose MFA was reset (by DM), the channel, and each cancelled plan; return problems."""
    problems: list[str] = []
    who, by = mention(done.target), mention(admin)
    try:
        dm = await client.conversations_open(users=done.target)
        await client.chat_postMessage(
            channel=str(dm["channel"]["id"]),
            text=(
                f"Your MFA enrollment was reset by {by}. Run `/mfa enroll` to enroll again. If you did"
                " not ask for this, tell your security team now."
            ),
        )
    except SlackApiError as error:
        problems.append(f"could not tell {who} by DM: {slack_error_code(error)}")
    plans = f"; {len(done.cancelled)} plan(s) of theirs cancelled" if done.cancelled else ""
    if channel:
        text = f":warning: {by} reset the MFA enrollment of {who}{plans}."
        if await incidents.post_in_thread(client, state_db, channel, "mfa", text, admin) is None:
            problems.append("could not say so in this channel")
    for approval in done.cancelled:
        notice = notice_message(
            f"Cancelled: {approval.plan.title}",
            f"The requester's MFA enrollment was reset by {by}; nothing was changed.",
        )
        try:
            await update_plan_message(client, approval, notice)
        except SlackApiError as error:
            log.warning(
                "cancelled_plan_not_updated", approval=str(approval.id), error=slack_error_code(error)
            )
    return problems
