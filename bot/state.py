"""The bot's own database: versioned migrations applied at start-up."""

from __future__ import annotations

import asyncio
import hashlib
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

from adapters.postgres import PostgresAdapter
from bot.config import Settings
from bot.observability import get_logger

log = get_logger("chatops.state")

# Any number will do as long as it is fixed: replicas starting together take turns on it.
_MIGRATION_LOCK = 7_340_021


def migration_files() -> list[tuple[str, str]]:
    """Return (version, sql) for every shipped migration, in order."""
    folder = resources.files("bot") / "migrations"
    found = [(item.name.removesuffix(".sql"), item.read_text("utf-8")) for item in folder.iterdir()]
    return sorted((name, sql) for name, sql in found if name[:4].isdigit())


async def migrate(state_db: PostgresAdapter, runtime_role: str | None = None) -> list[str]:
    """Apply every migration not yet applied, under an advisory lock; return those applied.

    `state_db` connects as the role that owns the bot's tables. With `runtime_role` (the role the
    bot runs as, when it is another one), that role is granted what the bot needs and no more: the
    audit trail can be read and appended to, never changed, removed, truncated or altered.
    """
    applied_now: list[str] = []
    async with state_db.connection() as conn:
        await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
        try:
            await conn.execute(
                """CREATE TABLE IF NOT EXISTS schema_migrations (
                       version text PRIMARY KEY,
                       checksum text NOT NULL,
                       applied_at timestamptz NOT NULL DEFAULT now())"""
            )
            done = {
                row["version"]: row["checksum"]
                for row in await conn.fetch("SELECT version, checksum FROM schema_migrations")
            }
            for version, sql in migration_files():
                checksum = hashlib.sha256(sql.encode()).hexdigest()
                if version in done:
                    if done[version] != checksum:
                        raise RuntimeError(f"migration {version} was changed after it was applied")
                    continue
                async with conn.transaction():
                    await conn.execute(sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, checksum) VALUES ($1, $2)",
                        version,
                        checksum,
                    )
                applied_now.append(version)
            if runtime_role is not None:
                await _grant_runtime(conn, runtime_role)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)
    return applied_now


async def _grant_runtime(conn: Any, role: str) -> None:
    """Give the runtime role the bot's tables, the audit trail append-only (idempotent)."""
    name = await conn.fetchval("SELECT quote_ident($1)", role)
    if await conn.fetchval("SELECT current_user") == role:
        return  # the owner is the runtime role: nothing to give (verify says so)
    await conn.execute(f"GRANT USAGE ON SCHEMA public TO {name}")
    await conn.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {name}")
    await conn.execute(f"GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO {name}")
    await conn.execute(f"REVOKE UPDATE, DELETE, TRUNCATE ON audit_trail FROM {name}")
    await conn.execute(f"REVOKE INSERT, UPDATE, DELETE ON schema_migrations FROM {name}")
    await conn.execute(f"REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON trail_identity FROM {name}")


def runtime_role(settings: Settings) -> str | None:
    """Return the runtime role to grant when migrations run as another (owner) role."""
    if settings.state_owner_database_url is None:
        return None
    owner = urlsplit(settings.state_owner_database_url).username or "postgres"
    runtime = urlsplit(settings.state_database_url).username or "postgres"
    return runtime if runtime != owner else None


async def migrate_best_effort(
    state_db: PostgresAdapter, timeout: float, runtime_role: str | None = None
) -> None:
    """Migrate, but let a terminal command go on when the bot's own database is down."""
    try:
        await asyncio.wait_for(migrate(state_db, runtime_role), timeout=timeout)
    except Exception as error:
        log.warning("state_db_not_migrated", error=type(error).__name__)
