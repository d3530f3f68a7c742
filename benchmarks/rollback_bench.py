"""Benchmark /rollback: approval to healthy, step by step, against the same engine calls made by hand.

Run: python -m benchmarks.rollback_bench [--rounds N] [--quick]
Each round starts from a fresh v2.0.6 (faulty) backend container of a Compose project of its own
(never the shared sandbox's) and goes to v2.0.5: once through the gate's execution (lock, re-plan,
copy, stop, start, health wait, removal, audit), once by hand with the docker SDK (create, stop,
start, poll /health). Prints figures (and SUMMARY lines for `python -m benchmarks`); asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import docker.errors
import httpx

from adapters.engine import clone_config
from bot.config import Settings
from bot.gate.mfa import code_at
from bot.invocation import Invocation
from bot.registry import COMMANDS
from bot.runtime import Runtime
from bot.state import migrate
from commands.destructive import Proposal, Step
from sandbox.backend_container import remove_project, start_backend
from sandbox.images import ensure_images
from sandbox.podman import docker_client, start_podman

PROJECT = "3dpot-rbbench"
IMAGE = "3dpot-backend-rbbench"
DATABASE = "chatops_bench_rollback"
OPERATOR = "U0BENCH01"
HEALTHY = "wait until healthy"
# A person polling by hand: as tight as is reasonable, so the baseline is the engine's floor.
HAND_POLL_SECONDS = 0.05


class Clock:
    """A clock moved by hand: every confirmation gets a fresh TOTP step without waiting 30 s."""

    def __init__(self) -> None:
        self.now = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _settings(port: int) -> Settings:
    base = Settings(_env_file=None)  # type: ignore[call-arg]
    parts = urlsplit(base.state_database_url)
    return Settings(  # type: ignore[call-arg]
        _env_file=None,
        compose_project=PROJECT,
        backend_image=IMAGE,
        api_url=f"http://127.0.0.1:{port}",
        sandbox_dir=Path("/tmp/chatops-rbbench"),  # noqa: S108  (its own log directory)
        state_database_url=urlunsplit(parts._replace(path=f"/{DATABASE}")),
        secret_key="benchmark-secret-key",  # noqa: S106  (encrypts a throwaway TOTP seed)
        operators=[OPERATOR],
        environment="bench",
    )


async def _recreate_database(settings: Settings) -> None:
    parts = urlsplit(settings.state_database_url)
    admin = await asyncpg.connect(urlunsplit(parts._replace(path="/postgres")))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{DATABASE}"')
    finally:
        await admin.close()


def _fresh_faulty_backend(settings: Settings) -> None:
    remove_project(settings, PROJECT, timeout=60)
    start_backend(settings, "v2.0.6")


async def _bot_round(runtime: Runtime, clock: Clock, seed: str) -> dict[str, float]:
    """Approve a rollback to v2.0.5 and time its execution, step by step."""
    services = runtime.services
    invocation = Invocation(request_id=f"bench{time.time_ns()}", source="cli", user_id=OPERATOR)
    proposal = await COMMANDS["rollback"].run(services, ["v2.0.5"], invocation)
    assert isinstance(proposal, Proposal)
    approval = await runtime.gate.propose(proposal, invocation)
    confirmation = await runtime.gate.confirm(approval.id, OPERATOR, code_at(seed, clock.now))
    clock.now += timedelta(seconds=30)
    marks: dict[str, float] = {}

    async def publish(steps: list[Step]) -> None:
        now = time.perf_counter()
        for step in steps:
            if step.status == "running":
                marks.setdefault(f"start:{step.name}", now)
            if step.status == "done":
                marks.setdefault(f"done:{step.name}", now)

    started = time.perf_counter()
    result = await runtime.gate.execute(confirmation.approval, publish)
    finished = time.perf_counter()
    if not result.succeeded:
        raise RuntimeError(f"rollback failed: {result.summary}")
    figures: dict[str, float] = {}
    for step in result.steps:
        name = step.name.split(" (")[0].split(" from ")[0].split(" 3dpot")[0]
        figures[name] = (step.duration_ms or 0.0) / 1000
    first = min(value for key, value in marks.items() if key.startswith("start:"))
    healthy = marks[f"done:{HEALTHY}"]
    figures["gate before the first step (lock, re-plan, record)"] = first - started
    figures["to healthy"] = healthy - started
    figures["total (removal and audit included)"] = finished - started
    return figures


def _hand_round(settings: Settings) -> dict[str, float]:
    """Do the same by hand: the create body is prepared beforehand, as an operator's script would."""
    client = docker_client(settings, timeout=60)
    api = client.api
    try:
        old = api.inspect_container(f"{PROJECT}-backend-1")
        body, _ = clone_config(
            old,
            api.inspect_image(old["Image"]),
            f"{IMAGE}:v2.0.5",
            api.inspect_image(f"{IMAGE}:v2.0.5")["Id"],
            {},
        )
        figures: dict[str, float] = {}
        started = time.perf_counter()
        mark = started
        api.rename(old["Id"], f"{PROJECT}-backend-1-old")
        created = api.create_container_from_config(body, name=f"{PROJECT}-backend-1")
        figures["rename + create"] = time.perf_counter() - mark
        mark = time.perf_counter()
        api.stop(old["Id"], timeout=int(old["Config"].get("StopTimeout") or 10))
        figures["stop"] = time.perf_counter() - mark
        mark = time.perf_counter()
        api.start(created["Id"])
        figures["start"] = time.perf_counter() - mark
        engine_done = time.perf_counter()
        url = settings.api_url + "/health"
        while True:
            try:
                if httpx.get(url, timeout=2).json().get("status") == "healthy":
                    break
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(HAND_POLL_SECONDS)
        healthy = time.perf_counter()
        figures["poll /health until healthy"] = healthy - engine_done
        figures["create + stop + start"] = engine_done - started
        figures["to healthy"] = healthy - started
        api.remove_container(old["Id"], force=True)
        figures["total (removal included)"] = time.perf_counter() - started
        return figures
    finally:
        client.close()


