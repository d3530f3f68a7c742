"""Drive the bot for incident tests: its own state database, signed commands and clicks, the fakes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from adapters.incident_store import IncidentStore
from bot.runtime import Runtime
from tests.conftest import SIGNING_SECRET, recreate_database
from tests.fakes import FakeSlack, SlackCall, block_actions_payload, signed_interaction_request
from tests.fakes.github import TOKEN, FakeGitHub
from tests.fakes.slack_requests import signed_slash_command_request
from tests.test_slack_app import CHANNEL, USER, running_bot

STATE_DB = "chatops_test_incidents"
OTHER_USER = "U0SECOND01"
ALERT_TOKEN = "alertmanager-secret"

__all__ = ["CHANNEL", "OTHER_USER", "USER", "Bot", "block_text", "incident_bot"]


def block_text(blocks: list[dict[str, Any]]) -> str:
    """Join every text of a message's blocks (sections, fields, context, buttons) as a reader sees them."""
    parts: list[str] = []
    for block in blocks:
        if isinstance(block.get("text"), dict):
            parts.append(block["text"]["text"])
        parts += [field["text"] for field in block.get("fields", [])]
        for element in block.get("elements", []):
            text = element.get("text") if isinstance(element, dict) else None
            if text is not None:
                parts.append(text["text"] if isinstance(text, dict) else text)
    return "\n".join(parts)


@dataclass
class Bot:
    """The bot served over HTTP with its fakes, and ways to talk to it as Slack would."""

    url: str
    runtime: Runtime
    slack: FakeSlack

    @property
    def store(self) -> IncidentStore:
        """Return the incident repository over the bot's own database."""
        return IncidentStore(self.runtime.services.state_db)

    async def command(self, command: str, text: str, user: str = USER, channel: str = CHANNEL) -> str:
        """Send a signed slash command; return the response_url id its ephemeral answers go to."""
        response_id = f"R{abs(hash((command, text, user))) % 10**8:08d}"
        body, headers = signed_slash_command_request(
            SIGNING_SECRET,
            command=command,
            text=text,
            user_id=user,
            channel_id=channel,
            response_url=self.slack.response_url(response_id),
        )
        async with httpx.AsyncClient(timeout=10) as client:
            answer = await client.post(f"{self.url}/slack/events", content=body, headers=headers)
        assert answer.status_code == 200, answer.text
        return response_id

    async def answer(self, response_id: str, timeout: float = 10) -> str:
        """Wait for the caller's ephemeral answer; return its text and blocks as read."""
        post = await self.slack.wait_for_response_post_async(response_id, timeout=timeout)
        return str(post.body.get("text", "")) + "\n" + block_text(post.body.get("blocks", []))

    async def click(
        self,
        action_id: str,
        value: str,
        user: str = USER,
        channel: str = CHANNEL,
        message_ts: str = "1.000001",
    ) -> str:
        """Click a button as Slack reports it; return the response_url id of its answers."""
        response_id = f"A{abs(hash((action_id, value, user))) % 10**8:08d}"
        payload = block_actions_payload(
            action_id,
            value,
            user_id=user,
            channel_id=channel,
            message_ts=message_ts,
            response_url=self.slack.response_url(response_id),
        )
        body, headers = signed_interaction_request(SIGNING_SECRET, payload)
        async with httpx.AsyncClient(timeout=10) as client:
            answer = await client.post(f"{self.url}/slack/events", content=body, headers=headers)
        assert answer.status_code == 200, answer.text
        return response_id

    async def posted(self, predicate: Any, timeout: float = 10) -> SlackCall:
        """Wait for a chat.postMessage matching the predicate."""
        return await self.slack.wait_for_call_async("chat.postMessage", predicate, timeout=timeout)


@asynccontextmanager
async def incident_bot(
    fake_slack: FakeSlack, github: FakeGitHub | None = None, database: str = STATE_DB, **overrides: Any
) -> AsyncIterator[Bot]:
    """Serve the bot with a fresh state database; GitHub settings point at the fake when given."""
    dsn = await recreate_database(database)
    settings: dict[str, Any] = {
        "state_database_url": dsn,
        "incident_channel": CHANNEL,
        # /alerts fails closed without a token: the bot under test has one, as a deployment would.
        "alertmanager_token": ALERT_TOKEN,
        # Alerts triaging themselves have tests of their own (test_alert_triage.py).
        "alert_triage_severity": "none",
    }
    if github is not None:
        settings |= {"github_token": TOKEN, "github_repo": github.repo, "github_api_url": github.url}
    settings |= overrides
    async with running_bot(fake_slack, **settings) as (url, runtime):
        yield Bot(url, runtime, fake_slack)


def is_header(call: SlackCall) -> bool:
    """Tell the incident header (a channel message with the incident's fields) from other posts."""
    return "thread_ts" not in call.params and "*Commander*" in block_text(call.params.get("blocks", []))


def in_thread(thread_ts: str) -> Any:
    """Match messages posted in one thread."""
    return lambda call: call.params.get("thread_ts") == thread_ts
