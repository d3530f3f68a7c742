"""Accept each request from Slack once, across replicas: a replay or a retry is answered, not run.

Receipts live in the bot's own database, shared by every replica. Requests arriving together
share one INSERT (a batch per round trip), so a burst of commands costs a few round trips, not
one each, on the path that must acknowledge within Slack's three seconds.
"""

from __future__ import annotations

import asyncio
from typing import Any

from adapters.postgres import PostgresAdapter
from bot.observability import get_logger

log = get_logger("chatops.replay")

# Receipts older than this are removed; Slack refuses to sign anything older than five minutes and
# retries within the hour.
KEEP_SECONDS = 3600
_CLEAN_EVERY = 500
# What the caller hears when a command that would change something cannot be checked.
UNAVAILABLE_ANSWER = (
    "The bot cannot tell whether this request was already run (its own database does not answer),"
    " so it changed nothing; commands that only read still work. From a terminal: `chatops <command>`."
)
_INSERT = """INSERT INTO request_receipts (key) SELECT DISTINCT unnest($1::text[])
             ON CONFLICT (key) DO NOTHING RETURNING key"""


class GuardUnavailable(Exception):
    """The receipts cannot be read or written: whether this request is new cannot be told."""


class ReplayGuard:
    """One receipt per accepted request, by a name a replay of it shares (see slack_requests.once_key)."""

    def __init__(self, db: PostgresAdapter, timeout: float = 1.0) -> None:
        self.db = db
        self.timeout = timeout
        self._pending: list[tuple[str, asyncio.Future[bool]]] = []
        self._writer: asyncio.Task[None] | None = None
        self._accepted = 0
        self._cleaning: asyncio.Task[Any] | None = None

    async def first_time(self, key: str) -> bool:
        """Record `key`; return False when it was recorded before (a replay, a retry, a redelivery)."""
        answer: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append((key, answer))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write())
        try:
            return await asyncio.wait_for(asyncio.shield(answer), timeout=self.timeout)
        except TimeoutError:
            raise GuardUnavailable(f"no answer from the state database within {self.timeout:g} s") from None

    async def _write(self) -> None:
        """Write the pending receipts a batch at a time until none is left."""
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                async with self.db.connection() as conn:
                    inserted = {row["key"] for row in await conn.fetch(_INSERT, [key for key, _ in batch])}
            except Exception as error:
                failure = GuardUnavailable(f"{type(error).__name__}: {error}"[:200])
                for _, answer in batch:
                    if not answer.done():
                        answer.set_exception(failure)
                        answer.exception()  # retrieved here: a caller that timed out never will
                continue
            for key, answer in batch:
                # A key twice in one batch (a replay racing its original): only the first is new.
                new = key in inserted
                inserted.discard(key)
                if not answer.done():
                    answer.set_result(new)
            self._count(len(batch))

    def _count(self, accepted: int) -> None:
        before, self._accepted = self._accepted, self._accepted + accepted
        if before // _CLEAN_EVERY != self._accepted // _CLEAN_EVERY and (
            self._cleaning is None or self._cleaning.done()
        ):
            self._cleaning = asyncio.create_task(self._clean())

    async def _clean(self) -> None:
        try:
            async with self.db.connection() as conn:
                await conn.execute(
                    "DELETE FROM request_receipts WHERE received_at < now() - make_interval(secs => $1)",
                    float(KEEP_SECONDS),
                )
        except Exception as error:  # the next round tries again; receipts only grow meanwhile
            log.warning("receipts_not_cleaned", error=type(error).__name__)
