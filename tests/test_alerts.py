"""Alert intake: Alertmanager's version 4 webhook into the incident channel, its buttons, its repeats."""

from __future__ import annotations

import asyncio
import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from bot.invocation import Invocation
from bot.registry import COMMANDS, CommandSpec
from bot.render.alert import DECLARE_ACTION, TRIAGE_ACTION
from bot.render.common import Message, SlackReply, section
from bot.services import Services
from commands.base import CommandResult
from tests.fakes import FakeSlack, SlackCall
from tests.incident_helpers import ALERT_TOKEN, CHANNEL, USER, Bot, block_text, incident_bot, is_header

FINGERPRINT = "c4e1f2a0b3d4e5f6"
# Half an hour ago, with the nanoseconds Go writes; it resolved 21 minutes after it started.
STARTED = datetime.now(UTC).replace(microsecond=123456) - timedelta(minutes=30)
STARTS_AT = f"{STARTED:%Y-%m-%dT%H:%M:%S}.123456789Z"
ENDS_AT = f"{STARTED + timedelta(minutes=21):%Y-%m-%dT%H:%M:%S}.123456789Z"


def alertmanager_alert(
    status: str = "firing",
    fingerprint: str = FINGERPRINT,
    alertname: str = "HighErrorRate",
    starts_at: str = STARTS_AT,
    ends_at: str = "0001-01-01T00:00:00Z",
) -> dict[str, Any]:
    """One alert exactly as Alertmanager writes it (Go's zero time in endsAt while firing)."""
    return {
        "status": status,
        "labels": {
            "alertname": alertname,
            "area": "api",
            "instance": "backend:8000",
            "job": "3dpot-backend",
            "priority": "P2",
            "severity": "critical",
        },
        "annotations": {
            "description": "More than 5 % of HTTP requests failed with 5xx over the last 5 minutes.",
            "runbook_section": "1.1 HTTP Errors (5xx)",
            "summary": "5xx error rate is 12.5% (threshold 5 %)",
        },
        "startsAt": starts_at,
        "endsAt": ends_at,
        "generatorURL": "http://prometheus:9090/graph?g0.expr=%28sum%28rate%28http_requests_total%29%29%29&g0.tab=1",
        "fingerprint": fingerprint,
    }


def notification(*alerts: dict[str, Any]) -> dict[str, Any]:
    """A webhook body exactly as Alertmanager 0.25+ sends it (version 4)."""
    alerts = alerts or (alertmanager_alert(),)
    firing = any(alert["status"] == "firing" for alert in alerts)
    common = {"alertname": alerts[0]["labels"]["alertname"], "area": "api", "severity": "critical"}
    return {
        "receiver": "chatops",
        "status": "firing" if firing else "resolved",
        "alerts": list(alerts),
        "groupLabels": {"alertname": common["alertname"]},
        "commonLabels": common,
        "commonAnnotations": {"runbook_section": "1.1 HTTP Errors (5xx)"},
        "externalURL": "http://alertmanager.3dpot.internal:9093",
        "version": "4",
        "groupKey": '{}/{severity="critical"}:{alertname="' + common["alertname"] + '"}',
        "truncatedAlerts": 0,
    }


async def send(bot: Bot, body: Any, token: str | None = ALERT_TOKEN) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(timeout=20) as client:
        if isinstance(body, (bytes, str)):
            return await client.post(f"{bot.url}/alerts", content=body, headers=headers)
        return await client.post(f"{bot.url}/alerts", json=body, headers=headers)


def alert_posts(fake: FakeSlack) -> list[SlackCall]:
    return [call for call in fake.calls_to("chat.postMessage") if "FIRING" in str(call.params.get("text"))]


def actions(call: SlackCall) -> list[str]:
    return [
        element["action_id"]
        for block in call.params["blocks"]
        if block["type"] == "actions"
        for element in block["elements"]
    ]


