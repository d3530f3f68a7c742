"""The gate at the terminal: same plan, typed confirmation and TOTP read from the terminal."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pyotp
import pytest

from adapters.incident_store import IncidentStore
from bot.cli.gate import run_gate_command
from bot.cli.main import run_command
from bot.config import Settings
from bot.runtime import Runtime
from tests.gate_helpers import (
    drill_command,  # noqa: F401  (autouse fixture)
    drill_value,
    terminal_gate_settings,
)

OPERATOR = "U0CLIOPS1"
INCIDENT_CHANNEL = "C0CLIINC1"

# Every test here keeps the bot's state in PostgreSQL and runs the drill (a Redis counter).
pytestmark = pytest.mark.usefixtures("postgres", "redis")


@pytest.fixture
async def cli_settings(tmp_path: Path) -> Settings:
    return await terminal_gate_settings(
        "chatops_test_gate_cli", tmp_path / "anchors", operators=[OPERATOR], cli_user=OPERATOR
    )


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Answers typed at the terminal, in order; prompts shown are checked by the tests."""
    answers: list[str] = []
    prompts: list[str] = []

    def reader(prompt: str = "") -> str:
        prompts.append(prompt)
        return answers.pop(0)

    monkeypatch.setattr("builtins.input", reader)
    monkeypatch.setattr("getpass.getpass", reader)
    yield answers
    assert answers == [], f"unused answers: {answers}"


async def enroll_at_terminal(settings: Settings, terminal: list[str]) -> str:
    runtime = Runtime.build(settings)
    try:
        enrollment = await runtime.mfa.enroll(OPERATOR)
    finally:
        await runtime.services.aclose()
    terminal.append(pyotp.TOTP(enrollment.secret).now())
    assert await run_gate_command(settings, "mfa", ["confirm"], as_json=False) == 0
    return enrollment.secret


async def test_destructive_command_at_the_terminal_goes_through_the_gate(
    cli_settings: Settings, terminal: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    seed = await enroll_at_terminal(cli_settings, terminal)
    # The enrollment code was used in this time step: the next one must be a later step's code.
    next_code = pyotp.TOTP(seed).at(time.time() + 30)
    terminal.extend(["yes", next_code])
    capsys.readouterr()
    assert await run_command(cli_settings, "drill", ["3"], as_json=True) == 0
    out = capsys.readouterr()
    result = json.loads(out.out)
    assert result["succeeded"] is True and result["state"] == ["counter = 3"]
    assert "Plan: Add 3 to the drill counter" in out.err

    runtime = Runtime.build(cli_settings)
    try:
        assert await drill_value(runtime.services) == 3
    finally:
        await runtime.services.aclose()


async def test_a_gated_command_at_the_terminal_lands_in_the_open_incidents_timeline(
    cli_settings: Settings, terminal: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    # CHATOPS_INCIDENT_CHANNEL names the incident's channel, as for every other terminal command.
    settings = cli_settings.model_copy(update={"incident_channel": INCIDENT_CHANNEL})
    now = datetime.now(UTC)
    runtime = Runtime.build(settings)
    try:
        store = IncidentStore(runtime.services.state_db)
        incident, refused = await store.declare(
            channel_id=INCIDENT_CHANNEL,
            title="5xx after a deploy",
            severity="P2",
            declared_by=OPERATOR,
            commander=OPERATOR,
            started_at=now,
            declared_at=now,
            force=False,
            first_event=("declared", "Declared: 5xx after a deploy (P2)", {}),
        )
        assert refused is None
    finally:
        await runtime.services.aclose()
    seed = await enroll_at_terminal(settings, terminal)
    terminal.extend(["yes", pyotp.TOTP(seed).at(time.time() + 30)])
    assert await run_command(settings, "drill", ["3"], as_json=False) == 0
    capsys.readouterr()

    runtime = Runtime.build(settings)
    try:
        events = await IncidentStore(runtime.services.state_db).events(incident.id)
    finally:
        await runtime.services.aclose()
    gated = [event for event in events if event.kind == "/drill"]
    # The plan, then its outcome: what a Slack run records (bot/listeners/gate.py), by the operator.
    assert [event.actor for event in gated] == [OPERATOR, OPERATOR], events
    assert "Add 3 to the drill counter" in gated[0].text
    assert gated[1].text == "Add 3 to the drill counter: succeeded — added", gated[1].text


async def test_declining_at_the_prompt_changes_nothing(
    cli_settings: Settings, terminal: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    await enroll_at_terminal(cli_settings, terminal)
    terminal.append("no")
    assert await run_command(cli_settings, "drill", ["3"], as_json=False) == 1
    assert "cancelled; nothing was changed" in capsys.readouterr().err


async def test_terminal_without_an_operator_identity_is_a_usage_error(
    cli_settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = cli_settings.model_copy(update={"cli_user": None})
    assert await run_command(settings, "drill", ["3"], as_json=False) == 2
    assert "set CHATOPS_CLI_USER" in capsys.readouterr().err


async def test_a_code_given_as_an_argument_is_refused(
    cli_settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await run_gate_command(cli_settings, "mfa", ["confirm", "123456"], as_json=False) == 2
    assert "read from the terminal, not from an argument" in capsys.readouterr().err


async def test_audit_trail_verify_at_the_terminal(
    cli_settings: Settings, terminal: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    await enroll_at_terminal(cli_settings, terminal)
    capsys.readouterr()
    assert await run_gate_command(cli_settings, "audit-trail", ["verify"], as_json=True) == 0
    report = json.loads(capsys.readouterr().out)
    # The confirmation at the terminal, anchored outside the database.
    assert (report["rows"], report["ok"], report["problems"], report["anchored_rows"]) == (1, True, [], 1)
    # One role runs and owns the tables here (no CHATOPS_STATE_OWNER_DATABASE_URL): verify says so.
    assert any("runtime role owns audit_trail" in note for note in report["notes"])
    assert await run_gate_command(cli_settings, "audit-trail", ["recent"], as_json=True) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert (row["actor"], row["action"], row["decision"]) == (OPERATOR, "MFA_CONFIRM", "accepted")
