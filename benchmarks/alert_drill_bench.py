"""Benchmark the alert drill with the real bot: how long from Alertmanager's webhook arriving to the
findings, the suspect and the "Plan the way back" button posted in the alert's thread; and, end to
end, from the bad release going live to that button.

Run: python -m benchmarks.alert_drill_bench [--rounds N] [--quick]
Uses the running sandbox (brings it up if needed) and swaps its backend: run it alone. The bot is
served in-process against the fake Slack (tests/alert_drill_helpers.py), the sandbox's Alertmanager
posting to it through a relay that notes when each webhook arrives. The drill's v2.0.6 (passes
/health, 30 % of requests 5xx) is deployed through the gate as an operator; once its alert has
triaged itself, the webhook Alertmanager sent is posted again `--rounds` times, each with a fresh
group key and fingerprint (so each is a new alert, triaged anew) while the fault is still live.
Afterwards v2.0.5 and Alertmanager's config are put back. Prints figures (SUMMARY lines for
`python -m benchmarks`); asserts nothing.

What bounds the figures: the webhook-to-button time is the triage itself (bounded by its slowest
check, about the engine's CPU sample) plus "what changed" (range queries, the engine, the bot's
records, each under its timeout) and the posting; the end-to-end time is the rule's rate window
reaching 5 % (~0.05 x window / 30 %: 10 s with the sandbox's 1m), its `for:` (sandbox 30s),
the evaluation interval (1 s), Alertmanager's group_wait (5 s), then the same triage.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import math
import secrets
import statistics
import time
from typing import Any

import httpx

from bot.config import Settings
from sandbox.alert_drill import ALERT, expected_bounds
from sandbox.manager import up
from tests.alert_drill_helpers import Drill, drill_bot, findings_in, is_alert, way_back_button
from tests.conftest import BOT_TOKEN, make_settings
from tests.fakes import FakeSlack, SlackCall
from tests.incident_helpers import ALERT_TOKEN


def percentile(values: list[float], share: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


async def button_posted(drill: Drill, thread: str, timeout: float = 120) -> SlackCall:
    """Wait for the findings in `thread` with the way-back button."""
    return await drill.bot.posted(
        lambda call: findings_in(thread)(call) and way_back_button(call) is not None, timeout=timeout
    )


async def repost(drill: Drill, body: dict[str, Any], index: int) -> float:
    """Post the webhook again as a new alert group; return seconds to the button in its thread."""
    fresh = copy.deepcopy(body)
    fresh["groupKey"] = f"{body['groupKey']}/bench-{index}-{secrets.token_hex(4)}"
    fingerprints = []
    for alert in fresh["alerts"]:
        alert["fingerprint"] = secrets.token_hex(8)
        fingerprints.append(alert["fingerprint"])
    started = time.monotonic()
    async with httpx.AsyncClient(timeout=30) as client:
        answer = await client.post(
            f"{drill.bot.url}/alerts", json=fresh, headers={"Authorization": f"Bearer {ALERT_TOKEN}"}
        )
    answer.raise_for_status()
    post = await drill.bot.posted(
        lambda call: is_alert(call) and fingerprints[0] in str(call.params.get("blocks")), timeout=30
    )
    await button_posted(drill, str((post.response or {})["ts"]))
    return time.monotonic() - started


async def measure(rounds: int) -> dict[str, Any]:
    """Run the drill once, then re-post its webhook `rounds` times."""
    await up(make_settings())
    with FakeSlack(tokens={BOT_TOKEN}) as fake:
        async with drill_bot(fake, relay=True) as drill:
            assert drill.relay is not None
            await drill.deploy("v2.0.6")
            live = time.monotonic()  # the gate reported the release healthy: it serves, 5xx and all
            alert = await drill.bot.posted(is_alert, timeout=300)
            thread = str((alert.response or {})["ts"])
            await button_posted(drill, thread)
            button = time.monotonic()
            arrived, body = next(
                (at, body)
                for at, body in drill.relay.arrived
                if body.get("status") == "firing"
                and any(item["labels"].get("alertname") == ALERT for item in body["alerts"])
            )
            repeats = [await repost(drill, body, index) for index in range(rounds)]
            share = await error_share(make_settings())
    return {
        "fault_to_webhook": arrived - live,
        "webhook_to_button_first": button - arrived,
        "fault_to_button": button - live,
        "repeats": repeats,
        "share": share,
    }


async def error_share(settings: Settings) -> float:
    """The share of requests answered 5xx over the last minute."""
    query = 'sum(rate(http_requests_total{status=~"5.."}[1m])) / sum(rate(http_requests_total[1m]))'
    async with httpx.AsyncClient(timeout=5) as client:
        answer = await client.get(f"{settings.prometheus_url}/api/v1/query", params={"query": query})
    result = answer.json()["data"]["result"]
    return float(result[0]["value"][1]) if result else 0.3


def main() -> None:
    """Run the benchmark against the sandbox and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="5 re-posted webhooks instead of 10")
    args = parser.parse_args()
    rounds = 5 if args.quick else max(2, args.rounds)
    figures = asyncio.run(measure(rounds))
    settings = make_settings()
    repeats = figures["repeats"]
    median, p95 = statistics.median(repeats), percentile(repeats, 0.95)
    print(f"alert drill with the real bot: 1 gated deploy, {rounds} webhooks posted again")
    print(f"  fault live -> Alertmanager's webhook at the bot: {figures['fault_to_webhook']:.1f} s")
    print(
        f"  webhook -> findings + suspect + button (first, real): {figures['webhook_to_button_first']:.1f} s"
    )
    print("  webhook -> findings + suspect + button, re-posted: " + ", ".join(f"{r:.2f}" for r in repeats))
    print(f"  bounded by: {expected_bounds(settings, figures['share'])}, then the triage")
    print(
        f"SUMMARY\tAlertmanager webhook to findings + suspect + button, median / P95 ({rounds} runs)\t"
        f"{median:.2f} s / {p95:.2f} s"
    )
    print(
        f"SUMMARY\tbad release live to the button, end to end (rule window, for: "
        f"{settings.sandbox_alert_for}, group_wait 5s)\t{figures['fault_to_button']:.0f} s"
    )
    print(f"SUMMARY\tof which: release live to Alertmanager's webhook\t{figures['fault_to_webhook']:.0f} s")


if __name__ == "__main__":
    main()
