"""The platform's HTTP API through httpx."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from adapters.base import DependencyError

if TYPE_CHECKING:
    import httpx


class PlatformApiAdapter:
    """The 3dPot backend's HTTP API."""

    name = "api"

    def __init__(self, base_url: str, timeout: float) -> None:
        self.base_url = base_url
        self.timeout = timeout
        self._client: httpx.AsyncClient | None = None

    @property
    def client(self) -> httpx.AsyncClient:
        """Return the HTTP client, made on first use: httpx is imported only by a command that calls."""
        if self._client is None:
            import httpx

            self._client = httpx.AsyncClient(base_url=self.base_url, timeout=self.timeout)
        return self._client

    async def ping(self) -> str:
        """GET /health and expect `{"status": "healthy"}`."""
        response = await self.client.get("/health")
        try:
            body: Any = response.json()
        except ValueError:
            body = None
        status = body.get("status") if isinstance(body, dict) else None
        if response.status_code != 200 or status != "healthy":
            shown = body if body is not None else response.text[:120]
            raise DependencyError("unexpected answer", f"/health answered {response.status_code} {shown}")
        version = body.get("version")
        return f"healthy ({version})" if version else "healthy"

    async def aclose(self) -> None:
        """Close the HTTP client (none when it was never made)."""
        if self._client is not None:
            await self._client.aclose()
