"""The App Home tab, published each time someone opens it (`app_home_opened`, views.publish).

It shows the open incidents, the plans waiting for this person (Confirm there is the gate's own
button: the same checks, MFA modal and execution as under the plan), their MFA enrollment, and the
last `/health` verdict. What cannot be read is said on the tab; the rest is still shown.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from adapters.incident_store import IncidentStore
from bot.dispatch import last_run
from bot.observability import get_logger
from bot.render.home import HealthSeen, HomeData, home_view
from bot.runtime import Runtime
from bot.slack.errors import slack_error_code

log = get_logger("chatops.home")


async def home_data(runtime: Runtime, user: str, now: datetime | None = None) -> HomeData:
    """Gather what one person's Home tab shows."""
    data = HomeData(user_id=user, now=now or datetime.now(UTC))
    services = runtime.services
    try:
        data.incidents = await IncidentStore(services.state_db).open_incidents(limit=50)
    except Exception as error:
        data.problems.append(f"open incidents unknown: {type(error).__name__}")
    try:
        data.plans = await runtime.gate.waiting_for(user)
    except Exception as error:
        data.problems.append(f"plans unknown: {type(error).__name__}")
    try:
        data.mfa = await runtime.mfa.status(user)
    except Exception as error:
        data.problems.append(f"MFA status unknown: {type(error).__name__}")
    try:
        seen = await last_run(services, "health")
        data.health = HealthSeen(*seen) if seen is not None else None
    except Exception as error:
        data.problems.append(f"last /health unknown: {type(error).__name__}")
    return data


def home_handler(runtime: Runtime) -> Callable[..., Awaitable[None]]:
    """Publish the Home tab of whoever opened it."""

    async def on_home_opened(event: dict[str, Any], client: AsyncWebClient) -> None:
        if event.get("tab", "home") != "home" or not event.get("user"):
            return
        user = str(event["user"])
        data = await home_data(runtime, user)
        try:
            await client.views_publish(user_id=user, view=home_view(data))
        except SlackApiError as error:
            log.warning("home_not_published", error=slack_error_code(error))

    return on_home_opened
