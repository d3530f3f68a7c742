"""Slack's Web API as a dependency the bot can ping, and the one client every part of the bot shares."""

from __future__ import annotations

from collections.abc import Callable

from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState
from slack_sdk.web.async_client import AsyncWebClient

from adapters.base import DependencyError

# Every Web API call gives up after this long (the SDK's own default is 30 s).
CLIENT_TIMEOUT_SECONDS = 10


class CountedRateLimitRetry(AsyncRateLimitErrorRetryHandler):
    """Retry a 429 after its Retry-After, telling `on_rate_limited` which method was limited."""

    def __init__(self, on_rate_limited: Callable[[str], None], max_retry_count: int = 3) -> None:
        super().__init__(max_retry_count=max_retry_count)
        self.on_rate_limited = on_rate_limited

    async def prepare_for_next_attempt_async(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> None:
        """Count the 429, then wait as Slack asked."""
        self.on_rate_limited(request.url.rsplit("/", 1)[-1])
        await super().prepare_for_next_attempt_async(
            state=state, request=request, response=response, error=error
        )


def install_rate_limit_retry(client: AsyncWebClient, on_rate_limited: Callable[[str], None]) -> None:
    """Make the client wait and retry when Slack answers 429."""
    client.retry_handlers.append(CountedRateLimitRetry(on_rate_limited))


def build_client(
    token: str | None, base_url: str, on_rate_limited: Callable[[str], None] | None = None
) -> AsyncWebClient:
    """Build a Web API client for `base_url` (a fake in tests); retry 429s when told how to count them."""
    client = AsyncWebClient(token=token, base_url=base_url, timeout=CLIENT_TIMEOUT_SECONDS)
    if on_rate_limited is not None:
        install_rate_limit_retry(client, on_rate_limited)
    return client


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
