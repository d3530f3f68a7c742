"""What destructive commands share: the plan they show, the steps they report, their outcome."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any, Literal, Protocol

from pydantic import Field

from commands.base import CommandResult, Model

StepStatus = Literal["pending", "running", "done", "failed", "skipped"]


class Plan(Model):
    """Exactly what will change: shown before, compared again right before executing."""

    title: str
    current: list[str]
    target: list[str]
    kept: list[str] = Field(default_factory=list)
    way_back: list[str] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
    estimated_seconds: float | None = None
    # The state the plan was made from; if it differs at execution, the plan is stale.
    state: dict[str, Any] = Field(default_factory=dict)
    # What the executor needs (ids, images, paths): data, never code.
    details: dict[str, Any] = Field(default_factory=dict)

    def fingerprint(self) -> str:
        """Hash everything execution reads (state, details) with what the plan says it will do."""
        canonical = json.dumps(
            {"state": self.state, "details": self.details, "target": self.target, "title": self.title},
            sort_keys=True,
            default=str,
        )
        return hashlib.sha256(canonical.encode()).hexdigest()


class Proposal(CommandResult):
    """A destructive command's answer before the gate: the plan awaiting approval."""

    command: str
    arguments: list[str]
    plan: Plan
    typed_word: str | None = None


class Step(Model):
    """One step of an execution, as reported while it runs."""

    name: str
    status: StepStatus
    detail: str = ""
    started_at: datetime | None = None
    duration_ms: float | None = None


class Progress(Protocol):
    """Where an executor reports its steps (a Slack message updated in place, or a terminal)."""

    async def step(self, name: str, status: StepStatus, detail: str = "") -> None:
        """Report that a step started, finished, failed or was skipped."""
        ...


class Execution(CommandResult):
    """What a destructive command did: every step, the state each part is left in, the way back."""

    command: str
    succeeded: bool
    summary: str
    steps: list[Step] = Field(default_factory=list)
    state: list[str] = Field(default_factory=list)
    way_back: str = ""

    @property
    def ok(self) -> bool:
        """Return whether the operation succeeded."""
        return self.succeeded
