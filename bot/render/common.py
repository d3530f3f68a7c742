"""Pieces of rendering shared by every command."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

Block = dict[str, Any]


@dataclass(frozen=True)
class Message:
    """One Slack message: fallback text (notifications, screen readers) and blocks."""

    text: str
    blocks: list[Block]


@dataclass(frozen=True)
class Upload:
    """A file to post in the reply's thread (an export, a graph)."""

    filename: str
    content: bytes
    title: str
    alt_text: str = ""
    # Set instead of content for files too big to hold in memory (exports): sent in chunks.
    path: Path | None = None


@dataclass(frozen=True)
class SlackReply:
    """What a command says in Slack: a message in the channel, evidence and files in its thread."""

    main: Message
    thread: list[Message] = field(default_factory=list)
    files: list[Upload] = field(default_factory=list)
    # Only the caller sees it: the command already said what everyone needs to see (incidents).
    ephemeral: bool = False


STATUS_EMOJI = {
    "ok": ":large_green_circle:",
    "healthy": ":large_green_circle:",
    "warn": ":large_yellow_circle:",
    "degraded": ":large_yellow_circle:",
    "critical": ":red_circle:",
    "down": ":red_circle:",
    "unknown": ":white_circle:",
}
STATUS_STYLE = {
    "ok": "green",
    "healthy": "green",
    "warn": "yellow",
    "degraded": "yellow",
    "critical": "red",
    "down": "red",
    "unknown": "dim",
}
SECTION_LIMIT = 3000
HEADER_LIMIT = 150
# A Slack user id: the only thing the bot turns into a mention itself.
_USER_ID = re.compile(r"[UW][A-Z0-9]{2,}")


def clip(text: str, limit: int) -> str:
    """Cut text to a Block Kit limit, marking the cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def split_text(text: str, limit: int = SECTION_LIMIT) -> list[str]:
    """Split text at line breaks (or hard, for one huge line) into pieces of at most `limit`."""
    pieces: list[str] = []
    current = ""
    for line in text.split("\n"):
        while len(line) > limit:
            if current:
                pieces.append(current)
                current = ""
            pieces.append(line[:limit])
            line = line[limit:]
        candidate = f"{current}\n{line}" if current else line
        if len(candidate) > limit:
            pieces.append(current)
            current = line
        else:
            current = candidate
    if current or not pieces:
        pieces.append(current)
    return pieces


def header(text: str) -> Block:
    """Build a header block."""
    return {"type": "header", "text": {"type": "plain_text", "text": clip(text, HEADER_LIMIT)}}


def section(markdown: str) -> Block:
    """Build a section block of mrkdwn text."""
    return {"type": "section", "text": {"type": "mrkdwn", "text": clip(markdown, SECTION_LIMIT)}}


def context(markdown: str) -> Block:
    """Build a context block of small mrkdwn text."""
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": clip(markdown, SECTION_LIMIT)}]}


def escape(text: str) -> str:
    """Escape the three characters Slack's mrkdwn treats as control characters."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def mention(user: str) -> str:
    """Mention a Slack user by id; anything else (a terminal user, a typed name) is shown as text."""
    return f"<@{user}>" if _USER_ID.fullmatch(user) else escape(user)


def link(url: str, label: str | None = None) -> str | None:
    """Build a link to an outside URL, with the bot's own label (plain text) or showing the URL itself.

    None when the URL is not http(s) or could break out of the link (`|`, `<`, `>`, spaces, controls).
    """
    if not url.startswith(("http://", "https://")) or not url.isprintable():
        return None
    if any(char.isspace() or char in "|<>" for char in url):
        return None
    target = url.replace("&", "&amp;")
    return f"<{target}|{escape(label)}>" if label is not None else f"<{target}>"


def error_text(message: str, usage: str = "") -> str:
    """Write a command error (shown to the caller only) with the usage when there is one."""
    text = f":warning: {escape(message)}"
    if usage:
        text += f"\nUsage: `{escape(usage)}`"
    return text


