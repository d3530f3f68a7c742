"""Who ran a command, from where: the one record every layer of the bot passes along."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Source = Literal["slack", "cli", "gate"]


@dataclass(frozen=True)
class Invocation:
    """Who ran a command, from where, under which request id."""

    request_id: str
    source: str  # "slack", "cli", or "gate" (re-planning before execution)
    user_id: str | None = None
    channel_id: str | None = None
    # Slack's trigger for opening a modal in answer (a slash command's, for three seconds).
    trigger_id: str | None = None
