"""Render /triage for Slack (a summary in the channel, the evidence in its thread) and the terminal."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime

from pydantic import Field
from rich.console import Console
from rich.markup import escape as escape_markup
from rich.table import Table

from bot.render.changes import changes_blocks, changes_reply, changes_terminal
from bot.render.common import (
    SECTION_LIMIT,
    STATUS_EMOJI,
    STATUS_STYLE,
    Block,
    Message,
    SlackReply,
    clip,
    context,
    escape,
    header,
    section,
)
from bot.render.picture import upload_of
from commands.base import CommandResult
from commands.changes import ChangesReport
from commands.formatting import format_bytes
from commands.graph import GraphReport
from commands.triage import (
    Evidence,
    Finding,
    LogEntry,
    LogsReport,
    LookupReport,
    Scan,
    TriageReport,
)

# Slack allows 50 blocks a message; a little room is kept for the header and footer of a part.
MESSAGE_BLOCKS = 45
# Past this much text a message is hard to read in a thread, whatever Slack accepts.
MESSAGE_CHARACTERS = 12_000
SECTION_TEXT = SECTION_LIMIT - 100  # room for the code fences and a title around a chunk
CELL = 60
ENTRY_JSON = 700  # characters of one log line's JSON shown in Slack
ENTRIES_IN_MAIN = 10
ENTRIES_IN_THREAD = 400


def slack(result: CommandResult) -> SlackReply:
    """Build the Slack reply for any form of /triage."""
    if isinstance(result, TriageReport):
        return triage_reply(result)
    if isinstance(result, LookupReport):
        return lookup_reply(result)
    if isinstance(result, LogsReport):
        return logs_reply(result)
    if isinstance(result, ChangesReport):
        return changes_reply(result)
    raise TypeError(f"not a /triage result: {type(result).__name__}")


def terminal(result: CommandResult, console: Console) -> None:
    """Print any form of /triage to the terminal."""
    if isinstance(result, TriageReport):
        triage_terminal(result, console)
    elif isinstance(result, LookupReport):
        lookup_terminal(result, console)
    elif isinstance(result, LogsReport):
        logs_terminal(result, console)
    elif isinstance(result, ChangesReport):
        changes_terminal(result, console)
    else:
        raise TypeError(f"not a /triage result: {type(result).__name__}")


# --- shared pieces --------------------------------------------------------------------------


def _counts_text(report: TriageReport) -> str:
    return " · ".join(f"{count} {status}" for status, count in report.counts().items())


def _slowest(report: TriageReport) -> Finding | None:
    return max(report.findings, key=lambda finding: finding.duration_ms, default=None)


def _seconds(milliseconds: float) -> str:
    return f"{milliseconds / 1000:.1f} s" if milliseconds >= 1000 else f"{milliseconds:.0f} ms"


def sections(title: str, body: str, code: bool = False) -> list[Block]:
    """Split text into section blocks of at most Slack's 3000 characters, at line ends."""
    lines = body.splitlines() or [""]
    chunks: list[list[str]] = [[]]
    size = 0
    for raw in lines:
        line = clip(raw, SECTION_TEXT - 50)
        if chunks[-1] and size + len(line) + 1 > SECTION_TEXT - len(title):
            chunks.append([])
            size = 0
        chunks[-1].append(line)
        size += len(line) + 1
    blocks = []
    for index, chunk in enumerate(chunks):
        text = "\n".join(chunk)
        if code:
            text = f"```{text}```"
        prefix = title if index == 0 else f"{title} (continued)" if title else ""
        blocks.append(section(f"{prefix}\n{text}" if prefix else text))
    return blocks


def table_text(evidence: Evidence) -> str:
    """Write an evidence table as aligned plain text (for a code block)."""
    if not evidence.rows:
        return ""
    rows = [[clip(str(cell), CELL) for cell in row] for row in evidence.rows]
    columns = evidence.columns or [""] * len(rows[0])
    widths = [len(name) for name in columns]
    for row in rows:
        for index, cell in enumerate(row[: len(widths)]):
            widths[index] = max(widths[index], len(cell))
    lines = ["  ".join(name.ljust(widths[i]) for i, name in enumerate(columns)).rstrip()]
    lines += [
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[: len(widths)])).rstrip() for row in rows
    ]
    return "\n".join(lines)


