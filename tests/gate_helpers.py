"""Drive the gate from tests: enrolled operators, frozen time, approve-and-execute in one call."""

from __future__ import annotations

import asyncio
import os
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyotp
import pytest

from bot.config import Settings
from bot.gate.gate import Approval, Confirmation
from bot.gate.mfa import code_at
from bot.invocation import Invocation
from bot.registry import COMMANDS, CommandSpec
from bot.render.common import Message, SlackReply
from bot.runtime import Runtime
from bot.services import Services
from bot.state import migrate
from commands.base import Arguments, CommandResult
from commands.destructive import Execution, Plan, Progress, Proposal, Step
from tests.conftest import make_settings, recreate_database

SECRET_KEY = "test-secret-key-for-totp-seeds"
T0 = datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC)


@dataclass
class FrozenClock:
    """A clock tests move by hand, so TOTP windows never depend on sleeping."""

    now: datetime = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class GateWorld:
    """A runtime with its own state database, a frozen clock and enrolled operators' seeds."""

    runtime: Runtime
    clock: FrozenClock
    seeds: dict[str, str] = field(default_factory=dict)

    def code(self, user: str, offset_steps: int = 0) -> str:
        """Return the code the user's authenticator shows now (or `offset_steps` steps away)."""
        return code_at(self.seeds[user], self.clock.now + timedelta(seconds=30 * offset_steps))

    def next_step(self) -> None:
        """Move to the next TOTP time step (a fresh code)."""
        self.clock.advance(30)

    async def enroll(self, user: str) -> None:
        """Enroll and confirm a user, as /mfa enroll then /mfa confirm would."""
        enrollment = await self.runtime.mfa.enroll(user)
        self.seeds[user] = enrollment.secret
        assert pyotp.TOTP(enrollment.secret).at(self.clock.now) == self.code(user)
        result = await self.runtime.mfa.verify(user, self.code(user), self.clock.now, confirming=True)
        assert result.accepted, result
        self.next_step()

    def invocation(self, user: str, channel: str | None = "C0INCIDENT") -> Invocation:
        return Invocation(request_id=uuid.uuid4().hex[:16], source="slack", user_id=user, channel_id=channel)

    async def propose(self, proposal: Proposal, user: str, channel: str | None = "C0INCIDENT") -> Approval:
        return await self.runtime.gate.propose(proposal, self.invocation(user, channel))

    async def confirm(self, approval: Approval, user: str, typed_word: str | None = None) -> Confirmation:
        confirmation = await self.runtime.gate.confirm(approval.id, user, self.code(user), typed_word)
        self.next_step()
        return confirmation

    async def run(
        self, proposal: Proposal, user: str, typed_word: str | None = None, second: str | None = None
    ) -> tuple[Execution, list[list[Step]]]:
        """Propose, confirm (and second-approve), execute; return the result and every published step list."""
        approval = await self.propose(proposal, user)
        confirmation = await self.confirm(approval, user, typed_word)
        if confirmation.kind == "awaiting_second":
            assert second is not None, "this command needs a second approver"
            confirmation = await self.confirm(confirmation.approval, second)
        assert confirmation.kind == "approved", confirmation
        published: list[list[Step]] = []

        async def publish(steps: list[Step]) -> None:
            published.append(steps)

        result = await self.runtime.gate.execute(confirmation.approval, publish)
        return result, published


async def gate_world(database: str, **overrides: Any) -> GateWorld:
    """Build a runtime over a fresh state database, with MFA configured and a frozen clock."""
    dsn = await recreate_database(database)
    settings = make_settings(
        state_database_url=dsn,
        secret_key=SECRET_KEY,
        operators=overrides.pop("operators", ["U0OPS0001", "U0OPS0002"]),
        mfa_admins=overrides.pop("mfa_admins", ["U0ADMIN01"]),
        environment=overrides.pop("environment", "test"),
        # Anchored in a directory of the test's own; the trail's own tests anchor in the sandbox's S3.
        trail_anchor_store=overrides.pop("trail_anchor_store", tempfile.mkdtemp(prefix="chatops-anchors-")),
        **overrides,
    )
    runtime = Runtime.build(settings)
    await migrate(runtime.services.state_db)
    clock = FrozenClock()
    runtime.gate.clock = clock
    return GateWorld(runtime=runtime, clock=clock)


# --- A destructive command for tests: add N to a real Redis counter --------------------------------

DRILL_KEY = "chatops:test:drill-counter"


async def drill_value(services: Services) -> int:
    return int(await services.redis.client.get(DRILL_KEY) or 0)


async def run_drill(services: Services, tokens: list[str], invocation: Invocation) -> CommandResult:
    """A destructive command for tests: add N to a real Redis counter."""
    args = Arguments.parse(tokens, "/drill <amount>")
    amount = int(args.next_positional("an amount"))
    args.done()
    value = await drill_value(services)
    plan = Plan(
        title=f"Add {amount} to the drill counter",
        current=[f"counter = {value}"],
        target=[f"counter = {value + amount}"],
        way_back=[f"/drill -{amount}"],
        state={"counter": value},
        details={"amount": amount},
    )
    word = "RESTORE" if invocation.channel_id == "C0TYPEDWRD" else None
    return Proposal(command="drill", arguments=tokens, plan=plan, typed_word=word)


async def execute_drill(services: Services, plan: Plan, progress: Progress) -> Execution:
    await progress.step("add", "running")
    await asyncio.sleep(float(os.environ.get("DRILL_DELAY", "0")))
    await services.redis.client.incrby(DRILL_KEY, int(plan.details["amount"]))
    await progress.step("add", "done")
    return Execution(
        command="drill", succeeded=True, summary="added", state=[f"counter = {await drill_value(services)}"]
    )


def _reply(result: object) -> SlackReply:
    return SlackReply(main=Message(text=str(result), blocks=[]))


def register_drill() -> None:
    """Register /drill (and /drill2, for the two-person rule) as destructive commands."""
    for name in ("drill", "drill2"):
        COMMANDS[name] = CommandSpec(
            name=name,
            summary="test drill",
            usage="/drill <amount>",
            run=run_drill,
            slack=_reply,
            terminal=lambda result, console: None,
            execute=execute_drill,
        )


@pytest.fixture(autouse=True)
def drill_command() -> Iterator[None]:
    """Have /drill registered for the test (autouse where imported)."""
    register_drill()
    yield
    COMMANDS.pop("drill", None)
    COMMANDS.pop("drill2", None)


async def terminal_gate_settings(database: str, anchors: Path, **overrides: Any) -> Settings:
    """Settings for the gate at the terminal over a fresh state database, migrated, the drill at 0."""
    dsn = await recreate_database(database)
    settings = make_settings(
        state_database_url=dsn, secret_key=SECRET_KEY, trail_anchor_store=str(anchors), **overrides
    )
    runtime = Runtime.build(settings)
    try:
        await migrate(runtime.services.state_db)
        await runtime.services.redis.client.delete(DRILL_KEY)
    finally:
        await runtime.services.aclose()
    return settings
