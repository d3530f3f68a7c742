"""Help everywhere: `chatops <command> [<subcommand>] --help` (or -h) prints the usage and exits 0, for
every command and subcommand; `/<command> help` in Slack answers the caller only; help imports no
client library (how fast it comes: benchmarks/startup_bench.py)."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from bot.cli.main import main
from bot.cli.usage import BOT_COMMANDS
from bot.registry import COMMANDS, Ref, read_literal
from tests.fakes import FakeSlack
from tests.fakes.slack.models import SlackCall
from tests.test_slack_app import CHANNEL, USER, post_command, running_bot

REPO = Path(__file__).resolve().parents[1]

# Every command, and every subcommand of it, as the user would type it before --help.
EVERY_FORM = [
    [name, *sub]
    for table in (COMMANDS, BOT_COMMANDS)
    for name, command in table.items()
    for sub in [[], *([word] for word in command.subcommands)]
]


@pytest.mark.parametrize("flag", ["--help", "-h"])
@pytest.mark.parametrize("words", EVERY_FORM, ids=" ".join)
def test_every_command_and_subcommand_prints_its_usage_and_exits_0(
    words: list[str], flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*words, flag]) == 0
    out = capsys.readouterr().out
    name = words[0]
    assert out.startswith(f"usage: chatops {name}"), out
    # The subcommand's form is in the usage it prints (the lines before the description).
    usage = out.split("\n\n")[0]
    assert all(word in usage for word in words), out


def test_help_anywhere_in_the_line_and_help_alone(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "export", "csv", "--help", "since=1h"]) == 0
    assert capsys.readouterr().out.startswith("usage: chatops audit")
    assert main(["triage", "help"]) == 0
    assert capsys.readouterr().out.startswith("usage: chatops triage")
    assert main(["help", "sandbox"]) == 0
    assert "fault [error-rate=0..1] [latency=200ms]" in capsys.readouterr().out
    assert main(["--help"]) == 0
    overview = capsys.readouterr().out
    for name in [*COMMANDS, *BOT_COMMANDS]:
        assert f"\n  {name} " in overview, name
    # An unknown command is named, with exit 2, help asked or not.
    assert main(["deploy", "--help"]) == 2
    assert "unknown command 'deploy'" in capsys.readouterr().err


def test_usage_read_without_running_its_module_is_the_modules_own() -> None:
    # Help reads each usage from its grammar module's source (running the module would import what
    # the command talks to); it must be the very value the module holds.
    refs: list[Ref | str | None] = [spec.usage_ref for spec in COMMANDS.values()]
    refs += [command.usage for command in BOT_COMMANDS.values()]
    read = [(ref.module, ref.attribute) for ref in refs if isinstance(ref, Ref)]
    assert len(read) >= len(COMMANDS)
    for module, attribute in read:
        assert read_literal(module, attribute) == getattr(importlib.import_module(module), attribute)


def test_the_incident_subcommands_help_lists_are_the_ones_its_grammar_takes() -> None:
    # The registry names them without importing the grammar (a cold start); they must not drift.
    from commands.incident_grammar import ACTIONS

    assert COMMANDS["incident"].subcommands == ACTIONS


def test_help_at_the_terminal_loads_no_settings_and_no_client_library() -> None:
    # A fresh interpreter, as `chatops` starts: what is imported, not how long it takes.
    heavy = (
        "pydantic",
        "boto3",
        "botocore",
        "docker",
        "redis",
        "asyncpg",
        "aiohttp",
        "slack_sdk",
        "matplotlib",
        "structlog",
        "httpx",
        "requests",
        "rich",
        "bot.config",
        "bot.runners",
    )
    script = (
        "import json, sys\n"
        "from bot.cli.main import main\n"
        "codes = [main(['--help']), main(['health', '--help']), main(['rollback', 'flag', '-h'])]\n"
        f"heavy = {heavy!r}\n"
        "loaded = sorted({m for m in sys.modules for h in heavy if m == h or m.startswith(h + '.')})\n"
        "print(json.dumps({'codes': codes, 'loaded': loaded}), file=sys.stderr)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=60, check=True
    )
    report = json.loads(done.stderr.strip().splitlines()[-1])
    assert report["codes"] == [0, 0, 0]
    assert report["loaded"] == []


def test_a_trace_lookup_at_the_terminal_loads_no_log_library_console_or_checklist(tmp_path: Path) -> None:
    # structlog (which imports rich) comes with the first line logged; rich with a console; YAML
    # and the sources of what changed with a checklist run. A lookup answering in JSON needs none.
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    log = tmp_path / "app.log"
    log.write_text(json.dumps({"timestamp": "2026-01-01T00:00:00Z", "trace_id": trace}) + "\n")
    heavy = ("structlog", "rich", "yaml", "bot.runners.changes", "bot.render")
    script = (
        "import json, sys\n"
        "from bot.cli.main import main\n"
        f"code = main(['triage', 'trace', {trace!r}, '--json'])\n"
        f"heavy = {heavy!r}\n"
        "loaded = sorted({m for m in sys.modules for h in heavy if m == h or m.startswith(h + '.')})\n"
        "print(json.dumps({'code': code, 'loaded': loaded}), file=sys.stderr)\n"
    )
    nowhere = "postgresql://postgres@127.0.0.1:1/none"  # refused at once: no database needed
    env = {
        **os.environ,
        "CHATOPS_LOG_PATHS": str(log),
        "CHATOPS_STATE_DATABASE_URL": nowhere,
        "CHATOPS_PLATFORM_DATABASE_URL": nowhere,
    }
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60
    )
    report = json.loads(done.stderr.strip().splitlines()[-1])
    assert json.loads(done.stdout)["log_lines"] == 1
    assert report == {"code": 1, "loaded": []}  # 1: the audit rows could not be read


def test_the_installed_command_answers_help_for_a_command_that_used_to_refuse_it() -> None:
    for command in (["incident", "--help"], ["rca", "-h"], ["mfa", "--help"], ["sandbox", "fault", "-h"]):
        done = subprocess.run(
            [sys.executable, "-m", "bot", *command], capture_output=True, text=True, cwd=REPO, timeout=60
        )
        assert done.returncode == 0, (command, done.stderr)
        assert done.stdout.startswith(f"usage: chatops {command[0]}"), done.stdout


def _help_of(name: str) -> Callable[[SlackCall], bool]:
    return lambda call: str(call.params["text"]).startswith(f"*/{name}*")


@pytest.mark.usefixtures("postgres")
async def test_help_in_slack_answers_the_caller_only_for_every_slash_command(fake_slack: FakeSlack) -> None:
    asked = [(name, "help") for name in [*COMMANDS, "mfa"]]
    asked.append(("audit", "export --help"))  # `--help` works in Slack too, wherever it is
    async with running_bot(fake_slack) as (url, _):
        for name, text in asked:
            assert (await post_command(url, f"/{name}", text)).status_code == 200
            call = await fake_slack.wait_for_call_async("chat.postEphemeral", _help_of(name))
            assert call.params["user"] == USER and call.params["channel"] == CHANNEL
            usage = call.params["text"].split("```")[1]
            assert usage.startswith(f"/{name}"), call.params["text"]
    assert len(fake_slack.calls_to("chat.postEphemeral")) == len(asked)
    # Nothing ran: no result in the channel.
    assert fake_slack.calls_to("chat.postMessage") == []
