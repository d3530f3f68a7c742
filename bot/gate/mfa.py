"""TOTP step-up (RFC 6238): enrollment, verification with replay and lockout rules, encrypted seeds."""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

import asyncpg
import pyotp
from cryptography.fernet import Fernet, InvalidToken

from adapters.postgres import PostgresAdapter

STEP_SECONDS = 30
DIGITS = 6
# ±1 step and no more (NIST SP 800-63B allows for clock drift, not for longer-lived codes).
TOLERANCE_STEPS = 1
MAX_FAILURES = 5
BASE_LOCKOUT = timedelta(seconds=30)
MAX_LOCKOUT = timedelta(hours=1)
ISSUER = "chatops"

# An enrollment not confirmed within this long is dropped: its seed was shown once and may linger
# on a screen, so it must not stay usable.
ENROLLMENT_TTL = timedelta(minutes=10)

Outcome = Literal["accepted", "wrong_code", "replayed", "locked_out", "not_enrolled", "malformed", "expired"]


class MfaUnavailable(Exception):
    """MFA cannot work: no encryption key is configured."""


@dataclass(frozen=True)
class Verification:
    """The answer to one code."""

    outcome: Outcome
    message: str
    failures: int = 0
    locked_until: datetime | None = None
    just_locked: bool = False

    @property
    def accepted(self) -> bool:
        """Return whether the code was accepted."""
        return self.outcome == "accepted"


@dataclass(frozen=True)
class Enrollment:
    """A new TOTP seed, shown once to its owner."""

    user_id: str
    secret: str
    uri: str


@dataclass(frozen=True)
class MfaStatus:
    """What the bot knows of one user's enrollment."""

    user_id: str
    enrolled: bool
    confirmed: bool
    consecutive_failures: int
    locked_until: datetime | None


def _fernet(secret_key: str) -> Fernet:
    # Any length of key works: it is stretched to the 32 bytes Fernet needs.
    digest = hashlib.sha256(b"chatops-mfa-v1" + secret_key.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


_SEED_FORMAT = b"chatops-mfa-seed-v2"


def _bind(user_id: str, secret: str) -> bytes:
    """Seal a seed together with its owner: copied into another user's row, it is refused."""
    return b"\n".join([_SEED_FORMAT, user_id.encode(), secret.encode()])


def _unbind(user_id: str, plain: bytes) -> str:
    """Return the seed if it was sealed for `user_id`; raise MfaUnavailable otherwise."""
    parts = plain.split(b"\n")
    if len(parts) != 3 or parts[0] != _SEED_FORMAT:
        raise MfaUnavailable(
            "this enrollment predates seeds bound to their user: ask an MFA administrator to reset it"
        )
    if parts[1].decode() != user_id:
        raise MfaUnavailable(
            "the TOTP seed stored for you belongs to another user (copied in the database?):"
            " refused; ask an MFA administrator to reset your enrollment"
        )
    return parts[2].decode()


def time_step(at: datetime) -> int:
    """Return the TOTP time step of an instant."""
    return int(at.timestamp()) // STEP_SECONDS


def code_at(secret: str, at: datetime) -> str:
    """Return the code a correct authenticator shows at an instant (tests and enrollment help)."""
    return pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS).at(at)


def matching_step(secret: str, code: str, at: datetime) -> int | None:
    """Return the time step within tolerance whose code equals `code`, or None."""
    hotp = pyotp.HOTP(secret, digits=DIGITS)
    current = time_step(at)
    for step in range(current - TOLERANCE_STEPS, current + TOLERANCE_STEPS + 1):
        if hmac.compare_digest(hotp.at(step), code):
            return step
    return None


def lockout_for(failures: int) -> timedelta:
    """Return how long step-up stays locked after `failures` consecutive failures (doubling)."""
    if failures < MAX_FAILURES:
        return timedelta(0)
    lockout: timedelta = min(BASE_LOCKOUT * (2 ** (failures - MAX_FAILURES)), MAX_LOCKOUT)
    return lockout


