"""The gate reviewed as an attacker: a stored plan edited, a seed copied, a plan moved under its feet.

Each attack is made on the real state database, as someone who can write to it would.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from bot.gate.authz import DEMO_OPERATOR, Authorizer
from bot.gate.gate import Refused
from commands.destructive import Proposal
from tests.conftest import make_settings
from tests.gate_helpers import DRILL_KEY, GateWorld, drill_command, drill_value, gate_world, run_drill

_ = drill_command  # the autouse fixture that registers /drill

OPS1, OPS2 = "U0OPS0001", "U0OPS0002"
pytestmark = pytest.mark.usefixtures("postgres", "redis")


@pytest.fixture
async def world() -> AsyncIterator[GateWorld]:
    world = await gate_world("chatops_test_gate_hardening")
    await world.runtime.services.redis.client.delete(DRILL_KEY)
    await world.enroll(OPS1)
    await world.enroll(OPS2)
    yield world
    await world.runtime.services.aclose()


async def drill(world: GateWorld, amount: int) -> Proposal:
    result = await run_drill(world.runtime.services, [str(amount)], world.invocation(OPS1))
    assert isinstance(result, Proposal)
    return result


async def refusals(world: GateWorld) -> list[str | None]:
    async with world.runtime.services.state_db.connection() as conn:
        rows = await conn.fetch("SELECT outcome FROM audit_trail WHERE decision = 'refused' ORDER BY id")
    return [row["outcome"] for row in rows]


async def test_a_pending_plans_details_edited_in_the_database_are_refused(world: GateWorld) -> None:
    approval = await world.propose(await drill(world, 1), OPS1)
    confirmation = await world.confirm(approval, OPS1)
    # What execution reads (the amount), changed after the plan was shown and approved; the
    # fingerprint recomputed to match, as a careful attacker would.
    tampered = approval.plan.model_copy(update={"details": {"amount": 1000}})
    async with world.runtime.services.state_db.connection() as conn:
        await conn.execute(
            "UPDATE approvals SET plan = $2::jsonb WHERE id = $1", approval.id, tampered.model_dump_json()
        )
    stale = await world.runtime.gate.load(approval.id)
    assert stale is not None and stale.plan.details == {"amount": 1000}
    with pytest.raises(Refused) as refused:
        await world.runtime.gate.execute(stale, _ignore)
    assert refused.value.reason == "plan_changed"
    assert await drill_value(world.runtime.services) == 0
    assert confirmation.kind == "approved"
    assert "plan_changed" in await refusals(world)


async def test_execution_runs_the_plan_made_again_not_the_stored_one(world: GateWorld) -> None:
    approval = await world.propose(await drill(world, 2), OPS1)
    confirmation = await world.confirm(approval, OPS1)
    result = await world.runtime.gate.execute(confirmation.approval, _ignore)
    assert result.succeeded and await drill_value(world.runtime.services) == 2


async def test_a_plan_cancelled_after_its_approval_does_not_run(world: GateWorld) -> None:
    approval = await world.propose(await drill(world, 3), OPS1)
    confirmation = await world.confirm(approval, OPS1)
    # Between the approval and the execution someone moved it on (cancelled, expired, another
    # executor): the compare-and-set to `executing` fails, and nothing runs.
    async with world.runtime.services.state_db.connection() as conn:
        await conn.execute("UPDATE approvals SET status = 'cancelled' WHERE id = $1", approval.id)
    with pytest.raises(Refused) as refused:
        await world.runtime.gate.execute(confirmation.approval, _ignore)
    assert refused.value.reason == "already_handled" and "cancelled" in refused.value.message
    assert await drill_value(world.runtime.services) == 0


async def test_a_seed_copied_into_another_users_row_is_refused(world: GateWorld) -> None:
    # An attacker who can write the database copies their own (OPS2's) sealed seed into OPS1's row,
    # then answers OPS1's step-up with codes from their own authenticator.
    async with world.runtime.services.state_db.connection() as conn:
        own = await conn.fetchval("SELECT secret_encrypted FROM mfa_enrollments WHERE user_id = $1", OPS2)
        await conn.execute("UPDATE mfa_enrollments SET secret_encrypted = $2 WHERE user_id = $1", OPS1, own)
    approval = await world.propose(await drill(world, 1), OPS1)
    with pytest.raises(Refused) as refused:
        await world.runtime.gate.confirm(approval.id, OPS1, world.code(OPS2))
    assert refused.value.reason == "mfa_unavailable"
    assert "belongs to another user" in refused.value.message
    assert await drill_value(world.runtime.services) == 0
    assert "mfa_unavailable" in await refusals(world)


async def test_every_refusal_of_the_gate_is_one_trail_entry(world: GateWorld) -> None:
    # A stranger (role), then an operator whose enrollment was reset (MFA): one entry each.
    with pytest.raises(Refused):
        await world.runtime.gate.propose(await drill(world, 1), world.invocation("U0STRANGE"))
    await world.runtime.mfa.reset(OPS2)
    with pytest.raises(Refused):
        await world.runtime.gate.propose(await drill(world, 1), world.invocation(OPS2))
    assert await refusals(world) == ["not_authorised", "not_enrolled"]
    async with world.runtime.services.state_db.connection() as conn:
        rows = await conn.fetch(
            "SELECT actor, details FROM audit_trail WHERE decision = 'refused' ORDER BY id"
        )
    assert [(row["actor"], json.loads(row["details"])["message"]) for row in rows] == [
        ("U0STRANGE", "you are not allowed to run /drill"),
        (OPS2, "you are not enrolled in MFA: run /mfa enroll first"),
    ]


async def _ignore(steps: object) -> None:
    return None


@pytest.mark.parametrize(
    ("environment", "allowed"), [("sandbox", True), ("production", False), ("test", False)]
)
async def test_the_demo_operator_holds_no_role_outside_the_sandbox(environment: str, allowed: bool) -> None:
    settings = make_settings(environment=environment, operators=[DEMO_OPERATOR], viewers=["*"])
    authorizer = Authorizer(settings, None)
    assert await authorizer.allowed(DEMO_OPERATOR, "operator") is allowed
    assert await authorizer.allowed(DEMO_OPERATOR, "viewer") is allowed  # not even "everyone"
    assert await authorizer.allowed("U0OPS0001", "viewer")
