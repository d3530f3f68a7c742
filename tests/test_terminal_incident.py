"""Terminal commands with CHATOPS_INCIDENT_CHANNEL set land in the open incident, as Slack ones do.

`chatops` runs as a subprocess against a state database of this module's own; Slack is the fake.
"""

from __future__ import annotations

import asyncio
import getpass
import os
import socket
import subprocess
from pathlib import Path

import pytest

from adapters.incident_store import IncidentStore, TimelineEvent
from bot.render import health as health_render
from bot.services import Services
from commands.health import HealthReport
from tests.conftest import BOT_TOKEN, make_settings, recreate_database
from tests.fakes import FakeSlack
from tests.incident_helpers import CHANNEL, USER, block_text, in_thread, is_header

REPO = Path(__file__).resolve().parents[1]
CHATOPS = str(REPO / ".venv" / "bin" / "chatops")
# Whatever the caller's shell has set must not decide where the terminal records.
_CLEARED = ("CHATOPS_INCIDENT_CHANNEL", "CHATOPS_CLI_USER", "SLACK_BOT_TOKEN", "CHATOPS_SLACK_API_URL")


class Terminal:
    """`chatops ...` over a fresh state database of its own, with these variables."""

    def __init__(self, database: str, **env: str) -> None:
        self.dsn = asyncio.run(recreate_database(database))
        base = {key: value for key, value in os.environ.items() if key not in _CLEARED}
        # The incident stays in the channel it is declared in (its own channel: test_incident_workspace).
        self.env = base | {
            "CHATOPS_STATE_DATABASE_URL": self.dsn,
            "CHATOPS_INCIDENT_WORKSPACE": "in-place",
            **env,
        }

    def __call__(self, *args: str, **more: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [CHATOPS, *args], env=self.env | more, capture_output=True, text=True, timeout=120, cwd="/tmp"
        )

    def timeline(self) -> list[TimelineEvent]:
        """Read the channel's open incident's timeline from the state database."""

        async def read() -> list[TimelineEvent]:
            services = Services.build(make_settings(state_database_url=self.dsn))
            try:
                store = IncidentStore(services.state_db)
                incident = await store.open_in(CHANNEL)
                assert incident is not None, "no incident open in the channel"
                return await store.events(incident.id)
            finally:
                await services.aclose()

        return asyncio.run(read())


def health_json(run: Terminal, **env: str) -> HealthReport:
    checked = run("health", "--json", **env)
    assert checked.returncode in (0, 1), checked.stderr
    return HealthReport.model_validate_json(checked.stdout)


@pytest.mark.usefixtures("sandbox")
def test_a_terminal_result_lands_in_the_incidents_timeline_and_thread(fake_slack: FakeSlack) -> None:
    run = Terminal(
        "chatops_test_terminal_incident",
        SLACK_BOT_TOKEN=BOT_TOKEN,
        CHATOPS_SLACK_API_URL=fake_slack.url,
        CHATOPS_CLI_USER=USER,
    )
    # No incident open in the channel: the terminal posts nothing (it is not a Slack command).
    health_json(run, CHATOPS_INCIDENT_CHANNEL=CHANNEL)
    assert fake_slack.calls_to("chat.postMessage") == []

    declared = run("incident", "declare", "Checkout returns 5xx", "sev=P2", CHATOPS_INCIDENT_CHANNEL=CHANNEL)
    assert declared.returncode == 0, declared.stderr
    report = health_json(run, CHATOPS_INCIDENT_CHANNEL=CHANNEL)

    # The timeline has the entry a Slack run records: the Slack rendering's one-line text.
    events = run.timeline()
    assert [event.kind for event in events] == ["declared", "/health"]
    entry = events[-1]
    assert entry.actor == USER
    assert entry.text == health_render.slack(report).main.text
    # ...and the result is in the incident's thread, saying where it came from.
    header = next(call for call in fake_slack.calls_to("chat.postMessage") if is_header(call))
    header_ts = str(header.response["ts"])  # type: ignore[index]
    thread = [call for call in fake_slack.calls_to("chat.postMessage") if in_thread(header_ts)(call)]
    posted = [call for call in thread if call.params.get("text") == entry.text]
    assert len(posted) == 1, [call.params.get("text") for call in thread]
    assert f"`/health` run from the terminal by <@{USER}>" in block_text(posted[0].params["blocks"])


@pytest.mark.usefixtures("sandbox")
def test_without_slack_the_terminal_records_as_the_machines_user() -> None:
    run = Terminal("chatops_test_terminal_incident_plain", CHATOPS_INCIDENT_CHANNEL=CHANNEL)
    declared = run("incident", "declare", "Disk full on db-1")
    assert declared.returncode in (0, 1), declared.stderr
    report = health_json(run)
    events = run.timeline()
    assert [event.kind for event in events] == ["declared", "/health"]
    assert events[-1].actor == f"{getpass.getuser()}@{socket.gethostname()} (terminal)"
    assert events[-1].text == health_render.slack(report).main.text