@pytest.mark.usefixtures("postgres")
async def test_a_firing_alert_is_posted_repeats_edit_it_and_resolution_marks_it(
    fake_slack: FakeSlack,
) -> None:
    async with incident_bot(fake_slack) as bot:
        first = await send(bot, notification())
        repeat = await send(bot, notification())
        resolved_alert = alertmanager_alert("resolved", ends_at=ENDS_AT)
        resolved = await send(bot, notification(resolved_alert))
        stored = await bot.store.alert_by_fingerprint(FINGERPRINT)
    assert first.status_code == 200 and first.json()["outcomes"] == {FINGERPRINT: "posted"}
    assert repeat.json()["outcomes"] == {FINGERPRINT: "updated"}
    assert resolved.json()["outcomes"] == {FINGERPRINT: "resolved"}
    [post] = alert_posts(fake_slack)
    assert post.params["channel"] == CHANNEL and "thread_ts" not in post.params
    text = block_text(post.params["blocks"])
    assert "*FIRING* · *HighErrorRate* · critical" in text and "5xx error rate is 12.5%" in text
    assert actions(post) == [TRIAGE_ACTION, DECLARE_ACTION]
    ts = post.response["ts"]  # type: ignore[index]
    updates = fake_slack.calls_to("chat.update")
    assert [update.params["ts"] for update in updates] == [ts, ts]
    assert "notified 2 times" in block_text(updates[0].params["blocks"])
    final = updates[1].params
    assert "*RESOLVED* · *HighErrorRate*" in block_text(final["blocks"]) and "after 21 min" in block_text(
        final["blocks"]
    )
    assert actions(updates[1]) == []
    assert stored is not None and stored.status == "resolved" and stored.notifications == 3
    assert fake_slack.violations == []


@pytest.mark.usefixtures("postgres")
async def test_a_resolved_alert_nobody_saw_and_a_second_alert_in_the_group(fake_slack: FakeSlack) -> None:
    async with incident_bot(fake_slack) as bot:
        body = notification(
            alertmanager_alert("resolved", fingerprint="aaaa000000000001", ends_at=ENDS_AT),
            alertmanager_alert(fingerprint="bbbb000000000002", alertname="HighLatencyP95"),
        )
        answer = await send(bot, body)
    assert answer.json()["outcomes"] == {"aaaa000000000001": "ignored", "bbbb000000000002": "posted"}
    assert len(alert_posts(fake_slack)) == 1


@pytest.mark.usefixtures("postgres")
async def test_the_same_alert_firing_again_after_it_resolved_is_a_new_message(fake_slack: FakeSlack) -> None:
    async with incident_bot(fake_slack) as bot:
        await send(bot, notification())
        await send(bot, notification(alertmanager_alert("resolved", ends_at=ENDS_AT)))
        again = await send(
            bot,
            notification(
                alertmanager_alert(starts_at=f"{STARTED + timedelta(minutes=25):%Y-%m-%dT%H:%M:%SZ}")
            ),
        )
    assert again.json()["outcomes"] == {FINGERPRINT: "posted"}
    assert len(alert_posts(fake_slack)) == 2


@pytest.mark.usefixtures("postgres")
async def test_concurrent_deliveries_of_one_alert_post_one_message(fake_slack: FakeSlack) -> None:
    async with incident_bot(fake_slack) as bot:
        answers = await asyncio.gather(*(send(bot, notification()) for _ in range(4)))
    outcomes = sorted(answer.json()["outcomes"][FINGERPRINT] for answer in answers)
    assert outcomes == ["posted", "updated", "updated", "updated"]
    assert len(alert_posts(fake_slack)) == 1


@pytest.mark.usefixtures("postgres")
async def test_an_alert_storm_keeps_to_slacks_rate_in_the_channel(fake_slack: FakeSlack) -> None:
    # Eight alerts at once, the first of them triaging itself into its thread meanwhile: the fake
    # answers 429 past Slack's one post a second per channel; the bot paces every post instead.
    storm = [alertmanager_alert(fingerprint=f"{index:016x}", alertname=f"Storm{index}") for index in range(8)]
    async with incident_bot(fake_slack, alert_triage_severity="critical") as bot:
        answer = await send(bot, notification(*storm))
        await bot.posted(lambda call: call.params.get("text", "").startswith("Triage:"), timeout=60)
    assert answer.status_code == 200 and set(answer.json()["outcomes"].values()) == {"posted"}
    assert len(alert_posts(fake_slack)) == 8
    refused = [call for call in fake_slack.calls_to("chat.postMessage") if call.status == 429]
    assert refused == [], f"{len(refused)} posts refused with 429"