def help_text(name: str, summary: str, usage: str) -> str:
    """Write a command's help for Slack (shown to the caller only): what it does, then its usage."""
    forms = usage.replace(f" | /{name} ", f"\n/{name} ")
    text = f"*/{escape(name)}*: {escape(summary)}\n```{escape(forms)}```"
    if "=" in usage:
        text += "\nOptions are `key=value`, in any order, anywhere in the line."
    return text


def terminal_console(no_color: bool = False, stderr: bool = False) -> Console:
    """Build the console the CLI prints to (stderr for prompts and progress beside JSON output)."""
    return Console(no_color=no_color, highlight=False, soft_wrap=True, stderr=stderr)


# Code spans and blocks: Slack formats nothing inside them; their text is kept as it is.
_CODE = re.compile(r"```(.*?)```|`([^`\n]+)`", re.DOTALL)
# One or more emoji codes (`:x:`, `:+1::skin-tone-2:`), and the space after them.
_EMOJI = re.compile(r"(?<![\w:])(?::[a-z0-9_+'-]+:)+(?![\w:]) ?")
_DATE_MARKUP = re.compile(r"<!date\^\d+\^[^|>]*(?:\^[^|>]*)?\|([^>]*)>")
# <!here>, <!channel>, <!everyone>; <!subteam^S123|@team>.
_SPECIAL_MARKUP = re.compile(r"<!(?:subteam\^)?([^|>]+)(?:\|([^>]*))?>")
_MENTION_MARKUP = re.compile(r"<([@#])([A-Z0-9]+)(?:\|([^>]*))?>")
_LINK_MARKUP = re.compile(r"<([a-z][a-z0-9+.-]*:[^|>\s]*)(?:\|([^>]*))?>")
# Bold, italic, strike: a mark right against a word on either side, as Slack reads them.
_EMPHASIS = [
    re.compile(rf"(?<![\w{mark}]){mark}(?=\S)([^{mark}\n]+?)(?<=\S){mark}(?![\w{mark}])")
    for mark in (r"\*", "_", "~")
]


def _special(match: re.Match[str]) -> str:
    label = match.group(2)
    if label:
        return label if label.startswith("@") else f"@{label}"
    return f"@{match.group(1)}"


def _mention(match: re.Match[str]) -> str:
    sigil, name, label = match.groups()
    return f"{sigil}{(label or name).lstrip(sigil)}"


def _link(match: re.Match[str]) -> str:
    url, label = match.groups()
    return f"{label} ({url})" if label and label != url else url


def _plain_prose(text: str) -> str:
    text = _EMOJI.sub("", text)
    text = _DATE_MARKUP.sub(r"\1", text)
    text = _SPECIAL_MARKUP.sub(_special, text)
    text = _MENTION_MARKUP.sub(_mention, text)
    text = _LINK_MARKUP.sub(_link, text)
    for emphasis in _EMPHASIS:
        text = emphasis.sub(r"\1", text)
    return text


def plain(text: str, quote_code: bool = False) -> str:
    """Turn Slack mrkdwn into terminal text: no emoji codes, code marks, bold or link markup, entities.

    What is inside code spans and blocks is kept as it is (Slack formats nothing there); mentions
    become @name or #channel, links `label (url)`, dates their fallback text. With `quote_code`, an
    inline code span keeps its bounds as quotes ('a b' is not a trace id), as error messages need.
    """
    pieces: list[str] = []
    last = 0
    for match in _CODE.finditer(text):
        pieces.append(_plain_prose(text[last : match.start()]))
        if match.group(1) is not None:
            pieces.append(match.group(1))
        else:
            pieces.append(f"'{match.group(2)}'" if quote_code else match.group(2))
        last = match.end()
    pieces.append(_plain_prose(text[last:]))
    text = "".join(pieces).replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    return "\n".join(line.rstrip() for line in text.split("\n")).strip("\n")
