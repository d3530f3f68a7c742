"""Render /audit results: Block Kit tables in code blocks for Slack, rich tables for a terminal."""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from rich.cells import cell_len, set_cell_size
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from bot.render.common import (
    SECTION_LIMIT,
    STATUS_EMOJI,
    Block,
    Message,
    SlackReply,
    Upload,
    clip,
    context,
    escape,
    header,
    section,
)
from commands.audit import AuditExport, AuditReport, AuditRow, AuditUnavailable, Breakdown, Group
from commands.audit_indexes import AuditIndexes
from commands.base import CommandResult
from commands.formatting import format_bytes

MAX_BLOCKS = 50
ROW_COLUMNS = ("time (UTC)", "action", "outcome", "user", "ip", "request id")
# Widest a cell may be, per column, before it is cut with an ellipsis (IPv6 needs 39).
ROW_CAPS = (14, 24, 26, 24, 39, 32)
KEY_CAP = 40
SUBJECT_CAP = 80
# Characters that would break a table line or hide what they do: controls, format characters
# (bidi overrides among them) and line separators. Shown as U+FFFD so that they stay visible.
_HIDDEN = {"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"}


def _cell(value: str) -> str:
    """Make text safe for one table cell: one line, nothing invisible, no code-block fence."""
    if value.isascii() and value.isprintable():
        return value.replace("`", "ˋ")
    return "".join("�" if unicodedata.category(char) in _HIDDEN else char for char in value.replace("`", "ˋ"))


def _fit(value: str, width: int) -> str:
    """Pad or cut a cell to `width` terminal cells, marking a cut with an ellipsis."""
    if cell_len(value) <= width:
        return set_cell_size(value, width)
    return set_cell_size(value, width - 1) + "…"


