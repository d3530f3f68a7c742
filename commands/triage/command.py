"""/triage as one command: whichever of its forms was asked for, run with what that form needs."""

from __future__ import annotations

from commands.base import CommandResult
from commands.triage.lookups import run_logs, run_lookup
from commands.triage.orchestration import run_triage
from commands.triage.sources import TriageSources
from commands.triage_checklist import Checklist
from commands.triage_grammar import ChangesArgs, LogsArgs, LookupArgs, TriageCommand


async def run(
    command: TriageCommand,
    sources: TriageSources,
    checklist: Checklist | None,
    *,
    checklist_path: str = "",
    default_timeout: float | None = None,
    lookup_timeout: float = 10.0,
) -> CommandResult:
    """Run whichever form of /triage was asked for (a lookup or the logs need no checklist)."""
    if isinstance(command, LookupArgs):
        return await run_lookup(command, sources.log_paths, sources.platform_db, lookup_timeout)
    if isinstance(command, LogsArgs):
        return await run_logs(command, sources.log_paths, sources.clock())
    if isinstance(command, ChangesArgs):
        raise TypeError("/triage changes needs the bot's change sources: its runner answers it")
    if checklist is None:
        raise TypeError("the checklist run needs the checklist")
    return await run_triage(
        command, sources, checklist, checklist_path=checklist_path, default_timeout=default_timeout
    )