def pack(groups: Iterable[list[Block]], title: str) -> list[Message]:
    """Put groups of blocks into as few messages as Slack's limits allow, never splitting a group.

    `title` is plain text (it may hold what the user typed); it is escaped for the fallback text.
    """
    messages: list[list[Block]] = [[]]
    size = 0
    for group in groups:
        group_size = sum(len(json.dumps(block)) for block in group)
        current = messages[-1]
        if current and (len(current) + len(group) > MESSAGE_BLOCKS or size + group_size > MESSAGE_CHARACTERS):
            messages.append([])
            size = 0
        # A group larger than a message on its own is cut: its blocks are independent sections.
        for block in group:
            if len(messages[-1]) >= MESSAGE_BLOCKS:
                messages.append([])
                size = 0
            messages[-1].append(block)
        size += group_size
    filled = [blocks for blocks in messages if blocks]
    total = len(filled)
    title = escape(title)
    return [
        Message(text=f"{title} ({index}/{total})" if total > 1 else title, blocks=blocks)
        for index, blocks in enumerate(filled, start=1)
    ]


# --- the checklist --------------------------------------------------------------------------


def summary_text(report: TriageReport) -> str:
    """Write the one-line fallback text (mrkdwn): the overall status and the worst findings."""
    bad = [escape(finding.title) for finding in report.findings if finding.status in {"critical", "warn"}]
    text = f"Triage: {report.status}"
    if bad:
        text += " — " + ", ".join(bad[:5]) + (" …" if len(bad) > 5 else "")
    return text


def finding_line(finding: Finding) -> str:
    """Write one finding as the summary's line: status, name, what was seen."""
    return f"{STATUS_EMOJI[finding.status]} *{escape(finding.title)}*: {escape(finding.headline)}"


def triage_blocks(report: TriageReport) -> list[Block]:
    """Build the channel message: status, counts, one line per finding (worst first)."""
    slowest = _slowest(report)
    blocks: list[Block] = [header(f"Triage: {report.status.upper()}")]
    intro = f"*{_counts_text(report)}* — rates over the last {escape(report.window)}"
    blocks.append(section(intro))
    lines = "\n".join(finding_line(finding) for finding in report.findings)
    blocks += sections("", lines)
    timing = f"{len(report.findings)} checks in {_seconds(report.duration_ms)}"
    if slowest is not None:
        timing += f" (slowest: {escape(slowest.title)}, {_seconds(slowest.duration_ms)})"
    blocks.append(
        context(
            f"{STATUS_EMOJI[report.status]} {timing} · {report.checked_at:%Y-%m-%d %H:%M:%S} UTC"
            " · evidence and the runbook's next steps in the thread"
        )
    )
    return blocks


def finding_blocks(finding: Finding) -> list[Block]:
    """Build one finding's evidence for the thread: figure, threshold, timing, tables, next steps."""
    facts = [
        f"*Seen:* {escape(finding.figure)}",
        f"*Threshold:* {escape(finding.threshold)}",
        f"*Took:* {_seconds(finding.duration_ms)} (limit {finding.timeout_seconds:g} s)",
    ]
    text = f"{STATUS_EMOJI[finding.status]} *{escape(finding.title)}* — {finding.status}\n" + " · ".join(
        facts
    )
    if finding.reason:
        text += f"\n*Why:* {escape(finding.reason)}"
    blocks: list[Block] = [section(text)]
    for evidence in finding.evidence:
        body = table_text(evidence)
        title = f"*{escape(evidence.title)}*"
        if body:
            blocks += sections(title, escape(body), code=True)
        if evidence.note:
            blocks.append(context(f"{escape(evidence.title)}: {escape(evidence.note)}"))
    for advice in finding.advice:
        steps = "\n".join(f"{number}. {escape(step)}" for number, step in enumerate(advice.steps, start=1))
        blocks += sections(f"*Next steps — {escape(advice.title)}* _({escape(advice.source)})_", steps)
    blocks.append({"type": "divider"})
    return blocks


class TriageWithGraph(TriageReport):
    """A triage report with the picture of the key metrics that goes into its thread."""

    # Kept out of JSON: the picture's data is Prometheus's, the findings already carry the figures.
    graph: GraphReport | None = Field(default=None, exclude=True, repr=False)


def triage_reply(report: TriageReport) -> SlackReply:
    """Build the reply: the summary in the channel, every finding's evidence and the graph in the thread."""
    blocks = triage_blocks(report)
    if report.changes is not None:
        blocks += changes_blocks(report.changes)
    main = Message(text=summary_text(report), blocks=blocks)
    thread = pack((finding_blocks(finding) for finding in report.findings), "Triage evidence")
    files = []
    if isinstance(report, TriageWithGraph) and report.graph is not None:
        upload = upload_of(report.graph)
        if upload is not None:
            files.append(upload)
    return SlackReply(main=main, thread=thread, files=files)


