"""The one gate every destructive command passes: permission, plan, confirmation, MFA, lock, audit."""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Literal, NoReturn, Protocol

from bot.gate.audit_trail import AuditTrail, TrailEntry
from bot.gate.authz import Authorizer
from bot.gate.locks import Lease, LockHeld, OperationLock
from bot.gate.mfa import MfaService, MfaUnavailable, Verification
from bot.gate.progress import Publisher, StepRecorder
from bot.invocation import Invocation
from bot.observability import get_logger
from bot.services import Services
from commands.base import CommandResult
from commands.destructive import Execution, Plan, Progress, Proposal, Step, StepStatus

log = get_logger("chatops.gate")

Status = Literal[
    "pending",
    "awaiting_second",
    "approved",
    "executing",
    "succeeded",
    "failed",
    "refused",
    "expired",
    "cancelled",
    "interrupted",
]


class GatedCommand(Protocol):
    """What the gate needs of a command: make its plan again, and carry an approved plan out."""

    @property
    def run(self) -> Callable[[Services, list[str], Invocation], Awaitable[CommandResult]]:
        """Parse the arguments and return the command's result (a Proposal for a destructive one)."""

    @property
    def execute(self) -> Callable[[Services, Plan, Progress], Awaitable[Execution]] | None:
        """Carry out an approved plan (None for a command that changes nothing)."""


