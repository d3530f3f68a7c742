"""Provision the platform database (with a seeded `audit_log`) and the bot's empty state database.

The sandbox's `db` component: the machine's PostgreSQL is never started or stopped here.
"""

from __future__ import annotations

import ipaddress
import json
import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from sandbox.component import ComponentStatus
from sandbox.processes import SandboxError

if TYPE_CHECKING:
    from bot.config import Settings

CONNECT_TIMEOUT = 5.0
COMMAND_TIMEOUT = 30.0
DEFAULT_ROWS = 3000
# Re-seed when the newest seeded event is older than this, so "last 24 h" patterns stay true.
STALE_AFTER = timedelta(hours=1)

AUDIT_LOG_DDL = """
CREATE TABLE IF NOT EXISTS audit_log (
    id bigserial PRIMARY KEY,
    timestamp timestamptz NOT NULL DEFAULT now(),
    action text NOT NULL,
    user_id uuid,
    username text,
    ip_address inet,
    details jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS audit_log_timestamp_idx ON audit_log (timestamp);
CREATE INDEX IF NOT EXISTS audit_log_action_timestamp_idx ON audit_log (action, timestamp);
"""

# The account the seeded brute-force attack targets, and the runbook's suspicious IP among others.
BRUTE_FORCE_USERNAME = "mariana.costa"
BRUTE_FORCE_IPS = ("192.168.1.100", "185.220.101.42", "45.155.205.233", "2a03:b0c0:3:d0::1a51")

_FIRST = (
    "ana", "bruno", "carla", "diego", "eduarda", "felipe", "gabriela", "henrique", "isabela",
    "joao", "larissa", "lucas", "mariana", "pedro", "rafaela", "thiago", "vitoria", "rodrigo",
)  # fmt: skip
_LAST = ("silva", "santos", "oliveira", "souza", "lima", "pereira", "costa", "almeida", "rocha")
_USER_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/120.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_2) AppleWebKit/605.1.15 Version/17.2 Safari/605.1",
    "3dpot-cli/1.4.2 python-httpx/0.27.0",
    "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
)
_PERMISSIONS = (
    ("projects:delete", "project"),
    ("projects:share", "project"),
    ("users:admin", "user"),
    ("billing:read", "billing"),
    ("uploads:delete", "upload"),
)
# (action, weight) for the background noise of normal platform use.
_NORMAL_ACTIONS = (
    ("LOGIN", 30),
    ("LOGOUT", 10),
    ("MFA_CHALLENGE_SUCCESS", 12),
    ("MFA_CHALLENGE_FAILED", 3),
    ("PROJECT_CREATE", 7),
    ("PROJECT_UPDATE", 10),
    ("PROJECT_DELETE", 2),
    ("FILE_UPLOAD", 12),
    ("FILE_DOWNLOAD", 8),
    ("PERMISSION_DENIED", 3),
    ("RATE_LIMIT_EXCEEDED", 2),
    ("PASSWORD_CHANGE", 1),
    ("API_KEY_CREATE", 1),
)


def database_name(dsn: str) -> str:
    """Return the database named in a postgresql:// URL."""
    name = urlsplit(dsn).path.lstrip("/")
    if not name:
        raise ValueError("the database URL names no database")
    return name


def _admin_dsn(dsn: str) -> str:
    """Return the same server's URL with the `postgres` maintenance database."""
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/postgres", parts.query, parts.fragment))


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def ensure_database(dsn: str) -> bool:
    """Create the database named in `dsn` if missing; return True when it was created."""
    name = database_name(dsn)
    conn = await asyncpg.connect(_admin_dsn(dsn), timeout=CONNECT_TIMEOUT)
    try:
        exists = await conn.fetchval(
            "SELECT 1 FROM pg_database WHERE datname = $1", name, timeout=COMMAND_TIMEOUT
        )
        if exists:
            return False
        try:
            await conn.execute(f"CREATE DATABASE {_quote_ident(name)}", timeout=COMMAND_TIMEOUT)
        except asyncpg.DuplicateDatabaseError:
            return False  # A concurrent `up` won the race; that is fine.
        return True
    finally:
        await conn.close(timeout=CONNECT_TIMEOUT)


