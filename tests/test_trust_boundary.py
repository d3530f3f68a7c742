"""Attacks on `chatops serve` from outside, as a process: nothing runs unless Slack sent it, once.

Each case is what someone with network access to the port (or a captured request) would try.
The bot runs as `python -m bot serve` against the fake Slack; what "ran" means is seen from the
fake: an answer posted for the caller. A probe command is `/mfa status`, which any user may run and
which answers the caller with `chat.postEphemeral`.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from tests.conftest import BOT_TOKEN, SIGNING_SECRET, recreate_database
from tests.fakes import FakeSlack
from tests.fakes.slack_requests import (
    block_actions_payload,
    new_trigger_id,
    sign,
    signed_interaction_request,
    signed_slash_command_request,
    slash_command_form,
)
from tests.fakes.socket_mode import FakeSocketMode
from tests.netutil import free_port

pytestmark = pytest.mark.usefixtures("postgres")

REPO = Path(__file__).resolve().parents[1]
ALERT_TOKEN = "alertmanager-test-token"
CHANNEL = "C0INCIDENT"
STATE_DB = "chatops_test_trust"


@contextmanager
def serve(fake: FakeSlack, dsn: str, **env: str) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """Run `chatops serve` as a process on a free port; yield its URL and the process."""
    port = free_port()
    environment = {
        **{key: value for key, value in os.environ.items() if not key.startswith(("SLACK_", "CHATOPS_"))},
        "SLACK_BOT_TOKEN": BOT_TOKEN,
        "CHATOPS_SLACK_API_URL": fake.url,
        "CHATOPS_STATE_DATABASE_URL": dsn,
        "CHATOPS_HTTP_HOST": "127.0.0.1",
        "CHATOPS_HTTP_PORT": str(port),
        "CHATOPS_INCIDENT_CHANNEL": CHANNEL,
        "CHATOPS_LOG_LEVEL": "INFO",
        **env,
    }
    bot = subprocess.Popen(
        [sys.executable, "-m", "bot", "serve"],
        cwd="/tmp",
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if bot.poll() is not None or time.monotonic() > deadline:
                output = bot.stdout.read() if bot.stdout else ""
                raise AssertionError(f"chatops serve did not start:\n{output}")
            time.sleep(0.1)
        yield url, bot
    finally:
        bot.terminate()
        try:
            bot.wait(timeout=20)
        except subprocess.TimeoutExpired:
            bot.kill()
            bot.wait(timeout=5)


def startup_log(bot: subprocess.Popen[str]) -> str:
    """Return what the stopped server wrote (its JSON log lines)."""
    assert bot.poll() is not None, "stop the server first"
    return bot.stdout.read() if bot.stdout else ""


def rss_kb(pid: int) -> int:
    """Return a process's resident memory in KiB."""
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    assert match is not None
    return int(match.group(1))


def answers(fake: FakeSlack) -> list[str]:
    """Return every answer the bot gave a caller (ephemeral or through a response_url)."""
    return [str(call.params.get("text")) for call in fake.calls_to("chat.postEphemeral")] + [
        str(post.body.get("text")) for post in fake.response_posts
    ]


async def settle(fake: FakeSlack, seconds: float = 1.5) -> None:
    """Give the bot time to run whatever it (wrongly) accepted, then let the test look."""
    await asyncio.sleep(seconds)


@pytest.fixture
async def state_dsn() -> str:
    """A fresh state database for the server under attack."""
    return await recreate_database(STATE_DB)