@pytest.mark.parametrize(
    ("header", "status"),
    [(None, 401), ("wrong-token", 401), ("alertmanager-secret", 200)],
    ids=["no token", "wrong token", "right token"],
)
@pytest.mark.usefixtures("postgres")
async def test_a_configured_bearer_token_is_required(
    fake_slack: FakeSlack, header: str | None, status: int
) -> None:
    async with incident_bot(fake_slack, alertmanager_token="alertmanager-secret") as bot:
        answer = await send(bot, notification(), token=header)
    assert answer.status_code == status
    assert len(alert_posts(fake_slack)) == (1 if status == 200 else 0)


def _broken(change: str) -> Any:
    body = notification()
    if change == "not json":
        return b"{not json"
    if change == "version 3":
        body["version"] = "3"
    elif change == "no alerts":
        del body["alerts"]
    elif change == "alert without fingerprint":
        del body["alerts"][0]["fingerprint"]
    elif change == "bad status":
        body["alerts"][0]["status"] = "exploded"
    elif change == "bad time":
        body["alerts"][0]["startsAt"] = "yesterday"
    return body


@pytest.mark.parametrize(
    "change", ["not json", "version 3", "no alerts", "alert without fingerprint", "bad status", "bad time"]
)
@pytest.mark.usefixtures("postgres")
async def test_what_is_not_an_alertmanager_v4_payload_is_refused(fake_slack: FakeSlack, change: str) -> None:
    async with incident_bot(fake_slack) as bot:
        answer = await send(bot, _broken(change))
    assert answer.status_code == 400
    assert answer.json()["error"] == "not an Alertmanager v4 webhook payload"
    assert fake_slack.calls_to("chat.postMessage") == []


@pytest.mark.usefixtures("postgres")
async def test_without_an_incident_channel_alertmanager_is_told_to_retry(fake_slack: FakeSlack) -> None:
    async with incident_bot(fake_slack, incident_channel=None) as bot:
        answer = await send(bot, notification())
    assert answer.status_code == 503 and "CHATOPS_INCIDENT_CHANNEL" in answer.json()["error"]


@pytest.mark.usefixtures("postgres")
async def test_when_slack_fails_alertmanager_retries_and_gets_one_message(fake_slack: FakeSlack) -> None:
    fake_slack.fail("chat.postMessage", "ratelimited", times=1)
    async with incident_bot(fake_slack) as bot:
        failed = await send(bot, notification())
        retried = await send(bot, notification())
        stored = await bot.store.alert_by_fingerprint(FINGERPRINT)
    assert failed.status_code == 503 and failed.json()["failed"] == [FINGERPRINT]
    assert retried.status_code == 200 and retried.json()["outcomes"] == {FINGERPRINT: "posted"}
    assert len([call for call in alert_posts(fake_slack) if (call.response or {}).get("ok")]) == 1
    assert stored is not None and stored.notifications == 1


@pytest.mark.usefixtures("postgres")
async def test_alerts_during_an_incident_go_to_its_thread_and_timeline(fake_slack: FakeSlack) -> None:
    async with incident_bot(fake_slack) as bot:
        await bot.answer(await bot.command("/incident", "declare Checkout errors"))
        header = await bot.posted(is_header)
        await send(bot, notification())
        await send(bot, notification(alertmanager_alert("resolved", ends_at=ENDS_AT)))
        events = await bot.store.events(1)
    [post] = alert_posts(fake_slack)
    assert post.params["thread_ts"] == header.response["ts"]  # type: ignore[index]
    alert_events = [event for event in events if event.kind == "alert"]
    assert [event.text.split(":")[0] for event in alert_events] == [
        "HighErrorRate firing",
        "HighErrorRate resolved",
    ]
    assert alert_events[0].at == STARTED  # when it started