def text_table(columns: Sequence[str], rows: Sequence[Sequence[str]], caps: Sequence[int]) -> list[str]:
    """Lay rows out as aligned plain-text lines (header first), each cell within its cap."""
    cleaned = [[_cell(cell) for cell in row] for row in rows]
    widths = []
    for index, title in enumerate(columns):
        widest = max([cell_len(title), *(cell_len(row[index]) for row in cleaned)])
        widths.append(max(1, min(widest, caps[index])))
    lines = []
    for row in [list(columns), *cleaned]:
        lines.append("  ".join(_fit(cell, width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return lines


def code_sections(title: str, lines: list[str]) -> list[Block]:
    """Put a table in code blocks, as many sections as the 3000-character limit needs."""
    head, body = escape(lines[0]), [escape(line) for line in lines[1:]]
    blocks: list[Block] = []
    prefix = f"*{escape(title)}*\n" if title else ""
    chunk: list[str] = []
    size = len(prefix) + len(head) + 8

    def flush() -> None:
        nonlocal prefix, chunk, size
        blocks.append(section(prefix + "```" + "\n".join([head, *chunk]) + "```"))
        prefix, chunk = "", []
        size = len(head) + 8

    for line in body:
        if chunk and size + len(line) + 1 > SECTION_LIMIT:
            flush()
        chunk.append(line[: SECTION_LIMIT - size - 1])
        size += len(chunk[-1]) + 1
    if chunk or not blocks:
        flush()
    return blocks


def _when(moment: datetime | None, short: bool = False) -> str:
    if moment is None:
        return "-"
    return f"{moment:%m-%d %H:%M:%S}" if short else f"{moment:%Y-%m-%d %H:%M:%S}"


def _plural(count: int, word: str) -> str:
    return f"{count:,} {word}" if count == 1 else f"{count:,} {word}s"


def _significant(value: int, digits: int = 2) -> int:
    """Round to `digits` significant figures: an estimate claims no more than that."""
    if value < 10**digits:
        return value
    step = 10 ** (len(str(value)) - digits)
    return int(round(value / step) * step)


def figure(value: int, estimated: bool = False, at_least: bool = False) -> str:
    """Write a count: exact as it is, a lower bound as ≥N, an estimate as ≈N (two significant figures)."""
    if at_least:
        return f"≥{value:,}"
    if estimated:
        return f"≈{_significant(value):,}"
    return f"{value:,}"


def _counted(value: int, word: str, estimated: bool = False, at_least: bool = False) -> str:
    return f"{figure(value, estimated, at_least)} {word if value == 1 and not estimated else word + 's'}"


def _totals_parts(report: AuditReport) -> list[str]:
    """Return the totals as phrases (events, users, IPs), each marked ≈ or ≥ when it is not exact."""
    totals = report.totals
    user_word = "username" if totals.users_are == "usernames" else "user"
    return [
        _counted(totals.events, "event", "events" in totals.estimated),
        _counted(
            totals.distinct_users,
            user_word,
            "distinct_users" in totals.estimated,
            "distinct_users" in totals.at_least,
        ),
        _counted(
            totals.distinct_ips, "IP", "distinct_ips" in totals.estimated, "distinct_ips" in totals.at_least
        ),
    ]


def estimate_text(report: AuditReport) -> str | None:
    """Say which figures are estimates and what they were estimated from, or None when all are exact."""
    estimate = report.estimate
    if estimate is None:
        return None
    one_in = max(1, round(1 / estimate.fraction)) if estimate.fraction > 0 else 0
    exact = (
        "the totals and the rows listed are exact"
        if not report.totals.estimated and not (report.totals.at_least)
        else "the rows listed are exact"
    )
    return (
        f"≈ estimated and ≥ at least (what the sample saw): from a sample of {estimate.sample_rows:,}"
        f" matching rows (1 in {one_in:,}; {estimate.method}); {exact}."
    )


def index_text(report: AuditReport) -> str | None:
    """Say which missing index made this answer read the whole table, or None."""
    if report.missing_index is None:
        return None
    return (
        f"The index {report.missing_index} is not in place, so this answer read the table itself:"
        " /audit indexes shows the reviewed index file and what is missing."
    )


def _row_cells(row: AuditRow) -> list[str]:
    user = row.username if row.username is not None else (str(row.user_id) if row.user_id else "")
    return [
        _when(row.timestamp, short=True),
        row.action,
        row.outcome,
        user,
        row.ip_address or "",
        row.request_id or "",
    ]


def _group_table(breakdown: Breakdown) -> tuple[list[str], list[list[str]], list[int]]:
    # Grouped by user, every line is one user: a users column would only say 1.
    per_user = bool({"user", "username"} & set(breakdown.columns))
    columns = [*breakdown.columns, "events", "users", "IPs", "first (UTC)", "last (UTC)"]
    caps = [KEY_CAP] * len(breakdown.columns) + [11, 8, 8, 15, 15]
    if per_user:
        del columns[len(breakdown.columns) + 1], caps[len(breakdown.columns) + 1]
    with_ips = any(group.ips for group in breakdown.groups)
    if with_ips:
        columns.append("addresses")
        caps.append(90)
    rows = []
    for group in breakdown.groups:
        counts = _counts(group, breakdown.estimated)
        if per_user:
            del counts[1]
        cells = [*(key or "-" for key in group.key), *counts]
        if with_ips:
            cells.append(", ".join(group.ips))
        rows.append(cells)
    return columns, rows, caps


def _counts(group: Group, estimated: bool = False) -> list[str]:
    mark = "≈" if estimated else ""
    return [
        figure(group.events, estimated),
        figure(group.distinct_users, estimated, "distinct_users" in group.at_least),
        figure(group.distinct_ips, estimated, "distinct_ips" in group.at_least),
        mark + _when(group.first_seen, short=True),
        mark + _when(group.last_seen, short=True),
    ]


def _breakdown_title(breakdown: Breakdown, form: str) -> str:
    title = breakdown.title
    shown = len(breakdown.groups)
    if breakdown.total_groups > shown and form != "failed-logins":
        total = figure(breakdown.total_groups, breakdown.estimated, breakdown.total_groups_at_least)
        title += f" (top {shown} of {total})"
    if breakdown.estimated:
        title += ", estimated from a sample"
    return title


def _title(report: AuditReport) -> str:
    subject = clip(report.description, SUBJECT_CAP)
    return f"Audit · {subject} · last {report.since}"


def _totals_text(report: AuditReport) -> str:
    totals = report.totals
    if totals.events == 0:
        return _nothing_text(report)
    return (
        " · ".join(f"*{part}*" for part in _totals_parts(report))
        + f" · first seen `{_when(totals.first_seen)}` · last seen `{_when(totals.last_seen)}` UTC"
    )


def _nothing_text(report: AuditReport) -> str:
    return f"No events matched in the last {report.since} (a longer since= looks further back)."


def summary_text(report: AuditReport) -> str:
    """Write the one-line fallback text (notifications, screen readers), as mrkdwn."""
    events, users, ips = _totals_parts(report)
    return clip(f"{escape(_title(report))}: {events}, {ips}, {users}", 500)


def _omitted_text(report: AuditReport, command: str, suffix: str = "") -> str:
    shown = len(report.breakdowns[0].groups) if report.omitted_what == "users" else len(report.rows)
    more = figure(report.omitted, report.omitted_estimated)
    text = f"{more} more {report.omitted_what} not shown (showing {shown:,}, limit={report.limit})."
    if report.export_arguments:
        # Inside inline code a backtick would end it early; the lookalike keeps the line intact.
        text += f" Every row: `{command} {_cell(clip(report.export_arguments, 300))}{suffix}`"
    return text


def _rows_title(report: AuditReport) -> str:
    order = "in order" if report.form == "request" else "newest first"
    total = figure(report.totals.events, "events" in report.totals.estimated)
    return f"{_plural(len(report.rows), 'event')} of {total}, {order}"


def report_blocks(report: AuditReport) -> tuple[list[Block], list[list[Block]]]:
    """Build the channel message's blocks, and any further blocks for thread messages."""
    blocks: list[Block] = [header(_title(report))]
    intro = _totals_text(report)
    if report.note:
        intro += f"\n{escape(_cell(report.note))}"
    blocks.append(section(intro))
    tables: list[Block] = []
    for breakdown in report.breakdowns:
        if not breakdown.groups:
            if report.form == "failed-logins":
                tables.append(section(f"*{escape(breakdown.title)}*: none."))
            continue
        columns, rows, caps = _group_table(breakdown)
        tables += code_sections(_breakdown_title(breakdown, report.form), text_table(columns, rows, caps))
    if report.rows:
        title = _rows_title(report)
        tables += code_sections(
            title, text_table(ROW_COLUMNS, [_row_cells(row) for row in report.rows], ROW_CAPS)
        )
    footer: list[Block] = []
    if report.omitted > 0:
        footer.append(context(":scissors: " + escape(_omitted_text(report, "/audit"))))
    if (estimated := estimate_text(report)) is not None:
        footer.append(context(":abacus: " + escape(estimated)))
    if (missing := index_text(report)) is not None:
        footer.append(context(":warning: " + escape(missing)))
    footer.append(
        context(
            f"read-only snapshot of `{escape(report.database)}` at {report.queried_at:%H:%M:%S} UTC"
            f" in {report.duration_ms:.0f} ms"
        )
    )
    room = MAX_BLOCKS - len(blocks) - len(footer)
    main = blocks + tables[:room] + footer
    spill = tables[room:]
    thread = [spill[start : start + MAX_BLOCKS] for start in range(0, len(spill), MAX_BLOCKS)]
    return main, thread


def _report_reply(report: AuditReport) -> SlackReply:
    main, thread = report_blocks(report)
    text = summary_text(report)
    return SlackReply(
        main=Message(text=text, blocks=main),
        thread=[Message(text=f"{text} (continued)", blocks=blocks) for blocks in thread],
    )


def _export_reply(result: AuditExport) -> SlackReply:
    size = format_bytes(result.size_bytes)
    # The subject is what the user typed: escaped once here, for the text, the blocks and the file.
    what = escape(f"{clip(result.description, SUBJECT_CAP)}, last {result.since}")
    text = f"Audit export: {result.rows:,} rows ({result.format.upper()}, {size}) — {what}"
    lines = [f":page_facing_up: *Audit export* · *{result.rows:,}* rows · {result.format.upper()} · {size}"]
    lines.append(what)
    blocks: list[Block] = [section("\n".join(lines))]
    if result.truncated:
        blocks.append(context(f":warning: {escape(result.truncated)}"))
    files: list[Upload] = []
    if result.rows == 0:
        blocks.append(context("No rows matched, so there is no file."))
    else:
        blocks.append(context(f"The file is in the thread · `{escape(result.database)}` read-only"))
        if result.note:
            blocks.append(context(escape(result.note)))
        files.append(
            Upload(
                filename=result.filename,
                content=b"",
                title=clip(f"audit_log export: {what}", 200),
                alt_text=clip(text, 200),
                path=result.spool,
            )
        )
    return SlackReply(main=Message(text=clip(text, 500), blocks=blocks), files=files)


def _indexes_reply(result: AuditIndexes) -> SlackReply:
    blocks: list[Block] = [header("audit_log indexes for /audit")]
    if result.checked:
        present = sum(1 for item in result.statements if item.present and item.valid)
        state = f"{present} of {len(result.statements)} in place in `{escape(result.database)}`"
        if result.missing:
            state += " · missing or invalid: " + ", ".join(f"`{escape(name)}`" for name in result.missing)
    else:
        state = f"could not check `{escape(result.database)}`: {escape(result.detail)}"
    if result.detail and result.checked:
        state += f" · {escape(result.detail)}"
    blocks.append(
        section(
            f"{state}\nchatops never creates them itself: review, then apply as the table's owner"
            " with `psql -X -v ON_ERROR_STOP=1 -f audit_indexes.sql` (the file is in the thread)."
        )
    )
    for item in result.statements:
        mark = _index_mark(item.present, item.valid)
        blocks.append(
            section(f"{mark} *{escape(item.name)}* — {escape(item.purpose)}\n```{escape(item.sql)}```")
        )
    text = f"audit_log indexes: {len(result.missing)} missing" if result.checked else "audit_log indexes"
    upload = Upload(
        filename="audit_indexes.sql",
        content=result.text.encode("utf-8"),
        title="audit_indexes.sql",
        alt_text="CREATE INDEX statements for the platform's audit_log",
    )
    return SlackReply(main=Message(text=text, blocks=blocks[:MAX_BLOCKS]), files=[upload])


def _index_mark(present: bool | None, valid: bool | None) -> str:
    if present is None:
        return STATUS_EMOJI["unknown"]
    if not present or not valid:
        return STATUS_EMOJI["down"]
    return STATUS_EMOJI["ok"]


def _unavailable_text(result: AuditUnavailable) -> str:
    text = f"/audit failed on {result.database}: {result.reason} — {result.detail}"
    if result.rows_written is not None:
        text += f" (the export stopped after {result.rows_written:,} rows)"
    return text


def _unavailable_reply(result: AuditUnavailable) -> SlackReply:
    text = escape(_unavailable_text(result))
    return SlackReply(main=Message(text=clip(text, 500), blocks=[section(f"{STATUS_EMOJI['down']} {text}")]))


def slack(result: CommandResult) -> SlackReply:
    """Build the Slack reply for any /audit result."""
    if isinstance(result, AuditReport):
        return _report_reply(result)
    if isinstance(result, AuditExport):
        return _export_reply(result)
    if isinstance(result, AuditIndexes):
        return _indexes_reply(result)
    if isinstance(result, AuditUnavailable):
        return _unavailable_reply(result)
    raise TypeError(f"not an /audit result: {type(result).__name__}")


# ---------------------------------------------------------------- terminal


def _print_table(console: Console, title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    table = Table(title=title, title_justify="left", title_style="bold", box=None, pad_edge=False)
    for column in columns:
        table.add_column(column, no_wrap=True)
    for row in rows:
        # Text cells: data is never read as rich markup.
        table.add_row(*(Text(_cell(cell)) for cell in row))
    # One row per line, as wide as it needs (like psql): folded cells are hard to read and to copy.
    natural = Measurement.get(console, console.options.update(width=10_000), table).maximum
    width = console.width
    console.width = max(width, natural)
    try:
        console.print(table)
    finally:
        console.width = width


def _terminal_report(report: AuditReport, console: Console) -> None:
    console.print(Text(_title(report), style="bold"))
    totals = report.totals
    if totals.events == 0:
        console.print(_nothing_text(report), markup=False)
    else:
        console.print(
            " · ".join(_totals_parts(report)) + f" · first seen {_when(totals.first_seen)}"
            f" · last seen {_when(totals.last_seen)} UTC",
            markup=False,
        )
    if report.note:
        console.print(Text(report.note, style="dim"))
    for breakdown in report.breakdowns:
        if breakdown.groups:
            columns, rows, _ = _group_table(breakdown)
            console.print()
            _print_table(console, _breakdown_title(breakdown, report.form), columns, rows)
    if report.rows:
        console.print()
        _print_table(console, _rows_title(report), ROW_COLUMNS, [_row_cells(row) for row in report.rows])
    if report.omitted > 0:
        console.print()
        # Slack shows the command as code; the terminal as it is (the only backticks: `_cell` swapped
        # any in the arguments for a lookalike).
        omitted = _omitted_text(report, "chatops audit", " --output audit.csv").replace("`", "")
        console.print(Text(omitted, style="yellow"))
    if (estimated := estimate_text(report)) is not None:
        console.print(Text(estimated, style="cyan"))
    if (missing := index_text(report)) is not None:
        console.print(Text(missing, style="yellow"))
    console.print(
        f"[dim]read-only snapshot of {report.database} at {report.queried_at:%H:%M:%S} UTC"
        f" in {report.duration_ms:.0f} ms[/]",
        highlight=False,
    )


def _terminal_export(result: AuditExport, console: Console) -> None:
    # With the rows on stdout, the summary goes to stderr so that the file stays clean.
    out = Console(stderr=True, highlight=False, soft_wrap=True) if result.destination == "stdout" else console
    where = "stdout" if result.destination == "stdout" else result.destination
    out.print(
        Text(
            f"wrote {result.rows:,} rows ({result.format.upper()}, {format_bytes(result.size_bytes)}) of"
            f" {result.description}, last {result.since}, to {where} in {result.duration_ms / 1000:.1f} s"
            f" ({result.rows_per_second:,.0f} rows/s)"
        )
    )
    if result.truncated:
        out.print(Text(result.truncated, style="yellow"))
    if result.note:
        out.print(Text(result.note, style="dim"))


def _terminal_indexes(result: AuditIndexes, console: Console) -> None:
    # The file verbatim, so that `chatops audit indexes > audit_indexes.sql` gives it back;
    # the database's state follows as SQL comments.
    console.out(result.text.rstrip("\n"), highlight=False)
    if not result.checked:
        console.out(f"-- could not check: {result.detail}", highlight=False)
        return
    present = [item.name for item in result.statements if item.present and item.valid]
    console.out(f"-- {result.database}: in place: {', '.join(present) or 'none'}", highlight=False)
    console.out(
        f"-- {result.database}: missing or invalid: {', '.join(result.missing) or 'none'}", highlight=False
    )
    if result.detail:
        console.out(f"-- {result.detail}", highlight=False)


def terminal(result: Any, console: Console) -> None:
    """Print any /audit result."""
    if isinstance(result, AuditReport):
        _terminal_report(result, console)
    elif isinstance(result, AuditExport):
        _terminal_export(result, console)
    elif isinstance(result, AuditIndexes):
        _terminal_indexes(result, console)
    elif isinstance(result, AuditUnavailable):
        Console(stderr=True, highlight=False).print(Text(_unavailable_text(result), style="bold red"))
    else:
        raise TypeError(f"not an /audit result: {type(result).__name__}")
