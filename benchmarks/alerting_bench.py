"""Benchmark the sandbox's alerting path: from a release that passes /health but answers 5xx under
traffic going live, to Alertmanager's webhook arriving (Prometheus -> rule -> Alertmanager -> webhook,
all real; a receiver stands in for the bot's /alerts and checks its bearer token).

Run: python -m benchmarks.alerting_bench [--rounds N]
Uses the running sandbox (brings it up if needed): it deploys the faulty release on the shared
backend and points Alertmanager at its receiver for a while, then puts v2.0.5 and the config back,
so run it alone. Each round first waits until the rule is quiet again: the last round's 5xx stay
in the rule's five-minute window for about four minutes. Prints figures (and SUMMARY lines for
`python -m benchmarks`); asserts nothing.

What bounds the figure: the rule's expression (5xx share over 5m > 5 %) turns true about
0.05 * 300 s / error share after the fault (~50 s at the release's 30 % of API requests), then the
rule's `for:` (sandbox: CHATOPS_SANDBOX_ALERT_FOR, 30s; production: 2m), the evaluation interval
(1 s) and Alertmanager's group_wait (5 s).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics

from bot.config import Settings
from sandbox.alert_drill import DrillResult, expected_bounds, faulty_release_drill
from sandbox.manager import up


async def measure(rounds: int, settings: Settings) -> list[DrillResult]:
    """Run the drill `rounds` times, one after the other."""
    await up(settings)
    results = []
    for _ in range(rounds):
        results.append(await faulty_release_drill(settings))
    return results


def main() -> None:
    """Run the benchmark against the sandbox and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="one round (as the default)")
    args = parser.parse_args()
    rounds = 1 if args.quick else max(1, args.rounds)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    results = asyncio.run(measure(rounds, settings))
    shares = [r.error_share for r in results if r.error_share is not None]
    share = statistics.median(shares) if shares else 0.3
    print(f"faulty release (passes /health, 5xx under traffic) -> webhook, {rounds} round(s)")
    for index, result in enumerate(results, 1):
        pending = f"{result.pending_at - result.deployed_at:5.1f} s" if result.pending_at else "    ?"
        print(
            f"  round {index}: /health {result.health_status}; rule true after {pending},"
            f" firing after {result.firing_at - result.deployed_at:5.1f} s,"
            f" webhook after {result.fault_to_webhook:5.1f} s"
            f" ({result.webhook_at - result.firing_at:.1f} s after firing)"
        )
    median = statistics.median(r.fault_to_webhook for r in results)
    to_firing = statistics.median(r.firing_at - r.deployed_at for r in results)
    bounds = expected_bounds(settings, share)
    print(f"  5xx share under the release: {share:.0%}; bounded by {bounds}")
    print(f"SUMMARY\tfault to Alertmanager webhook, for: {settings.sandbox_alert_for}\t{median:.0f} s")
    print(f"SUMMARY\tfault to rule firing (5m window to 5 %, then for:)\t{to_firing:.0f} s")
    print(f"SUMMARY\tfiring to webhook (evaluation 1 s, group_wait 5 s)\t{median - to_firing:.1f} s")


if __name__ == "__main__":
    main()
