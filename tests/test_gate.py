"""The gate: permissions, plan, confirmation, TOTP, single flight, audit trail (real PostgreSQL, Redis)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from bot.gate.gate import Refused
from bot.gate.locks import LockHeld, LockLost, OperationLock
from bot.gate.mfa import lockout_for
from commands.destructive import Execution, Proposal
from tests.gate_helpers import (
    DRILL_KEY,
    GateWorld,
    drill_command,  # noqa: F401  (autouse fixture)
    drill_value,
    gate_world,
    run_drill,
)

OPS1, OPS2, STRANGER, ADMIN = "U0OPS0001", "U0OPS0002", "U0STRANGE", "U0ADMIN01"

# Every test here keeps the bot's state in PostgreSQL and proposes the drill (a Redis counter).
pytestmark = pytest.mark.usefixtures("postgres", "redis")


@pytest.fixture
async def world() -> AsyncIterator[GateWorld]:
    world = await gate_world("chatops_test_gate", two_person_commands=["drill2"])
    await world.runtime.services.redis.client.delete(DRILL_KEY)
    await world.enroll(OPS1)
    await world.enroll(OPS2)
    yield world
    await world.runtime.services.aclose()


async def drill(world: GateWorld, amount: int = 1, user: str = OPS1, channel: str = "C0INCIDENT") -> Proposal:
    result = await run_drill(world.runtime.services, [str(amount)], world.invocation(user, channel))
    assert isinstance(result, Proposal)
    return result


async def trail_decisions(world: GateWorld) -> list[tuple[str, str, str | None]]:
    async with world.runtime.services.state_db.connection() as conn:
        rows = await conn.fetch("SELECT action, decision, outcome FROM audit_trail ORDER BY id")
    return [(row["action"], row["decision"], row["outcome"]) for row in rows]


# --- TOTP rules -------------------------------------------------------------------------------------


async def test_code_accepted_once_and_replay_refused(world: GateWorld) -> None:
    mfa, now = world.runtime.mfa, world.clock.now
    code = world.code(OPS1)
    assert (await mfa.verify(OPS1, code, now)).accepted
    replay = await mfa.verify(OPS1, code, now + timedelta(seconds=5))
    assert replay.outcome == "replayed"


async def test_one_step_of_drift_is_tolerated_and_no_more(world: GateWorld) -> None:
    mfa, now = world.runtime.mfa, world.clock.now
    assert (await mfa.verify(OPS1, world.code(OPS1, offset_steps=-1), now)).accepted
    world.next_step()
    world.next_step()
    assert (await mfa.verify(OPS1, world.code(OPS1, offset_steps=+1), world.clock.now)).accepted
    world.next_step()
    world.next_step()
    world.next_step()
    assert (
        await mfa.verify(OPS1, world.code(OPS1, offset_steps=-2), world.clock.now)
    ).outcome == "wrong_code"
    assert (
        await mfa.verify(OPS1, world.code(OPS1, offset_steps=+2), world.clock.now)
    ).outcome == "wrong_code"


async def test_an_older_code_after_a_newer_one_is_a_replay(world: GateWorld) -> None:
    mfa, now = world.runtime.mfa, world.clock.now
    assert (await mfa.verify(OPS1, world.code(OPS1, offset_steps=+1), now)).accepted
    assert (await mfa.verify(OPS1, world.code(OPS1), now)).outcome == "replayed"


async def test_five_failures_lock_out_with_a_growing_delay_and_success_resets(world: GateWorld) -> None:
    mfa = world.runtime.mfa
    outcomes = [await mfa.verify(OPS1, "000000", world.clock.now) for _ in range(5)]
    assert [item.outcome for item in outcomes] == ["wrong_code"] * 5
    assert outcomes[-1].just_locked and outcomes[-1].locked_until == world.clock.now + lockout_for(5)
    # Even the right code is refused while locked out.
    assert (await mfa.verify(OPS1, world.code(OPS1), world.clock.now)).outcome == "locked_out"
    world.clock.advance(lockout_for(5).total_seconds() + 1)
    sixth = await mfa.verify(OPS1, "000000", world.clock.now)
    assert sixth.locked_until == world.clock.now + lockout_for(6)
    assert lockout_for(6) == 2 * lockout_for(5)
    world.clock.advance(lockout_for(6).total_seconds() + 1)
    assert (await mfa.verify(OPS1, world.code(OPS1), world.clock.now)).accepted
    status = await mfa.status(OPS1)
    assert status.consecutive_failures == 0 and status.locked_until is None


async def test_concurrent_submissions_of_one_code_accept_exactly_one(world: GateWorld) -> None:
    code = world.code(OPS1)
    results = await asyncio.gather(*(world.runtime.mfa.verify(OPS1, code, world.clock.now) for _ in range(5)))
    assert sorted(item.outcome for item in results) == ["accepted"] + ["replayed"] * 4


async def test_seeds_are_encrypted_at_rest(world: GateWorld) -> None:
    async with world.runtime.services.state_db.connection() as conn:
        stored = bytes(
            await conn.fetchval("SELECT secret_encrypted FROM mfa_enrollments WHERE user_id = $1", OPS1)
        )
    assert world.seeds[OPS1].encode() not in stored
    assert len(stored) > 50


@pytest.mark.parametrize("code", ["12345", "1234567", "abcdef", "", "12 34 5x"])
async def test_malformed_codes_are_refused_without_counting(world: GateWorld, code: str) -> None:
    result = await world.runtime.mfa.verify(OPS1, code, world.clock.now)
    assert result.outcome == "malformed"
    assert (await world.runtime.mfa.status(OPS1)).consecutive_failures == 0


# --- The gate --------------------------------------------------------------------------------------


async def test_approved_plan_executes_once_and_everything_is_recorded(world: GateWorld) -> None:
    result, published = await world.run(await drill(world, 5), OPS1)
    assert result.succeeded
    assert await drill_value(world.runtime.services) == 5
    assert [step.status for step in published[-1]] == ["done"]
    assert [step.name for step in result.steps] == ["add"]
    decisions = await trail_decisions(world)
    assert [item[1] for item in decisions if item[0] == "drill"] == ["plan_shown", "approved", "executed"]
    assert decisions[-1][2] == "succeeded"
    assert (await world.runtime.trail.verify()).ok


@pytest.mark.parametrize(
    ("user", "channel", "reason"),
    [(STRANGER, "C0INCIDENT", "not_authorised"), (ADMIN, "C0INCIDENT", "not_authorised")],
)
async def test_people_without_the_operator_role_are_refused(
    world: GateWorld, user: str, channel: str, reason: str
) -> None:
    with pytest.raises(Refused) as refused:
        await world.propose(await drill(world), user, channel)
    assert refused.value.reason == reason
    assert await trail_decisions(world) == [("drill", "refused", reason)]


async def test_channels_not_allowed_refuse_destructive_commands() -> None:
    world = await gate_world("chatops_test_gate", destructive_channels=["C0OPSONLY"])
    try:
        await world.enroll(OPS1)
        with pytest.raises(Refused) as refused:
            await world.propose(await drill(world), OPS1, "C0RANDOM1")
        assert refused.value.reason == "channel"
        assert (await world.propose(await drill(world), OPS1, "C0OPSONLY")).status == "pending"
    finally:
        await world.runtime.services.aclose()


async def test_operator_without_enrollment_is_refused(world: GateWorld) -> None:
    await world.runtime.mfa.reset(OPS2)
    with pytest.raises(Refused) as refused:
        await world.propose(await drill(world), OPS2)
    assert refused.value.reason == "not_enrolled"


async def test_someone_else_cannot_confirm_the_plan(world: GateWorld) -> None:
    approval = await world.propose(await drill(world), OPS1)
    with pytest.raises(Refused) as refused:
        await world.confirm(approval, OPS2)
    assert refused.value.reason == "not_requester"
    assert await drill_value(world.runtime.services) == 0


async def test_wrong_code_is_refused_recorded_and_nothing_runs(world: GateWorld) -> None:
    approval = await world.propose(await drill(world), OPS1)
    confirmation = await world.runtime.gate.confirm(approval.id, OPS1, "000000")
    assert confirmation.kind == "mfa_failed"
    assert confirmation.verification is not None and confirmation.verification.outcome == "wrong_code"
    assert ("MFA_CHALLENGE_FAILED", "refused", None) in await trail_decisions(world)
    assert (await world.runtime.gate.load(approval.id)).status == "pending"  # type: ignore[union-attr]


async def test_stale_approval_expires(world: GateWorld) -> None:
    approval = await world.propose(await drill(world), OPS1)
    world.clock.advance(301)
    with pytest.raises(Refused) as refused:
        await world.confirm(approval, OPS1)
    assert refused.value.reason == "expired"
    assert (await world.runtime.gate.load(approval.id)).status == "expired"  # type: ignore[union-attr]


async def test_changed_plan_is_refused_with_a_new_plan(world: GateWorld) -> None:
    approval = await world.propose(await drill(world, 3), OPS1)
    confirmation = await world.confirm(approval, OPS1)
    # Someone else changes the state the plan was made from, between approval and execution.
    await world.runtime.services.redis.client.incrby(DRILL_KEY, 100)

    async def publish(steps: object) -> None:
        return None

    with pytest.raises(Refused) as refused:
        await world.runtime.gate.execute(confirmation.approval, publish)
    assert refused.value.reason == "plan_changed"
    assert refused.value.new_plan is not None
    assert refused.value.new_plan.plan.current == ["counter = 100"]
    assert await drill_value(world.runtime.services) == 100


async def test_double_confirmation_executes_once(world: GateWorld) -> None:
    approval = await world.propose(await drill(world, 1), OPS1)
    code_now, code_next = world.code(OPS1), world.code(OPS1, offset_steps=1)
    # Two clicks racing, each with a valid code: one approval wins, the other is refused.
    outcomes = await asyncio.gather(
        world.runtime.gate.confirm(approval.id, OPS1, code_now),
        world.runtime.gate.confirm(approval.id, OPS1, code_next),
        return_exceptions=True,
    )
    approved = [item for item in outcomes if not isinstance(item, BaseException) and item.kind == "approved"]
    refused = [item for item in outcomes if isinstance(item, Refused)]
    assert len(approved) == 1 and len(refused) == 1
    assert refused[0].reason == "already_handled"


async def test_typed_word_must_match(world: GateWorld) -> None:
    approval = await world.propose(await drill(world, 1, channel="C0TYPEDWRD"), OPS1, "C0TYPEDWRD")
    assert approval.typed_word == "RESTORE"
    with pytest.raises(Refused) as refused:
        await world.confirm(approval, OPS1, typed_word="restore")
    assert refused.value.reason == "typed_word"
    confirmation = await world.confirm(approval, OPS1, typed_word="RESTORE")
    assert confirmation.kind == "approved"


async def test_two_person_rule_needs_a_different_authorised_approver(world: GateWorld) -> None:
    proposal = (await drill(world, 2)).model_copy(update={"command": "drill2"})
    approval = await world.propose(proposal, OPS1)
    first = await world.confirm(approval, OPS1)
    assert first.kind == "awaiting_second"
    with pytest.raises(Refused) as same:
        await world.confirm(approval, OPS1)
    assert same.value.reason == "same_person"
    with pytest.raises(Refused) as stranger:
        await world.runtime.gate.may_confirm(approval.id, STRANGER)
    assert stranger.value.reason == "not_authorised"
    second = await world.confirm(approval, OPS2)
    assert second.kind == "approved" and second.approval.second_approver == OPS2
    assert await drill_value(world.runtime.services) == 0  # nothing before execution


async def test_cancelled_plan_cannot_be_confirmed(world: GateWorld) -> None:
    approval = await world.propose(await drill(world), OPS1)
    await world.runtime.gate.cancel(approval.id, OPS1)
    with pytest.raises(Refused) as refused:
        await world.confirm(approval, OPS1)
    assert refused.value.reason == "already_handled"


async def test_an_executed_plan_cannot_be_cancelled_after_the_fact(world: GateWorld) -> None:
    result, _ = await world.run(await drill(world), OPS1)
    assert result.succeeded
    async with world.runtime.services.state_db.connection() as conn:
        approval_id = await conn.fetchval("SELECT id FROM approvals ORDER BY created_at DESC LIMIT 1")
    with pytest.raises(Refused) as refused:
        await world.runtime.gate.cancel(approval_id, OPS1)
    assert refused.value.reason == "already_handled"
    approval = await world.runtime.gate.load(approval_id)
    assert approval is not None and approval.status == "succeeded"


async def test_permission_is_checked_again_at_execution(world: GateWorld) -> None:
    approval = await world.propose(await drill(world), OPS1)
    confirmation = await world.confirm(approval, OPS1)
    world.runtime.authorizer.members["operator"] = [OPS2]  # OPS1 lost the role meanwhile

    async def publish(steps: object) -> None:
        return None

    with pytest.raises(Refused) as refused:
        await world.runtime.gate.execute(confirmation.approval, publish)
    assert refused.value.reason == "not_authorised"
    assert await drill_value(world.runtime.services) == 0


async def test_two_operations_at_once_exactly_one_proceeds(
    world: GateWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DRILL_DELAY", "0.5")
    first = await world.confirm(await world.propose(await drill(world, 1), OPS1), OPS1)
    second = await world.confirm(await world.propose(await drill(world, 1), OPS2), OPS2)

    async def publish(steps: object) -> None:
        return None

    outcomes = await asyncio.gather(
        world.runtime.gate.execute(first.approval, publish),
        world.runtime.gate.execute(second.approval, publish),
        return_exceptions=True,
    )
    succeeded = [item for item in outcomes if isinstance(item, Execution)]
    refused = [item for item in outcomes if isinstance(item, Refused)]
    assert len(succeeded) == 1 and len(refused) == 1
    assert refused[0].reason == "locked" and "is running /drill" in refused[0].message
    assert await drill_value(world.runtime.services) == 1


# --- The lock ----------------------------------------------------------------------------------------

_HOLD_LOCK = """
import asyncio, os, sys
from adapters.postgres import PostgresAdapter
from bot.gate.locks import OperationLock
async def main():
    lock = OperationLock(PostgresAdapter("state", sys.argv[1], 2), "test", lease_seconds=2)
    lease = await lock.acquire("U0CRASHED", "drill")
    print(lease.token, flush=True)
    await asyncio.sleep(3600)
