"""Bind /audit to the platform database, and send an export's bytes where the caller can use them."""

from __future__ import annotations

import os
import sys
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import IO, cast

from bot.config import Settings
from bot.gate.authz import Role
from bot.invocation import Invocation
from bot.services import Services
from commands import audit
from commands.audit_export import export
from commands.audit_indexes import indexes
from commands.base import CommandResult, UsageError


def limits(settings: Settings) -> audit.Limits:
    """Read the bounds of /audit from the settings."""
    return audit.Limits(
        default_limit=min(settings.audit_default_limit, settings.audit_max_limit),
        max_limit=settings.audit_max_limit,
        max_window=timedelta(days=settings.audit_max_window_days),
        export_max_rows=settings.audit_export_max_rows,
    )


def budget(settings: Settings) -> audit.Budget:
    """Read how much one /audit answer may read from the settings."""
    return audit.Budget(
        exact_rows=settings.audit_exact_rows,
        sample_rows=settings.audit_sample_rows,
        index_rows=settings.audit_index_rows,
    )


def expensive_read(tokens: list[str], settings: Settings) -> tuple[Role, str] | None:
    """Return the role a large export needs (CHATOPS_AUDIT_EXPORT_LARGE_ROLE) and why; None otherwise.

    An export's size is its `limit=` (CHATOPS_AUDIT_EXPORT_MAX_ROWS when not given): known before
    any query, and the most it will write. Matching rows are not counted first.
    """
    request = audit.parse(tokens, limits(settings))
    largest = settings.audit_export_large_rows
    if not isinstance(request, audit.ExportRequest) or request.limit <= largest:
        return None
    role = cast(Role, settings.audit_export_large_role)
    return role, (
        f"an export of up to {request.limit:,} rows needs the {role} role (an export's size is its"
        f" limit=, {settings.audit_export_max_rows:,} when not given; rows are not counted first)."
        + (f" For at most {largest:,} rows, add limit={largest}." if largest else "")
    )


async def run(services: Services, tokens: list[str], invocation: Invocation) -> CommandResult:
    """Parse (refusing bad input before any query), then query, export or list the indexes."""
    settings = services.settings
    request = audit.parse(tokens, limits(settings))
    timeout = settings.audit_statement_timeout_seconds
    if isinstance(request, audit.IndexesRequest):
        return await indexes(services.platform_db, timeout)
    if isinstance(request, audit.ExportRequest):
        if invocation.source == "cli":
            return await _export_from_terminal(services, request)
        return await _export_for_slack(services, request)
    return await audit.run(services.platform_db, request, timeout, budget(settings))


async def _export_for_slack(services: Services, request: audit.ExportRequest) -> CommandResult:
    settings = services.settings
    if request.output is not None:
        raise UsageError("output= writes a file on the bot's host: from Slack the file comes in the thread")
    # Spooled to a private file rather than memory; whoever posts the result uploads and removes it.
    spool_dir = settings.audit_export_spool_dir
    if spool_dir is not None:
        spool_dir.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix="chatops-audit-", suffix=f".{request.format}", dir=spool_dir)
    spool = Path(name)
    result: CommandResult | None = None
    try:
        with os.fdopen(handle, "wb") as sink:
            result = await export(
                services.platform_db,
                request,
                sink,
                statement_timeout=settings.audit_statement_timeout_seconds,
                destination="slack",
                max_bytes=settings.audit_export_slack_max_bytes,
            )
    finally:
        if not (isinstance(result, audit.AuditExport) and result.rows):
            _discard(spool)
    if isinstance(result, audit.AuditExport) and result.rows:
        return result.model_copy(update={"spool": spool})
    return result


async def _export_from_terminal(services: Services, request: audit.ExportRequest) -> CommandResult:
    timeout = services.settings.audit_statement_timeout_seconds
    if request.output is None or request.output == "-":
        written = await export(
            services.platform_db, request, sys.stdout.buffer, statement_timeout=timeout, destination="stdout"
        )
        sys.stdout.buffer.flush()
        return written
    path, partial, sink = _open_partial(request.output)
    result: CommandResult | None = None
    try:
        result = await export(
            services.platform_db, request, sink, statement_timeout=timeout, destination=str(path)
        )
    finally:
        _finish(path, partial, sink, keep=isinstance(result, audit.AuditExport))
    return result


def _open_partial(output: str) -> tuple[Path, Path, IO[bytes]]:
    """Open FILE.part beside the target: an export that fails leaves no half-written FILE."""
    path = Path(output).expanduser()
    if path.is_dir():
        raise UsageError(f"{path} is a directory: name a file for output=")
    if not path.parent.is_dir():
        raise UsageError(f"no such directory: {path.parent}")
    partial = path.with_name(path.name + ".part")
    try:
        return path, partial, partial.open("wb")
    except OSError as error:
        raise UsageError(f"cannot write {path}: {error.strerror or error}") from None


def _discard(spool: Path) -> None:
    """Remove a spooled export that will not be uploaded (it failed or holds no rows)."""
    spool.unlink(missing_ok=True)


def _finish(path: Path, partial: Path, sink: IO[bytes], keep: bool) -> None:
    """Close the partial file and rename it into place, or remove it."""
    sink.close()
    if keep:
        partial.replace(path)
    else:
        partial.unlink(missing_ok=True)
