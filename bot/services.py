"""The adapters, built once at start-up from settings and passed to every command."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from adapters.anchor_store import DirAnchorStore, S3AnchorStore
from adapters.base import Pingable
from adapters.engine import EngineAdapter, ServiceAction
from adapters.http_api import PlatformApiAdapter
from adapters.object_transfer import ObjectTransfer
from adapters.pg_tools import PgTools
from adapters.postgres import PostgresAdapter
from adapters.prometheus import PrometheusAdapter
from adapters.redis_store import RedisAdapter
from adapters.storage import StorageAdapter
from bot.concurrency import SingleFlight
from bot.config import Settings
from bot.observability import BotMetrics

if TYPE_CHECKING:
    # The Slack SDK's async client brings aiohttp: imported only when a Slack token is set.
    from slack_sdk.web.async_client import AsyncWebClient

    from adapters.github import GitHubAdapter
    from adapters.slack_api import SlackAdapter


@dataclass
class BackupAdapters:
    """What /backup and /restore use beyond the usual adapters: bulk transfer, pg_dump, the engine."""

    pg: PgTools
    transfer: ObjectTransfer  # the platform's buckets
    store_transfer: ObjectTransfer | None  # an s3:// backup store on another endpoint
    backend: ServiceAction

    @classmethod
    def build(cls, settings: Settings, engine: EngineAdapter) -> BackupAdapters:
        """Build them from settings; nothing connects until first used."""
        transfer_timeout = settings.backup_transfer_timeout_seconds
        keys = (settings.aws_access_key_id, settings.aws_secret_access_key.get_secret_value())
        transfer = ObjectTransfer(settings.s3_endpoint_url, *keys, settings.s3_region, transfer_timeout)
        store_transfer = None
        if settings.backup_s3_endpoint_url and settings.backup_s3_endpoint_url != settings.s3_endpoint_url:
            store_transfer = ObjectTransfer(
                settings.backup_s3_endpoint_url, *keys, settings.s3_region, transfer_timeout
            )
        return cls(
            pg=PgTools(
                settings.platform_database_url,
                settings.dependency_timeout_seconds,
                settings.restore_lock_timeout_seconds,
            ),
            transfer=transfer,
            store_transfer=store_transfer,
            backend=ServiceAction(engine, settings.restore_stop_timeout_seconds + 30.0),
        )


@dataclass
class Services:
    """Every outside system the bot talks to, one adapter each."""

    settings: Settings
    platform_db: PostgresAdapter
    state_db: PostgresAdapter
    # The same database on a pool of its own: acknowledging a request never waits behind commands.
    receipts_db: PostgresAdapter
    redis: RedisAdapter
    api: PlatformApiAdapter
    storage: StorageAdapter
    prometheus: PrometheusAdapter
    engine: EngineAdapter
    metrics: BotMetrics
    slack: SlackAdapter | None = None
    # Where the audit trail's head is anchored, outside the bot's database (None: nowhere).
    trail_anchors: S3AnchorStore | DirAnchorStore | None = None
    # The role that owns the bot's tables and runs its migrations, when it is not the runtime role.
    state_owner_db: PostgresAdapter | None = None
    github: GitHubAdapter | None = None
    backups: BackupAdapters | None = None
    # Concurrent identical checks (a burst of /health) share one run.
    single_flight: SingleFlight = field(default_factory=SingleFlight)
    extra: dict[str, object] = field(default_factory=dict)

    @classmethod
    def build(cls, settings: Settings, metrics: BotMetrics | None = None) -> Services:
        """Build every adapter; none of them connects until first used."""
        timeout = settings.dependency_timeout_seconds
        metrics = metrics or BotMetrics()
        slack = None
        if settings.slack_bot_token is not None:
            from adapters.slack_api import SlackAdapter

            # The one Slack client of the process: the app, incidents, graphs and the gate share it.
            client = build_slack_client(settings, metrics)
            slack = SlackAdapter(client)
        github = None
        if settings.github_token is not None and settings.github_repo:
            from adapters.github import GitHubAdapter  # httpx: only when RCA issues can be filed

            github = GitHubAdapter(
                settings.github_api_url,
                settings.github_repo,
                settings.github_token.get_secret_value(),
                timeout,
                max_retry_wait=settings.github_max_retry_wait_seconds,
            )
        return cls(
            settings=settings,
            platform_db=PostgresAdapter("postgres", settings.platform_database_url, timeout),
            state_db=PostgresAdapter("state-db", settings.state_database_url, timeout),
            receipts_db=PostgresAdapter("state-db", settings.state_database_url, timeout),
            redis=RedisAdapter(settings.redis_url, timeout),
            api=PlatformApiAdapter(settings.api_url, timeout),
            storage=StorageAdapter(
                settings.s3_endpoint_url,
                settings.s3_bucket,
                settings.aws_access_key_id,
                settings.aws_secret_access_key.get_secret_value(),
                settings.s3_region,
                timeout,
            ),
            prometheus=PrometheusAdapter(settings.prometheus_url, timeout),
            engine=EngineAdapter(
                settings.docker_host, settings.compose_project, settings.backend_service, timeout
            ),
            metrics=metrics,
            slack=slack,
            github=github,
            trail_anchors=build_anchor_store(settings),
            state_owner_db=(
                PostgresAdapter("state-db-owner", settings.state_owner_database_url, timeout)
                if settings.state_owner_database_url
                else None
            ),
        )

    def migrations_db(self) -> PostgresAdapter:
        """Return the connection migrations run on: the owner's when one is set."""
        return self.state_owner_db or self.state_db

    def backup_adapters(self) -> BackupAdapters:
        """Return the adapters of /backup and /restore, built on first use."""
        if self.backups is None:
            self.backups = BackupAdapters.build(self.settings, self.engine)
        return self.backups

    def platform_dependencies(self) -> list[Pingable]:
        """Return the platform's systems, in the runbook's order."""
        return [self.api, self.platform_db, self.redis, self.storage, self.prometheus, self.engine]

    def bot_dependencies(self) -> list[Pingable]:
        """Return the systems only the bot needs."""
        found: list[Pingable] = [self.state_db]
        if self.slack is not None:
            found.append(self.slack)
        if self.github is not None:
            found.append(self.github)
        return found

    async def aclose(self) -> None:
        """Close every connection, each within a bounded time."""
        closers = [
            self.platform_db.aclose(),
            self.state_db.aclose(),
            self.receipts_db.aclose(),
            *([self.state_owner_db.aclose()] if self.state_owner_db is not None else []),
            self.redis.aclose(),
            self.api.aclose(),
            asyncio.to_thread(self.engine.close),
        ]
        if self.github is not None:
            closers.append(self.github.aclose())
        await asyncio.wait_for(asyncio.gather(*closers, return_exceptions=True), timeout=10)


