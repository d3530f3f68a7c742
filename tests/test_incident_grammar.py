"""The grammar of /incident: `key=value` options count anywhere in the line, free text stays as typed,
and an unknown or misplaced word is named."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from adapters.incident_store import IncidentStore
from bot.runners import incident as incident_runner
from bot.services import Services
from commands import incident
from commands.base import UsageError
from tests.conftest import make_settings, recreate_database

REPO = Path(__file__).resolve().parents[1]


def slack(text: str) -> dict[str, Any]:
    """Parse as Slack sends it (the raw text, kept whole)."""
    return incident.parse(incident_runner.slack_text(text)).model_dump()


@pytest.mark.parametrize(
    ("tokens", "expected"),
    [
        # The terminal's words: options after the title count (the bug: channel= was not seen).
        (
            ["declare", "API 5xx", "sev=P1", "channel=C0INC"],
            {"action": "declare", "text": "API 5xx", "severity": "P1", "channel_id": "C0INC"},
        ),
        (["channel=C0INC", "declare", "API 5xx"], {"text": "API 5xx", "channel_id": "C0INC"}),
        (["declare", "sev=P2", "API", "5xx", "place=in-place"], {"text": "API 5xx", "place": "in-place"}),
        (["note", "inc=3", "we're on it"], {"action": "note", "text": "we're on it", "incident_id": 3}),
        (["followup", "add smoke tests", "owner=@alice"], {"text": "add smoke tests", "owner": "@alice"}),
        (["stats", "since=30d"], {"action": "stats"}),
    ],
)
def test_terminal_words(tokens: list[str], expected: dict[str, Any]) -> None:
    parsed = incident.parse(tokens).model_dump()
    assert {key: parsed[key] for key in expected} == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            'declare "API 5xx" sev=P1 channel=C0INC',
            {"text": "API 5xx", "severity": "P1", "channel_id": "C0INC"},
        ),
        ("declare Checkout sev=P2 degraded", {"text": "Checkout degraded", "severity": "P2"}),
        # Free text keeps apostrophes, `=` that are not options, and its lines.
        (
            "update we're rolling back api=v2.0.5\nsecond line",
            {"text": "we're rolling back api=v2.0.5\nsecond line", "graph": False},
        ),
        ("note x=y and rate(5m)>1 inc=4", {"text": "x=y and rate(5m)>1", "incident_id": 4}),
        ('note "owner=@bob is wrong" says alice', {"text": '"owner=@bob is wrong" says alice'}),
        ("followup owner=<@U0ALICE01|alice> add smoke tests", {"owner": "<@U0ALICE01|alice>"}),
        ("role comms <@U0ALICE01> inc=2", {"role": "comms", "text": "<@U0ALICE01>", "incident_id": 2}),
        ("role scribe none", {"role": "scribe", "text": "none"}),
        ("sev sev=P1", {"severity": "P1"}),
        ("update", {"action": "update", "text": ""}),
    ],
)
def test_slack_text(text: str, expected: dict[str, Any]) -> None:
    parsed = slack(text)
    assert {key: parsed[key] for key in expected} == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("note ask owner=@alice", "`owner=@alice` does not go with note: owner= is an option of followup"),
        ("update sev=P1 now", "`sev=P1` does not go with update: sev= is an option of declare, sev"),
        ("declare Outage inc=3", "`inc=3` does not go with declare"),
        ("inc=3 declare Outage", "`inc=3` does not go with declare"),
        ("timeline since=1d", "`since=1d` does not go with timeline: since= is an option of stats"),
        ("timeline foo=bar", "timeline takes no arguments; `foo=bar` is not one"),
        ("contacts please", "contacts takes no arguments; `please` is not one"),
        ("sev P1 P2", "sev takes one severity; `P2` is one word too many"),
        ("declare Outage sev=P1 sev=P2", "give sev= once"),
        ("declare Outage place=somewhere", "use place=dedicated or place=in-place"),
        ("update graph=maybe it is fine", "use graph=yes or graph=no"),
        ("note x channel=general", "`channel=general` is not a Slack channel id"),
        ("role boss @alice", "unknown role `boss`"),
        ("INC=3 timeline", "unknown action `INC=3`"),
        ('"declare" Outage', "unknown action"),
    ],
)
def test_bad_words_are_named(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")) as refused:
        incident.parse(incident_runner.slack_text(text))
    assert refused.value.usage == incident.USAGE


@pytest.mark.usefixtures("postgres")
def test_the_terminal_declares_with_channel_after_the_title() -> None:
    dsn = asyncio.run(recreate_database("chatops_test_incident_grammar_cli"))
    env = {key: value for key, value in os.environ.items() if not key.startswith(("CHATOPS_", "SLACK_"))}
    env["CHATOPS_STATE_DATABASE_URL"] = dsn
    declared = subprocess.run(
        [
            str(REPO / ".venv" / "bin" / "chatops"),
            "incident",
            "declare",
            "API 5xx",
            "sev=P1",
            "channel=C0INC",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd="/tmp",
    )
    assert declared.returncode == 0, declared.stderr
    assert "INC-1" in declared.stdout and "API 5xx" in declared.stdout

    async def stored() -> tuple[str, str, str] | None:
        services = Services.build(make_settings(state_database_url=dsn))
        try:
            found = await IncidentStore(services.state_db).open_in("C0INC")
        finally:
            await services.aclose()
        return (found.title, found.severity, found.channel_id) if found else None

    # No Slack at this terminal: declared where it was asked, said so, nothing lost.
    assert asyncio.run(stored()) == ("API 5xx", "P1", "C0INC")
    assert "Slack is not configured" in declared.stdout
