"""Benchmark cold start: how long each `chatops` command takes, from a fresh process, to print its
first byte and to finish, against `python -c pass` and `psql -c 'select 1'`; and the resident
memory of an idle `chatops serve`.

Run: python -m benchmarks.startup_bench [--runs N] [--quick] [--skip-serve]
Commands that reach dependencies are pointed at dead endpoints (a loopback port nothing listens on,
so every connection is refused at once): what is timed is the start and the command's own work,
not a dependency's answer. Runs are interleaved (one of each command, then again), so that a busy
moment of the machine spreads over every command. Prints medians with the spread (fastest-slowest)
and SUMMARY lines for `python -m benchmarks`; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import selectors
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bot.cli.usage import BOT_COMMANDS
from bot.registry import COMMANDS
from tests.netutil import free_port

REPO = Path(__file__).resolve().parents[1]
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
LOG_DIR = Path(tempfile.gettempdir()) / "chatops-startup-bench-logs"


def chatops() -> list[str]:
    """Return how a user runs chatops: the installed script beside this interpreter, else `-m bot`."""
    script = Path(sys.executable).parent / "chatops"
    return [str(script)] if script.exists() else [sys.executable, "-m", "bot"]


def dead_env(log_dir: Path) -> dict[str, str]:
    """Return an environment whose every dependency is a refused loopback port (and no Slack)."""
    dead = f"127.0.0.1:{free_port()}"
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("CHATOPS_", "SLACK_", "GITHUB_")) and key != "DOCKER_HOST"
    }
    env.update(
        {
            "CHATOPS_API_URL": f"http://{dead}",
            "CHATOPS_PROMETHEUS_URL": f"http://{dead}",
            "CHATOPS_S3_ENDPOINT_URL": f"http://{dead}",
            "CHATOPS_REDIS_URL": f"redis://{dead}/0",
            "CHATOPS_PLATFORM_DATABASE_URL": f"postgresql://postgres@{dead}/platform",
            "CHATOPS_STATE_DATABASE_URL": f"postgresql://postgres@{dead}/state",
            "CHATOPS_TRAIL_ANCHOR_STORE": "",
            "CHATOPS_LOG_PATHS": str(log_dir / "*.log*"),
            "CHATOPS_DEPENDENCY_TIMEOUT_SECONDS": "1",
            "DOCKER_HOST": f"tcp://{dead}",
        }
    )
    return env


@dataclass
class Timings:
    """One command's runs: seconds to its first byte (stdout or stderr) and to its exit."""

    first: list[float] = field(default_factory=list)
    total: list[float] = field(default_factory=list)
    codes: set[int] = field(default_factory=set)


