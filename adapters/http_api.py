"""The platform's HTTP API through httpx."""

from __future__ import annotations

from typing import Any

import httpx

from adapters.base import DependencyError


class PlatformApiAdapter:
    """The 3dPot backend's HTTP API."""

    name = "api"

    def __init__(self, base_url: str, timeout: float) -> None:
        self.client = httpx.AsyncClient(base_url=base_url, timeout=timeout)

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
        """Close the HTTP client."""
        await self.client.aclose()