@asynccontextmanager
async def client() -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for the attacker."""
    async with httpx.AsyncClient(timeout=30) as http:
        yield http


# --- HTTP mode ------------------------------------------------------------------------------------


@pytest.fixture
def http_bot(fake_slack: FakeSlack, state_dsn: str) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """The bot in HTTP mode (signing secret set), no Alertmanager token."""
    with serve(fake_slack, state_dsn, SLACK_SIGNING_SECRET=SIGNING_SECRET) as running:
        yield running


async def test_a_signed_command_runs_once(http_bot: tuple[str, Any], fake_slack: FakeSlack) -> None:
    url, _ = http_bot
    body, headers = signed_slash_command_request(SIGNING_SECRET, command="/mfa", text="status")
    async with client() as http:
        first = await http.post(f"{url}/slack/events", content=body, headers=headers)
        await fake_slack.wait_for_call_async("chat.postEphemeral", timeout=15)
        again = await http.post(f"{url}/slack/events", content=body, headers=headers)
    await settle(fake_slack)
    assert first.status_code == 200
    assert again.status_code == 401
    assert len(answers(fake_slack)) == 1 and "not enrolled" in answers(fake_slack)[0]


@pytest.mark.parametrize(
    ("case", "change"),
    [
        ("unsigned", lambda body, headers: (body, {"Content-Type": headers["Content-Type"]})),
        (
            "signed with another secret",
            lambda body, headers: (body, {**headers, **sign("not-the-secret", body)}),
        ),
        ("body changed after signing", lambda body, headers: (body.replace(b"status", b"reset"), headers)),
        (
            "stale timestamp",
            lambda body, headers: (body, {**headers, **sign(SIGNING_SECRET, body, int(time.time()) - 301)}),
        ),
        (
            "timestamp from the future",
            lambda body, headers: (body, {**headers, **sign(SIGNING_SECRET, body, int(time.time()) + 301)}),
        ),
        (
            "non-numeric timestamp",
            lambda body, headers: (body, {**headers, "X-Slack-Request-Timestamp": "12e3"}),
        ),
        (
            "non-ASCII signature",
            # Raw bytes on the wire: what a careful client would refuse to send, a socket will.
            lambda body, headers: (body, {**headers, "X-Slack-Signature": "v0=ünïcödé".encode()}),
        ),
        (
            "signature of the wrong shape",
            lambda body, headers: (body, {**headers, "X-Slack-Signature": "v1=00"}),
        ),
    ],
)
async def test_what_slack_did_not_sign_is_refused_and_runs_nothing(
    http_bot: tuple[str, Any], fake_slack: FakeSlack, case: str, change: Any
) -> None:
    url, _ = http_bot
    body, headers = signed_slash_command_request(SIGNING_SECRET, command="/mfa", text="status")
    body, headers = change(body, headers)
    async with client() as http:
        response = await http.post(f"{url}/slack/events", content=body, headers=headers)
    await settle(fake_slack)
    assert response.status_code == 401, case
    assert answers(fake_slack) == []


def _signed(body: bytes, content_type: str = "application/x-www-form-urlencoded") -> dict[str, str]:
    return {"Content-Type": content_type, **sign(SIGNING_SECRET, body)}


@pytest.mark.parametrize(
    ("case", "body", "content_type"),
    [
        ("payload that is not JSON", urlencode({"payload": "{not json"}).encode(), None),
        ("payload nested 100,000 deep", urlencode({"payload": "[" * 100_000 + "]" * 100_000}).encode(), None),
        ("payload that is a list", urlencode({"payload": "[1, 2]"}).encode(), None),
        ("not UTF-8", b"command=%2Fmfa&text=\xff\xfe", None),
        ("a field twice", b"command=/mfa&command=/health&text=status", None),
        ("neither command nor payload", b"hello=world", None),
        ("another content type", b"<xml/>", "application/xml"),
        ("JSON that is not an object", b"[1]", "application/json"),
    ],
)
async def test_malformed_but_signed_bodies_get_400_and_run_nothing(
    http_bot: tuple[str, Any], fake_slack: FakeSlack, case: str, body: bytes, content_type: str | None
) -> None:
    url, _ = http_bot
    headers = _signed(body, content_type or "application/x-www-form-urlencoded")
    async with client() as http:
        response = await http.post(f"{url}/slack/events", content=body, headers=headers)
    await settle(fake_slack, 0.5)
    assert response.status_code == 400, case
    assert answers(fake_slack) == []


async def test_a_huge_body_is_refused_while_it_is_read(
    http_bot: tuple[str, Any], fake_slack: FakeSlack
) -> None:
    url, bot = http_bot
    before = rss_kb(bot.pid)
    chunk = b"x" * (1 << 20)

    async def hundred_megabytes() -> AsyncIterator[bytes]:
        for _ in range(100):
            yield chunk

    async with client() as http:
        declared = await http.post(
            f"{url}/slack/events",
            content=b"x" * (2 << 20),
            headers={"Content-Type": "application/x-www-form-urlencoded", **sign("wrong", b"")},
        )
        # Chunked: no Content-Length to refuse by; the reading itself stops at the limit.
        try:
            streamed = await http.post(
                f"{url}/slack/events",
                content=hundred_megabytes(),
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
            status = streamed.status_code
        except httpx.HTTPError:
            status = 413  # the server may close the connection once it has answered
    after = rss_kb(bot.pid)
    assert declared.status_code == 413
    assert status == 413
    assert after - before < 20_000, f"resident memory grew by {after - before} KiB"
    assert answers(fake_slack) == []


async def test_slacks_retry_of_a_delivery_is_answered_without_running_again(
    http_bot: tuple[str, Any], fake_slack: FakeSlack
) -> None:
    url, _ = http_bot
    trigger = new_trigger_id()
    body, headers = signed_slash_command_request(
        SIGNING_SECRET, command="/mfa", text="status", trigger_id=trigger
    )
    async with client() as http:
        first = await http.post(f"{url}/slack/events", content=body, headers=headers)
        await fake_slack.wait_for_call_async("chat.postEphemeral", timeout=15)
        # Slack signs a retry anew (a new timestamp) and says which attempt it is.
        retry_body, retry_headers = signed_slash_command_request(
            SIGNING_SECRET, command="/mfa", text="status", trigger_id=trigger
        )
        retry = await http.post(
            f"{url}/slack/events",
            content=retry_body,
            headers={**retry_headers, "X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"},
        )
    await settle(fake_slack)
    assert first.status_code == 200 and retry.status_code == 200
    assert len(answers(fake_slack)) == 1


async def test_a_button_click_replayed_is_refused(http_bot: tuple[str, Any], fake_slack: FakeSlack) -> None:
    url, _ = http_bot
    # A Cancel click on a plan that does not exist: answered to the clicker once, not twice.
    body, headers = signed_interaction_request(
        SIGNING_SECRET, block_actions_payload("gate_confirm", "not-an-approval-id", channel_id=CHANNEL)
    )
    async with client() as http:
        first = await http.post(f"{url}/slack/events", content=body, headers=headers)
        await fake_slack.wait_for_call_async("chat.postEphemeral", timeout=15)
        again = await http.post(f"{url}/slack/events", content=body, headers=headers)
    await settle(fake_slack)
    assert (first.status_code, again.status_code) == (200, 401)
    assert len(answers(fake_slack)) == 1


async def test_two_replicas_run_a_signed_request_once(fake_slack: FakeSlack, state_dsn: str) -> None:
    with (
        serve(fake_slack, state_dsn, SLACK_SIGNING_SECRET=SIGNING_SECRET) as (one, _),
        serve(fake_slack, state_dsn, SLACK_SIGNING_SECRET=SIGNING_SECRET) as (two, _),
    ):
        body, headers = signed_slash_command_request(SIGNING_SECRET, command="/mfa", text="status")
        async with client() as http:
            statuses = await asyncio.gather(
                *(http.post(f"{url}/slack/events", content=body, headers=headers) for url in (one, two))
            )
        await fake_slack.wait_for_call_async("chat.postEphemeral", timeout=15)
        await settle(fake_slack)
    assert sorted(response.status_code for response in statuses) == [200, 401]
    assert len(answers(fake_slack)) == 1


# --- /alerts ------------------------------------------------------------------------------------------


def alert_notification(summary: str, description: str, labels: dict[str, str], url: str) -> dict[str, Any]:
    """Return an Alertmanager v4 webhook body with one firing alert carrying hostile text."""
    return {
        "version": "4",
        "groupKey": '{}:{alertname="HighErrorRate"}',
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "chatops",
        "groupLabels": {"alertname": "HighErrorRate"},
        "commonLabels": {"alertname": "HighErrorRate", **labels},
        "commonAnnotations": {"summary": summary},
        "externalURL": "http://alertmanager:9093",
        "alerts": [
            {
                "status": "firing",
                "labels": {"alertname": "HighErrorRate", "severity": "critical", **labels},
                "annotations": {"summary": summary, "description": description, "runbook_url": url},
                "startsAt": "2026-12-06T03:00:00Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": url,
                "fingerprint": "a1b2c3d4e5f60718",
            }
        ],
    }


async def test_alerts_fail_closed_without_a_token(http_bot: tuple[str, Any], fake_slack: FakeSlack) -> None:
    url, bot = http_bot
    notification = alert_notification("<!channel> everything is on fire", "", {}, "http://prometheus")
    async with client() as http:
        anonymous = await http.post(f"{url}/alerts", json=notification)
        guessed = await http.post(
            f"{url}/alerts", json=notification, headers={"Authorization": "Bearer anything"}
        )
    await settle(fake_slack, 0.5)
    bot.terminate()
    bot.wait(timeout=20)
    log = startup_log(bot)
    assert (anonymous.status_code, guessed.status_code) == (401, 401)
    assert fake_slack.calls_to("chat.postMessage") == []
    assert "CHATOPS_ALERTMANAGER_TOKEN is not set" in log


# What an alert's sender wrote that Slack would turn into pings, mentions or disguised links.
HOSTILE_MARKUP = (
    "<!channel>",
    "<!here>",
    "<@U0BOSS0001>",
    "<https://evil.example/login|",
    "<!subteam^S0ALL|",
    "<#C0PRIVATE>",
    "<https://evil.example/x|",
)


def _strings(value: Any) -> list[str]:
    """Return every string of a posted message (its text and every text of its blocks)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [text for item in value.values() for text in _strings(item)]
    if isinstance(value, list):
        return [text for item in value for text in _strings(item)]
    return []


