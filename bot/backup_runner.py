"""Wire /backup and /restore to the bot's adapters and settings, with progress bars at the terminal."""

from __future__ import annotations

import getpass
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from bot.authz import Role
from bot.progress import StepRecorder
from bot.render.common import terminal_console
from bot.render.steps import StepBars
from bot.services import Services
from commands import backup, restore
from commands.backup_store import BackupStore, open_store
from commands.base import CommandResult
from commands.destructive import Execution, Plan, Progress

if TYPE_CHECKING:
    from bot.commands_registry import Invocation


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


def restore_deps(services: Services) -> restore.RestoreDeps:
    """Take what a restore touches from the services and settings."""
    settings = services.settings
    return restore.RestoreDeps(
        sources=backup_sources(services),
        backend=services.backup_adapters().backend,
        health=services.api,
        backend_label=f"{settings.compose_project}/{settings.backend_service}",
        health_timeout=settings.restore_health_timeout_seconds,
        stop_seconds=settings.restore_stop_timeout_seconds,
    )


def _who(services: Services, invocation: Invocation) -> str:
    if invocation.user_id:
        return invocation.user_id
    # From a terminal without CHATOPS_CLI_USER, the machine account is the best name there is.
    return f"{getpass.getuser()}@{socket.gethostname()} (terminal)"


@asynccontextmanager
async def _meter(invocation: Invocation) -> AsyncIterator[backup.Meter]:
    """Progress bars on the terminal's stderr for the CLI; nothing for Slack (the reply comes at the end)."""
    if invocation.source != "cli":
        yield backup.Meter(None)
        return
    with StepBars(terminal_console(stderr=True)) as bars:
        yield backup.Meter(StepRecorder(bars.publish), interval=0.5)


async def run_backup(services: Services, tokens: list[str], invocation: Invocation) -> CommandResult:
    """Answer `/backup`: take a backup, or plan a prune for the gate."""
    args = backup.parse(tokens, services.settings.backup_keep_days)
    if isinstance(args, backup.PruneArgs):
        return await backup.plan_prune(backup_store(services), args, datetime.now(UTC))
    async with _meter(invocation) as meter:
        return await backup.run_backup(backup_sources(services), args, _who(services, invocation), meter)


async def execute_backup(services: Services, plan: Plan, progress: Progress) -> Execution:
    """Carry out an approved prune."""
    return await backup.execute_prune(backup_store(services), plan, progress)


async def run_restore(services: Services, tokens: list[str], invocation: Invocation) -> CommandResult:
    """Answer `/restore`: the list, a verification, or a restore plan for the gate."""
    args = restore.parse(tokens)
    deps = restore_deps(services)
    if isinstance(args, restore.ListArgs):
        return await restore.run_list(deps)
    if isinstance(args, restore.VerifyArgs):
        async with _meter(invocation) as meter:
            return await restore.verify_backup(deps, args.id, meter)
    return await restore.plan_restore(deps, args, _who(services, invocation))


async def execute_restore(services: Services, plan: Plan, progress: Progress) -> Execution:
    """Carry out an approved restore."""
    return await restore.execute_restore(restore_deps(services), plan, progress)


def backup_role(tokens: list[str]) -> Role:
    """Return the role `/backup` needs: pruning deletes backups, so it is for operators."""
    return "operator" if tokens[:1] == ["prune"] else "responder"


def restore_role(tokens: list[str]) -> Role:
    """Return the role `/restore` needs: anyone may list, a test restore is work for responders."""
    first = tokens[0] if tokens else ""
    if first == "list":
        return "viewer"
    return "responder" if first == "verify" else "operator"
