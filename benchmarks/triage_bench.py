"""Benchmark /triage: wall time against its slowest check and against checking one by one, with
latency added in front of every source; wall time with every source hung; the CPU time of the
graph it posts (the last hour at 15 s, two panels); and a trace lookup in a 1 GB log against
`grep -F | jq`.

Run: python -m benchmarks.triage_bench [--rounds N] [--size-mb MB] [--quick]
         [--skip-latency|--skip-hung|--skip-graph|--skip-trace]
Needs the sandbox running (`chatops sandbox up`) for the latency and graph parts. Prints figures
(and SUMMARY lines for `python -m benchmarks`); asserts nothing.

Latency is added by TCP proxies in front of Prometheus, PostgreSQL, Redis, S3 and the container
engine: every answer arrives that much later (a round trip's worth), however many bytes it holds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from bot.config import Settings
from bot.render.picture import render_png
from bot.services import Services
from commands import graph, triage
from commands.triage_checklist import load_checklist
from tests.netutil import silent_server

LATENCY_MS = {"prometheus": 150, "postgres": 100, "redis": 50, "s3": 200, "engine": 120}
BENCH_DIR = Path(tempfile.gettempdir()) / "chatops-bench"
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


# --- latency proxies ------------------------------------------------------------------------


class LatencyProxy:
    """Forward TCP connections to a target (host:port or unix socket), delivering answers late."""

    def __init__(self, target: tuple[str, int] | str, delay: float) -> None:
        self.target = target
        self.delay = delay
        self.port = 0

    async def start(self) -> int:
        """Listen on a loopback port; return it."""
        server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        self.port = int(server.sockets[0].getsockname()[1])
        return self.port

    async def _connection(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        try:
            if isinstance(self.target, str):
                upstream_reader, upstream_writer = await asyncio.open_unix_connection(self.target)
            else:
                upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(
            self._pump(client_reader, upstream_writer, 0.0),
            self._pump(upstream_reader, client_writer, self.delay),
            return_exceptions=True,
        )

    @staticmethod
    async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
        # Each chunk is due `delay` after it arrived: latency, not a bandwidth limit.
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        loop = asyncio.get_running_loop()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                if not data:
                    break
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()

        sender = asyncio.create_task(deliver())
        try:
            while data := await reader.read(65536):
                queue.put_nowait((loop.time() + delay, data))
        finally:
            queue.put_nowait((0.0, b""))
            await asyncio.gather(sender, return_exceptions=True)
            writer.close()


class ProxyThread:
    """An event loop in a thread of its own, running the proxies away from the measured loop."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="latency-proxies", daemon=True)
        self.thread.start()

    def proxy(self, target: tuple[str, int] | str, delay: float) -> int:
        """Start a proxy; return its port."""
        future: Future[int] = asyncio.run_coroutine_threadsafe(LatencyProxy(target, delay).start(), self.loop)
        return future.result(timeout=10)

    def stop(self) -> None:
        """Cancel every proxied connection, then stop the loop."""

        async def cancel_all() -> None:
            tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(cancel_all(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        self.loop.close()


def _via(url: str, port: int) -> str:
    parts = urlsplit(url)
    netloc = f"{parts.username}@127.0.0.1:{port}" if parts.username else f"127.0.0.1:{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def proxied_settings(base: Settings, proxies: ProxyThread, scale: float) -> Settings:
    """Return settings whose sources are reached through proxies adding LATENCY_MS x scale."""

    def port_of(url: str, default: int) -> tuple[str, int]:
        parts = urlsplit(url)
        return (parts.hostname or "127.0.0.1", parts.port or default)

    def delay(name: str) -> float:
        return LATENCY_MS[name] * scale / 1000

    socket_path = base.docker_host.removeprefix("unix://")
    overrides = {
        "prometheus_url": _via(
            base.prometheus_url, proxies.proxy(port_of(base.prometheus_url, 9090), delay("prometheus"))
        ),
        "platform_database_url": _via(
            base.platform_database_url,
            proxies.proxy(port_of(base.platform_database_url, 5432), delay("postgres")),
        ),
        "redis_url": _via(base.redis_url, proxies.proxy(port_of(base.redis_url, 6379), delay("redis"))),
        "s3_endpoint_url": _via(
            base.s3_endpoint_url, proxies.proxy(port_of(base.s3_endpoint_url, 8333), delay("s3"))
        ),
        "docker_host": f"tcp://127.0.0.1:{proxies.proxy(socket_path, delay('engine'))}",
    }
    return base.model_copy(update=overrides)


def sources_of(services: Services) -> triage.TriageSources:
    """Build the triage's sources from the adapters, as the command registry does."""
    return triage.TriageSources(
        prometheus=services.prometheus,
        platform_db=services.platform_db,
        redis=services.redis,
        storage=services.storage,
        engine=services.engine,
        log_paths=services.settings.log_paths,
        backend_service=services.settings.backend_service,
    )


async def measure_triage(settings: Settings, rounds: int) -> dict[str, Any]:
    """Time the concurrent triage, its slowest check, and the same checks run one after another."""
    checklist = load_checklist()
    services = Services.build(settings)
    sources = sources_of(services)
    advice = triage.advice_of(checklist)
    concurrent: list[float] = []
    slowest: list[float] = []
    sequential: list[float] = []
    last: triage.TriageReport | None = None
    try:
        await triage.run_triage(triage.TriageArgs(), sources, checklist)  # warm the pools
        for _ in range(rounds):
            started = time.perf_counter()
            last = await triage.run_triage(triage.TriageArgs(), sources, checklist)
            concurrent.append((time.perf_counter() - started) * 1000)
            slowest.append(last.slowest_ms)
            started = time.perf_counter()
            for check in checklist.enabled():
                run = triage.new_run(sources, checklist)  # nothing shared: each check on its own
                try:
                    await triage.run_check(check, run, triage.check_timeout(check, checklist, None), advice)
                finally:
                    run.close()
            sequential.append((time.perf_counter() - started) * 1000)
    finally:
        await services.aclose()
    assert last is not None
    return {
        "concurrent_ms": statistics.median(concurrent),
        "slowest_ms": statistics.median(slowest),
        "sequential_ms": statistics.median(sequential),
        "checks": len(last.findings),
        "statuses": last.counts(),
        "top": sorted(last.findings, key=lambda finding: -finding.duration_ms)[:5],
    }


def latency_part(rounds: int) -> list[str]:
    """Run the latency benchmark against the sandbox; return SUMMARY lines."""
    base = Settings(_env_file=None)  # type: ignore[call-arg]
    proxies = ProxyThread()
    try:
        plain = asyncio.run(measure_triage(proxied_settings(base, proxies, 0.0), rounds))
        slow = asyncio.run(measure_triage(proxied_settings(base, proxies, 1.0), rounds))
    finally:
        proxies.stop()
    added = ", ".join(f"{name} +{ms} ms" for name, ms in LATENCY_MS.items())
    print(
        f"/triage, {slow['checks']} checks, {rounds} rounds, medians, against the sandbox through TCP proxies"
    )
    for label, figures in (("proxies, no latency", plain), (f"latency ({added})", slow)):
        print(f"  {label}:")
        print(
            f"    triage {figures['concurrent_ms']:.0f} ms, slowest check {figures['slowest_ms']:.0f} ms,"
            f" checks one after another {figures['sequential_ms']:.0f} ms"
        )
        print(
            f"    triage / slowest check {figures['concurrent_ms'] / figures['slowest_ms']:.2f};"
            f" one after another / triage {figures['sequential_ms'] / figures['concurrent_ms']:.1f}x;"
            f" statuses {figures['statuses']}"
        )
    print(
        "  slowest checks with latency: "
        + ", ".join(f"{f.title} {f.duration_ms:.0f} ms" for f in slow["top"])
    )
    ratio = slow["concurrent_ms"] / slow["slowest_ms"]
    return [
        f"SUMMARY\t/triage with latency on every source: wall / slowest check\t{ratio:.2f}",
        f"SUMMARY\t/triage with latency: one after another / concurrent\t"
        f"{slow['sequential_ms'] / slow['concurrent_ms']:.1f}x",
    ]


# --- every source hung ----------------------------------------------------------------------


async def measure_hung(timeout: float) -> dict[str, float]:
    """Time one triage whose every source accepts connections and never answers."""
    with silent_server() as port:
        hung = f"127.0.0.1:{port}"
        settings = Settings(  # type: ignore[call-arg]
            _env_file=None,
            prometheus_url=f"http://{hung}",
            platform_database_url=f"postgresql://postgres@{hung}/platform",
            redis_url=f"redis://{hung}/0",
            s3_endpoint_url=f"http://{hung}",
            docker_host=f"tcp://{hung}",
            dependency_timeout_seconds=5,
        )
        started = time.perf_counter()
        services = Services.build(settings)
        try:
            report = await triage.run_triage(
                triage.TriageArgs(), sources_of(services), load_checklist(), default_timeout=timeout
            )
            answered = time.perf_counter() - started
        finally:
            await services.aclose()
        closed = time.perf_counter() - started
    return {
        "checks": len(report.findings),
        "timed_out": sum(1 for finding in report.findings if (finding.reason or "").startswith("timeout")),
        "slowest_ms": max(finding.duration_ms for finding in report.findings),
        "report_ms": answered * 1000,
        "closed_ms": closed * 1000,
    }


def hung_part(rounds: int, timeout: float = 0.5) -> list[str]:
    """Time triages of hung sources, each check cut at `timeout`; return SUMMARY lines."""
    runs = [asyncio.run(measure_hung(timeout)) for _ in range(rounds)]
    figures = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
    print(
        f"/triage with every source hung, {timeout:g} s per check, {rounds} rounds, medians:"
        f" {figures['timed_out']:.0f} of {figures['checks']:.0f} checks timed out;"
        f" slowest check {figures['slowest_ms']:.0f} ms, report {figures['report_ms']:.0f} ms,"
        f" clients closed {figures['closed_ms']:.0f} ms"
    )
    return [
        f"SUMMARY\t/triage with every source hung ({timeout:g} s per check): report / clients closed\t"
        f"{figures['report_ms']:.0f} ms / {figures['closed_ms']:.0f} ms"
    ]


# --- the graph the triage posts ----------------------------------------------------------------


async def key_metrics_panels() -> list[graph.GraphData]:
    """Fetch the last hour of the 5xx ratio and P95 latency at 15 s from the sandbox's Prometheus."""
    services = Services.build(Settings(_env_file=None))  # type: ignore[call-arg]
    try:
        report = await graph.key_metrics(
            services.prometheus,
            load_checklist(),
            [],
            since=timedelta(hours=1),
            resolution=timedelta(seconds=15),
            timeout=10.0,
        )
    finally:
        await services.aclose()
    return report.panels


def graph_part(rounds: int) -> list[str]:
    """Time drawing the triage's graph (CPU time of the drawing thread); return SUMMARY lines."""
    panels = asyncio.run(key_metrics_panels())
    render_png(panels)  # the first picture of a process also imports matplotlib
    cpu, wall = [], []
    for _ in range(rounds):
        started_cpu, started = time.thread_time(), time.perf_counter()
        render_png(panels)
        cpu.append((time.thread_time() - started_cpu) * 1000)
        wall.append((time.perf_counter() - started) * 1000)
    points = " + ".join(str(len(panel.timestamps)) for panel in panels)
    print(
        f"graph of the last hour at 15 s ({points} points), {rounds} renders:"
        f" CPU median {statistics.median(cpu):.0f} ms (best {min(cpu):.0f} ms),"
        f" wall median {statistics.median(wall):.0f} ms"
    )
    return [f"SUMMARY\tgraph of the last hour at 15 s ({points} points): CPU to draw\t{min(cpu):.0f} ms"]


# --- trace lookup in a big log --------------------------------------------------------------


def generate_log(path: Path, size: int) -> None:
    """Write `size` bytes of backend-like JSON lines with TRACE at its start, middle and end."""
    rng = random.Random(7)
    paths = ["/api/v1/projects", "/api/v1/projects/17", "/api/v1/auth/login", "/api/v1/uploads"]
    start = time.time() - 86_400
    written = 0
    marks = [0, size // 2, size - 100_000]  # where TRACE goes: the start, the middle, near the end
    with path.open("wb") as handle:
        index = 0
        while written < size:
            batch: list[str] = []
            batch_bytes = 0
            for _ in range(5_000):
                index += 1
                seconds = start + index * 0.01
                stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{index % 1000:03d}Z"
                trace = f"{rng.getrandbits(128):032x}"
                if marks and written + batch_bytes >= marks[0]:
                    trace = TRACE
                    marks.pop(0)
                status = 500 if index % 97 == 0 else 200
                level = "error" if status == 500 else "info"
                line = (
                    f'{{"timestamp":"{stamp}","level":"{level}","event":"http_request",'
                    f'"service":"3dpot-backend","version":"v2.0.5","method":"GET",'
                    f'"path":"{paths[index % 4]}",'
                    f'"status_code":{status},"duration_ms":{rng.random() * 100:.2f},'
                    f'"request_id":"{rng.getrandbits(128):032x}","trace_id":"{trace}","client_ip":"127.0.0.1"}}\n'
                )
                batch.append(line)
                batch_bytes += len(line)
            data = "".join(batch).encode()
            handle.write(data)
            written += len(data)


def ensure_log(size_mb: int) -> Path:
    """Return a generated log of about `size_mb` MB, reusing one from an earlier run."""
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    path = BENCH_DIR / f"trace-{size_mb}mb.log"
    if not path.exists() or abs(path.stat().st_size - size_mb * 1_000_000) > 5_000_000:
        print(f"  generating {path} ({size_mb} MB)...", flush=True)
        generate_log(path, size_mb * 1_000_000)
    return path


# Peak memory is VmHWM: ru_maxrss would count the benchmark's own memory, which a child inherits
# through fork and keeps across exec.
_OURS = """
import json, re, sys, time
from pathlib import Path
from commands import logsearch
path, text = Path(sys.argv[1]), sys.argv[2]
started = time.perf_counter()
found = logsearch.search([path], text) if text else None
elapsed = time.perf_counter() - started
peak = int(re.search(r"VmHWM:\\s+(\\d+)", Path("/proc/self/status").read_text()).group(1))
print(json.dumps({"seconds": elapsed, "matches": len(found.records) if found else 0, "max_rss_kb": peak}))
"""


def run_ours(path: Path, text: str) -> dict[str, float]:
    """Look the id up in a fresh interpreter; return its time, matches and peak memory."""
    done = subprocess.run(
        [sys.executable, "-c", _OURS, str(path), text],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
        timeout=600,
    )
    result: dict[str, float] = json.loads(done.stdout)
    return result


def run_whole(path: Path, text: str) -> dict[str, float]:
    """Run `chatops triage trace <id> --json` over the file, as a user would: the whole command
    (start, settings, the bot's database, the scan, the audit_log rows, the answer); its time."""
    script = Path(sys.executable).parent / "chatops"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "bot"]
    env = {**os.environ, "CHATOPS_LOG_PATHS": str(path)}
    started = time.perf_counter()
    done = subprocess.run(
        [*command, "triage", "trace", text, "--json"],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).resolve().parents[1],
        env=env,
        timeout=600,
    )
    elapsed = time.perf_counter() - started
    matches = len(json.loads(done.stdout).get("entries", [])) if done.stdout.strip() else 0
    return {"seconds": elapsed, "matches": matches, "max_rss_kb": float("nan")}


def run_grep_jq(path: Path, text: str) -> dict[str, float]:
    """Time `grep -F <id> file | jq -c .`; return its time, matches and its largest process's peak memory."""
    with tempfile.NamedTemporaryFile("r", suffix=".json") as output:
        # /usr/bin/time reports the pipeline's largest process (bash, grep or jq), forked from itself.
        command = ["bash", "-c", f"grep -F {text} {path} | jq -c . > {output.name}"]
        timer = ["/usr/bin/time", "-f", "%M"] if Path("/usr/bin/time").exists() else []
        started = time.perf_counter()
        done = subprocess.run([*timer, *command], capture_output=True, text=True, check=False, timeout=600)
        elapsed = time.perf_counter() - started
        matches = len(Path(output.name).read_text().splitlines())
    peak = float(done.stderr.strip().splitlines()[-1]) if timer and done.stderr.strip() else float("nan")
    return {"seconds": elapsed, "matches": matches, "max_rss_kb": peak}


def _timed(runs: int, work: Callable[[], dict[str, float]]) -> dict[str, float]:
    results = [work() for _ in range(runs)]
    return {
        "median": statistics.median(result["seconds"] for result in results),
        "best": min(result["seconds"] for result in results),
        "matches": results[-1]["matches"],
        "max_rss_kb": max(result["max_rss_kb"] for result in results),
    }


def trace_part(size_mb: int, runs: int) -> list[str]:
    """Compare the lookup with grep | jq on a big file; return SUMMARY lines."""
    if shutil.which("jq") is None or shutil.which("grep") is None:
        print("  grep or jq is not installed (scripts/install.sh installs jq): skipping the trace lookup")
        return []
    small = ensure_log(max(size_mb // 10, 10))
    big = ensure_log(size_mb)
    for path in (small, big):
        subprocess.run(
            ["cat", str(path)], stdout=subprocess.DEVNULL, check=True
        )  # both start from page cache
    idle = run_ours(big, "")
    load = os.getloadavg()[0]
    ours_small = _timed(runs, lambda: run_ours(small, TRACE))
    ours = _timed(runs, lambda: run_ours(big, TRACE))
    grep = _timed(runs, lambda: run_grep_jq(big, TRACE))
    whole = _timed(runs, lambda: run_whole(big, TRACE))
    gigabytes = big.stat().st_size / 1e9
    print(f"trace lookup in {big} ({gigabytes:.2f} GB), {runs} runs each, page cache warm")
    print(f"  load average {load:.1f} on {os.cpu_count()} cores")
    print(
        f"  chatops (logsearch.search): median {ours['median']:.2f} s, best {ours['best']:.2f} s,"
        f" {ours['matches']:.0f} lines, {gigabytes / ours['median']:.1f} GB/s"
    )
    print(
        f"  grep -F | jq -c .:          median {grep['median']:.2f} s, best {grep['best']:.2f} s,"
        f" {grep['matches']:.0f} lines"
    )
    print(
        f"  chatops triage trace <id>, the whole command: median {whole['median']:.2f} s,"
        f" best {whole['best']:.2f} s, {whole['matches']:.0f} log lines and audit rows"
    )
    ratio, best_ratio = ours["median"] / grep["median"], ours["best"] / grep["best"]
    print(f"  chatops / grep|jq: {ratio:.2f} (median), {best_ratio:.2f} (best)")
    whole_ratio = whole["median"] / grep["median"]
    best_whole = whole["best"] / grep["best"]
    print(f"  the whole command / grep|jq: {whole_ratio:.2f} (median), {best_whole:.2f} (best)")
    print(
        f"  peak memory (max RSS): chatops {ours['max_rss_kb'] / 1024:.0f} MB on {gigabytes:.2f} GB,"
        f" {ours_small['max_rss_kb'] / 1024:.0f} MB on {small.stat().st_size / 1e9:.2f} GB,"
        f" interpreter and imports alone {idle['max_rss_kb'] / 1024:.0f} MB;"
        f" grep/jq largest process {grep['max_rss_kb'] / 1024:.0f} MB"
    )
    return [
        f"SUMMARY\ttrace lookup in {gigabytes:.1f} GB: chatops / grep|jq time\t{ratio:.2f}",
        f"SUMMARY\ttrace lookup in {gigabytes:.1f} GB, the whole command: chatops / grep|jq time"
        f"\t{whole_ratio:.2f}",
        f"SUMMARY\ttrace lookup peak memory, {gigabytes:.1f} GB vs {small.stat().st_size / 1e9:.1f} GB file\t"
        f"{ours['max_rss_kb'] / 1024:.0f} MB vs {ours_small['max_rss_kb'] / 1024:.0f} MB",
    ]


def main() -> None:
    """Run every part and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5, help="triage rounds per latency setting")
    parser.add_argument("--runs", type=int, default=5, help="runs per trace lookup")
    parser.add_argument("--size-mb", type=int, default=1000, help="size of the generated log")
    parser.add_argument("--quick", action="store_true", help="fewer rounds, a 200 MB log")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--skip-hung", action="store_true")
    parser.add_argument("--skip-graph", action="store_true")
    parser.add_argument("--skip-trace", action="store_true")
    args = parser.parse_args()
    rounds, runs, size = (2, 2, 200) if args.quick else (args.rounds, args.runs, args.size_mb)
    summary: list[str] = []
    if not args.skip_latency:
        summary += latency_part(rounds)
    if not args.skip_hung:
        summary += hung_part(rounds)
    if not args.skip_graph:
        summary += graph_part(max(rounds, 3))
    if not args.skip_trace:
        summary += trace_part(size, runs)
    for line in summary:
        print(line)


if __name__ == "__main__":
    main()
