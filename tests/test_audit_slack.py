"""/audit in Slack: Block Kit within Slack's limits whatever the data, and the export posted as a file."""

from __future__ import annotations

import asyncio
import csv
import io
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.render import audit as render
from bot.render.common import SECTION_LIMIT
from commands.audit import AuditReport, AuditRow, Breakdown, Group, Totals
from sandbox.platform_db import BRUTE_FORCE_USERNAME
from tests.audit_fixtures import audit_dsn_fixture, empty_dsn_fixture, running_bot  # noqa: F401  (fixtures)
from tests.conftest import SIGNING_SECRET
from tests.fakes import FakeSlack, signed_slash_command_request, validate_blocks
from tests.test_audit_hostile import FRAGMENTS

CHANNEL = "C0INCIDENT"
USER = "U0ONCALL01"
NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)

text = st.one_of(
    st.sampled_from([*FRAGMENTS, "```", "`` `", "*bold*", "<@U123>", "<!here>", "x" * 300, "&" * 200]),
    st.text(max_size=60),
)


@st.composite
def reports(draw: st.DrawFn, max_rows: int = 60) -> AuditReport:
    """Reports with hostile text in every field a user can influence."""
    count = draw(st.integers(0, max_rows))
    rows = [
        AuditRow(
            id=index,
            timestamp=NOW - timedelta(seconds=index),
            action=draw(text),
            user_id=uuid.UUID(int=index) if draw(st.booleans()) else None,
            username=draw(st.none() | text),
            ip_address=draw(st.sampled_from([None, "192.0.2.1", "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff"])),
            outcome=draw(text),
            request_id=draw(st.none() | text),
        )
        for index in range(count)
    ]
    groups = [
        Group(
            key=[draw(text), draw(text)],
            events=draw(st.integers(0, 10**9)),
            distinct_ips=1,
            distinct_users=1,
            first_seen=NOW,
            last_seen=NOW,
            ips=draw(st.lists(st.sampled_from(["192.0.2.1", "2001:db8::1"]), max_size=5)),
        )
        for _ in range(draw(st.integers(0, 15)))
    ]
    subject = draw(text)
    return AuditReport(
        form=draw(st.sampled_from(["user", "ip", "request", "failed-logins", "mfa", "security"])),
        subject=subject,
        description=f"user {subject}",
        note=draw(text),
        since="1d",
        limit=max(count, 1),
        totals=Totals(events=count + 5, first_seen=NOW, last_seen=NOW, distinct_ips=2, distinct_users=3),
        breakdowns=[
            Breakdown(title="By action", columns=["action", "outcome"], groups=groups, total_groups=99)
        ],
        rows=rows,
        omitted=5,
        export_arguments=f"export csv user {subject} since=1d",
        database="chatops_platform",
        queried_at=NOW,
        duration_ms=3.0,
    )


def assert_valid_message(blocks: list[dict[str, Any]]) -> None:
    assert validate_blocks(blocks) == []
    assert 0 < len(blocks) <= 50
    for block in blocks:
        if block["type"] == "section":
            body = block["text"]["text"]
            assert len(body) <= SECTION_LIMIT
            # A code block is opened and closed once: data never ends it early.
            assert body.count("```") in (0, 2), body


@settings(max_examples=60, deadline=None)
@given(report=reports())
def test_any_report_renders_within_slacks_limits(report: AuditReport) -> None:
    reply = render.slack(report)
    assert_valid_message(reply.main.blocks)
    for message in reply.thread:
        assert_valid_message(message.blocks)
    assert len(reply.main.text) <= 500


def test_a_thousand_rows_spill_into_the_thread() -> None:
    row = AuditRow(
        id=1,
        timestamp=NOW,
        action="MFA_CHALLENGE_FAILED",
        user_id=None,
        username="x" * 40,
        ip_address="2001:db8:ffff:ffff:ffff:ffff:ffff:ffff",
        outcome="failed invalid_password",
        request_id=uuid.uuid4().hex,
    )
    report = AuditReport(
        form="security",
        subject="",
        description="security",
        since="1d",
        limit=1000,
        totals=Totals(events=5000, first_seen=NOW, last_seen=NOW, distinct_ips=2, distinct_users=3),
        breakdowns=[],
        rows=[row.model_copy(update={"id": index}) for index in range(1000)],
        omitted=4000,
        database="chatops_platform",
        queried_at=NOW,
        duration_ms=3.0,
    )
    reply = render.slack(report)
    assert reply.thread, "a thousand rows do not fit in one message"
    shown = 0
    for blocks in [reply.main.blocks, *(message.blocks for message in reply.thread)]:
        assert_valid_message(blocks)
        shown += sum(
            block["text"]["text"].count("MFA_CHALLENGE_FAILED")
            for block in blocks
            if block["type"] == "section"
        )
    assert shown == 1000


# ---------------------------------------------------------------- through the bot's Slack wiring


async def post_command(url: str, text: str) -> httpx.Response:
    body, headers = signed_slash_command_request(
        SIGNING_SECRET, command="/audit", text=text, user_id=USER, channel_id=CHANNEL
    )
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.post(f"{url}/slack/events", content=body, headers=headers)


def joined(blocks: list[dict[str, Any]]) -> str:
    parts = []
    for block in blocks:
        if "text" in block:
            parts.append(block["text"]["text"])
        parts += [element.get("text", "") for element in block.get("elements", [])]
    return "\n".join(parts)


async def wait_until_empty(folder: Path, timeout: float = 10.0) -> list[Path]:
    """Return what is left in `folder` once it is empty or `timeout` has passed."""
    deadline = asyncio.get_running_loop().time() + timeout
    while (left := sorted(folder.iterdir())) and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
    return left


