"""One destructive operation per environment: a leased lock with a fencing token, in PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime

from adapters.postgres import PostgresAdapter
from bot.observability import get_logger

log = get_logger("chatops.locks")


class LockHeld(Exception):
    """Someone else runs a destructive operation in this environment."""

    def __init__(self, holder: str, command: str, since: datetime) -> None:
        super().__init__(f"{holder} is running {command} since {since:%H:%M:%S} UTC")
        self.holder = holder
        self.command = command
        self.since = since


class LockLost(Exception):
    """Our lease ran out and another holder took the lock: stop before changing anything else."""


@dataclass(frozen=True)
class Lease:
    """Proof of holding the lock; the token is checked before every step."""

    environment: str
    token: int
    holder: str
    command: str


class OperationLock:
    """The lock over destructive operations in one environment, shared by every replica."""

    def __init__(self, state_db: PostgresAdapter, environment: str, lease_seconds: float) -> None:
        self.state_db = state_db
        self.environment = environment
        self.lease_seconds = lease_seconds

    async def acquire(self, holder: str, command: str, approval_id: uuid.UUID | None = None) -> Lease:
        """Take the lock, or take it over if the previous lease ran out; else raise LockHeld."""
        async with self.state_db.connection() as conn:
            token = await conn.fetchval(
                """INSERT INTO op_locks (environment, fencing_token, approval_id, holder, command,
                       acquired_at, lease_until)
                   VALUES ($1, nextval('op_lock_fencing'), $2, $3, $4, now(),
                       now() + make_interval(secs => $5))
                   ON CONFLICT (environment) DO UPDATE SET
                       fencing_token = EXCLUDED.fencing_token, approval_id = EXCLUDED.approval_id,
                       holder = EXCLUDED.holder, command = EXCLUDED.command,
                       acquired_at = EXCLUDED.acquired_at, lease_until = EXCLUDED.lease_until
                   WHERE op_locks.lease_until < now()
                   RETURNING fencing_token""",
                self.environment,
                approval_id,
                holder,
                command,
                self.lease_seconds,
            )
            if token is None:
                row = await conn.fetchrow(
                    "SELECT holder, command, acquired_at FROM op_locks WHERE environment = $1",
                    self.environment,
                )
                if row is None:  # released between the two statements: try once more
                    return await self.acquire(holder, command, approval_id)
                raise LockHeld(row["holder"], row["command"], row["acquired_at"])
        return Lease(self.environment, int(token), holder, command)

    async def renew(self, lease: Lease) -> None:
        """Extend the lease; raise LockLost if the token is no longer the current one."""
        async with self.state_db.connection() as conn:
            result = await conn.execute(
                """UPDATE op_locks SET lease_until = now() + make_interval(secs => $3)
                   WHERE environment = $1 AND fencing_token = $2""",
                lease.environment,
                lease.token,
                self.lease_seconds,
            )
        if not str(result).endswith(" 1"):
            raise LockLost(f"the {lease.environment} lock was taken over; stopping")

    async def release(self, lease: Lease) -> None:
        """Release the lock if we still hold it."""
        async with self.state_db.connection() as conn:
            await conn.execute(
                "DELETE FROM op_locks WHERE environment = $1 AND fencing_token = $2",
                lease.environment,
                lease.token,
            )

    @contextlib.asynccontextmanager
    async def held(
        self, holder: str, command: str, approval_id: uuid.UUID | None = None
    ) -> AsyncIterator[Lease]:
        """Hold the lock for a block, renewing the lease in the background, then release it."""
        lease = await self.acquire(holder, command, approval_id)
        renewer = asyncio.create_task(self._keep_renewing(lease))
        try:
            yield lease
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await renewer
            try:
                await self.release(lease)
            except Exception as error:  # the lease runs out by itself; never hide the real outcome
                log.warning("lock_release_failed", error=type(error).__name__)

    async def _keep_renewing(self, lease: Lease) -> None:
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            try:
                await self.renew(lease)
            except LockLost:
                log.error("lock_lost", environment=lease.environment, token=lease.token)
                return
            except Exception as error:
                log.warning("lock_renew_failed", error=type(error).__name__)
