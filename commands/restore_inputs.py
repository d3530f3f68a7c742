"""What `/restore` takes in: the arguments of its three forms, and the platform's parts it works with."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from adapters.base import Pingable
from adapters.engine import ServiceAction
from commands.backup import BackupSources
from commands.backup_store import BackupType
from commands.base import Model

USAGE = "/restore list | /restore verify <backup id> | /restore <backup id> [type=full|db|storage]"

Part = Literal["db", "storage"]


def parts_type(parts: list[Part]) -> BackupType:
    """Name the backup type that covers exactly these parts."""
    if parts == ["db"]:
        return "db"
    if parts == ["storage"]:
        return "storage"
    return "full"


# --- arguments ---------------------------------------------------------------------------------------


class ListArgs(Model):
    """`/restore list`."""


class VerifyArgs(Model):
    """`/restore verify <id>`."""

    id: str


class RestoreArgs(Model):
    """`/restore <id> [type=T]`: T defaults to everything the backup holds."""

    id: str
    type: BackupType | None = None


# --- what a restore works with -----------------------------------------------------------------------


@dataclass
class RestoreDeps:
    """The platform's parts a restore touches, and its limits."""

    sources: BackupSources
    backend: ServiceAction
    health: Pingable
    backend_label: str
    health_timeout: float = 60.0
    stop_seconds: int = 30

    @property
    def restore_timeout(self) -> float:
        """Return the time limit of one pg_restore."""
        return self.sources.dump_timeout