def build_anchor_store(settings: Settings) -> S3AnchorStore | DirAnchorStore | None:
    """Build the audit trail's anchor store from CHATOPS_TRAIL_ANCHOR_STORE (nothing connects yet)."""
    location = settings.trail_anchor_store.strip()
    if not location:
        return None
    if location.startswith("s3://"):
        bucket, _, prefix = location.removeprefix("s3://").partition("/")
        transfer = ObjectTransfer(
            settings.backup_s3_endpoint_url or settings.s3_endpoint_url,
            settings.aws_access_key_id,
            settings.aws_secret_access_key.get_secret_value(),
            settings.s3_region,
            settings.dependency_timeout_seconds,
        )
        return S3AnchorStore(transfer, bucket, prefix)
    return DirAnchorStore(Path(location).expanduser())


def build_slack_client(settings: Settings, metrics: BotMetrics | None = None) -> AsyncWebClient:
    """Build the Slack Web API client, pointed at the configured API base (a fake in tests).

    With metrics, 429s are retried after Retry-After and counted.
    """
    from adapters.slack_api import build_client

    token = settings.slack_bot_token.get_secret_value() if settings.slack_bot_token else None
    counter = metrics.slack_rate_limited if metrics is not None else None
    return build_client(
        token,
        settings.slack_api_url,
        (lambda method: counter.labels(method).inc()) if counter is not None else None,
    )
