"""Render RCA drafts: the Slack preview with its File button, the caller's answer, the terminal."""

from __future__ import annotations

import re

from rich.console import Console
from rich.markup import escape as escape_markup

from bot.render.common import (
    SECTION_LIMIT,
    Block,
    Message,
    SlackReply,
    context,
    escape,
    header,
    link,
    section,
    split_text,
)
from commands.rca import RcaResult

FILE_ACTION = "rca_file"
# Sections of the preview; the draft's full text is what gets filed in any case.
PREVIEW_SECTIONS = 40

_HEADING = re.compile(r"^#{1,6}\s+(.*)$")
_BOLD = re.compile(r"\*\*(.+?)\*\*")
_LINK = re.compile(r"\[([^\]]+)\]\((https?://[^)\s]+)\)")
_COMMENT = re.compile(r"<!--.*?-->|^\[//\]: # \([^\n]*\)$", re.DOTALL | re.MULTILINE)
# An `&` that does not start one of the entities Markdown and mrkdwn both read the same way.
_BARE_AMPERSAND = re.compile(r"&(?!(?:amp|lt|gt);)")
_ENTITIES = {"&lt;": "<", "&gt;": ">", "&amp;": "&"}


def _text(markdown: str) -> str:
    """Escape Markdown text for mrkdwn once: `&lt;` already in it (escaped text) stays as it is."""
    return _BARE_AMPERSAND.sub("&amp;", markdown).replace("<", "&lt;").replace(">", "&gt;")


def _shown_link(match: re.Match[str]) -> str:
    """Write a Markdown link with its address in sight: its label may be anybody's words."""
    url = re.sub("&(?:lt|gt|amp);", lambda entity: _ENTITIES[entity.group(0)], match.group(2))
    return f"{match.group(1)} ({link(url) or match.group(2)})"


def to_mrkdwn(markdown: str) -> str:
    """Turn the draft's Markdown into Slack mrkdwn closely enough to read it, every word as text."""
    lines = []
    for raw in _COMMENT.sub("", markdown).splitlines():
        # The draft holds typed titles and notes, alert text and Slack names: escaped before markup.
        line = _text(raw)
        heading = _HEADING.match(line)
        if heading:
            lines.append(f"*{heading.group(1).strip()}*")
            continue
        line = line.replace("- [ ] ", "☐ ").replace("- [x] ", "☑ ")
        if line.startswith("- "):
            line = "• " + line[2:]
        line = _BOLD.sub(r"*\1*", line)
        line = _LINK.sub(_shown_link, line)
        lines.append(line.rstrip())
    return "\n".join(lines).strip()


def _chunks(text: str, size: int = SECTION_LIMIT - 100) -> list[str]:
    return [chunk for chunk in split_text(text, size) if chunk.strip()]


def status_line(result: RcaResult) -> str:
    """Say where the draft stands: filed (with a link) or not yet."""
    draft = result.draft
    rendered = f"rendered {draft.rendered_at:%Y-%m-%d %H:%M} UTC · {draft.language}"
    if draft.issue_number is not None and draft.issue_url:
        filed = f"{draft.filed_at:%H:%M} UTC" if draft.filed_at else ""
        issue = link(draft.issue_url, f"#{draft.issue_number}") or f"#{draft.issue_number}"
        return f"{rendered} · filed as {issue} {filed}".rstrip()
    return f"{rendered} · not filed yet"


def preview_message(result: RcaResult) -> Message:
    """Build the preview posted in the incident's thread, with the button that files it."""
    incident, draft = result.incident, result.draft
    body = to_mrkdwn(draft.body)
    chunks = _chunks(body)
    blocks: list[Block] = [header(f"RCA draft · {incident.reference} · {incident.title}")]
    blocks.append(context(status_line(result)))
    blocks += [section(chunk) for chunk in chunks[:PREVIEW_SECTIONS]]
    if len(chunks) > PREVIEW_SECTIONS:
        blocks.append(context("The preview is cut here; the whole draft is what gets filed."))
    label = (
        f"Update GitHub issue #{draft.issue_number}"
        if draft.issue_number is not None
        else "File as GitHub issue"
    )
    blocks.append(
        {
            "type": "actions",
            "block_id": "rca_actions",
            "elements": [
                {
                    "type": "button",
                    "action_id": FILE_ACTION,
                    "text": {"type": "plain_text", "text": label},
                    "style": "primary",
                    "value": str(incident.id),
                }
            ],
        }
    )
    return Message(text=f"RCA draft for {incident.reference}: {escape(incident.title)}", blocks=blocks)


def answer_text(result: RcaResult) -> str:
    """Write the answer to whoever asked: where the draft is, what filing did, or why not."""
    incident, draft = result.incident, result.draft
    if result.outcome == "not_filed":
        return f":warning: {escape(result.filing_error or 'not filed')}"
    if result.outcome in ("filed", "updated"):
        verb = "Filed as" if result.outcome == "filed" else "Updated"
        label = f"GitHub issue #{draft.issue_number}"
        issue = link(draft.issue_url or "", label) or label
        lines = [f":white_check_mark: {verb} {issue} ({incident.reference})."]
        if result.followups:
            filed = [f"#{item.issue_number}" for item in result.followups if item.issue_number is not None]
            lines.append(f"Follow-ups filed as their own issues: {', '.join(filed) or 'none yet'}.")
        lines += [f":warning: {escape(problem)}" for problem in result.followup_problems]
        lines += [f":warning: {escape(problem)}" for problem in result.slack_problems]
        return "\n".join(lines)
    where = "in its thread" if incident.header_ts else "in the channel"
    lines = [f":page_facing_up: RCA draft for {incident.reference} posted {where}; the button files it."]
    lines += [f":warning: {escape(problem)}" for problem in result.slack_problems]
    return "\n".join(lines)


def slack(result: RcaResult) -> SlackReply:
    """Answer the caller only: the preview itself is posted in the incident's thread."""
    text = answer_text(result)
    return SlackReply(main=Message(text=text, blocks=[section(text)]), ephemeral=True)


def terminal(result: RcaResult, console: Console) -> None:
    """Print the draft's Markdown (for a preview) or what filing did."""
    if result.outcome == "drafted":
        # Plain text, so it can be copied as Markdown.
        console.print(result.draft.body, markup=False, highlight=False)
        if not result.preview_only:
            for problem in result.slack_problems:
                console.print(f"[yellow]Slack: {escape_markup(problem)}[/]")
        return
    if result.outcome == "not_filed":
        console.print(f"[red]{escape_markup(result.filing_error or 'not filed')}[/]")
        return
    verb = "filed as" if result.outcome == "filed" else "updated"
    draft = result.draft
    console.print(
        f"[green]{result.incident.reference}: RCA {verb} issue #{draft.issue_number}[/] {draft.issue_url}"
    )
    for item in result.followups:
        where = f"issue #{item.issue_number} ({item.issue_state})" if item.issue_number else "not filed"
        console.print(f"  follow-up: {escape_markup(item.text)} · {where}")
    for problem in [*result.followup_problems, *result.slack_problems]:
        console.print(f"[yellow]{escape_markup(problem)}[/]")