async def test_export_csv_is_uploaded_into_the_thread(
    fake_slack: FakeSlack, audit_dsn: str, tmp_path: Path
) -> None:
    async with running_bot(fake_slack, audit_dsn, audit_export_spool_dir=tmp_path) as url:
        response = await post_command(url, f"export csv user {BRUTE_FORCE_USERNAME} since=3d")
        assert response.status_code == 200
        complete = await fake_slack.wait_for_call_async("files.completeUploadExternal", timeout=20)
        # The file waited on disk, not in memory, and is gone once uploaded.
        assert await wait_until_empty(tmp_path) == []

    [main] = fake_slack.calls_to("chat.postMessage")
    main_ts = main.response["ts"] if main.response else None
    assert main.params["channel"] == CHANNEL and "Audit export" in main.params["text"]
    [get_url] = fake_slack.calls_to("files.getUploadURLExternal")
    assert get_url.params["filename"].startswith("audit-user-") and get_url.params["filename"].endswith(
        ".csv"
    )
    # The order of Slack's external upload: ask for a URL, send the bytes there, then complete.
    methods = [call.method for call in fake_slack.calls]
    assert methods.index("chat.postMessage") < methods.index("files.getUploadURLExternal")
    assert methods.index("files.getUploadURLExternal") < methods.index("files.completeUploadExternal")
    assert complete.params["channel_id"] == CHANNEL
    assert complete.params["thread_ts"] == main_ts

    [file_id] = [entry["id"] for entry in complete.params["files"]]
    uploaded = fake_slack.files[file_id]
    assert uploaded.completed and uploaded.content is not None
    assert int(get_url.params["length"]) == len(uploaded.content)
    rows = list(csv.reader(io.StringIO(uploaded.content.decode(), newline="")))
    assert rows[0][:5] == ["id", "timestamp", "action", "user_id", "username"]
    assert len(rows) > 40 and {row[4] for row in rows[1:]} == {BRUTE_FORCE_USERNAME}
    assert f"*{len(rows) - 1:,}* rows" in joined(main.params["blocks"])


async def test_an_export_slack_refuses_is_said_in_the_thread(
    fake_slack: FakeSlack, audit_dsn: str, tmp_path: Path
) -> None:
    fake_slack.fail("files.completeUploadExternal", "not_in_channel")
    async with running_bot(fake_slack, audit_dsn, audit_export_spool_dir=tmp_path) as url:
        assert (await post_command(url, f"export json user {BRUTE_FORCE_USERNAME}")).status_code == 200
        warning = await fake_slack.wait_for_call_async(
            "chat.postMessage", lambda call: "was not uploaded" in call.params["text"], timeout=20
        )
        assert await wait_until_empty(tmp_path) == []
    main = fake_slack.calls_to("chat.postMessage")[0]
    assert main.response is not None and warning.params["thread_ts"] == main.response["ts"]
    assert warning.params["text"].endswith("files.completeUploadExternal: not_in_channel")
    assert ".json" in warning.params["text"]


async def test_a_form_is_posted_to_the_channel(fake_slack: FakeSlack, audit_dsn: str) -> None:
    async with running_bot(fake_slack, audit_dsn) as url:
        assert (await post_command(url, f"user {BRUTE_FORCE_USERNAME} limit=5")).status_code == 200
        call = await fake_slack.wait_for_call_async("chat.postMessage", timeout=20)
    text = joined(call.params["blocks"])
    assert f"Audit · user {BRUTE_FORCE_USERNAME} · last 1d" in text
    assert "By action and outcome" in text and "By IP" in text
    assert "more rows not shown" in text and f"/audit export csv user {BRUTE_FORCE_USERNAME} since=1d" in text
    assert fake_slack.calls_to("files.getUploadURLExternal") == []


async def test_bad_input_goes_only_to_the_caller(fake_slack: FakeSlack, audit_dsn: str) -> None:
    async with running_bot(fake_slack, audit_dsn) as url:
        for typed, message in (
            ("ip 999.1.1.1", "`999.1.1.1` is not an IP address or CIDR network"),
            ("export csv output=/etc/passwd", "from Slack the file comes in the thread"),
        ):
            assert (await post_command(url, typed)).status_code == 200
            call = await fake_slack.wait_for_call_async(
                "chat.postEphemeral", lambda c, m=message: m in c.params["text"], timeout=20
            )
            assert call.params["user"] == USER
    assert fake_slack.calls_to("chat.postMessage") == []


async def test_a_missing_table_is_said_in_the_channel(fake_slack: FakeSlack, empty_dsn: str) -> None:
    async with running_bot(fake_slack, empty_dsn) as url:
        assert (await post_command(url, "security")).status_code == 200
        call = await fake_slack.wait_for_call_async("chat.postMessage", timeout=20)
    assert "has no audit_log table" in call.params["text"]


async def test_indexes_are_posted_with_the_file(fake_slack: FakeSlack, audit_dsn: str) -> None:
    async with running_bot(fake_slack, audit_dsn) as url:
        assert (await post_command(url, "indexes")).status_code == 200
        complete = await fake_slack.wait_for_call_async("files.completeUploadExternal", timeout=20)
    [main] = fake_slack.calls_to("chat.postMessage")
    assert "8 of 8 in place" in joined(main.params["blocks"])
    uploaded = fake_slack.files[complete.params["files"][0]["id"]]
    assert uploaded.content is not None and b"CREATE INDEX CONCURRENTLY IF NOT EXISTS" in uploaded.content