def triage_terminal(report: TriageReport, console: Console) -> None:
    """Print the findings as a table, then the evidence and next steps of those not ok."""
    style = STATUS_STYLE[report.status]
    console.print(f"[bold {style}]Triage: {report.status.upper()}[/]  {_counts_text(report)}")
    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    for column in ("status", "check", "seen", "threshold", "took"):
        table.add_column(column, overflow="fold")
    for finding in report.findings:
        colour = STATUS_STYLE[finding.status]
        table.add_row(
            f"[{colour}]{finding.status}[/]",
            escape_markup(finding.title),
            escape_markup(finding.headline if finding.status == "unknown" else finding.figure),
            escape_markup(finding.threshold),
            _seconds(finding.duration_ms),
        )
    console.print(table)
    for finding in report.findings:
        if finding.status == "ok":
            continue
        colour = STATUS_STYLE[finding.status]
        console.print()
        console.print(f"[bold {colour}]{finding.status.upper()}[/] [bold]{escape_markup(finding.title)}[/]")
        console.print(escape_markup(finding.headline))
        for evidence in finding.evidence:
            _print_evidence(evidence, console)
        for advice in finding.advice:
            source = escape_markup(advice.source)
            console.print(f"[bold]Next steps — {escape_markup(advice.title)}[/] [dim]({source})[/]")
            for number, step in enumerate(advice.steps, start=1):
                console.print(f"  {number}. {escape_markup(step)}")
    if report.changes is not None:
        console.print()
        changes_terminal(report.changes, console)
    slowest = _slowest(report)
    timing = f"{len(report.findings)} checks in {_seconds(report.duration_ms)}"
    if slowest is not None:
        timing += f", slowest {slowest.title} {_seconds(slowest.duration_ms)}"
    console.print(
        f"\n[dim]{timing}; rates over {report.window}; {report.checked_at:%Y-%m-%d %H:%M:%S} UTC[/]"
    )


def _print_evidence(evidence: Evidence, console: Console) -> None:
    if evidence.rows:
        table = Table(title=escape_markup(evidence.title), title_justify="left", box=None, pad_edge=False)
        for column in evidence.columns:
            table.add_column(escape_markup(column), overflow="fold")
        for row in evidence.rows:
            table.add_row(*(escape_markup(str(cell)) for cell in row))
        console.print(table)
    if evidence.note:
        console.print(f"[dim]{escape_markup(evidence.title)}: {escape_markup(evidence.note)}[/]")


# --- lookups and log lines ------------------------------------------------------------------


def _time(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] if value else "—"


def entry_line(entry: LogEntry) -> str:
    """Write one entry as a plain line: time, where it came from, level, what it says."""
    return f"{_time(entry.time)}  {entry.source}  {entry.level or '-'}  {entry.summary}"


def _entry_json(entry: LogEntry) -> str:
    return clip(json.dumps(entry.data, separators=(",", ":"), default=str, ensure_ascii=False), ENTRY_JSON)


def _scan_text(scan: Scan) -> str:
    text = f"{scan.files} file(s), {format_bytes(scan.bytes_read)} read"
    if scan.files_skipped:
        text += f", {scan.files_skipped} older than the window not opened"
    if scan.non_json:
        text += f", {scan.non_json} non-JSON line(s) skipped"
    if scan.untimed:
        text += f", {scan.untimed} without a timestamp skipped"
    if scan.files == 0 and not scan.files_skipped:
        text = "no log file matches " + (", ".join(scan.patterns) or "CHATOPS_LOG_PATHS")
    return text


def _entries_thread(entries: Sequence[LogEntry], title: str, more_hint: str) -> list[Message]:
    shown = entries[:ENTRIES_IN_THREAD]
    groups = [
        sections("", escape(f"{entry_line(entry)}\n{_entry_json(entry)}"), code=True) for entry in shown
    ]
    if len(entries) > len(shown):
        groups.append([context(escape(f"{len(entries) - len(shown)} more not shown here; {more_hint}"))])
    return pack(groups, title)


def _main_entries(entries: Sequence[LogEntry]) -> list[Block]:
    if not entries:
        return []
    lines = "\n".join(clip(entry_line(entry), 200) for entry in entries[:ENTRIES_IN_MAIN])
    blocks = sections("", escape(lines), code=True)
    if len(entries) > ENTRIES_IN_MAIN:
        blocks.append(context(f"{len(entries) - ENTRIES_IN_MAIN} more in the thread"))
    return blocks


def lookup_summary(report: LookupReport) -> str:
    """Write the one-line summary of a lookup."""
    what = "Trace" if report.kind == "trace" else "Request"
    return f"{what} {report.id}: {report.log_lines} log line(s), {report.audit_rows} audit row(s)"


