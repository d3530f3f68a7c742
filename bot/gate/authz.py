"""Who may do what: roles from configuration, by Slack user id or user group, and channels."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Literal

from slack_sdk.errors import SlackApiError

from bot.config import Settings
from bot.observability import get_logger

if TYPE_CHECKING:
    from slack_sdk.web.async_client import AsyncWebClient

log = get_logger("chatops.authz")

Role = Literal["viewer", "responder", "operator", "mfa_admin"]
EVERYONE = "*"
# The demo's operator (scripts/demo.sh types its codes): it holds no role anywhere but the sandbox.
DEMO_OPERATOR = "U0DEMO0001"
SANDBOX_ENVIRONMENT = "sandbox"
_GROUP_CACHE_SECONDS = 60.0


class Authorizer:
    """Answer whether a user holds a role, resolving Slack user groups (cached for a minute)."""

    def __init__(self, settings: Settings, slack: AsyncWebClient | None) -> None:
        self.members: dict[Role, list[str]] = {
            "viewer": settings.viewers,
            "responder": settings.responders,
            "operator": settings.operators,
            "mfa_admin": settings.mfa_admins,
        }
        self.destructive_channels = settings.destructive_channels
        self.environment = settings.environment
        self.slack = slack
        self._groups: dict[str, tuple[float, frozenset[str]]] = {}

    async def allowed(self, user_id: str | None, role: Role) -> bool:
        """Return whether the user holds the role (directly or through a user group)."""
        if user_id == DEMO_OPERATOR and self.environment != SANDBOX_ENVIRONMENT:
            return False  # whose codes a script knows must never act on a real platform
        entries = self.members[role]
        if EVERYONE in entries:
            return True
        if not user_id:
            return False
        if user_id in entries:
            return True
        for entry in entries:
            # Slack user group ids start with S; membership is asked of Slack, not assumed.
            if entry.startswith("S") and user_id in await self._group_members(entry):
                return True
        return False

    def channel_allows_destructive(self, channel_id: str | None) -> bool:
        """Return whether destructive commands may run in this channel (None: the terminal)."""
        if channel_id is None:
            return True
        return EVERYONE in self.destructive_channels or channel_id in self.destructive_channels

    async def _group_members(self, group_id: str) -> frozenset[str]:
        cached = self._groups.get(group_id)
        if cached is not None and time.monotonic() - cached[0] < _GROUP_CACHE_SECONDS:
            return cached[1]
        if self.slack is None:
            return frozenset()
        try:
            answer = await self.slack.usergroups_users_list(usergroup=group_id)
        except SlackApiError as error:
            # Fail closed: a group we cannot read grants nothing.
            log.warning("usergroup_unreadable", usergroup=group_id, error=str(error.response.get("error")))
            return frozenset()
        users: list[str] = list(answer.get("users", []))
        members = frozenset(str(user) for user in users)
        self._groups[group_id] = (time.monotonic(), members)
        return members