# --- the buttons -------------------------------------------------------------------------------------


@pytest.mark.usefixtures("postgres")
async def test_declare_from_an_alert_takes_its_title_severity_and_start(fake_slack: FakeSlack) -> None:
    async with incident_bot(fake_slack) as bot:
        await send(bot, notification())
        [post] = alert_posts(fake_slack)
        await bot.click(DECLARE_ACTION, FINGERPRINT, message_ts=post.response["ts"])  # type: ignore[index]
        header = await bot.posted(is_header)
        relinked = await fake_slack.wait_for_call_async(
            "chat.update", lambda call: "INC-1" in block_text(call.params.get("blocks", []))
        )
        stored = await bot.store.open_in(CHANNEL)
        events = await bot.store.events(1)
        # A second click asks instead of declaring a second incident.
        await bot.click(DECLARE_ACTION, FINGERPRINT)
        question = await fake_slack.wait_for_response_post_async(
            predicate=lambda post: (
                "already open" in str(post.body.get("text")) + block_text(post.body.get("blocks", []))
            )
        )
    assert stored is not None
    assert stored.title == "HighErrorRate: 5xx error rate is 12.5% (threshold 5 %)"
    assert stored.severity == "P2"  # the alert's priority label
    assert stored.started_at == STARTED
    assert stored.commander == USER
    assert "INC-1 · P2 · HighErrorRate" in block_text(header.params["blocks"])
    assert actions(relinked) == [TRIAGE_ACTION]  # no second declare from the same alert
    assert [event.kind for event in events][:2] == ["alert", "declared"]  # the alert came first
    assert question is not None


class _Findings(CommandResult):
    verdict: str


def _stub_triage(calls: list[Invocation]) -> CommandSpec:
    async def run(services: Services, tokens: list[str], invocation: Invocation) -> CommandResult:
        calls.append(invocation)
        return _Findings(verdict="critical: 5xx on /api/v1/projects")

    def slack(result: _Findings) -> SlackReply:
        return SlackReply(main=Message(text=f"Triage: {result.verdict}", blocks=[section(result.verdict)]))

    return CommandSpec(
        name="triage", summary="stub", usage="", run=run, slack=slack, terminal=lambda result, console: None
    )


@pytest.mark.usefixtures("postgres")
async def test_run_triage_posts_the_findings_in_the_alerts_thread(
    fake_slack: FakeSlack, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[Invocation] = []
    monkeypatch.setitem(COMMANDS, "triage", _stub_triage(calls))
    async with incident_bot(fake_slack) as bot:
        await send(bot, notification())
        [post] = alert_posts(fake_slack)
        await bot.click(TRIAGE_ACTION, FINGERPRINT)
        findings = await bot.posted(lambda call: str(call.params.get("text")).startswith("Triage:"))
    assert findings.params["thread_ts"] == post.response["ts"]  # type: ignore[index]
    assert calls[0].user_id == USER and calls[0].channel_id == CHANNEL


@pytest.mark.usefixtures("postgres")
async def test_buttons_check_the_role_of_who_clicks(fake_slack: FakeSlack) -> None:
    async with incident_bot(fake_slack, responders=["U0NOBODY01"]) as bot:
        await send(bot, notification())
        await bot.click(DECLARE_ACTION, FINGERPRINT)
        refusal = await fake_slack.wait_for_call_async("chat.postEphemeral")
        stored = await bot.store.open_in(CHANNEL)
    assert "you need the responder role" in refusal.params["text"]
    assert stored is None


def test_payload_helpers_are_alertmanager_shaped() -> None:
    body = notification()
    assert set(body) == {
        "receiver",
        "status",
        "alerts",
        "groupLabels",
        "commonLabels",
        "commonAnnotations",
        "externalURL",
        "version",
        "groupKey",
        "truncatedAlerts",
    }
    assert set(body["alerts"][0]) == {
        "status",
        "labels",
        "annotations",
        "startsAt",
        "endsAt",
        "generatorURL",
        "fingerprint",
    }
    assert copy.deepcopy(body) == body
