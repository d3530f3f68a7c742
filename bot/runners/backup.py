"""Bind /backup to the platform database, its buckets and the backup store; progress bars at the terminal."""

from __future__ import annotations

import getpass
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

from bot.gate.authz import Role
from bot.gate.progress import StepRecorder
from bot.invocation import Invocation
from bot.render.common import terminal_console
from bot.render.steps import StepBars
from bot.services import Services
from commands import backup
from commands.backup_store import BackupStore, open_store
from commands.base import CommandResult
from commands.destructive import Execution, Plan, Progress


def backup_store(services: Services) -> BackupStore:
    """Open the configured backup store."""
    settings = services.settings
    adapters = services.backup_adapters()
    transfer = adapters.store_transfer or adapters.transfer
    return open_store(settings.backup_store, transfer, settings.backup_work_dir)


def backup_sources(services: Services) -> backup.BackupSources:
    """Take what a backup reads and writes from the services and settings."""
    settings = services.settings
    adapters = services.backup_adapters()
    return backup.BackupSources(
        platform_db=services.platform_db,
        pg=adapters.pg,
        transfer=adapters.transfer,
        buckets=list(settings.backup_buckets or [settings.s3_bucket]),
        store=backup_store(services),
        concurrency=settings.backup_concurrency,
        dump_timeout=settings.backup_timeout_seconds,
    )


def who(services: Services, invocation: Invocation) -> str:
    if invocation.user_id:
        return invocation.user_id
    # From a terminal without CHATOPS_CLI_USER, the machine account is the best name there is.
    return f"{getpass.getuser()}@{socket.gethostname()} (terminal)"


@asynccontextmanager
async def meter_for(invocation: Invocation) -> AsyncIterator[backup.Meter]:
    """Progress bars on the terminal's stderr for the CLI; nothing for Slack (the reply comes at the end)."""
    if invocation.source != "cli":
        yield backup.Meter(None)
        return
    with StepBars(terminal_console(stderr=True)) as bars:
        yield backup.Meter(StepRecorder(bars.publish), interval=0.5)


async def run(services: Services, tokens: list[str], invocation: Invocation) -> CommandResult:
    """Answer `/backup`: take a backup, or plan a prune for the gate."""
    args = backup.parse(tokens, services.settings.backup_keep_days)
    if isinstance(args, backup.PruneArgs):
        return await backup.plan_prune(backup_store(services), args, datetime.now(UTC))
    async with meter_for(invocation) as meter:
        return await backup.run_backup(backup_sources(services), args, who(services, invocation), meter)


async def execute(services: Services, plan: Plan, progress: Progress) -> Execution:
    """Carry out an approved prune."""
    return await backup.execute_prune(backup_store(services), plan, progress)


def required_role(tokens: list[str]) -> Role:
    """Return the role `/backup` needs: pruning deletes backups, so it is for operators.

    Read from the parsed arguments, as `run` reads them: `keep-days=1 prune` is a prune too.
    Text the grammar refuses raises its UsageError: it would run nothing.
    """
    return "operator" if isinstance(backup.parse(tokens), backup.PruneArgs) else "responder"
