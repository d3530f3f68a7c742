"""The argument grammar shared by slash commands and the CLI."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from commands.base import Arguments, UsageError, parse_duration, parse_positive_int, tokenize
from commands.health import parse as parse_health


def test_slack_text_and_cli_argv_give_the_same_arguments() -> None:
    from_slack = Arguments.parse(tokenize('logs error /api/v1/projects since=15m "two words"'))
    from_cli = Arguments.parse(["logs", "error", "/api/v1/projects", "--since=15m", "two words"])
    assert from_slack == from_cli
    assert from_slack.options == {"since": "15m"}
    assert from_slack.positionals == ["logs", "error", "/api/v1/projects", "two words"]


def test_typographic_quotes_from_slack_group_words() -> None:
    assert tokenize("note “db failover done”") == ["note", "db failover done"]


def test_unbalanced_quote_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="could not read the arguments"):
        tokenize('note "unterminated')


def test_option_given_twice_is_refused() -> None:
    with pytest.raises(UsageError, match="given twice"):
        Arguments.parse(["since=1h", "since=2h"])


def test_leftover_arguments_are_named() -> None:
    args = Arguments.parse(["extra", "colour=red"], usage="/health")
    with pytest.raises(UsageError) as caught:
        args.done()
    assert "`colour`" in caught.value.message
    assert caught.value.usage == "/health"


def test_health_takes_no_arguments() -> None:
    parse_health([])
    with pytest.raises(UsageError, match="unexpected argument `now`"):
        parse_health(["now"])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", timedelta(seconds=30)),
        ("15m", timedelta(minutes=15)),
        ("24h", timedelta(hours=24)),
        ("7d", timedelta(days=7)),
    ],
)
def test_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "15", "m", "1w", "-5m", "1.5h", "0m", "999999d", "15 m"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(UsageError):
        parse_duration(text)


def test_duration_bound() -> None:
    with pytest.raises(UsageError, match="longer than the maximum of 7d"):
        parse_duration("8d", maximum=timedelta(days=7))


def test_limit_bounds() -> None:
    assert parse_positive_int("50", 100) == 50
    for bad in ("0", "101", "-1", "ten", "1e3"):
        with pytest.raises(UsageError):
            parse_positive_int(bad, 100)


@given(st.text(max_size=300))
def test_tokenize_never_crashes(text: str) -> None:
    """Any text either tokenizes or gives a usage error, never anything else."""
    try:
        tokens = tokenize(text)
        parsed = Arguments.parse(tokens)
    except UsageError:
        return
    assert len(parsed.positionals) + len(parsed.options) == len(tokens)


safe_words = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Zs")), min_size=1, max_size=20
).filter(lambda word: "=" not in word and not set(word) & set("\"'\\“”‘’"))


@given(st.lists(safe_words, max_size=8))
def test_quoted_words_round_trip(words: list[str]) -> None:
    """Words quoted in Slack text come back exactly, in order."""
    text = " ".join(f'"{word}"' for word in words)
    assert tokenize(text) == words


@given(st.text(max_size=40))
def test_duration_parser_is_total(text: str) -> None:
    try:
        value = parse_duration(text)
    except UsageError:
        return
    assert timedelta(0) < value <= timedelta(days=90)
