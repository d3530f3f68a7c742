"""Benchmark the bot under load: ack latency and throughput of signed slash commands over real HTTP,
with healthy and with hung backends, and the bot's resident memory idle and after many commands;
and its posting within Slack's limits: the pacer's burst and pace on one channel, and how long a
429 with Retry-After takes to get through.

Run: python -m benchmarks.ack_bench [--concurrent 200] [--commands 10000] [--quick]
Starts `chatops serve` (HTTP mode) against a local fake Slack; needs the sandbox for the healthy run.
Prints figures (and SUMMARY lines for `python -m benchmarks`); asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import aiohttp
import httpx
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack_api import install_rate_limit_retry
from bot.slack.posting import ChannelPacer
from tests.fakes import FakeSlack, signed_slash_command_request
from tests.netutil import free_port, silent_server

REPO = Path(__file__).resolve().parents[1]
SECRET = "bench-signing-secret"
TOKEN = "xoxb-bench-token"


def rss_mb(pid: int) -> float:
    """Return a process's resident memory in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@contextmanager
def bot_process(fake: FakeSlack, extra_env: dict[str, str]) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Run `chatops serve` in HTTP mode against the fake Slack; yield its URL and process."""
    port = free_port()
    env = {
        **os.environ,
        "SLACK_BOT_TOKEN": TOKEN,
        "SLACK_SIGNING_SECRET": SECRET,
        "CHATOPS_SLACK_API_URL": fake.url,
        "CHATOPS_HTTP_PORT": str(port),
        "CHATOPS_LOG_LEVEL": "ERROR",
        **extra_env,
    }
    process = subprocess.Popen([sys.executable, "-m", "bot", "serve"], cwd=REPO, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        yield url, process
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()


async def burst(url: str, fake: FakeSlack, count: int, first_channel: int) -> dict[str, float]:
    """Send `count` signed /health commands at once; time each ack and wait for every answer."""
    requests = [
        signed_slash_command_request(SECRET, command="/health", channel_id=f"C{first_channel + index:08d}")
        for index in range(count)
    ]
    before = len(fake.calls_to("chat.postMessage"))
    latencies: list[float] = []

    async def one(session: aiohttp.ClientSession, body: bytes, headers: dict[str, str]) -> None:
        started = time.perf_counter()
        async with session.post(f"{url}/slack/events", data=body, headers=headers) as response:
            await response.read()
            latencies.append((time.perf_counter() - started) * 1000)
            response.raise_for_status()

    started = time.perf_counter()
    # aiohttp rather than httpx: httpx's pool costs grow with the square of concurrent requests,
    # which would be measured as the bot's latency.
    connector = aiohttp.TCPConnector(limit=count)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:
        await asyncio.gather(*(one(session, body, headers) for body, headers in requests))
    acked = time.perf_counter() - started
    deadline = time.monotonic() + 120
    while len(fake.calls_to("chat.postMessage")) - before < count and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    answered = time.perf_counter() - started
    latencies.sort()
    return {
        "p50": statistics.median(latencies),
        "p99": latencies[max(0, int(len(latencies) * 0.99) - 1)],
        "max": latencies[-1],
        "acks_per_s": count / acked,
        "answered": len(fake.calls_to("chat.postMessage")) - before,
        "answered_s": answered,
    }


def run_bursts(label: str, fake: FakeSlack, env: dict[str, str], concurrent: int) -> dict[str, float]:
    """Measure one burst (after a warm-up) and print it."""
    with bot_process(fake, env) as (url, _):
        asyncio.run(burst(url, fake, 5, 900_000))  # warm-up: auth.test, pools
        figures = asyncio.run(burst(url, fake, concurrent, 0))
    print(
        f"  {label:<22} ack p50 {figures['p50']:6.1f} ms  p99 {figures['p99']:6.1f} ms"
        f"  max {figures['max']:6.1f} ms"
        f"  {figures['acks_per_s']:6.0f} acks/s  answered {figures['answered']:.0f}/{concurrent}"
        f" within {figures['answered_s']:.1f} s"
    )
    return figures


def memory(fake: FakeSlack, commands: int, batch: int) -> tuple[float, float, float]:
    """Return RSS idle, after half the commands, and after all of them."""
    with bot_process(fake, {}) as (url, process):
        asyncio.run(burst(url, fake, 5, 800_000))
        idle = rss_mb(process.pid)
        middle = idle
        sent = 0
        while sent < commands:
            asyncio.run(burst(url, fake, min(batch, commands - sent), sent))
            sent += batch
            if sent >= commands // 2 and middle == idle:
                middle = rss_mb(process.pid)
            fake.reset()
        return idle, middle, rss_mb(process.pid)


async def pacing(posts: int) -> list[float]:
    """Return when each of `posts` turns on one channel came, in seconds from the first (real pacer)."""
    pacer = ChannelPacer()
    started = time.perf_counter()
    turns = []
    for _ in range(posts):
        await pacer.wait_turn("C0BENCH")
        turns.append(time.perf_counter() - started)
    return turns


async def rate_limited_post(fake: FakeSlack, retry_after: int) -> float:
    """Post once through a 429 with `retry_after`; return the seconds until Slack took the message."""
    client = AsyncWebClient(token=TOKEN, base_url=fake.url)
    install_rate_limit_retry(client, lambda method: None)
    fake.rate_limit("chat.postMessage", times=1, retry_after=retry_after)
    started = time.perf_counter()
    await client.chat_postMessage(channel="C0BENCH", text="after the limit")
    return time.perf_counter() - started


def posting(fake: FakeSlack) -> list[str]:
    """Measure the pacer and the 429 retry; print them and return SUMMARY lines."""
    turns = asyncio.run(pacing(6))
    burst = turns[2] * 1000
    gaps = [later - earlier for earlier, later in itertools.pairwise(turns[2:])]
    retried = asyncio.run(rate_limited_post(fake, 1))
    print(
        f"pacer, 6 posts to one channel: the burst of 3 within {burst:.1f} ms,"
        f" then one every {statistics.mean(gaps):.2f} s (gaps {', '.join(f'{gap:.2f}' for gap in gaps)})"
    )
    print(f"a 429 with Retry-After: 1 is posted after {retried:.2f} s (Slack's wait plus up to 1 s jitter)")
    return [
        f"SUMMARY\tpacer, one channel: burst of 3 / then one post every\t{burst:.1f} ms / "
        f"{statistics.mean(gaps):.2f} s",
        f"SUMMARY\t429 with Retry-After: 1, posted after\t{retried:.2f} s",
    ]


def main() -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--concurrent", type=int, default=200)
    parser.add_argument("--commands", type=int, default=10_000)
    parser.add_argument("--quick", action="store_true", help="1,000 commands for the memory figure")
    args = parser.parse_args()
    commands = 1_000 if args.quick else args.commands
    # Slack's rate limits off, on purpose: this measures the bot under bursts of hundreds of
    # commands (and 10,000 for memory), a load real Slack would not deliver within its limits.
    with FakeSlack(tokens={TOKEN}, rate_limits=False) as fake:
        print(
            f"{args.concurrent} concurrent signed /health commands over HTTP"
            " (chatops serve, one channel each)"
        )
        healthy = run_bursts("backends healthy", fake, {}, args.concurrent)
        with silent_server() as port:
            hung = f"127.0.0.1:{port}"
            hung_env = {
                "CHATOPS_API_URL": f"http://{hung}",
                "CHATOPS_PROMETHEUS_URL": f"http://{hung}",
                "CHATOPS_S3_ENDPOINT_URL": f"http://{hung}",
                "CHATOPS_REDIS_URL": f"redis://{hung}/0",
                "CHATOPS_PLATFORM_DATABASE_URL": f"postgresql://postgres@{hung}/platform",
                "DOCKER_HOST": f"tcp://{hung}",
            }
            hung_figures = run_bursts("every backend hung", fake, hung_env, args.concurrent)
        idle, middle, after = memory(fake, commands, batch=args.concurrent)
        fake.reset()
        posting_summary = posting(fake)
    print(
        f"resident memory: idle {idle:.0f} MB, after {commands // 2:,} commands {middle:.0f} MB,"
        f" after {commands:,} commands {after:.0f} MB"
    )
    print(
        f"SUMMARY\tack p99, {args.concurrent} concurrent commands, backends healthy\t{healthy['p99']:.0f} ms"
    )
    print(
        f"SUMMARY\tack p99, {args.concurrent} concurrent commands, every backend hung"
        f"\t{hung_figures['p99']:.0f} ms"
    )
    print(f"SUMMARY\tacks per second ({args.concurrent} concurrent, healthy)\t{healthy['acks_per_s']:.0f}")
    print(f"SUMMARY\tbot memory idle / after {commands:,} commands\t{idle:.0f} MB / {after:.0f} MB")
    for line in posting_summary:
        print(line)


if __name__ == "__main__":
    main()
