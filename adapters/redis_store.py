"""Redis through redis.asyncio, with socket timeouts on every call."""

from __future__ import annotations

import redis.asyncio as aioredis

from adapters.base import DependencyError


class RedisAdapter:
    """The platform's Redis (rate limits, sessions) and the bot's shared locks."""

    name = "redis"

    def __init__(self, url: str, timeout: float) -> None:
        self.client: aioredis.Redis = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            health_check_interval=30,
            decode_responses=True,
        )

    async def ping(self) -> str:
        """Send PING and expect PONG."""
        answer = await self.client.ping()
        if answer is not True:
            raise DependencyError("unexpected answer", f"PING returned {answer!r}")
        return "PONG"

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self.client.aclose()
