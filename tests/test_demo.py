"""The demo's pieces (sandbox/demo.py): what it waits for, the codes it types, what it shows.

The demo itself is `bash scripts/demo.sh` (README command 1); it swaps the shared backend, so no
test runs it whole.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pyotp

from bot.gate.mfa import matching_step
from commands.triage_checklist import PromqlCheck, load_checklist
from sandbox.demo import Demo, _echo, _state_dsn, demo_environment, error_ratio, unjudged
from sandbox.manager import SandboxStatus
from tests.conftest import make_settings


def test_answers_are_shown_after_their_prompts_as_a_terminal_would_echo_them() -> None:
    line = "Proceed? Type yes to continue: TOTP code: ✓ stop the old container\n"
    line = _echo(line, "Proceed? Type yes to continue: ", "yes")
    line = _echo(line, "TOTP code: ", "123456")
    assert line == "Proceed? Type yes to continue: yes\nTOTP code: 123456\n✓ stop the old container\n"
    assert _echo("TOTP code: \n", "TOTP code: ", "654321") == "TOTP code: 654321\n"
    assert _echo("nothing asked\n", "TOTP code: ", "1") == "nothing asked\n"


def test_the_demo_settings_live_only_in_its_commands_environment() -> None:
    settings = make_settings(state_database_url="postgresql://postgres@127.0.0.1:5432/chatops_state?x=1")
    dsn = _state_dsn(settings)
    assert dsn == "postgresql://postgres@127.0.0.1:5432/chatops_demo?x=1"
    env = demo_environment(settings, dsn)
    assert env["CHATOPS_STATE_DATABASE_URL"] == dsn and env["CHATOPS_ENVIRONMENT"] == "sandbox"
    assert env["CHATOPS_OPERATORS"] == env["CHATOPS_CLI_USER"] == "U0DEMO0001"
    assert len(env["CHATOPS_SECRET_KEY"]) >= 32
    assert env["CHATOPS_SECRET_KEY"] != demo_environment(settings, dsn)["CHATOPS_SECRET_KEY"]
    assert "SLACK_BOT_TOKEN" not in env and "GITHUB_TOKEN" not in env


def test_each_code_the_demo_types_is_accepted_once_and_never_replayed() -> None:
    seed = pyotp.random_base32()
    demo = Demo(make_settings(), {}, "chatops", key=seed)
    now = time.time()
    steps = []
    for _ in range(2):
        code = demo.code()
        step = matching_step(seed, code, datetime.fromtimestamp(now, UTC))
        assert step is not None  # within the gate's one step either way
        steps.append(step)
    assert steps[1] > steps[0]  # a second code at once is the next one, not the same again


def test_prometheus_can_judge_the_checks_of_the_sandbox_and_a_dead_one_none(sandbox: SandboxStatus) -> None:
    settings = make_settings()
    assert unjudged(settings, timedelta(minutes=1)) == []
    ratio = error_ratio(settings, timedelta(minutes=1))
    assert ratio is not None and 0 <= ratio < 1
    dead = make_settings(prometheus_url="http://127.0.0.1:9")
    promql = [c.title for c in load_checklist(None).enabled() if isinstance(c, PromqlCheck)]
    assert unjudged(dead, timedelta(minutes=1)) == promql and promql
    assert error_ratio(dead, timedelta(minutes=1)) is None
