"""GitHub's REST API through httpx (RCA issues)."""

from __future__ import annotations

import httpx

from adapters.base import DependencyError


class GitHubAdapter:
    """The repository where RCA drafts are filed as issues."""

    name = "github"

    def __init__(self, api_url: str, repo: str, token: str, timeout: float) -> None:
        self.repo = repo
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

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self.client.aclose()
