"""Redis through redis.asyncio, with socket timeouts on every call."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from adapters.base import ClockReading, DependencyError

if TYPE_CHECKING:
    import redis.asyncio as aioredis


class RedisAdapter:
    """The platform's Redis (rate limits, sessions) and the bot's shared locks."""

    name = "redis"

    def __init__(self, url: str, timeout: float) -> None:
        self.url = url
        self.timeout = timeout
        self._client: aioredis.Redis | None = None

    @property
    def client(self) -> aioredis.Redis:
        """Return the client, made on first use: redis-py (a tenth of a second, 15 MB) loads only then.

        Used from the event loop only, so no lock: making it opens no connection.
        """
        if self._client is None:
            import redis.asyncio as aioredis

            self._client = aioredis.Redis.from_url(
                self.url,
                socket_timeout=self.timeout,
                socket_connect_timeout=self.timeout,
                health_check_interval=30,
                decode_responses=True,
            )
        return self._client

    async def ping(self) -> str:
        """Send PING and expect PONG."""
        answer = await self.client.ping()
        if answer is not True:
            raise DependencyError("unexpected answer", f"PING returned {answer!r}")
        return "PONG"

    async def aclose(self) -> None:
        """Close the connection pool (none when the client was never made)."""
        if self._client is not None:
            await self._client.aclose()

    async def info_snapshot(self) -> dict[str, Any]:
        """Return INFO's memory, clients and stats sections merged (used_memory, maxmemory, ...)."""
        answer = await self.client.info("memory", "clients", "stats")
        if not isinstance(answer, dict):
            raise DependencyError("unexpected answer", f"INFO returned {type(answer).__name__}")
        # Redis 7 answers CONFIG-like fields (maxclients) inside INFO; older ones may not.
        if "maxclients" not in answer:
            config = await self.client.config_get("maxclients")
            if isinstance(config, dict) and "maxclients" in config:
                answer["maxclients"] = config["maxclients"]
        return dict(answer)

    async def server_clock(self, clock: Callable[[], datetime]) -> ClockReading:
        """Read Redis's TIME with the local clock read just before and after."""
        # Connect first, so that the time measured around TIME is one round trip, not a handshake.
        await self.client.ping()
        sent = clock()
        seconds, micros = await self.client.time()
        received = clock()
        server = datetime.fromtimestamp(int(seconds) + int(micros) / 1_000_000, UTC)
        return ClockReading(server=server, sent=sent, received=received)