class Refused(Exception):
    """The gate said no; the reason is recorded and shown to the user."""

    def __init__(self, reason: str, message: str, new_plan: Proposal | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.new_plan = new_plan


@dataclass(frozen=True)
class Approval:
    """A plan shown to a requester, bound to them, the command, its arguments and the plan."""

    id: uuid.UUID
    command: str
    arguments: list[str]
    environment: str
    requester: str
    channel_id: str | None
    message_ts: str | None
    request_id: str
    plan: Plan
    plan_fingerprint: str
    typed_word: str | None
    needs_second_approver: bool
    second_approver: str | None
    status: Status
    created_at: datetime
    expires_at: datetime


@dataclass(frozen=True)
class Confirmation:
    """The answer to a confirmation: approved, waiting for a second person, or an MFA failure."""

    kind: Literal["approved", "awaiting_second", "mfa_failed"]
    approval: Approval
    verification: Verification | None = None


class Gate:
    """Every destructive command goes through here, from Slack and from the terminal alike."""

    def __init__(
        self,
        services: Services,
        authorizer: Authorizer,
        mfa: MfaService,
        lock: OperationLock,
        commands: Mapping[str, GatedCommand],
        trail: AuditTrail,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.services = services
        # Passed in (the registry sits above the gate): the commands whose plans it re-makes and runs.
        self.commands = commands
        self.trail = trail
        self.authorizer = authorizer
        self.mfa = mfa
        self.lock = lock
        self.clock = clock
        self.settings = services.settings

    # --- Requesting -------------------------------------------------------------------------------

    async def propose(self, proposal: Proposal, invocation: Invocation) -> Approval:
        """Check who asks and where, then record the plan awaiting confirmation."""
        user = invocation.user_id
        trail = self._entry(proposal.command, proposal.arguments, invocation)
        if not user or not await self.authorizer.allowed(user, "operator"):
            await self._refuse(trail, "not_authorised", f"you are not allowed to run /{proposal.command}")
        assert user is not None
        if not self.authorizer.channel_allows_destructive(invocation.channel_id):
            await self._refuse(trail, "channel", f"/{proposal.command} is not allowed in this channel")
        try:
            status = await self.mfa.status(user)
        except MfaUnavailable as error:
            await self._refuse(trail, "mfa_unavailable", str(error))
        if not status.confirmed:
            await self._refuse(trail, "not_enrolled", "you are not enrolled in MFA: run /mfa enroll first")
        now = self.clock()
        approval = Approval(
            id=uuid.uuid4(),
            command=proposal.command,
            arguments=proposal.arguments,
            environment=self.settings.environment,
            requester=user,
            channel_id=invocation.channel_id,
            message_ts=None,
            request_id=invocation.request_id,
            plan=proposal.plan,
            plan_fingerprint=proposal.plan.fingerprint(),
            typed_word=proposal.typed_word,
            needs_second_approver=proposal.command in self.settings.two_person_commands,
            second_approver=None,
            status="pending",
            created_at=now,
            expires_at=now + timedelta(seconds=self.settings.approval_ttl_seconds),
        )
        async with self.services.state_db.connection() as conn:
            await conn.execute(
                """INSERT INTO approvals (id, command, arguments, environment, requester, channel_id,
                       request_id, plan, plan_fingerprint, typed_word, needs_second_approver, status,
                       created_at, expires_at)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9, $10, $11, 'pending', $12, $13)""",
                approval.id,
                approval.command,
                json.dumps(approval.arguments),
                approval.environment,
                approval.requester,
                approval.channel_id,
                approval.request_id,
                approval.plan.model_dump_json(),
                approval.plan_fingerprint,
                approval.typed_word,
                approval.needs_second_approver,
                approval.created_at,
                approval.expires_at,
            )
        await self.trail.append(
            replace(trail, decision="plan_shown", details={"approval": str(approval.id)}),
        )
        return approval

    async def attach_message(self, approval_id: uuid.UUID, message_ts: str) -> None:
        """Remember the plan message, so later steps can update it in place."""
        async with self.services.state_db.connection() as conn:
            await conn.execute("UPDATE approvals SET message_ts = $2 WHERE id = $1", approval_id, message_ts)

    # --- Confirming -------------------------------------------------------------------------------

    async def load(self, approval_id: uuid.UUID) -> Approval | None:
        """Read an approval."""
        async with self.services.state_db.connection() as conn:
            row = await conn.fetchrow("SELECT * FROM approvals WHERE id = $1", approval_id)
        if row is None:
            return None
        return Approval(
            id=row["id"],
            command=row["command"],
            arguments=json.loads(row["arguments"]),
            environment=row["environment"],
            requester=row["requester"],
            channel_id=row["channel_id"],
            message_ts=row["message_ts"],
            request_id=row["request_id"],
            plan=Plan.model_validate_json(row["plan"]),
            plan_fingerprint=row["plan_fingerprint"],
            typed_word=row["typed_word"],
            needs_second_approver=row["needs_second_approver"],
            second_approver=row["second_approver"],
            status=row["status"],
            created_at=row["created_at"],
            expires_at=row["expires_at"],
        )

    async def waiting_for(self, user: str, limit: int = 20) -> list[Approval]:
        """Return the plans waiting for this user: their own to confirm, or another's second approval.

        Only a list: confirming still goes through `may_confirm` and `confirm`, wherever it is clicked.
        """
        operator = await self.authorizer.allowed(user, "operator")
        async with self.services.state_db.connection() as conn:
            rows = await conn.fetch(
                """SELECT id FROM approvals
                   WHERE environment = $1 AND expires_at > $2
                     AND ((status = 'pending' AND requester = $3)
                          OR (status = 'awaiting_second' AND requester <> $3 AND $4))
                   ORDER BY created_at DESC LIMIT $5""",
                self.settings.environment,
                self.clock(),
                user,
                operator,
                limit,
            )
        found = [await self.load(row["id"]) for row in rows]
        return [approval for approval in found if approval is not None]

    async def may_confirm(self, approval_id: uuid.UUID, user: str, channel_id: str | None = None) -> Approval:
        """Check that this user may confirm this approval now (before asking for a code)."""
        approval = await self.load(approval_id)
        trail = TrailEntry(action="confirm", decision="refused", actor=user, channel_id=channel_id)
        if approval is None:
            await self._refuse(trail, "unknown_approval", "that request does not exist (any more)")
        assert approval is not None
        trail = self._entry_for(approval, user)
        if approval.status not in ("pending", "awaiting_second"):
            await self._refuse(trail, "already_handled", f"this request is already {approval.status}")
        if self.clock() > approval.expires_at:
            await self._set_status(approval.id, approval.status, "expired", "approval window passed")
            await self._refuse(
                trail, "expired", f"this plan expired; run /{approval.command} again for a fresh one"
            )
        if approval.status == "pending":
            if user != approval.requester:
                await self._refuse(trail, "not_requester", "only the person who asked can confirm this plan")
        else:
            if user == approval.requester:
                await self._refuse(
                    trail, "same_person", "a second approval must come from a different person"
                )
            if not await self.authorizer.allowed(user, "operator"):
                await self._refuse(
                    trail, "not_authorised", f"you are not allowed to approve /{approval.command}"
                )
        return approval

    async def confirm(
        self, approval_id: uuid.UUID, user: str, code: str, typed_word: str | None = None
    ) -> Confirmation:
        """Take the typed word and the TOTP code; move the approval on exactly once."""
        approval = await self.may_confirm(approval_id, user)
        trail = self._entry_for(approval, user)
        # The requester types the word; a second approver approves with their own code (the Slack
        # modal asks the second person for no word).
        first = approval.status == "pending"
        if first and approval.typed_word and (typed_word or "").strip() != approval.typed_word:
            await self._refuse(trail, "typed_word", f"type {approval.typed_word} exactly to confirm")
        now = self.clock()
        try:
            verification = await self.mfa.verify(user, code, now)
        except MfaUnavailable as error:
            await self._refuse(trail, "mfa_unavailable", str(error))
        if not verification.accepted:
            self.services.metrics.mfa_failures.labels(verification.outcome).inc()
            await self.trail.append(
                replace(
                    trail,
                    action="MFA_CHALLENGE_FAILED",
                    decision="refused",
                    details={
                        "reason": verification.outcome,
                        "failures": verification.failures,
                        "approval": str(approval.id),
                    },
                ),
            )
            return Confirmation("mfa_failed", approval, verification)
        stage = approval.status
        if stage == "pending" and approval.needs_second_approver:
            if not await self._set_status(approval.id, "pending", "awaiting_second", "first approval given"):
                await self._refuse(trail, "already_handled", "this request was already confirmed")
            await self.trail.append(replace(trail, decision="first_approval"))
            fresh = await self.load(approval.id)
            assert fresh is not None
            return Confirmation("awaiting_second", fresh)
        second = user if stage == "awaiting_second" else None
        # The conditional update is what makes retries and double clicks harmless: one wins.
        if not await self._set_status(approval.id, stage, "approved", "approved", second_approver=second):
            await self._refuse(trail, "already_handled", "this request was already confirmed")
        await self.trail.append(replace(trail, decision="approved"))
        fresh = await self.load(approval.id)
        assert fresh is not None
        return Confirmation("approved", fresh)

    async def cancel(self, approval_id: uuid.UUID, user: str) -> Approval:
        """Cancel a plan not yet approved (its requester or any operator)."""
        approval = await self.load(approval_id)
        trail = TrailEntry(action="cancel", decision="refused", actor=user)
        if approval is None:
            await self._refuse(trail, "unknown_approval", "that request does not exist (any more)")
        assert approval is not None
        trail = self._entry_for(approval, user)
        if user != approval.requester and not await self.authorizer.allowed(user, "operator"):
            await self._refuse(trail, "not_authorised", "only the requester or an operator can cancel")
        # Only a plan still waiting can be cancelled; the conditional update loses to a confirmation.
        cancelled = approval.status in ("pending", "awaiting_second") and await self._set_status(
            approval.id, approval.status, "cancelled", f"cancelled by {user}"
        )
        if not cancelled:
            await self._refuse(trail, "already_handled", f"this request is already {approval.status}")
        await self.trail.append(replace(trail, decision="cancelled"))
        return approval

    async def cancel_plans_of(self, requester: str, actor: str, reason: str) -> list[Approval]:
        """Cancel every plan of `requester` still waiting for a confirmation; return them."""
        async with self.services.state_db.connection() as conn:
            rows = await conn.fetch(
                """UPDATE approvals SET status = 'cancelled', status_reason = $2, updated_at = now()
                   WHERE requester = $1 AND status IN ('pending', 'awaiting_second') RETURNING id""",
                requester,
                reason[:200],
            )
        cancelled = []
        for row in rows:
            approval = await self.load(row["id"])
            if approval is None:
                continue
            cancelled.append(approval)
            await self.trail.append(
                replace(
                    self._entry_for(approval, actor),
                    decision="cancelled",
                    outcome="requester_reset",
                    details={"approval": str(approval.id), "reason": reason},
                )
            )
        return cancelled

    # --- Executing --------------------------------------------------------------------------------

    async def execute(self, approval: Approval, publish: Publisher) -> Execution:
        """Re-check permission and the plan under the lock, then run the command's executor."""
        trail = self._entry_for(approval, approval.requester)
        if approval.status != "approved":
            await self._refuse(trail, "not_approved", f"this request is {approval.status}, not approved")
        for person in filter(None, (approval.requester, approval.second_approver)):
            if not await self.authorizer.allowed(person, "operator"):
                await self._set_status(approval.id, "approved", "refused", f"{person} lost permission")
                await self._refuse(trail, "not_authorised", f"{person} is no longer allowed to run this")
        spec = self.commands[approval.command]
        if spec.execute is None:
            raise RuntimeError(f"/{approval.command} has no executor")
        try:
            async with self.lock.held(approval.requester, approval.command, approval.id) as lease:
                invocation = Invocation(
                    request_id=approval.request_id,
                    source="gate",
                    user_id=approval.requester,
                    channel_id=approval.channel_id,
                )
                fresh = await spec.run(self.services, approval.arguments, invocation)
                # The plan made again now must be the one shown, and the stored plan must not have been
                # edited since (its own fingerprint): execution then runs on the plan made just now.
                if (
                    not isinstance(fresh, Proposal)
                    or fresh.plan.fingerprint() != approval.plan_fingerprint
                    or approval.plan.fingerprint() != approval.plan_fingerprint
                ):
                    await self._set_status(approval.id, "approved", "refused", "plan changed")
                    await self._refuse(
                        trail,
                        "plan_changed",
                        "things changed since the plan was shown; here is a new plan",
                        new_plan=fresh if isinstance(fresh, Proposal) else None,
                    )
                if not await self._set_status(
                    approval.id, "approved", "executing", f"lock token {lease.token}"
                ):
                    # Cancelled, expired or taken by another executor since it was approved.
                    current = await self.load(approval.id)
                    status = current.status if current is not None else "gone"
                    await self._refuse(trail, "already_handled", f"this request is {status}, not approved")
                recorder = StepRecorder(self._saving(approval.id, publish))
                fenced = FencedProgress(recorder, self.lock, lease)
                try:
                    result = await spec.execute(self.services, fresh.plan, fenced)
                except Exception as error:
                    await self._set_status(approval.id, "executing", "failed", type(error).__name__)
                    await self.trail.append(
                        replace(
                            trail,
                            decision="executed",
                            outcome="failed",
                            details={"error": f"{type(error).__name__}: {error}"[:500]},
                        ),
                    )
                    raise
        except LockHeld as held:
            self.services.metrics.lock_waits.inc()
            await self._set_status(approval.id, "approved", "refused", "lock held")
            await self._refuse(
                trail,
                "locked",
                f"one destructive operation at a time: {held.holder} is running /{held.command}"
                f" since {held.since:%H:%M:%S} UTC",
            )
        if not result.steps:
            result = result.model_copy(update={"steps": recorder.steps})
        outcome: Status = "succeeded" if result.succeeded else "failed"
        await self._set_status(approval.id, "executing", outcome, result.summary[:500])
        await self.trail.append(
            replace(
                trail,
                decision="executed",
                outcome=outcome,
                details={"summary": result.summary[:500], "second_approver": approval.second_approver},
            ),
        )
        return result

    async def recover_interrupted(self) -> list[Approval]:
        """Mark operations left executing by a stopped process as interrupted; return them.

        An operation is interrupted when it is `executing` (or `approved`) but no live lease in
        this environment belongs to it: its process stopped without finishing.
        """
        async with self.services.state_db.connection() as conn:
            rows = await conn.fetch(
                """UPDATE approvals a SET status = 'interrupted', updated_at = now(),
                       status_reason = 'the bot stopped while this was ' || a.status
                   WHERE a.environment = $1 AND a.status IN ('executing', 'approved')
                     AND a.updated_at < now() - make_interval(secs => $2)
                     AND NOT EXISTS (SELECT 1 FROM op_locks l WHERE l.approval_id = a.id
                                     AND l.lease_until > now())
                   RETURNING a.id""",
                self.settings.environment,
                # An approval that was approved a moment ago is about to take the lock: leave it.
                min(self.settings.lock_lease_seconds, 30.0),
            )
        found = []
        for row in rows:
            approval = await self.load(row["id"])
            if approval is None:
                continue
            found.append(approval)
            await self.trail.append(
                replace(
                    self._entry_for(approval, approval.requester),
                    decision="interrupted",
                    outcome="interrupted",
                    details={
                        "approval": str(approval.id),
                        "steps": await self.progress_of(approval.id),
                    },
                ),
            )
        return found

    async def progress_of(self, approval_id: uuid.UUID) -> list[dict[str, object]]:
        """Return the steps saved for an approval's execution."""
        async with self.services.state_db.connection() as conn:
            raw = await conn.fetchval("SELECT progress FROM approvals WHERE id = $1", approval_id)
        steps: list[dict[str, object]] = json.loads(raw) if raw else []
        return steps

    # --- Helpers ----------------------------------------------------------------------------------

    def _saving(self, approval_id: uuid.UUID, publish: Publisher) -> Publisher:
        """Save each step list in the approval (for recovery after a restart), then publish it."""

        async def save_and_publish(steps: list[Step]) -> None:
            try:
                async with self.services.state_db.connection() as conn:
                    await conn.execute(
                        "UPDATE approvals SET progress = $2::jsonb, updated_at = now() WHERE id = $1",
                        approval_id,
                        json.dumps([step.model_dump(mode="json") for step in steps]),
                    )
            except Exception as error:  # saving progress is bookkeeping; the operation goes on
                log.warning("progress_not_saved", error=type(error).__name__)
            await publish(steps)

        return save_and_publish

    async def _set_status(
        self,
        approval_id: uuid.UUID,
        expected: str,
        new: Status,
        reason: str,
        second_approver: str | None = None,
    ) -> bool:
        async with self.services.state_db.connection() as conn:
            result = await conn.execute(
                """UPDATE approvals SET status = $3, status_reason = $4, updated_at = now(),
                       second_approver = COALESCE($5, second_approver)
                   WHERE id = $1 AND status = $2""",
                approval_id,
                expected,
                new,
                reason,
                second_approver,
            )
        return str(result).endswith(" 1")

    async def _refuse(
        self, trail: TrailEntry, reason: str, message: str, new_plan: Proposal | None = None
    ) -> NoReturn:
        self.services.metrics.gate_refusals.labels(reason).inc()
        await self.trail.append_quietly(
            replace(trail, decision="refused", outcome=reason, details={**trail.details, "message": message})
        )
        raise Refused(reason, message, new_plan)

    def _entry(self, command: str, arguments: list[str], invocation: Invocation) -> TrailEntry:
        return TrailEntry(
            action=command,
            decision="requested",
            actor=invocation.user_id,
            command=command,
            arguments=" ".join(arguments),
            channel_id=invocation.channel_id,
            request_id=invocation.request_id,
        )

    def _entry_for(self, approval: Approval, user: str) -> TrailEntry:
        return TrailEntry(
            action=approval.command,
            decision="requested",
            actor=user,
            command=approval.command,
            arguments=" ".join(approval.arguments),
            channel_id=approval.channel_id,
            request_id=approval.request_id,
            details={"approval": str(approval.id)},
        )


class FencedProgress:
    """Report steps, checking before each that we still hold the lock (fencing)."""

    def __init__(self, inner: Progress, lock: OperationLock, lease: Lease) -> None:
        self.inner = inner
        self.lock = lock
        self.lease = lease

    async def step(self, name: str, status: StepStatus, detail: str = "") -> None:
        """Renew the lease (raising LockLost if it was taken over), then pass the step on."""
        if status == "running":
            await self.lock.renew(self.lease)
        await self.inner.step(name, status, detail)
