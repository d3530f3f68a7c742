"""Who is in a channel, as Slack says: an incident answers in its own channel, and to its members.

From Slack, `/incident inc=N`, `/rca N` and the RCA File button act on an incident only in the
channel it belongs to, or for a caller who is a member of that channel (`conversations.members`,
scopes channels:read / groups:read). Whatever Slack does not confirm (a private channel the bot is
not in, an error, a channel too large to page through) is refused: membership is never assumed.
The terminal names its channel and is not asked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from slack_sdk.errors import SlackApiError

from bot.invocation import Invocation
from bot.observability import get_logger
from bot.slack.errors import slack_error_code
from commands.incident import ChannelAccess

if TYPE_CHECKING:
    # The Slack SDK's async client brings aiohttp: the terminal, without Slack, never loads it.
    from slack_sdk.web.async_client import AsyncWebClient

log = get_logger("chatops.membership")

# conversations.members pages hold at most 1000 ids ("fewer than the requested number ... may be
# returned"); a channel bigger than this many pages is refused rather than read for ever.
PAGE_SIZE = 1000
MAX_PAGES = 10


async def is_member(client: AsyncWebClient | None, channel_id: str, user_id: str | None) -> bool:
    """Return whether Slack lists the user among the channel's members (False when it cannot say)."""
    if client is None or not user_id:
        return False
    cursor: str | None = None
    for _ in range(MAX_PAGES):
        try:
            answer = await client.conversations_members(channel=channel_id, limit=PAGE_SIZE, cursor=cursor)
        except SlackApiError as error:
            # Fail closed: a channel the bot cannot see grants nothing.
            log.warning("membership_unknown", channel=channel_id, error=slack_error_code(error))
            return False
        if user_id in (answer.get("members") or []):
            return True
        cursor = str((answer.get("response_metadata") or {}).get("next_cursor") or "") or None
        if cursor is None:
            return False
    log.warning("membership_unknown", channel=channel_id, error="too_many_members")
    return False


def channel_access(client: AsyncWebClient | None, invocation: Invocation) -> ChannelAccess | None:
    """Return who may act in which channel for this invocation: None (every channel) at the terminal."""
    if invocation.source == "cli":
        return None

    async def access(channel_id: str) -> bool:
        if channel_id == invocation.channel_id:
            return True
        return await is_member(client, channel_id, invocation.user_id)

    return access
