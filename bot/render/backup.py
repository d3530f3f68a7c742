"""Render /backup and /restore results (list, verify, prune) for Slack and the terminal.

Plans, progress and outcomes of a restore or a prune are the gate's own renderings.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape as escape_markup
from rich.table import Table

from bot.render.common import Block, Message, SlackReply, context, escape, header, plain, section
from commands.backup import BackupResult, PruneResult, StoredBackup
from commands.formatting import format_bytes
from commands.restore import BackupList, VerifyReport

_LIST_LIMIT = 40  # lines in one Slack section stay under its 3,000 characters


def _fallback(result: Any) -> SlackReply:
    text = escape(str(result))
    return SlackReply(main=Message(text=text[:3000], blocks=[section(text)]))


# --- /backup -----------------------------------------------------------------------------------------


def _backup_lines(result: BackupResult) -> list[str]:
    """Write what a backup holds, as mrkdwn (the terminal shows it through `plain`)."""
    lines = []
    if result.database:
        lines.append(
            f"database `{escape(result.database)}`: {result.tables} tables, {result.rows:,} rows,"
            f" dump {format_bytes(result.database_bytes)} in {result.database_seconds:.1f} s"
        )
    if result.type != "db":
        size = format_bytes(result.objects_bytes)
        lines.append(f"objects: {result.objects:,} ({size}) in {result.objects_seconds:.1f} s")
    return lines


def _prune_blocks(result: PruneResult) -> tuple[str, list[Block]]:
    verb = "Would delete" if result.dry_run else "Nothing to delete"
    title = f"Backup retention: {result.keep_days} days"
    lines = [f"• `{escape(item.line())}`" for item in result.delete[:_LIST_LIMIT]]
    lines += [f"• unfinished backup `{escape(name)}`" for name in result.leftovers[:_LIST_LIMIT]]
    body = f"*{verb}*\n" + ("\n".join(lines) if lines else "• nothing is older than the retention")
    kept = "\n".join(f"• {escape(item)}" for item in result.kept) or "• (no backups)"
    blocks = [
        header(title),
        section(body),
        section(f"*Always kept*\n{kept}"),
        context(escape(result.location)),
    ]
    text = f"{title}: {verb.lower()} {len(result.delete)} backup(s)"
    return text, blocks


def slack_backup(result: Any) -> SlackReply:
    """Build the reply to /backup (a backup taken) or /backup prune --dry-run."""
    if isinstance(result, PruneResult):
        text, pruned = _prune_blocks(result)
        return SlackReply(main=Message(text=text, blocks=pruned))
    if not isinstance(result, BackupResult):
        return _fallback(result)
    lines = _backup_lines(result)
    blocks: list[Block] = [
        header(f"Backup {result.id} ({result.type_label})"),
        section(
            f":white_check_mark: *{format_bytes(result.total_bytes)}* in {result.seconds:.1f} s\n"
            + "\n".join(f"• {line}" for line in lines)
        ),
    ]
    if result.warnings:
        blocks.append(section(":warning: " + escape("; ".join(result.warnings[:5]))))
    backup_id = escape(result.id)
    blocks.append(
        context(
            f"made by {escape(result.made_by)} · in `{escape(result.location)}` ·"
            f" check it with `/restore verify {backup_id}`"
        )
    )
    text = f"Backup {backup_id} ({escape(result.type_label)}, {format_bytes(result.total_bytes)}) done"
    return SlackReply(main=Message(text=text, blocks=blocks))


def terminal_backup(result: Any, console: Console) -> None:
    """Print a backup taken, or what prune would delete."""
    if isinstance(result, PruneResult):
        verb = "would delete" if result.dry_run else "nothing to delete"
        console.print(
            f"[bold]Backup retention {result.keep_days} days[/] in {escape_markup(result.location)}"
        )
        console.print(f"{verb}:")
        for item in result.delete:
            console.print(f"  {escape_markup(item.line())}")
        for name in result.leftovers:
            console.print(f"  unfinished backup {escape_markup(name)}")
        for line in result.kept:
            console.print(f"  kept: {escape_markup(line)}")
        return
    if not isinstance(result, BackupResult):
        console.print(escape_markup(str(result)))
        return
    console.print(
        f"[bold green]Backup {result.id}[/] ({result.type_label}) {format_bytes(result.total_bytes)}"
        f" in {result.seconds:.1f} s → {escape_markup(result.location)}"
    )
    for line in _backup_lines(result):
        console.print(f"  {escape_markup(plain(line))}")
    for warning in result.warnings:
        console.print(f"  [yellow]warning:[/] {escape_markup(warning)}")


# --- /restore list and verify ------------------------------------------------------------------------


def _verified(item: StoredBackup) -> str:
    return f" · verified {item.verified_at:%Y-%m-%d %H:%M}" if item.verified_at else ""


def _verify_lines(report: VerifyReport, code: bool) -> list[str]:
    """Write what a verification found, as text; `code` marks the scratch database as code (Slack)."""
    scratch = f"`{report.scratch_database}`" if code else report.scratch_database
    lines = [
        f"checksums: {report.files_checked - len(report.bad_files)}/{report.files_checked} files"
        f" ({format_bytes(report.bytes_checked)}) match, {report.checksum_seconds:.1f} s"
    ]
    lines += [f"  ✗ {item}" for item in report.bad_files[:10]]
    if report.test_restore:
        matching = sum(1 for item in report.tables if item.ok)
        lines.append(
            f"test restore into {scratch} (dropped after): {report.restore_seconds:.1f} s;"
            f" row counts {matching}/{len(report.tables)} tables match"
        )
        for item in report.tables[:_LIST_LIMIT]:
            mark = "✓" if item.ok else "✗"
            found = "missing" if item.found is None else f"{item.found:,}"
            expected = "not in backup" if item.expected is None else f"{item.expected:,}"
            lines.append(f"  {mark} {item.name}: {expected} at backup, {found} restored")
    elif not report.bad_files:
        lines.append("no database in this backup: checksums only")
    return lines


def slack_restore(result: Any) -> SlackReply:
    """Build the reply to /restore list or /restore verify."""
    if isinstance(result, BackupList):
        lines = [f"`{escape(item.line())}`{_verified(item)}" for item in result.backups[:_LIST_LIMIT]]
        problems = [
            f"• `{escape(item.id)}`: {escape(item.problem)}" for item in result.backups if item.problem
        ]
        blocks: list[Block] = [
            header(f"Backups ({len(result.backups)})"),
            section("\n".join(lines) if lines else "No backups yet: run `/backup`."),
        ]
        if len(result.backups) > _LIST_LIMIT:
            blocks.append(context(f"and {len(result.backups) - _LIST_LIMIT} older ones"))
        if problems:
            blocks.append(section(":warning: *Manifests that do not check out*\n" + "\n".join(problems[:10])))
        blocks.append(context(f"in `{escape(result.location)}` · `/restore verify <id>` · `/restore <id>`"))
        return SlackReply(main=Message(text=f"{len(result.backups)} backup(s)", blocks=blocks))
    if isinstance(result, VerifyReport):
        verdict = ":white_check_mark: verified" if result.ok else ":x: does NOT check out"
        report: list[Block] = [
            header(f"Verify backup {result.id} ({result.type_label})"),
            section(f"*{verdict}*\n" + escape("\n".join(_verify_lines(result, code=True)))),
        ]
        if result.problems:
            listed = "\n".join(f"• {item}" for item in result.problems[:10])
            report.append(section("*Problems*\n" + escape(listed)))
        report.append(context(f"in `{escape(result.location)}`"))
        text = f"Backup {escape(result.id)}: {'verified' if result.ok else 'does not check out'}"
        return SlackReply(main=Message(text=text, blocks=report))
    return _fallback(result)


def terminal_restore(result: Any, console: Console) -> None:
    """Print the backup list in the runbook's format, or a verification report."""
    if isinstance(result, BackupList):
        if not result.backups:
            console.print(f"no backups in {escape_markup(result.location)}")
        for item in result.backups:
            style = "" if item.manifest_ok else "[red]"
            end = "" if item.manifest_ok else "[/]"
            console.print(f"{style}{escape_markup(item.line())}{end}{_verified(item).replace(' · ', ' | ')}")
        for item in result.backups:
            if item.problem:
                console.print(f"[yellow]{item.id}: {escape_markup(item.problem)}[/]")
        return
    if isinstance(result, VerifyReport):
        style = "green" if result.ok else "red"
        verdict = "verified" if result.ok else "does NOT check out"
        console.print(f"[bold {style}]Backup {result.id} ({result.type_label}) {verdict}[/]")
        table = Table(show_header=False, box=None, pad_edge=False)
        table.add_column("line")
        for line in _verify_lines(result, code=False):
            table.add_row(escape_markup(line))
        console.print(table)
        for problem in result.problems:
            console.print(f"  [red]problem:[/] {escape_markup(problem)}")
        return
    console.print(escape_markup(str(result)))