async def test_outside_text_in_alerts_arrives_as_text(fake_slack: FakeSlack, state_dsn: str) -> None:
    hostile = alert_notification(
        summary="<!channel> <!here> restart everything",
        description="ask <@U0BOSS0001> or see <https://evil.example/login|the official runbook>",
        labels={"team": "<!subteam^S0ALL|everyone>", "pod": "<#C0PRIVATE>"},
        url="https://evil.example/x|Runbook>",
    )
    settings = {"SLACK_SIGNING_SECRET": SIGNING_SECRET, "CHATOPS_ALERTMANAGER_TOKEN": ALERT_TOKEN}
    with serve(fake_slack, state_dsn, **settings) as (url, _):
        async with client() as http:
            response = await http.post(
                f"{url}/alerts", json=hostile, headers={"Authorization": f"Bearer {ALERT_TOKEN}"}
            )
        # A critical alert triages itself too: whatever it posts must be as clean as the alert.
        await fake_slack.wait_for_call_async(
            "chat.postMessage", predicate=lambda call: "Triage" in str(call.params.get("text")), timeout=60
        )
    assert response.status_code == 200, response.text
    posts = fake_slack.calls_to("chat.postMessage")
    everything = _strings([[post.params.get("text"), post.params.get("blocks")] for post in posts])
    assert [markup for markup in HOSTILE_MARKUP if any(markup in text for text in everything)] == []
    posted = next(post for post in posts if "FIRING" in str(post.params.get("text")))
    shown = _strings([posted.params.get("text"), posted.params.get("blocks")])
    # Still there for people to read, as text.
    assert any("&lt;!channel&gt;" in text for text in shown)
    assert any("&lt;@U0BOSS0001&gt;" in text for text in shown)


