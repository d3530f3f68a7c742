"""What the bot files on GitHub (RCAs, follow-ups) shares: the tracker, Markdown that pings nobody,
people named as people, and the fingerprint of what was sent (to notice edits made on GitHub)."""

from __future__ import annotations

import hashlib
import re
from datetime import datetime
from typing import Any, Protocol

from adapters.github import Issue
from commands.incident import is_user_id

_SLACK_MENTION = re.compile(r"<@([UW][A-Z0-9]+)(?:\|([^>]*))?>")
_SLACK_LINK = re.compile(r"<(https?://[^|>]+)\|([^>]+)>")
_GITHUB_MENTION = re.compile(r"@(?=[A-Za-z0-9])")


class IssueTracker(Protocol):
    """Where RCAs and follow-ups are filed (GitHub issues)."""

    async def create_issue(self, title: str, body: str, labels: list[str]) -> Issue:
        """Open an issue."""
        ...

    async def update_issue(
        self, number: int, title: str, body: str, labels: list[str] | None = None
    ) -> Issue:
        """Replace an issue's title and body (and its labels, when given)."""
        ...

    async def get_issue(self, number: int) -> Issue:
        """Read an issue."""
        ...

    async def find_issue(self, marker: str, since: datetime) -> Issue | None:
        """Find the issue whose body carries a marker."""
        ...


def body_digest(body: str | None) -> str:
    """Fingerprint an issue body, to notice edits made on GitHub."""
    return hashlib.sha256((body or "").replace("\r\n", "\n").encode()).hexdigest()


def person_name(person: str, names: dict[str, str]) -> str:
    """Name a person for an issue: a Slack user's name when known, never a GitHub mention."""
    if is_user_id(person):
        return names.get(person, person)
    return person.lstrip("@")


def markdown_text(names: dict[str, str]) -> Any:
    """Build the `md` filter: Slack markup to Markdown, without pinging anyone on GitHub."""

    def convert(value: Any) -> str:
        text = str(value)
        text = _SLACK_MENTION.sub(lambda m: names.get(m.group(1), m.group(2) or m.group(1)), text)
        text = _SLACK_LINK.sub(lambda m: f"[{m.group(2)}]({m.group(1)})", text)
        # A zero-width space after @ keeps GitHub from notifying whoever has that login.
        text = _GITHUB_MENTION.sub("@\u200b", text)
        # Nobody's text may forge the markers that tie an issue (or a section) to the bot.
        return text.replace("<!--", "&lt;!--").replace("[//]:", "[\\/\\/]:")

    return convert
