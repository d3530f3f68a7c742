"""Benchmark /health: wall time against the slowest single check and against checking one by one;
wall time with every dependency hung; and how long `sandbox up` takes when the sandbox already runs.

Run: python -m benchmarks.health_bench [--rounds N] [--latency-ms MS]
Brings the sandbox up first if it is not running. Prints figures (and SUMMARY lines for
`python -m benchmarks`); asserts nothing.
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
from sandbox.manager import up
from tests.netutil import silent_server


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


async def measure_hung(rounds: int, timeout: float) -> dict[str, float]:
    """Time the report when every dependency accepts connections and never answers."""
    walls, slowest = [], []
    with silent_server() as port:
        hung = f"127.0.0.1:{port}"
        settings = Settings(  # type: ignore[call-arg]
            _env_file=None,
            api_url=f"http://{hung}",
            prometheus_url=f"http://{hung}",
            s3_endpoint_url=f"http://{hung}",
            redis_url=f"redis://{hung}/0",
            platform_database_url=f"postgresql://postgres@{hung}/platform",
            state_database_url=f"postgresql://postgres@{hung}/state",
            docker_host=f"tcp://{hung}",
            dependency_timeout_seconds=timeout,
        )
        for _ in range(rounds):
            services = Services.build(settings)
            try:
                started = time.perf_counter()
                report = await check_health(
                    services.platform_dependencies(), services.bot_dependencies(), timeout=timeout
                )
                walls.append((time.perf_counter() - started) * 1000)
                slowest.append(max(check.latency_ms for check in report.checks))
            finally:
                await services.aclose()
    return {"report_ms": statistics.median(walls), "slowest_ms": statistics.median(slowest)}


def measure_second_up(rounds: int, settings: Settings) -> list[float]:
    """Bring the sandbox up (if needed), then time `up` again on the running sandbox, in ms."""
    asyncio.run(up(settings))
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        asyncio.run(up(settings))
        times.append((time.perf_counter() - started) * 1000)
    return times


def main() -> None:
    """Run the benchmark against the sandbox and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--latency-ms", type=float, default=700, help="latency added to the slowest check")
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    args = parser.parse_args()
    rounds = 5 if args.quick else args.rounds
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    ups = measure_second_up(3 if args.quick else 5, settings)
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
    hung = asyncio.run(measure_hung(3 if args.quick else 5, 0.5))
    print(
        f"  every dependency hung, 0.5 s timeout: report {hung['report_ms']:.0f} ms,"
        f" slowest check {hung['slowest_ms']:.0f} ms"
    )
    print(
        f"sandbox up on a running sandbox (everything reused), {len(ups)} times:"
        f" median {statistics.median(ups):.0f} ms, slowest {max(ups):.0f} ms"
    )
    print(f"SUMMARY\t/health wall time, all dependencies up\t{plain['concurrent_ms']:.0f} ms")
    print(f"SUMMARY\t/health with added latency: report / slowest check\t{ratio:.2f}")
    print(f"SUMMARY\t/health with every dependency hung (0.5 s timeout)\t{hung['report_ms']:.0f} ms")
    print(f"SUMMARY\tsandbox up when it already runs\t{statistics.median(ups):.0f} ms")


if __name__ == "__main__":
    main()
