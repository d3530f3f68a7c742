"""GitHub's REST API through httpx (RCA issues)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict

from adapters.base import DependencyError

GitHubReason = Literal[
    "auth failed", "forbidden", "not found", "gone", "invalid", "rate limited", "unavailable", "timeout"
]
# Attempts of one call when GitHub asks us to wait (secondary rate limits) and the wait is short.
MAX_ATTEMPTS = 3
# GitHub's advice when a secondary rate limit names no wait: at least a minute.
DEFAULT_SECONDARY_WAIT = 60.0


class GitHubError(Exception):
    """GitHub refused or failed a call; `definite` says whether it surely changed nothing."""

    def __init__(
        self,
        reason: GitHubReason,
        message: str,
        status: int | None = None,
        retry_after: float | None = None,
        definite: bool = True,
    ) -> None:
        super().__init__(message)
        self.reason: GitHubReason = reason
        self.message = message
        self.status = status
        self.retry_after = retry_after
        self.definite = definite


class Issue(BaseModel):
    """The fields of a GitHub issue the bot uses."""

    model_config = ConfigDict(defer_build=True)  # built when first used, not at import

    number: int
    html_url: str
    title: str
    body: str | None = None
    state: str
    labels: list[str]


def _issue(data: dict[str, Any]) -> Issue:
    labels = [item if isinstance(item, str) else str(item.get("name", "")) for item in data.get("labels", [])]
    return Issue(
        number=int(data["number"]),
        html_url=str(data["html_url"]),
        title=str(data["title"]),
        body=data.get("body"),
        state=str(data["state"]),
        labels=labels,
    )


class GitHubAdapter:
    """The repository where RCA drafts are filed as issues."""

    name = "github"

    def __init__(
        self,
        api_url: str,
        repo: str,
        token: str,
        timeout: float,
        max_retry_wait: float = 10.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.repo = repo
        self.max_retry_wait = max_retry_wait
        self._sleep = sleep
        self.client = httpx.AsyncClient(
            base_url=api_url.rstrip("/"),
            timeout=timeout,
            headers={
                "Authorization": f"Bearer {token}",
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": "2022-11-28",
                "User-Agent": "chatops-bot",
            },
        )

    async def ping(self) -> str:
        """Read the repository to prove the token can see it."""
        response = await self.client.get(f"/repos/{self.repo}")
        if response.status_code in (401, 403):
            raise DependencyError("auth failed", f"GitHub answered {response.status_code}")
        if response.status_code == 404:
            raise DependencyError("not found", f"repository {self.repo} not found")
        if response.status_code != 200:
            raise DependencyError("unexpected answer", f"GitHub answered {response.status_code}")
        return f"repository {self.repo} reachable"

    async def create_issue(self, title: str, body: str, labels: list[str]) -> Issue:
        """Open an issue (not idempotent: a failure that is not `definite` may have created it)."""
        data = await self._call(
            "POST", f"/repos/{self.repo}/issues", {"title": title, "body": body, "labels": labels}
        )
        return _issue(data)

    async def update_issue(
        self, number: int, title: str, body: str, labels: list[str] | None = None
    ) -> Issue:
        """Replace an issue's title and body, and its labels when given (else they stay as they are)."""
        fields: dict[str, Any] = {"title": title, "body": body}
        if labels is not None:
            fields["labels"] = labels
        data = await self._call("PATCH", f"/repos/{self.repo}/issues/{number}", fields)
        return _issue(data)

    async def get_issue(self, number: int) -> Issue:
        """Read one issue."""
        return _issue(await self._call("GET", f"/repos/{self.repo}/issues/{number}"))

    async def find_issue(self, marker: str, since: datetime) -> Issue | None:
        """Find the issue whose body carries `marker`, among those updated since `since`."""
        params = {
            "state": "all",
            "sort": "created",
            "direction": "desc",
            "since": since.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "per_page": "100",
        }
        found = await self._call("GET", f"/repos/{self.repo}/issues", params=params)
        for item in found if isinstance(found, list) else []:
            if "pull_request" not in item and marker in (item.get("body") or ""):
                return _issue(item)
        return None

    async def _call(
        self, method: str, path: str, body: dict[str, Any] | None = None, params: dict[str, str] | None = None
    ) -> Any:
        """Make one call, waiting out short rate limits; raise GitHubError with a reason otherwise."""
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                response = await self.client.request(method, path, json=body, params=params)
            except httpx.TimeoutException:
                # A write may have reached GitHub: only a GET surely changed nothing.
                raise GitHubError(
                    "timeout", "GitHub did not answer in time", definite=method == "GET"
                ) from None
            except httpx.HTTPError as error:
                sent = not isinstance(error, httpx.ConnectError)
                raise GitHubError(
                    "unavailable",
                    f"cannot reach GitHub: {type(error).__name__}",
                    definite=method == "GET" or not sent,
                ) from None
            if response.status_code < 300:
                return response.json()
            failure = _failure(response)
            if failure.reason == "rate limited" and attempt < MAX_ATTEMPTS:
                wait = failure.retry_after or 0.0
                if wait <= self.max_retry_wait:
                    await self._sleep(wait)
                    continue
            raise failure
        raise AssertionError("unreachable")  # the loop returns or raises

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self.client.aclose()


def _failure(response: httpx.Response) -> GitHubError:
    """Name what a non-2xx answer means, with GitHub's own message."""
    status = response.status_code
    try:
        data = response.json()
    except ValueError:
        data = {}
    message = (
        str(data.get("message") or response.reason_phrase or status)
        if isinstance(data, dict)
        else str(status)
    )
    if isinstance(data, dict) and data.get("errors"):
        details = "; ".join(
            str(item.get("message") or f"{item.get('field', '?')} {item.get('code', '')}".strip())
            for item in data["errors"]
            if isinstance(item, dict)
        )
        message = f"{message}: {details}" if details else message
    retry_after = _retry_after(response)
    if status == 429 or (status == 403 and retry_after is not None):
        return GitHubError("rate limited", message, status, retry_after or DEFAULT_SECONDARY_WAIT)
    if status == 403 and "rate limit" in message.lower():
        return GitHubError("rate limited", message, status, DEFAULT_SECONDARY_WAIT)
    reasons: dict[int, GitHubReason] = {
        401: "auth failed",
        403: "forbidden",
        404: "not found",
        410: "gone",
        422: "invalid",
    }
    if status in reasons:
        return GitHubError(reasons[status], message, status)
    # A 5xx may come after GitHub did the work: not definite.
    return GitHubError("unavailable", f"GitHub answered {status}: {message}", status, definite=status < 500)


def _retry_after(response: httpx.Response) -> float | None:
    """Read how long GitHub asks us to wait: retry-after, or the primary limit's reset time."""
    header = response.headers.get("retry-after")
    if header is not None:
        try:
            return max(float(header), 0.0)
        except ValueError:
            return None
    if response.headers.get("x-ratelimit-remaining") == "0" and response.headers.get("x-ratelimit-reset"):
        try:
            return max(float(response.headers["x-ratelimit-reset"]) - time.time(), 0.0)
        except ValueError:
            return None
    return None