async def drop_database(dsn: str) -> bool:
    """Drop the database named in `dsn` (terminating its sessions); return True if it existed."""
    name = database_name(dsn)
    conn = await asyncpg.connect(_admin_dsn(dsn), timeout=CONNECT_TIMEOUT)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            return False
        await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = $1 AND pid <> pg_backend_pid()",
            name,
            timeout=COMMAND_TIMEOUT,
        )
        await conn.execute(f"DROP DATABASE IF EXISTS {_quote_ident(name)}", timeout=COMMAND_TIMEOUT)
        return True
    finally:
        await conn.close(timeout=CONNECT_TIMEOUT)


def _uuid(rng: random.Random) -> uuid.UUID:
    return uuid.UUID(int=rng.getrandbits(128), version=4)


def _public_ipv4(rng: random.Random) -> str:
    while True:
        address = ipaddress.IPv4Address(rng.getrandbits(32))
        if address.is_global:
            return str(address)


def _ipv6(rng: random.Random) -> str:
    prefix = rng.choice(("2804:14c:", "2001:db8:", "2804:7f0:"))
    tail = ":".join(f"{rng.getrandbits(16):x}" for _ in range(6))
    return str(ipaddress.IPv6Address(prefix + tail))


class _Users:
    """A deterministic population of platform users with their usual IPs."""

    def __init__(self, rng: random.Random, count: int = 60) -> None:
        self.people: list[tuple[uuid.UUID, str, list[str]]] = []
        seen: set[str] = set()
        while len(self.people) < count:
            name = f"{rng.choice(_FIRST)}.{rng.choice(_LAST)}"
            if name in seen:
                continue
            seen.add(name)
            # Most users come from an office NAT or home IPv4; some from IPv6.
            ips = [_ipv6(rng) if rng.random() < 0.15 else _public_ipv4(rng)]
            if rng.random() < 0.3:
                ips.append(f"192.168.1.{rng.randint(2, 250)}")
            self.people.append((_uuid(rng), name, ips))
        if BRUTE_FORCE_USERNAME not in seen:
            self.people.append((_uuid(rng), BRUTE_FORCE_USERNAME, [_public_ipv4(rng)]))
        self.by_name = {name: (uid, name, ips) for uid, name, ips in self.people}

    def pick(self, rng: random.Random) -> tuple[uuid.UUID, str, list[str]]:
        return rng.choice(self.people)


Row = tuple[datetime, str, uuid.UUID | None, str | None, str | None, str]


def _details(rng: random.Random, **extra: Any) -> str:
    details = {
        "request_id": uuid.UUID(int=rng.getrandbits(128), version=4).hex,
        "trace_id": f"{rng.getrandbits(128):032x}",
        "user_agent": rng.choice(_USER_AGENTS),
        **extra,
    }
    return json.dumps(details)