async def measure(rounds: int) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Run the rounds; return every figure of the bot's and of the hand's."""
    settings = _settings(_free_port())
    await asyncio.to_thread(start_podman, settings)
    await asyncio.to_thread(ensure_images, settings)
    await _recreate_database(settings)
    runtime = Runtime.build(settings)
    clock = Clock()
    runtime.gate.clock = clock
    bot: dict[str, list[float]] = defaultdict(list)
    hand: dict[str, list[float]] = defaultdict(list)
    try:
        await migrate(runtime.services.state_db)
        enrollment = await runtime.mfa.enroll(OPERATOR)
        await runtime.mfa.verify(OPERATOR, code_at(enrollment.secret, clock.now), clock.now, confirming=True)
        clock.now += timedelta(seconds=30)
        for _ in range(rounds):
            await asyncio.to_thread(_fresh_faulty_backend, settings)
            for key, value in (await _bot_round(runtime, clock, enrollment.secret)).items():
                bot[key].append(value)
            await asyncio.to_thread(_fresh_faulty_backend, settings)
            for key, value in (await asyncio.to_thread(_hand_round, settings)).items():
                hand[key].append(value)
    finally:
        await runtime.services.aclose()
        await asyncio.to_thread(_clean_up, settings)
    return bot, hand


def _clean_up(settings: Settings) -> None:
    """Remove the benchmark's containers and its image tags (the images stay if tagged elsewhere)."""
    remove_project(settings, PROJECT, timeout=60)
    client = docker_client(settings, timeout=60)
    try:
        for tag in ("v2.0.5", "v2.0.6"):
            with contextlib.suppress(docker.errors.APIError):
                client.images.remove(f"{IMAGE}:{tag}")
    finally:
        client.close()


def main() -> None:
    """Run the benchmark on a Compose project of its own and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    args = parser.parse_args()
    rounds = 3 if args.quick else args.rounds
    bot, hand = asyncio.run(measure(rounds))

    def median_ms(values: list[float]) -> str:
        return f"{statistics.median(values) * 1000:8.0f} ms"

    print(f"/rollback v2.0.6 -> v2.0.5, {rounds} rounds, medians (Podman's Docker API, project {PROJECT})")
    print("  the bot, from approval:")
    for key, values in bot.items():
        print(f"    {key:<52}{median_ms(values)}")
    print("  by hand (docker SDK, create body prepared beforehand):")
    for key, values in hand.items():
        print(f"    {key:<52}{median_ms(values)}")
    ratio = statistics.median(bot["to healthy"]) / statistics.median(hand["to healthy"])
    engine_ratio = statistics.median(bot["to healthy"]) / statistics.median(hand["create + stop + start"])
    extra = statistics.median(bot["to healthy"]) - statistics.median(hand["to healthy"])
    print(f"  overhead, approval to healthy: bot / by hand = {ratio:.2f} ({extra * 1000:+.0f} ms)")
    print(f"  bot to healthy / bare create + stop + start = {engine_ratio:.2f}")
    print(f"SUMMARY\t/rollback approval to healthy\t{statistics.median(bot['to healthy']) * 1000:.0f} ms")
    print(f"SUMMARY\t/rollback overhead vs by hand (to healthy)\t{ratio:.2f}")


if __name__ == "__main__":
    main()