# --- Socket Mode ----------------------------------------------------------------------------------
# The bot dials Slack's websocket with SLACK_APP_TOKEN: no request reaching its port passes for
# Slack, and an envelope delivered again (to this connection or another) is only acknowledged.

APP_TOKEN = "xapp-1-A0CHATOPS1-1-trustboundary"


@pytest.fixture
def socket_slack() -> Iterator[tuple[FakeSlack, FakeSocketMode]]:
    """The fake Web API (taking the app-level token too) and its Socket Mode server."""
    with FakeSlack(tokens={BOT_TOKEN, APP_TOKEN}) as fake, FakeSocketMode(fake) as socket:
        yield fake, socket
        assert fake.violations == [], fake.violations


@pytest.fixture
def socket_bot(
    socket_slack: tuple[FakeSlack, FakeSocketMode], state_dsn: str
) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """The bot in Socket Mode: an app-level token, no signing secret, no Alertmanager token.

    `serve` waits for /healthz, which answers only once the websocket is connected.
    """
    fake, _ = socket_slack
    with serve(fake, state_dsn, SLACK_APP_TOKEN=APP_TOKEN) as running:
        yield running


async def test_in_socket_mode_slack_events_is_not_served(
    socket_bot: tuple[str, subprocess.Popen[str]], socket_slack: tuple[FakeSlack, FakeSocketMode]
) -> None:
    url, bot = socket_bot
    fake, socket = socket_slack
    body, headers = signed_slash_command_request(SIGNING_SECRET, command="/mfa", text="status")
    click_body, click_headers = signed_interaction_request(
        SIGNING_SECRET, block_actions_payload("gate_confirm", "not-an-approval-id", channel_id=CHANNEL)
    )
    notification = alert_notification("<!channel> everything is on fire", "", {}, "http://prometheus")
    async with client() as http:
        signed = await http.post(f"{url}/slack/events", content=body, headers=headers)
        unsigned = await http.post(
            f"{url}/slack/events", content=body, headers={"Content-Type": headers["Content-Type"]}
        )
        click = await http.post(f"{url}/slack/events", content=click_body, headers=click_headers)
        healthz = await http.get(f"{url}/healthz")
        metrics = await http.get(f"{url}/metrics")
        alerts = await http.post(f"{url}/alerts", json=notification)
    await settle(fake)
    bot.terminate()
    bot.wait(timeout=20)
    log = startup_log(bot)
    assert (signed.status_code, unsigned.status_code, click.status_code) == (404, 404, 404)
    assert answers(fake) == [] and fake.calls_to("chat.postMessage") == []
    assert fake.calls_to("views.open") == []
    assert healthz.status_code == 200 and healthz.json() == {"status": "ok"}
    assert metrics.status_code == 200 and "chatops_commands_total" in metrics.text
    assert alerts.status_code == 401  # still served, still closed without a token
    assert socket.connections_opened == 1
    assert "socket_mode_connected" in log
    assert "Socket Mode: /slack/events is not served" in log
    assert "CHATOPS_ALERTMANAGER_TOKEN is not set" in log