class MfaService:
    """Enroll users and verify their codes; seeds are encrypted at rest with CHATOPS_SECRET_KEY."""

    def __init__(self, state_db: PostgresAdapter, secret_key: str | None) -> None:
        self.state_db = state_db
        self._fernet = _fernet(secret_key) if secret_key else None

    def _cipher(self) -> Fernet:
        if self._fernet is None:
            raise MfaUnavailable("MFA needs CHATOPS_SECRET_KEY to be set (it encrypts TOTP seeds)")
        return self._fernet

    async def enroll(self, user_id: str, account_name: str | None = None) -> Enrollment:
        """Start (or restart, while unconfirmed) enrollment; a confirmed one needs an admin reset."""
        cipher = self._cipher()
        secret = pyotp.random_base32()
        async with self.state_db.connection() as conn:
            confirmed = await conn.fetchval(
                "SELECT confirmed_at FROM mfa_enrollments WHERE user_id = $1", user_id
            )
            if confirmed is not None:
                raise ValueError("already enrolled; an MFA administrator can reset it with /mfa reset")
            await conn.execute(
                """INSERT INTO mfa_enrollments (user_id, secret_encrypted) VALUES ($1, $2)
                   ON CONFLICT (user_id) DO UPDATE SET secret_encrypted = EXCLUDED.secret_encrypted,
                       created_at = now(), last_used_step = 0, consecutive_failures = 0,
                       locked_until = NULL""",
                user_id,
                cipher.encrypt(_bind(user_id, secret)),
            )
        uri = pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS).provisioning_uri(
            name=account_name or user_id, issuer_name=ISSUER
        )
        return Enrollment(user_id=user_id, secret=secret, uri=uri)

    async def verify(
        self, user_id: str, code: str, now: datetime, *, confirming: bool = False
    ) -> Verification:
        """Check a code under the rules: format, lockout, ±1 step, no replay, failure counting."""
        code = code.strip().replace(" ", "")
        if not (len(code) == DIGITS and code.isdigit()):
            return Verification("malformed", f"a code is {DIGITS} digits")
        cipher = self._cipher()
        async with self.state_db.connection() as conn, conn.transaction():
            # FOR UPDATE: two submissions of the same code race here, and only one may win.
            row = await conn.fetchrow("SELECT * FROM mfa_enrollments WHERE user_id = $1 FOR UPDATE", user_id)
            if row is None or (row["confirmed_at"] is None and not confirming):
                return Verification("not_enrolled", "you are not enrolled in MFA: run /mfa enroll first")
            if row["confirmed_at"] is None and row["created_at"] + ENROLLMENT_TTL < now:
                await conn.execute("DELETE FROM mfa_enrollments WHERE user_id = $1", user_id)
                minutes = int(ENROLLMENT_TTL.total_seconds() // 60)
                return Verification(
                    "expired",
                    f"that enrollment was not confirmed within {minutes} minutes: run /mfa enroll again",
                )
            if row["locked_until"] is not None and row["locked_until"] > now:
                return Verification(
                    "locked_out",
                    f"too many wrong codes: step-up is locked until {row['locked_until']:%H:%M:%S} UTC",
                    failures=row["consecutive_failures"],
                    locked_until=row["locked_until"],
                )
            try:
                secret = _unbind(user_id, cipher.decrypt(bytes(row["secret_encrypted"])))
            except InvalidToken:
                raise MfaUnavailable(
                    "the TOTP seed cannot be decrypted: CHATOPS_SECRET_KEY changed?"
                ) from None
            step = matching_step(secret, code, now)
            if step is not None and step <= row["last_used_step"]:
                return await self._fail(
                    conn, row, now, "replayed", "that code was already used; wait for the next one"
                )
            if step is None:
                return await self._fail(conn, row, now, "wrong_code", "wrong or expired code")
            await conn.execute(
                """UPDATE mfa_enrollments SET last_used_step = $2, consecutive_failures = 0,
                       locked_until = NULL, confirmed_at = COALESCE(confirmed_at, $3)
                   WHERE user_id = $1""",
                user_id,
                step,
                now,
            )
        return Verification("accepted", "code accepted")

    async def _fail(
        self, conn: asyncpg.Connection, row: asyncpg.Record, now: datetime, outcome: Outcome, message: str
    ) -> Verification:
        """Count a failure and lock step-up once there are too many in a row."""
        failures = int(row["consecutive_failures"]) + 1
        lock = lockout_for(failures)
        locked_until = now + lock if lock else None
        await conn.execute(
            "UPDATE mfa_enrollments SET consecutive_failures = $2, locked_until = $3 WHERE user_id = $1",
            row["user_id"],
            failures,
            locked_until,
        )
        if locked_until is not None:
            message += f"; {failures} failures in a row: step-up locked until {locked_until:%H:%M:%S} UTC"
        return Verification(
            outcome,
            message,
            failures=failures,
            locked_until=locked_until,
            just_locked=locked_until is not None,
        )

    async def status(self, user_id: str) -> MfaStatus:
        """Describe one user's enrollment."""
        async with self.state_db.connection() as conn:
            row = await conn.fetchrow("SELECT * FROM mfa_enrollments WHERE user_id = $1", user_id)
        if row is None:
            return MfaStatus(user_id, False, False, 0, None)
        if row["confirmed_at"] is None and row["created_at"] + ENROLLMENT_TTL < datetime.now(UTC):
            return MfaStatus(user_id, False, False, 0, None)  # expired: as if never started
        return MfaStatus(
            user_id, True, row["confirmed_at"] is not None, row["consecutive_failures"], row["locked_until"]
        )

    async def reset(self, user_id: str) -> bool:
        """Remove a user's enrollment (administrators only); return whether there was one."""
        async with self.state_db.connection() as conn:
            result = await conn.execute("DELETE FROM mfa_enrollments WHERE user_id = $1", user_id)
        return str(result).endswith(" 1")
