"""`/restore`: list backups, verify one by a test restore, or restore one with the runbook's DR steps.

This module reads the arguments and lists backups; a verification is in `restore_verify`, the plan
the gate shows in `restore_plan`, the restore itself in `restore_execution`.
"""

from __future__ import annotations

from commands.backup import StoredBackup, list_backups, parse_type
from commands.backup_store import BackupType, parse_backup_id
from commands.base import Arguments, CommandResult, normalise_flags
from commands.restore_execution import execute_restore
from commands.restore_inputs import USAGE, ListArgs, Part, RestoreArgs, RestoreDeps, VerifyArgs
from commands.restore_plan import TYPED_WORD, estimate_seconds, plan_restore
from commands.restore_verify import (
    TableCheck,
    VerifyReport,
    check_checksums,
    compare_counts,
    count_rows,
    load_checked,
    run_watched,
    verify_backup,
)

# The names /restore has always offered, wherever they are defined now.
__all__ = [
    "TYPED_WORD",
    "USAGE",
    "BackupList",
    "ListArgs",
    "Part",
    "RestoreArgs",
    "RestoreDeps",
    "TableCheck",
    "VerifyArgs",
    "VerifyReport",
    "check_checksums",
    "compare_counts",
    "count_rows",
    "estimate_seconds",
    "execute_restore",
    "load_checked",
    "parse",
    "plan_restore",
    "run_list",
    "run_watched",
    "verify_backup",
]

# --- arguments ---------------------------------------------------------------------------------------


def parse(tokens: list[str]) -> ListArgs | VerifyArgs | RestoreArgs:
    """Read the three forms of `/restore`."""
    args = Arguments.parse(normalise_flags(tokens, {"type"}, set(), USAGE), USAGE)
    first = args.next_positional("`list`, `verify <backup id>` or a backup id")
    if first == "list":
        args.done()
        return ListArgs()
    if first == "verify":
        backup_id = parse_backup_id(args.next_positional("the backup id to verify"), USAGE)
        args.done()
        return VerifyArgs(id=backup_id)
    backup_id = parse_backup_id(first, USAGE)
    kind: BackupType | None = args.option("type", lambda text: parse_type(text, USAGE), None)
    args.done()
    return RestoreArgs(id=backup_id, type=kind)


# --- /restore list -----------------------------------------------------------------------------------


class BackupList(CommandResult):
    """Every complete backup in the store, newest first."""

    location: str
    backups: list[StoredBackup]

    @property
    def ok(self) -> bool:
        """Return whether every manifest checks out."""
        return all(item.manifest_ok for item in self.backups)


async def run_list(deps: RestoreDeps) -> BackupList:
    """List backups with the runbook's columns."""
    store = deps.sources.store
    return BackupList(location=store.location, backups=await list_backups(store))