def _normal_event(rng: random.Random, users: _Users, when: datetime) -> Row:
    uid, name, ips = users.pick(rng)
    ip = rng.choice(ips)
    action = rng.choices([a for a, _ in _NORMAL_ACTIONS], [w for _, w in _NORMAL_ACTIONS])[0]
    extra: dict[str, Any]
    if action == "LOGIN":
        ok = rng.random() > 0.08
        extra = {"success": ok, "method": "password"}
        if not ok:
            extra["reason"] = rng.choice(("invalid_password", "invalid_password", "account_locked"))
    elif action == "MFA_CHALLENGE_FAILED":
        extra = {"reason": rng.choice(("invalid_code", "invalid_code", "expired_code", "replayed_code"))}
    elif action == "MFA_CHALLENGE_SUCCESS":
        extra = {"method": "totp"}
    elif action == "RATE_LIMIT_EXCEEDED":
        extra = {
            "reason": rng.choice(("login_attempts_exceeded", "api_rate_limit")),
            "endpoint": rng.choice(("/api/v1/auth/login", "/api/v1/uploads", "/api/v1/projects")),
            "limit": rng.choice((10, 60, 100)),
        }
    elif action == "PERMISSION_DENIED":
        permission, resource = rng.choice(_PERMISSIONS)
        extra = {
            "required_permission": permission,
            "resource_type": resource,
            "resource_id": str(_uuid(rng)),
        }
    elif action.startswith("PROJECT_"):
        extra = {"project_id": str(_uuid(rng)), "project_name": f"modelo-{rng.randint(100, 999)}"}
    elif action.startswith("FILE_"):
        extra = {
            "key": f"uploads/{_uuid(rng).hex[:12]}/{rng.choice(('peca', 'suporte', 'engrenagem'))}.stl",
            "size_bytes": rng.randint(10_000, 50_000_000),
        }
    else:
        extra = {}
    return (when, action, uid, name, ip, _details(rng, **extra))


def _brute_force(rng: random.Random, users: _Users, now: datetime) -> Iterator[Row]:
    """Yield an attack on one account: many failed logins from several IPs, then rate limiting."""
    uid, name, _ = users.by_name[BRUTE_FORCE_USERNAME]
    start = now - timedelta(minutes=50)
    for i in range(24):
        when = start + timedelta(seconds=i * 70 + rng.randint(0, 30))
        ip = BRUTE_FORCE_IPS[i % len(BRUTE_FORCE_IPS)]
        yield (
            when,
            "LOGIN",
            uid,
            name,
            ip,
            _details(rng, success=False, method="password", reason="invalid_password"),
        )
        if i % 6 == 5:
            yield (
                when + timedelta(seconds=1),
                "RATE_LIMIT_EXCEEDED",
                uid,
                name,
                ip,
                _details(rng, reason="login_attempts_exceeded", endpoint="/api/v1/auth/login", limit=5),
            )
    # The password was eventually guessed; the second factor held.
    when = start + timedelta(minutes=35)
    yield (
        when,
        "LOGIN",
        uid,
        name,
        BRUTE_FORCE_IPS[1],
        _details(rng, success=True, method="password"),
    )
    for j, reason in enumerate(("invalid_code", "invalid_code", "replayed_code", "expired_code")):
        yield (
            when + timedelta(seconds=20 * (j + 1)),
            "MFA_CHALLENGE_FAILED",
            uid,
            name,
            BRUTE_FORCE_IPS[1],
            _details(rng, reason=reason, method="totp"),
        )


def generate_audit_rows(rows: int = DEFAULT_ROWS, now: datetime | None = None) -> list[Row]:
    """Return deterministic audit events over the ~3 days before `now`, attack included."""
    now = now or datetime.now(UTC)
    rng = random.Random(42)
    users = _Users(rng)
    span = timedelta(days=3).total_seconds()
    result: list[Row] = []
    attack = list(_brute_force(rng, users, now))
    for _ in range(max(rows - len(attack), 0)):
        # Skew towards recent times and daytime so the last 24 h and hour look busy.
        ago = span * (rng.random() ** 1.3)
        result.append(_normal_event(rng, users, now - timedelta(seconds=ago)))
    result.extend(attack)
    result.sort(key=lambda row: row[0])
    return result


async def seed_audit_log(
    conn_or_dsn: asyncpg.Connection | str,
    rows: int = DEFAULT_ROWS,
    now: datetime | None = None,
    *,
    replace: bool = True,
) -> int:
    """Create `audit_log` if needed and fill it with generated events; return the rows written."""
    conn = (
        await asyncpg.connect(conn_or_dsn, timeout=CONNECT_TIMEOUT)
        if isinstance(conn_or_dsn, str)
        else conn_or_dsn
    )
    try:
        await conn.execute(AUDIT_LOG_DDL, timeout=COMMAND_TIMEOUT)
        records = generate_audit_rows(rows, now)
        async with conn.transaction():
            if replace:
                await conn.execute("TRUNCATE audit_log RESTART IDENTITY", timeout=COMMAND_TIMEOUT)
            await conn.copy_records_to_table(
                "audit_log",
                records=records,
                columns=["timestamp", "action", "user_id", "username", "ip_address", "details"],
                timeout=COMMAND_TIMEOUT,
            )
        return len(records)
    finally:
        if isinstance(conn_or_dsn, str):
            await conn.close(timeout=CONNECT_TIMEOUT)


