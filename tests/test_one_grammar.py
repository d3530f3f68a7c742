"""One grammar for every command (commands/base.py): `key=value` options anywhere in the line, and an
unknown or misplaced word named in the error. Table-driven: a command added to the bot must be added
here. (/incident's grammar is its own: tests/test_incident_grammar.py.)"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest

from bot.cli.gate import parse_approve, parse_audit_trail
from bot.cli.main import main
from bot.cli.usage import BOT_COMMANDS
from bot.gate.mfa_command import parse as parse_mfa
from bot.registry import COMMANDS
from commands import audit, backup, graph, health, rca, restart, restore, rollback
from commands import triage_grammar as triage
from commands.base import UsageError
from sandbox import grammar as sandbox

ROLLBACK = rollback.RollbackConfig(
    project="3dpot",
    service="backend",
    image="3dpot-backend",
    version_pattern=r"^v\d+\.\d+\.\d+$",
    flags=("MFA_ENABLED",),
    health_timeout=1.0,
    stop_timeout=1,
    engine_timeout=1.0,
    read_timeout=1.0,
    environment="sandbox",
)
APPROVAL = str(uuid.UUID(int=7))
BACKUP = "2025-11-20_02-00-00"
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"

# How each command reads its words (the same function Slack's text and the terminal's argv reach).
PARSERS: dict[str, Callable[[list[str]], Any]] = {
    "health": health.parse,
    "audit": audit.parse,
    "triage": triage.parse,
    "rollback": lambda tokens: rollback.parse(tokens, ROLLBACK),
    "restart": restart.parse,
    "backup": backup.parse,
    "restore": restore.parse,
    "rca": rca.parse,
    "graph": graph.parse,
    "mfa": parse_mfa,
    "approve": parse_approve,
    "audit-trail": parse_audit_trail,
    "sandbox": sandbox.parse,
}
# Commands that take no argument at all: their refusal is the CLI's.
NO_ARGUMENTS = ("serve", "config", "migrate")
# Being changed under issue 18: its own grammar and tests.
ELSEWHERE = ("incident",)

# (command, a line, the option in it): the option moved to the start, the middle and the end of
# the line reads the same.
WITH_AN_OPTION = [
    ("audit", ["user", "ana"], "since=2h"),
    ("audit", ["failed-logins"], "min=3"),
    ("audit", ["export", "csv", "user", "ana"], "limit=50"),
    ("triage", ["logs", "error", "/api/v1/projects"], "since=1h"),
    ("triage", ["changes"], "since=3h"),
    ("triage", [], "window=15m"),
    ("graph", ["p95"], "step=30s"),
    ("graph", ["5xx"], "since=3h"),
    ("backup", ["prune"], "keep-days=7"),
    ("backup", ["prune"], "dry-run=yes"),
    ("restore", [BACKUP], "type=db"),
    ("rca", ["3", "file"], "lang=pt"),
    ("sandbox", ["fault", "health=fail"], "error-rate=0.1"),
    ("sandbox", ["fault"], "latency=200ms"),
    ("sandbox", ["up"], "version=v2.0.6"),
    ("sandbox", ["down"], "purge=yes"),
]

# (command, a line with a word that does not belong, that word): the error names it.
WITH_A_STRAY_WORD = [
    ("health", ["now"], "now"),
    ("health", ["colour=red"], "colour"),
    ("audit", ["user", "ana", "colour=red"], "colour"),
    ("audit", ["colour=red", "user", "ana"], "colour"),
    ("audit", ["mfa", "twice"], "twice"),
    ("triage", ["colour=red", "trace", TRACE], "colour"),
    ("triage", ["trace", TRACE, "extra"], "extra"),
    ("triage", ["bogus"], "bogus"),
    ("rollback", ["list", "since=1h"], "since"),
    ("rollback", ["since=1h", "v2.0.5"], "since"),
    ("rollback", ["v2.0.5", "extra"], "extra"),
    ("restart", ["backend", "extra"], "extra"),
    ("restart", ["colour=red", "backend"], "colour"),
    ("backup", ["prune", "colour=red"], "colour"),
    ("backup", ["db", "extra"], "extra"),
    ("restore", ["list", "colour=red"], "colour"),
    ("restore", ["verify", BACKUP, "extra"], "extra"),
    ("rca", ["colour=red", "3"], "colour"),
    ("rca", ["1", "2"], "2"),
    ("graph", ["colour=red", "5xx"], "colour"),
    ("mfa", ["status", "colour=red"], "colour"),
    ("mfa", ["status", "extra"], "extra"),
    ("mfa", ["bogus"], "bogus"),
    ("approve", [APPROVAL, "extra"], "extra"),
    ("approve", ["colour=red", APPROVAL], "colour"),
    ("audit-trail", ["verify", "extra"], "extra"),
    ("audit-trail", ["colour=red", "recent"], "colour"),
    ("audit-trail", ["bogus"], "bogus"),
    ("sandbox", ["fault", "colour=red"], "colour"),
    ("sandbox", ["colour=red", "status"], "colour"),
    ("sandbox", ["status", "now"], "now"),
    ("sandbox", ["bogus"], "bogus"),
]


def test_the_tables_cover_every_command() -> None:
    every = set(COMMANDS) | set(BOT_COMMANDS)
    assert set(PARSERS) | set(NO_ARGUMENTS) | set(ELSEWHERE) == every
    assert {name for name, _, _ in WITH_A_STRAY_WORD} == set(PARSERS)


@pytest.mark.parametrize(("name", "words", "option"), WITH_AN_OPTION, ids=lambda value: str(value))
def test_an_option_reads_the_same_anywhere_in_the_line(name: str, words: list[str], option: str) -> None:
    parse = PARSERS[name]
    at_the_end = parse([*words, option])
    assert parse([option, *words]) == at_the_end
    for middle in range(1, len(words)):
        assert parse([*words[:middle], option, *words[middle:]]) == at_the_end
    assert at_the_end != parse(words), "the option must change what is asked"


@pytest.mark.parametrize(("name", "words", "stray"), WITH_A_STRAY_WORD, ids=lambda value: str(value))
def test_a_stray_word_is_named_in_the_error(name: str, words: list[str], stray: str) -> None:
    with pytest.raises(UsageError) as refused:
        PARSERS[name](words)
    assert f"`{stray}`" in refused.value.message


@pytest.mark.parametrize("name", NO_ARGUMENTS)
def test_commands_without_arguments_name_a_stray_word(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([name, "everything"]) == 2
    err = capsys.readouterr().err
    # The terminal quotes the word as a terminal would: no Slack code marks.
    assert "'everything'" in err and "`" not in err, err


def test_the_old_spellings_still_read_as_the_options_they_name() -> None:
    assert sandbox.parse(["fault", "--error-rate", "0.1", "--latency-ms", "200"]) == sandbox.parse(
        ["fault", "error-rate=0.1", "latency=200ms"]
    )
    assert sandbox.parse(["fault", "--clear"]) == sandbox.parse(["fault", "clear"])
    assert sandbox.parse(["down", "--purge"]) == sandbox.parse(["down", "purge=yes"])
    assert backup.parse(["prune", "--keep-days", "7", "--dry-run"]) == backup.parse(
        ["prune", "keep-days=7", "dry-run=yes"]
    )
    assert restore.parse([BACKUP, "--type", "db"]) == restore.parse([BACKUP, "type=db"])
    assert audit.parse(["export", "csv", "-o", "rows.csv"]) == audit.parse(
        ["output=rows.csv", "export", "csv"]
    )
