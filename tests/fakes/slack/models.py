"""What the fake Slack records and answers: calls, violations, response_url posts, files, faults."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass
class SlackCall:
    """One Web API request the fake received, and what it answered."""

    method: str
    params: dict[str, Any]
    headers: dict[str, str]
    http_verb: str
    token: str | None
    content_type: str
    # Parameters neither the spec nor Slack's documentation (documented.py) declares for the
    # method. Slack ignores them, so the call is answered; each one is also a Violation: a
    # misspelt or made-up argument is a bug that real Slack would hide.
    unknown_params: list[str] = field(default_factory=list)
    status: int | None = None
    response: dict[str, Any] | None = None


@dataclass(frozen=True)
class Violation:
    """A request that breaks Slack's published contract (or a limit Slack documents)."""

    method: str
    error: str
    reason: str


@dataclass(frozen=True)
class ResponseUrlPost:
    """One POST the bot made to a `response_url` served by the fake (and that Slack would take)."""

    response_id: str
    body: dict[str, Any]
    headers: dict[str, str]


@dataclass
class FakeFile:
    """A file uploaded through files.getUploadURLExternal + files.completeUploadExternal."""

    id: str
    filename: str
    length: int
    content: bytes | None = None
    title: str | None = None
    completed: bool = False
    channels: list[str] = field(default_factory=list)
    thread_ts: str | None = None
    initial_comment: str | None = None


@dataclass
class Fault:
    """A programmed misbehaviour for one method ("*" = every method)."""

    method: str
    kind: Literal["error", "ratelimit", "delay"]
    remaining: int | None
    error: str = ""
    retry_after: int = 1
    seconds: float = 0.0


class Rejection(Exception):
    """Raised inside request handling to answer `{"ok": false, "error": ...}`.

    `violation=True` records a Violation (the caller broke the contract); False is Slack's
    ordinary answer about the workspace (not_in_channel, is_archived, ...).
    """

    def __init__(self, error: str, reason: str, status: int = 200, violation: bool = True) -> None:
        super().__init__(reason)
        self.error = error
        self.reason = reason
        self.status = status
        self.violation = violation
