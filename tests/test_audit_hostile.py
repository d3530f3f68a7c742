"""Hostile text is data, never code: property tests against the real PostgreSQL.

Quotes, SQL fragments, unicode tricks and 10 kB strings go in as usernames and come back out
exactly, match nothing else, and leave audit_log as it was.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.postgres import PostgresAdapter
from commands import audit
from commands.audit import AuditReport, parse
from commands.base import UsageError, tokenize
from tests.audit_fixtures import audit_db_fixture, audit_dsn_fixture  # noqa: F401  (fixtures)

FRAGMENTS = [
    "'",
    '"',
    "`",
    "\\",
    "%",
    "_",
    "*",
    "'; DROP TABLE audit_log; --",
    "' OR '1'='1",
    '" OR ""="',
    "'); DELETE FROM audit_log WHERE ('1'='1",
    "' UNION SELECT id, timestamp, action FROM audit_log --",
    "'||(SELECT version())||'",
    "$1",
    "$$",
    "$tag$",
    "/*",
    "*/",
    "--",
    ";",
    "E'\\x41'",
    "::text",
    "' AND pg_sleep(10) IS NULL --",
    "\\u0000",
    "%00",
    "NULL",
    "null",
    '{"success": false}',
    "<script>alert(1)</script>",
    "<!channel>",
    "&amp;",
    "\u202e",  # right-to-left override
    "\u200b",  # zero-width space
    "\ufeff",
    "ＳＥＬＥＣＴ",
    "Ω≈ç√∫",
    "🙂👩‍💻",
    "\r\n",
    "\t",
    "\u2028",
]

KNOWN_OPTION = audit.KNOWN_OPTION


def _usable(text: str) -> bool:
    """Text the grammar hands to the database: not empty, no NUL, not an option of its own."""
    return bool(text) and "\x00" not in text and not KNOWN_OPTION.match(text)


characters = st.characters(exclude_categories=("Cs",), exclude_characters="\x00")
hostile = st.one_of(
    st.sampled_from(FRAGMENTS),
    st.lists(
        st.one_of(st.sampled_from(FRAGMENTS), st.text(characters, max_size=12)), min_size=1, max_size=10
    ).map("".join),
    st.text(characters, min_size=1, max_size=120),
).filter(_usable)
# Stored values stay under btree's limit (about 2.7 kB per index entry): usernames are indexed.
stored = hostile.filter(lambda text: len(text.encode()) < 2000)
# 5 to 10 kB: a generated chunk (fragments and random text) repeated to the length drawn.
huge = st.builds(
    lambda chunk, size: (chunk * (size // len(chunk) + 1))[:size],
    st.one_of(hostile, st.text(characters, min_size=1, max_size=200).filter(_usable)),
    st.integers(min_value=5_000, max_value=10_240),
).filter(_usable)

PROPERTY = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


async def _report(db: PostgresAdapter, tokens: list[str]) -> AuditReport:
    request = parse(tokens)
    assert isinstance(request, audit.AuditQuery)
    result = await audit.run(db, request, 5.0)
    assert isinstance(result, AuditReport), result
    return result


async def _fingerprint(conn: asyncpg.Connection) -> tuple[int, str]:
    """Count audit_log and digest every column of every row, so that any change to it shows."""
    row = await conn.fetchrow(
        """SELECT count(*) AS n, md5(coalesce(string_agg(a::text, E'\n' ORDER BY a.id), '')) AS h
           FROM audit_log AS a"""
    )
    return row["n"], row["h"]


@PROPERTY
@given(name=stored)
async def test_a_hostile_username_comes_back_exactly_and_matches_only_itself(
    audit_db: PostgresAdapter, audit_dsn: str, name: str
) -> None:
    conn = await asyncpg.connect(audit_dsn)
    marker = uuid.uuid4()
    try:
        before = await _fingerprint(conn)
        now = datetime.now(UTC)
        inside = await conn.fetchval(
            """INSERT INTO audit_log (timestamp, action, user_id, username, ip_address, details)
               VALUES ($1, 'LOGIN', $2, $3, '198.51.100.7', $4::jsonb) RETURNING id""",
            now - timedelta(minutes=1),
            marker,
            name,
            json.dumps({"success": False, "reason": name, "request_id": marker.hex}),
        )
        await conn.execute(
            """INSERT INTO audit_log (timestamp, action, user_id, username, details)
               VALUES ($1, 'LOGOUT', $2, $3, '{}')""",
            now - timedelta(hours=30),  # outside the default window
            marker,
            name,
        )
        report = await _report(audit_db, ["user", name])
        assert report.totals.events == 1
        [row] = report.rows
        assert (row.id, row.username, row.user_id, row.outcome) == (inside, name, marker, f"failed {name}")
        assert row.details == {"success": False, "reason": name, "request_id": marker.hex}
        assert report.breakdowns[0].groups[0].key == ["LOGIN", f"failed {name}"]
        # The export hint quotes the name so that an export asks for the same rows. Typographic
        # quotes cannot survive: the grammar reads them as plain quotes, as Slack users type them.
        if not set(name) & set("“”‘’"):
            request = parse(["user", name])
            assert isinstance(request, audit.AuditQuery)
            again = parse(tokenize(request.export_arguments()))
            assert isinstance(again, audit.ExportRequest) and again.filter == request.filter
    finally:
        await conn.execute("DELETE FROM audit_log WHERE user_id = $1", marker)
        assert await _fingerprint(conn) == before
        await conn.close()


@PROPERTY
@given(text=st.one_of(hostile, huge))
async def test_hostile_text_matches_nothing_and_changes_nothing(
    audit_db: PostgresAdapter, audit_dsn: str, text: str
) -> None:
    conn = await asyncpg.connect(audit_dsn)
    try:
        before = await _fingerprint(conn)
        expected = await conn.fetchval(
            "SELECT count(*) FROM audit_log WHERE username = $1 AND timestamp > now() - interval '30 days'",
            text,
        )
        report = await _report(audit_db, ["user", text, "since=30d"])
        assert report.totals.events == expected == 0
        with pytest.raises(UsageError):
            parse(["ip", text])
        # A request id is any one token: hostile text is refused by name, or matched literally.
        try:
            by_request = parse(["request", text, "since=30d"])
        except UsageError as error:
            assert "is not a request id" in error.message or "a request id is empty" in error.message
        else:
            assert isinstance(by_request, audit.AuditQuery)
            found = await audit.run(audit_db, by_request, 5.0)
            assert isinstance(found, AuditReport) and found.totals.events == 0 and found.rows == []
        # An action name is letters, digits and _ (NULL is one); anything else is refused.
        try:
            exported = parse(["export", "csv", f"action={text}"])
        except UsageError:
            pass
        else:
            assert isinstance(exported, audit.ExportRequest) and exported.filter.actions
            assert all(re.fullmatch(r"[A-Z][A-Z0-9_]*", action) for action in exported.filter.actions)
        assert await _fingerprint(conn) == before
        assert await conn.fetchval("SELECT to_regclass('audit_log') IS NOT NULL")
    finally:
        await conn.close()


async def test_a_quoted_name_from_slack_text_reaches_the_database_verbatim(
    audit_db: PostgresAdapter, audit_dsn: str
) -> None:
    """The way a user types it in Slack: quotes group the words, the quote characters are data."""
    name = "o'brien\"; DROP TABLE audit_log; --"
    conn = await asyncpg.connect(audit_dsn)
    marker = uuid.uuid4()
    try:
        await conn.execute(
            "INSERT INTO audit_log (action, user_id, username) VALUES ('LOGOUT', $1, $2)", marker, name
        )
        request = parse(tokenize("""user 'o'"'"'brien"; DROP TABLE audit_log; --'"""))
        assert isinstance(request, audit.AuditQuery) and request.filter.username == name
        result = await audit.run(audit_db, request, 5.0)
        assert isinstance(result, AuditReport) and [row.user_id for row in result.rows] == [marker]
    finally:
        await conn.execute("DELETE FROM audit_log WHERE user_id = $1", marker)
        await conn.close()