def lookup_reply(report: LookupReport) -> SlackReply:
    """Build the reply: counts and the first entries in the channel, every entry in the thread."""
    what = "Trace" if report.kind == "trace" else "Request"
    blocks: list[Block] = [header(f"{what} {report.id}")]
    facts = f"*{report.log_lines}* log line(s) and *{report.audit_rows}* audit row(s), in time order"
    if report.entries and report.entries[0].time and report.entries[-1].time:
        span = report.entries[-1].time - report.entries[0].time
        facts += f", over {span.total_seconds():.3f} s"
    if not report.entries:
        facts = f"Nothing mentions `{escape(report.id)}` in the logs or the audit log."
    blocks.append(section(facts))
    blocks += _main_entries(report.entries)
    notes = [f"{_scan_text(report.scan)} in {_seconds(report.duration_ms)}"]
    if report.left_out:
        notes.append(f"{report.left_out} more matching line(s) left out")
    if report.audit_problem:
        notes.append(f":warning: audit log not searched: {report.audit_problem}")
    notes += [f":warning: {error}" for error in report.scan.errors[:3]]
    blocks.append(context(escape(" · ".join(notes))))
    hint = f"`chatops triage {report.kind} {report.id} --json` prints them all"
    thread = _entries_thread(report.entries, f"{what} {report.id}", hint)
    return SlackReply(main=Message(text=escape(lookup_summary(report)), blocks=blocks), thread=thread)


def _logs_title(report: LogsReport) -> str:
    filters = " ".join(part for part in (report.level, report.path) if part)
    return f"Logs{' ' + filters if filters else ''}, last {report.since}"


def logs_reply(report: LogsReport) -> SlackReply:
    """Build the reply: newest lines in the channel, all shown lines with their JSON in the thread."""
    title = _logs_title(report)
    blocks: list[Block] = [header(title)]
    if report.matched:
        text = f"*{len(report.entries)}* newest of *{report.matched}* matching line(s), newest first"
        if report.left_out:
            text += f"; {report.left_out} older left out (raise `limit=` or narrow the filters)"
    else:
        text = "No line matches."
    blocks.append(section(text))
    blocks += _main_entries(report.entries)
    notes = [f"{_scan_text(report.scan)} in {_seconds(report.duration_ms)}"]
    notes += [f":warning: {error}" for error in report.scan.errors[:3]]
    blocks.append(context(escape(" · ".join(notes))))
    thread = _entries_thread(report.entries, title, "narrow the filters or use the terminal with --json")
    summary = f"{title}: {report.matched} matching, {len(report.entries)} shown"
    return SlackReply(main=Message(text=escape(summary), blocks=blocks), thread=thread)


def _entries_table(entries: Sequence[LogEntry]) -> Table:
    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    for column in ("time", "source", "level", "what"):
        table.add_column(column, overflow="fold")
    for entry in entries:
        colour = {"error": "red", "critical": "red", "warning": "yellow"}.get(entry.level or "", "")
        level = f"[{colour}]{entry.level}[/]" if colour else (entry.level or "-")
        table.add_row(_time(entry.time), escape_markup(entry.source), level, escape_markup(entry.summary))
    return table


def lookup_terminal(report: LookupReport, console: Console) -> None:
    """Print every entry of the lookup in time order."""
    console.print(f"[bold]{escape_markup(lookup_summary(report))}[/]")
    if report.entries:
        console.print(_entries_table(report.entries))
    notes = [f"{_scan_text(report.scan)} in {_seconds(report.duration_ms)}"]
    if report.left_out:
        notes.append(f"{report.left_out} more matching line(s) left out")
    console.print(f"[dim]{escape_markup('; '.join(notes))}[/]")
    if report.audit_problem:
        console.print(f"[yellow]audit log not searched: {escape_markup(report.audit_problem)}[/]")
    for error in report.scan.errors:
        console.print(f"[yellow]{escape_markup(error)}[/]")


def logs_terminal(report: LogsReport, console: Console) -> None:
    """Print the newest matching lines, newest first, and what was left out."""
    console.print(f"[bold]{escape_markup(_logs_title(report))}[/]: {report.matched} matching")
    if report.entries:
        console.print(_entries_table(report.entries))
    notes = [f"{_scan_text(report.scan)} in {_seconds(report.duration_ms)}"]
    if report.left_out:
        notes.append(f"{report.left_out} older matching line(s) left out (limit=)")
    console.print(f"[dim]{escape_markup('; '.join(notes))}[/]")
    for error in report.scan.errors:
        console.print(f"[yellow]{escape_markup(error)}[/]")
