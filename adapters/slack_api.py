"""Slack's Web API as a dependency the bot can ping."""

from __future__ import annotations

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from adapters.base import DependencyError


class SlackAdapter:
    """The Slack workspace the bot posts to."""

    name = "slack"

    def __init__(self, client: AsyncWebClient) -> None:
        self.client = client

    async def ping(self) -> str:
        """Call auth.test and name the team the token belongs to."""
        try:
            answer = await self.client.auth_test()
        except SlackApiError as error:
            code = error.response.get("error", "") if error.response else ""
            if code in {"invalid_auth", "not_authed", "account_inactive", "token_revoked"}:
                raise DependencyError("auth failed", f"auth.test: {code}") from None
            raise DependencyError("unexpected answer", f"auth.test: {code or error}") from None
        return f"team {answer.get('team', '?')} as {answer.get('user', '?')}"