async def audit_log_is_fresh(conn: asyncpg.Connection, now: datetime | None = None) -> bool:
    """Return True when `audit_log` exists, has rows, and its newest row is recent enough."""
    now = now or datetime.now(UTC)
    exists = await conn.fetchval("SELECT to_regclass('public.audit_log') IS NOT NULL")
    if not exists:
        return False
    newest = await conn.fetchval("SELECT max(timestamp) FROM audit_log", timeout=COMMAND_TIMEOUT)
    return newest is not None and now - newest < STALE_AFTER


async def provision_databases(
    platform_dsn: str, state_dsn: str, rows: int = DEFAULT_ROWS, *, reseed: bool = False
) -> str:
    """Create both databases, seed the platform's audit_log when empty or stale; describe it."""
    created = await ensure_database(platform_dsn)
    await ensure_database(state_dsn)
    conn = await asyncpg.connect(platform_dsn, timeout=CONNECT_TIMEOUT)
    try:
        if reseed or created or not await audit_log_is_fresh(conn):
            count = await seed_audit_log(conn, rows)
            return f"seeded {count} audit_log rows"
        count = await conn.fetchval("SELECT count(*) FROM audit_log", timeout=COMMAND_TIMEOUT)
        return f"{count} audit_log rows (reused)"
    finally:
        await conn.close(timeout=CONNECT_TIMEOUT)


async def database_status(platform_dsn: str, state_dsn: str) -> tuple[bool, str]:
    """Return whether both databases answer, with a one-line detail."""
    try:
        conn = await asyncpg.connect(platform_dsn, timeout=CONNECT_TIMEOUT)
    except (OSError, asyncpg.PostgresError, TimeoutError) as error:
        return False, f"platform database unavailable: {type(error).__name__}"
    try:
        has_table = await conn.fetchval("SELECT to_regclass('public.audit_log') IS NOT NULL")
        count = (
            await conn.fetchval("SELECT count(*) FROM audit_log", timeout=COMMAND_TIMEOUT) if has_table else 0
        )
    finally:
        await conn.close(timeout=CONNECT_TIMEOUT)
    try:
        state_conn = await asyncpg.connect(state_dsn, timeout=CONNECT_TIMEOUT)
        await state_conn.close(timeout=CONNECT_TIMEOUT)
        state_detail = f"state db {database_name(state_dsn)} ok"
        state_ok = True
    except (OSError, asyncpg.PostgresError, TimeoutError) as error:
        state_detail = f"state db unavailable: {type(error).__name__}"
        state_ok = False
    detail = f"{database_name(platform_dsn)}: {count} audit_log rows; {state_detail}"
    return bool(has_table) and state_ok, detail


async def provision_db(settings: Settings, *, reseed: bool = False) -> ComponentStatus:
    """Create the platform and state databases; seed `audit_log` when empty, stale or asked."""
    try:
        detail = await provision_databases(
            settings.platform_database_url, settings.state_database_url, reseed=reseed
        )
    except (OSError, TimeoutError) as error:
        raise SandboxError(f"db: PostgreSQL unavailable ({type(error).__name__}: {error})") from None
    name = database_name(settings.platform_database_url)
    return ComponentStatus("db", True, f"{name}: {detail}")


async def db_status(settings: Settings) -> ComponentStatus:
    """Report whether both databases answer."""
    ok, detail = await database_status(settings.platform_database_url, settings.state_database_url)
    return ComponentStatus("db", ok, detail)