asyncio.run(main())
"""


async def test_lock_left_by_a_killed_process_expires_and_is_fenced(world: GateWorld) -> None:
    dsn = world.runtime.services.settings.state_database_url
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, dsn], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        crashed_token = int(await asyncio.to_thread(holder.stdout.readline))
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
    lock = OperationLock(world.runtime.services.state_db, "test", lease_seconds=2)
    with pytest.raises(LockHeld) as held:
        await lock.acquire(OPS1, "drill")
    assert held.value.holder == "U0CRASHED"
    await asyncio.sleep(2.2)  # the lease is real database time, not TOTP time
    lease = await lock.acquire(OPS1, "drill")
    assert lease.token > crashed_token
    # The crashed holder, were it to wake up, is fenced off by its old token.
    stale = type(lease)(environment="test", token=crashed_token, holder="U0CRASHED", command="drill")
    with pytest.raises(LockLost):
        await lock.renew(stale)
    await lock.release(lease)


# --- The audit trail ---------------------------------------------------------------------------------


async def test_tampering_with_the_trail_is_detected(world: GateWorld) -> None:
    await world.run(await drill(world, 1), OPS1)
    state_db = world.runtime.services.state_db
    assert (await world.runtime.trail.verify()).ok
    async with state_db.connection() as conn:
        with pytest.raises(Exception, match="append-only"):
            await conn.execute("UPDATE audit_trail SET actor = 'U0SOMEONE' WHERE id = 2")
        # Someone with the power to disable triggers edits one row and deletes another.
        await conn.execute("ALTER TABLE audit_trail DISABLE TRIGGER audit_trail_no_update")
        await conn.execute("UPDATE audit_trail SET outcome = 'nothing happened' WHERE id = 3")
        await conn.execute("DELETE FROM audit_trail WHERE id = 2")
        await conn.execute("ALTER TABLE audit_trail ENABLE TRIGGER audit_trail_no_update")
    report = await world.runtime.trail.verify()
    assert not report.ok
    assert any("row 3: content does not match" in problem for problem in report.problems)
    assert any("row 3: does not follow" in problem for problem in report.problems)


async def test_unknown_approval_is_refused(world: GateWorld) -> None:
    with pytest.raises(Refused) as refused:
        await world.runtime.gate.may_confirm(uuid.uuid4(), OPS1)
    assert refused.value.reason == "unknown_approval"
