"""The bot's own database: versioned migrations applied at start-up."""

from __future__ import annotations

import asyncio
import hashlib
from importlib import resources

import structlog

from adapters.postgres import PostgresAdapter

log = structlog.get_logger("chatops.state")

# Any number will do as long as it is fixed: replicas starting together take turns on it.
_MIGRATION_LOCK = 7_340_021


def migration_files() -> list[tuple[str, str]]:
    """Return (version, sql) for every shipped migration, in order."""
    folder = resources.files("bot") / "migrations"
    found = [(item.name.removesuffix(".sql"), item.read_text("utf-8")) for item in folder.iterdir()]
    return sorted((name, sql) for name, sql in found if name[:4].isdigit())


async def migrate(state_db: PostgresAdapter) -> list[str]:
    """Apply every migration not yet applied, under an advisory lock; return those applied."""
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
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)
    return applied_now


async def migrate_best_effort(state_db: PostgresAdapter, timeout: float) -> None:
    """Migrate, but let a terminal command go on when the bot's own database is down."""
    try:
        await asyncio.wait_for(migrate(state_db), timeout=timeout)
    except Exception as error:
        log.warning("state_db_not_migrated", error=type(error).__name__)
