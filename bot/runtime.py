"""Everything built once at start-up: the adapters and the bot's own pieces on top of them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from bot.concurrency import InFlight
from bot.config import Settings
from bot.gate.audit_trail import AuditTrail, trail_key
from bot.gate.authz import Authorizer
from bot.gate.gate import Gate
from bot.gate.locks import OperationLock
from bot.gate.mfa import MfaService
from bot.gate.mfa_command import MfaCommand
from bot.registry import COMMANDS
from bot.services import Services
from bot.slack.posting import ChannelPacer

if TYPE_CHECKING:
    from slack_sdk.web.async_client import AsyncWebClient


@dataclass
class Runtime:
    """The services plus authorisation, MFA and the gate."""

    services: Services
    authorizer: Authorizer
    mfa: MfaService
    gate: Gate
    mfa_command: MfaCommand
    trail: AuditTrail
    slack_client: AsyncWebClient | None
    in_flight: InFlight
    pacer: ChannelPacer

    @classmethod
    def build(cls, settings: Settings, services: Services | None = None) -> Runtime:
        """Build the runtime; nothing connects until first used."""
        services = services or Services.build(settings)
        slack_client = services.slack.client if services.slack is not None else None
        authorizer = Authorizer(settings, slack_client)
        secret = settings.secret_key.get_secret_value() if settings.secret_key else None
        mfa = MfaService(services.state_db, secret)
        trail = AuditTrail(
            services.state_db,
            trail_key(secret) if secret else None,
            services.trail_anchors,
            settings.environment,
        )
        lock = OperationLock(services.state_db, settings.environment, settings.lock_lease_seconds)
        gate = Gate(services, authorizer, mfa, lock, COMMANDS, trail)
        return cls(
            services=services,
            authorizer=authorizer,
            mfa=mfa,
            gate=gate,
            mfa_command=MfaCommand(mfa, authorizer, trail, services.metrics, gate),
            trail=trail,
            slack_client=slack_client,
            in_flight=InFlight(services.metrics),
            pacer=ChannelPacer(),
        )