def _deduplicated(metrics: str) -> float:
    match = re.search(r'^chatops_requests_deduplicated_total\{why="redelivered"\} (\S+)$', metrics, re.M)
    return float(match.group(1)) if match else 0.0


async def test_in_socket_mode_an_envelope_runs_once_and_its_redeliveries_run_nothing(
    socket_bot: tuple[str, subprocess.Popen[str]], socket_slack: tuple[FakeSlack, FakeSocketMode]
) -> None:
    url, _ = socket_bot
    fake, socket = socket_slack
    envelope = socket.send("slash_commands", slash_command_form("/mfa", "status", channel_id=CHANNEL))
    ack = await socket.wait_for_ack_async(envelope, timeout=15)
    await fake.wait_for_call_async("chat.postEphemeral", timeout=15)
    # Slack's next attempt at the same request: a new envelope, the same payload.
    retry = socket.resend(envelope)
    again = await socket.wait_for_ack_async(retry, timeout=15)
    # An ack lost on the way: Slack delivers that envelope again, on its own.
    lost = socket.send(
        "slash_commands",
        slash_command_form("/mfa", "status", user_id="U0OTHER001", channel_id=CHANNEL),
        lose_acks=1,
        ack_timeout=2.0,
    )
    await socket.wait_until_done_async(lost, timeout=30)
    await settle(fake)
    async with client() as http:
        metrics = (await http.get(f"{url}/metrics")).text
    assert ack == {"envelope_id": envelope.envelope_id}
    assert again == {"envelope_id": retry.envelope_id}  # acknowledged, nothing in it
    assert len(lost.deliveries) >= 2
    callers = sorted(str(call.params["user"]) for call in fake.calls_to("chat.postEphemeral"))
    assert callers == ["U0ONCALL01", "U0OTHER001"]  # each answered once
    # Two requests: every other delivery (the retry, the redelivery, any other) only acknowledged.
    delivered = sum(len(sent.deliveries) for sent in socket.envelopes.values())
    assert _deduplicated(metrics) == delivered - 2 >= 2


def test_a_wrong_app_token_stops_serve_with_the_reason(state_dsn: str) -> None:
    # A fake of its own: its record of the refused token is what this test expects, not a violation.
    with FakeSlack(tokens={BOT_TOKEN, APP_TOKEN}) as fake:
        environment = {
            **{key: value for key, value in os.environ.items() if not key.startswith(("SLACK_", "CHATOPS_"))},
            "SLACK_BOT_TOKEN": BOT_TOKEN,
            "SLACK_APP_TOKEN": "xapp-1-A0CHATOPS1-1-revoked",
            "CHATOPS_SLACK_API_URL": fake.url,
            "CHATOPS_STATE_DATABASE_URL": state_dsn,
            "CHATOPS_HTTP_PORT": str(free_port()),
        }
        done = subprocess.run(
            [sys.executable, "-m", "bot", "serve"],
            cwd="/tmp",
            env=environment,
            capture_output=True,
            text=True,
            timeout=60,
        )
        refused = [violation.error for violation in fake.violations]
    assert done.returncode == 2, done.stdout + done.stderr
    assert "SLACK_APP_TOKEN: Slack refused it (invalid_auth)" in done.stdout
    assert refused == ["invalid_auth"]  # asked once, not retried forever
