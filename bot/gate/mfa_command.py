"""`/mfa enroll | confirm <code> | status | reset <user>`: answered only to the person who asks."""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from datetime import UTC, datetime

import qrcode

from bot.gate.audit_trail import AuditTrail, TrailEntry
from bot.gate.authz import Authorizer
from bot.gate.mfa import MfaService
from bot.observability import BotMetrics
from commands.base import Arguments, UsageError

MFA_USAGE = "/mfa enroll | confirm <6-digit code> | status | reset <@user>"
_USER_MENTION = re.compile(r"^<@([UW][A-Z0-9]+)(?:\|[^>]*)?>$|^([UW][A-Z0-9]{2,})$")


@dataclass(frozen=True)
class MfaAnswer:
    """What to tell the user; a QR code only for enrollment."""

    text: str
    qr_png: bytes | None = None
    next_step: str = ""


def qr_png(uri: str) -> bytes:
    """Render an otpauth URI as a PNG QR code."""
    image = qrcode.make(uri)
    buffer = io.BytesIO()
    image.save(buffer)
    return buffer.getvalue()


def parse_user(text: str) -> str:
    """Read a Slack user mention (<@U123|name>) or a bare user id."""
    match = _USER_MENTION.match(text.strip())
    if not match:
        raise UsageError(f"`{text[:40]}` is not a Slack user (mention them: @name)", MFA_USAGE)
    return match.group(1) or match.group(2)


@dataclass(frozen=True)
class MfaCommand:
    """`/mfa`, bound to the MFA service, the roles and the audit trail (built once, in the runtime)."""

    mfa: MfaService
    authorizer: Authorizer
    trail: AuditTrail
    metrics: BotMetrics

    async def run(self, user: str, tokens: list[str], now: datetime | None = None) -> MfaAnswer:
        """Run one /mfa subcommand for `user`; every change is written to the audit trail."""
        args = Arguments.parse(tokens, MFA_USAGE)
        action = args.next_positional("a subcommand (enroll, confirm, status, reset)")
        now = now or datetime.now(UTC)
        if action == "enroll":
            args.done()
            enrollment = await self.mfa.enroll(user)
            await self.trail.append(TrailEntry(action="MFA_ENROLL", decision="started", actor=user))
            next_step = "Then run `/mfa confirm <code>` with the code your authenticator shows."
            text = (
                "Scan this QR code with your authenticator app (or add this URI by hand).\n"
                f"`{enrollment.uri}`\nThis is shown once. {next_step}"
            )
            return MfaAnswer(text=text, qr_png=qr_png(enrollment.uri), next_step=next_step)
        if action == "confirm":
            code = args.next_positional("the 6-digit code")
            args.done()
            verification = await self.mfa.verify(user, code, now, confirming=True)
            await self.trail.append(
                TrailEntry(
                    action="MFA_CONFIRM" if verification.accepted else "MFA_CHALLENGE_FAILED",
                    decision="accepted" if verification.accepted else "refused",
                    actor=user,
                    details={} if verification.accepted else {"reason": verification.outcome},
                ),
            )
            if verification.accepted:
                return MfaAnswer(
                    ":white_check_mark: MFA enrolled. Destructive commands will ask for your code."
                )
            self.metrics.mfa_failures.labels(verification.outcome).inc()
            return MfaAnswer(f":x: {verification.message}")
        if action == "status":
            args.done()
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
            target = parse_user(args.next_positional("the user to reset"))
            args.done()
            if not await self.authorizer.allowed(user, "mfa_admin"):
                await self.trail.append(
                    TrailEntry(
                        action="MFA_RESET", decision="refused", actor=user, details={"target": target}
                    ),
                )
                raise UsageError("only MFA administrators can reset an enrollment", MFA_USAGE)
            removed = await self.mfa.reset(target)
            await self.trail.append(
                TrailEntry(
                    action="MFA_RESET",
                    decision="done" if removed else "nothing",
                    actor=user,
                    details={"target": target},
                ),
            )
            if removed:
                return MfaAnswer(f"MFA enrollment of <@{target}> removed; they can enroll again.")
            return MfaAnswer(f"<@{target}> was not enrolled.")
        raise UsageError(f"unknown subcommand `{action[:40]}`", MFA_USAGE)
