"""Benchmark /health: wall time against the slowest single check and against checking one by one.

Run: python -m benchmarks.health_bench [--rounds N] [--latency-ms MS]
Prints figures (and SUMMARY lines for `python -m benchmarks`); asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from adapters.base import Pingable
from bot.config import Settings
from bot.services import Services
from commands.health import check_health, probe


class Delayed:
    """A dependency with artificial latency added in front of its real ping."""

    def __init__(self, inner: Pingable, delay: float) -> None:
        self.inner = inner
        self.name = inner.name
        self.delay = delay

    async def ping(self) -> str:
        await asyncio.sleep(self.delay)
        return await self.inner.ping()


async def measure(rounds: int, latency_ms: float) -> dict[str, float]:
    """Time the concurrent report, its slowest check, and the same checks run one after another."""
    services = Services.build(Settings(_env_file=None))  # type: ignore[call-arg]
    delays = [latency_ms / 1000 * (index + 1) / 7 for index in range(7)]
    deps = [Delayed(dep, delay) for dep, delay in zip(services.platform_dependencies(), delays, strict=False)]
    bot_deps = [Delayed(dep, delays[-1]) for dep in services.bot_dependencies()]
    concurrent, slowest, sequential = [], [], []
    try:
        await check_health(deps, bot_deps, timeout=5)  # warm the pools
        for _ in range(rounds):
            started = time.perf_counter()
            report = await check_health(deps, bot_deps, timeout=5)
            concurrent.append((time.perf_counter() - started) * 1000)
            slowest.append(max(check.latency_ms for check in report.checks))
            started = time.perf_counter()
            for dep in [*deps, *bot_deps]:
                await probe(dep, "platform", 5)
            sequential.append((time.perf_counter() - started) * 1000)
    finally:
        await services.aclose()
    return {
        "concurrent_ms": statistics.median(concurrent),
        "slowest_ms": statistics.median(slowest),
        "sequential_ms": statistics.median(sequential),
    }


def main() -> None:
    """Run the benchmark against the sandbox and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--latency-ms", type=float, default=700, help="latency added to the slowest check")
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    args = parser.parse_args()
    rounds = 5 if args.quick else args.rounds
    plain = asyncio.run(measure(rounds, 0))
    delayed = asyncio.run(measure(rounds, args.latency_ms))
    print(f"/health, {rounds} rounds, medians, against the running sandbox (7 dependencies)")
    print(
        f"  no added latency:   report {plain['concurrent_ms']:.1f} ms,"
        f" slowest check {plain['slowest_ms']:.1f} ms, one after another {plain['sequential_ms']:.1f} ms"
    )
    print(
        f"  latency 100..{args.latency_ms:.0f} ms: report {delayed['concurrent_ms']:.1f} ms,"
        f" slowest check {delayed['slowest_ms']:.1f} ms, one after another {delayed['sequential_ms']:.1f} ms"
    )
    ratio = delayed["concurrent_ms"] / delayed["slowest_ms"]
    print(
        f"  report / slowest check: {ratio:.2f}; sequential / report: "
        f"{delayed['sequential_ms'] / delayed['concurrent_ms']:.1f}x"
    )
    print(f"SUMMARY\t/health wall time, all dependencies up\t{plain['concurrent_ms']:.0f} ms")
    print(f"SUMMARY\t/health with added latency: report / slowest check\t{ratio:.2f}")


if __name__ == "__main__":
    main()
