"""The Bolt app: every listener of the bot attached to one `AsyncApp`."""

from __future__ import annotations

import secrets

from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot.listeners.changes import way_back_handler
from bot.listeners.commands import command_handler
from bot.listeners.gate import cancel_handler, confirm_handler, mfa_view_handler
from bot.listeners.home import home_handler
from bot.listeners.incident_forms import register as register_incident_forms
from bot.listeners.incidents import register as register_incident_actions
from bot.listeners.mfa import enroll_view_handler, mfa_handler, reset_view_handler
from bot.registry import COMMANDS
from bot.render.changes import WAY_BACK_ACTION
from bot.render.gate import CANCEL_ACTION, CONFIRM_ACTION, MFA_VIEW
from bot.render.mfa import ENROLL_VIEW, RESET_VIEW
from bot.runtime import Runtime


def build_slack_app(runtime: Runtime, client: AsyncWebClient) -> AsyncApp:
    """Build the Bolt app: one handler per command, the gate's buttons and modal, and /mfa."""
    secret = runtime.services.settings.slack_signing_secret
    app = AsyncApp(
        client=client,
        # Bolt verifies every HTTP request itself (Socket Mode envelopes skip it by design). Without
        # a signing secret (Socket Mode), a random one: an empty secret would be one anyone can use.
        signing_secret=secret.get_secret_value() if secret is not None else secrets.token_hex(32),
        request_verification_enabled=True,
        process_before_response=False,
    )
    for spec in COMMANDS.values():
        app.command(f"/{spec.name}")(command_handler(spec, runtime))
    app.command("/mfa")(mfa_handler(runtime))
    app.action(CONFIRM_ACTION)(confirm_handler(runtime))
    app.action(CANCEL_ACTION)(cancel_handler(runtime))
    app.view(MFA_VIEW)(mfa_view_handler(runtime))
    app.view(ENROLL_VIEW)(enroll_view_handler(runtime))
    app.view(RESET_VIEW)(reset_view_handler(runtime))
    app.action(WAY_BACK_ACTION)(way_back_handler(runtime))
    register_incident_actions(app, runtime)
    register_incident_forms(app, runtime)
    # The App Home tab, brought up to date each time it is opened.
    app.event("app_home_opened")(home_handler(runtime))
    return app
