"""`/mfa enroll | confirm <code> | status | reset @user`: answered only to the person who asks.

The seed is shown once, where Slack keeps nothing: a modal (or an ephemeral message), with the QR
code drawn as text. Never a DM, never a file: a hijacked Slack session must not find both factors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from bot.gate.audit_trail import AuditTrail, TrailEntry
from bot.gate.authz import Authorizer
from bot.gate.gate import Approval, Gate
from bot.gate.mfa import Enrollment, MfaService, MfaUnavailable
from bot.observability import BotMetrics
from commands.base import Arguments, UsageError
from commands.incident import UserResolver, is_user_id, normalize_person

MFA_USAGE = "/mfa enroll | confirm <6-digit code> | status | reset @user"
MFA_SUMMARY = "TOTP step-up for destructive commands: enroll, confirm, status; reset another's (MFA admins)"


@dataclass(frozen=True)
class MfaAnswer:
    """What to tell the user, and what the caller must still ask or show."""

    text: str
    ok: bool = True
    # The new seed: shown once, only where Slack does not keep it.
    enrollment: Enrollment | None = None
    # A reset that waits for the administrator's own code (asked in a modal or at the terminal).
    reset_target: str | None = None


@dataclass(frozen=True)
class ResetDone:
    """A reset carried out: whose, and the plans of theirs that were cancelled with it."""

    target: str
    removed: bool
    cancelled: list[Approval] = field(default_factory=list)


def qr_text(uri: str) -> str:
    """Draw an otpauth URI as a QR code in text (two rows of modules per line), for a code block."""
    import qrcode  # with Pillow: loaded by an enrollment, not by every start

    code = qrcode.QRCode(border=2, error_correction=qrcode.constants.ERROR_CORRECT_L)
    code.add_data(uri)
    code.make(fit=True)
    matrix = code.get_matrix()
    if len(matrix) % 2:
        matrix.append([False] * len(matrix[0]))
    glyphs = {(True, True): "█", (True, False): "▀", (False, True): "▄", (False, False): " "}
    # Dark modules on a light background read best inverted in Slack's dark code blocks: draw light.
    return "\n".join(
        "".join(glyphs[(not top, not bottom)] for top, bottom in zip(upper, lower, strict=True))
        for upper, lower in zip(matrix[::2], matrix[1::2], strict=True)
    )


def parse(tokens: list[str]) -> tuple[str, str | None]:
    """Read `/mfa` words: the subcommand and its one argument (the code, the user), options anywhere."""
    args = Arguments.parse(tokens, MFA_USAGE)
    action = args.next_positional("a subcommand (enroll, confirm, status, reset)")
    argument = None
    if action == "confirm":
        argument = args.next_positional("the 6-digit code")
    elif action == "reset":
        argument = args.next_positional("the user to reset (@name)")
    elif action not in ("enroll", "status"):
        raise UsageError(f"unknown subcommand `{action[:40]}`", MFA_USAGE)
    args.done()
    return action, argument


@dataclass(frozen=True)
class MfaCommand:
    """`/mfa`, bound to the MFA service, the roles, the gate and the audit trail (built once)."""

    mfa: MfaService
    authorizer: Authorizer
    trail: AuditTrail
    metrics: BotMetrics
    gate: Gate

    async def run(
        self,
        user: str,
        tokens: list[str],
        now: datetime | None = None,
        resolve_user: UserResolver | None = None,
    ) -> MfaAnswer:
        """Run one /mfa subcommand for `user`; every change is written to the audit trail."""
        action, argument = parse(tokens)
        now = now or datetime.now(UTC)
        if action == "enroll":
            try:
                enrollment = await self.mfa.enroll(user)
            except ValueError as error:
                raise UsageError(str(error), MFA_USAGE) from None
            await self.trail.append(TrailEntry(action="MFA_ENROLL", decision="started", actor=user))
            text = (
                "Scan the QR code with your authenticator app, or type the key by hand. It is shown"
                " this once and kept nowhere in Slack; confirm within 10 minutes with the first code"
                " (`/mfa confirm <code>`)."
            )
            return MfaAnswer(text=text, enrollment=enrollment)
        if action == "confirm":
            assert argument is not None
            return await self.confirm(user, argument, now)
        if action == "status":
            status = await self.mfa.status(user)
            if not status.enrolled:
                return MfaAnswer("You are not enrolled. Run `/mfa enroll`.")
            state = (
                "enrolled"
                if status.confirmed
                else "enrollment started, not confirmed (run `/mfa confirm <code>`)"
            )
            text = f"MFA: {state}; consecutive failures: {status.consecutive_failures}"
            if status.locked_until and status.locked_until > now:
                text += f"; locked until {status.locked_until:%H:%M:%S} UTC"
            return MfaAnswer(text)
        if action == "reset":
            assert argument is not None
            typed = argument
            target = await normalize_person(typed, resolve_user)
            if not is_user_id(target):
                raise UsageError(
                    f"`{typed[:40]}` is not a Slack user I can find (mention them: @name)", MFA_USAGE
                )
            await self._may_reset(user, target)
            return MfaAnswer(
                f"To reset the MFA enrollment of <@{target}>, confirm with your own code.",
                reset_target=target,
            )
        raise AssertionError(action)  # parse() knows no other

    async def confirm(self, user: str, code: str, now: datetime | None = None) -> MfaAnswer:
        """Confirm an enrollment with the first code the authenticator shows."""
        try:
            verification = await self.mfa.verify(user, code, now or datetime.now(UTC), confirming=True)
        except MfaUnavailable as error:
            raise UsageError(str(error), MFA_USAGE) from None
        await self.trail.append(
            TrailEntry(
                action="MFA_CONFIRM" if verification.accepted else "MFA_CHALLENGE_FAILED",
                decision="accepted" if verification.accepted else "refused",
                actor=user,
                details={} if verification.accepted else {"reason": verification.outcome},
            ),
        )
        if verification.accepted:
            return MfaAnswer("MFA enrolled. Destructive commands will ask for your code.")
        self.metrics.mfa_failures.labels(verification.outcome).inc()
        return MfaAnswer(verification.message, ok=False)

    async def _may_reset(self, admin: str, target: str) -> None:
        """Refuse (and record) a reset by someone who is not an MFA administrator, or of oneself."""
        reason = None
        if not await self.authorizer.allowed(admin, "mfa_admin"):
            reason = "only MFA administrators can reset an enrollment"
        elif admin == target:
            reason = "nobody resets their own MFA: ask another MFA administrator"
        if reason is not None:
            await self.trail.append(
                TrailEntry(
                    action="MFA_RESET",
                    decision="refused",
                    actor=admin,
                    outcome="not_admin" if "administrators" in reason else "self_reset",
                    details={"target": target},
                )
            )
            raise UsageError(reason, MFA_USAGE)

    async def reset(self, admin: str, target: str, code: str, now: datetime | None = None) -> ResetDone:
        """Reset `target`'s enrollment once `admin` gave a valid code of their own; cancel their plans."""
        await self._may_reset(admin, target)
        try:
            verification = await self.mfa.verify(admin, code, now or datetime.now(UTC))
        except MfaUnavailable as error:
            raise UsageError(str(error), MFA_USAGE) from None
        if not verification.accepted:
            self.metrics.mfa_failures.labels(verification.outcome).inc()
            await self.trail.append(
                TrailEntry(
                    action="MFA_RESET",
                    decision="refused",
                    actor=admin,
                    outcome="step_up_failed",
                    details={"target": target, "reason": verification.outcome},
                )
            )
            raise UsageError(f"your code was not accepted: {verification.message}", MFA_USAGE)
        removed = await self.mfa.reset(target)
        cancelled = await self.gate.cancel_plans_of(target, admin, "their MFA enrollment was reset")
        await self.trail.append(
            TrailEntry(
                action="MFA_RESET",
                decision="done" if removed else "nothing",
                actor=admin,
                details={"target": target, "cancelled": [str(approval.id) for approval in cancelled]},
            ),
        )
        return ResetDone(target=target, removed=removed, cancelled=cancelled)