def run_once(argv: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    """Start `argv`; return the seconds to its first byte of output, to its exit, and its exit code."""
    started = time.perf_counter()
    process = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None and process.stderr is not None
    first = float("nan")
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        selector.register(process.stderr, selectors.EVENT_READ)
        open_pipes = 2
        while open_pipes:
            for key, _ in selector.select():
                chunk = os.read(key.fd, 65536)
                if chunk and first != first:  # first byte, whichever pipe it came on
                    first = time.perf_counter() - started
                if not chunk:
                    selector.unregister(key.fileobj)
                    open_pipes -= 1
    code = process.wait()
    return first, time.perf_counter() - started, code


def commands() -> list[tuple[str, list[str]]]:
    """Return what is timed: the baselines, then every command's help, then real commands."""
    tool = chatops()
    timed: list[tuple[str, list[str]]] = [("python -c pass", [sys.executable, "-c", "pass"])]
    if shutil.which("psql"):
        psql = ["psql", "-X", "-h", "127.0.0.1", "-U", "postgres", "-tAc", "select 1"]
        timed.append(("psql -c 'select 1'", psql))
    timed.append(("chatops --help", [*tool, "--help"]))
    for name in [*COMMANDS, *BOT_COMMANDS]:
        timed.append((f"chatops {name} --help", [*tool, name, "--help"]))
    timed += [
        ("chatops config", [*tool, "config"]),
        ("chatops health --json (dead endpoints)", [*tool, "health", "--json"]),
        ("chatops triage trace <id> (dead endpoints)", [*tool, "triage", "trace", TRACE]),
        ("chatops sandbox fault --help", [*tool, "sandbox", "fault", "--help"]),
    ]
    return timed


def cold_start(runs: int) -> list[str]:
    """Time every command `runs` times, interleaved; print them and return SUMMARY lines."""
    log_dir = LOG_DIR
    log_dir.mkdir(parents=True, exist_ok=True)
    (log_dir / "backend.log").write_text('{"trace_id": "0", "event": "nothing to find"}\n')
    env = dead_env(log_dir)
    timed = commands()
    results = {label: Timings() for label, _ in timed}
    for _, argv in timed:  # warm the page cache and the bytecode once, untimed
        run_once(argv, env)
    loads = [os.getloadavg()[0]]
    for _ in range(runs):
        for label, argv in timed:
            first, total, code = run_once(argv, env)
            results[label].first.append(first * 1000)
            results[label].total.append(total * 1000)
            results[label].codes.add(code)
        loads.append(os.getloadavg()[0])
    print(
        f"cold start, {runs} runs each (interleaved), load average {min(loads):.1f}-{max(loads):.1f}"
        f" on {os.cpu_count()} cores; ms, median (fastest-slowest)"
    )
    print(f"  {'command':<48} {'first byte':>22} {'whole':>22}  exit")
    for label, _ in timed:
        timing = results[label]
        print(
            f"  {label:<48} {_spread(timing.first):>22} {_spread(timing.total):>22}"
            f"  {','.join(str(code) for code in sorted(timing.codes))}"
        )
    helps = {label: statistics.median(t.first) for label, t in results.items() if label.endswith("--help")}
    slowest_help = max((label for label in helps if label != "chatops --help"), key=helps.__getitem__)
    summary = [
        f"SUMMARY\tchatops --help, first byte (python -c pass: whole)\t"
        f"{helps['chatops --help']:.0f} ms ({statistics.median(results['python -c pass'].total):.0f} ms)",
        f"SUMMARY\tslowest chatops <command> --help, first byte ({slowest_help.split()[1]})\t"
        f"{helps[slowest_help]:.0f} ms",
        # What every command pays before its own work: start, settings, the answer printed.
        "SUMMARY\tchatops config (start and settings, no dependency): first byte\t"
        f"{statistics.median(results['chatops config'].first):.0f} ms",
        "SUMMARY\tchatops health --json, dead endpoints (its client libraries included): first byte\t"
        f"{statistics.median(results['chatops health --json (dead endpoints)'].first):.0f} ms",
    ]
    psql = results.get("psql -c 'select 1'")
    if psql is not None:
        summary.append(f"SUMMARY\tpsql -c 'select 1', whole\t{statistics.median(psql.total):.0f} ms")
    return summary


def _spread(values: list[float]) -> str:
    if any(value != value for value in values):  # NaN: no output at all
        return "-"
    return f"{statistics.median(values):.0f} ({min(values):.0f}-{max(values):.0f})"


def idle_serve(rounds: int) -> list[str]:
    """Measure the resident memory of `chatops serve` (HTTP, fake Slack) idle, then after 5 commands.

    Idle is started and answering /healthz, nothing else yet; /health then loads what it talks to
    (boto3 and the S3 model, the Docker SDK, redis-py), which stays loaded.
    """
    from benchmarks.ack_bench import TOKEN, bot_process, burst, rss_mb
    from tests.fakes import FakeSlack

    started_mb: list[float] = []
    after_mb: list[float] = []
    # The platform dead, the bot's own database alive (as `chatops serve` runs): it records requests.
    dead = {
        key: value
        for key, value in dead_env(LOG_DIR).items()
        if key.startswith("CHATOPS_") and key != "CHATOPS_STATE_DATABASE_URL"
    }
    dead["DOCKER_HOST"] = dead_env(LOG_DIR)["DOCKER_HOST"]
    with FakeSlack(tokens={TOKEN}, rate_limits=False) as fake:
        for _ in range(rounds):
            with bot_process(fake, dead) as (url, process):
                time.sleep(2.0)  # idle: started, answered /healthz, nothing since
                started_mb.append(rss_mb(process.pid))
                asyncio.run(burst(url, fake, 5, 700_000))
                time.sleep(1.0)
                after_mb.append(rss_mb(process.pid))
            fake.reset()
    print(
        f"chatops serve (HTTP, fake Slack, platform dead), {rounds} starts: resident memory idle"
        f" {_spread(started_mb)} MB, after 5 /health commands {_spread(after_mb)} MB"
    )
    return [
        f"SUMMARY\tchatops serve resident memory: idle / after 5 commands\t"
        f"{statistics.median(started_mb):.0f} MB / {statistics.median(after_mb):.0f} MB"
    ]


def main() -> None:
    """Run both parts and print their figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7, help="runs per command")
    parser.add_argument("--quick", action="store_true", help="3 runs each, 2 serve starts")
    parser.add_argument("--skip-serve", action="store_true")
    args = parser.parse_args()
    runs, serves = (3, 2) if args.quick else (args.runs, 3)
    summary = cold_start(runs)
    if not args.skip_serve:
        summary += idle_serve(serves)
    for line in summary:
        print(line)


if __name__ == "__main__":
    main()
