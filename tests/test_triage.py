"""/triage against real services: Prometheus scraping a sandbox backend with faults, backfilled history,
PostgreSQL with a real slow query and a real ungranted lock, Redis, SeaweedFS, Podman, and dead or
hung sources.

The fault tests run their own backend container and Prometheus (the sandbox manager starts them
under a Compose project and ports of their own), so faults here never meet another test's.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis

from adapters.engine import EngineAdapter
from adapters.postgres import PostgresAdapter
from adapters.prometheus import PrometheusAdapter
from adapters.redis_store import RedisAdapter
from adapters.storage import StorageAdapter
from bot.config import Settings
from bot.render.triage import triage_reply
from bot.services import Services
from commands.triage import (
    Finding,
    LookupArgs,
    TriageArgs,
    TriageReport,
    TriageSources,
    orchestration,
    run_lookup,
    run_triage,
)
from commands.triage_checklist import Checklist, load_checklist, parse_checklist
from sandbox import manager
from sandbox.manager import SandboxStatus
from sandbox.testing import CLEAR_FAULTS, set_faults, wait_for_query
from tests.conftest import make_settings
from tests.fakes import validate_blocks
from tests.netutil import free_port, silent_server

REPO = Path(__file__).resolve().parents[1]
WINDOW = timedelta(seconds=30)


def ports(count: int) -> list[int]:
    """Return loopback ports nothing listens on, all different (held together, then released)."""
    held = []
    try:
        for _ in range(count):
            probe = socket.socket()
            probe.bind(("127.0.0.1", 0))
            held.append(probe)
        return [int(probe.getsockname()[1]) for probe in held]
    finally:
        for probe in held:
            probe.close()


def sources_of(services: Services) -> TriageSources:
    """Build the triage's sources from the bot's adapters, as the registry does."""
    return TriageSources(
        prometheus=services.prometheus,
        platform_db=services.platform_db,
        redis=services.redis,
        storage=services.storage,
        engine=services.engine,
        log_paths=services.settings.log_paths,
        backend_service=services.settings.backend_service,
    )


def by_id(report: TriageReport) -> dict[str, Finding]:
    return {finding.id: finding for finding in report.findings}


def only(*kinds: str, text: str | None = None) -> Checklist:
    """Return the shipped checklist cut down to some kinds (or a checklist from YAML text)."""
    if text is not None:
        return parse_checklist(text)
    full = load_checklist()
    return full.model_copy(update={"checks": [check for check in full.checks if check.kind in kinds]})


async def triage(settings: Settings, checklist: Checklist | None = None, **kwargs: object) -> TriageReport:
    services = Services.build(settings)
    try:
        return await run_triage(
            TriageArgs(window=kwargs.pop("window", None)),  # type: ignore[arg-type]
            sources_of(services),
            checklist or load_checklist(),
            **kwargs,  # type: ignore[arg-type]
        )
    finally:
        await services.aclose()


# --- a backend and a Prometheus of our own ----------------------------------------------------


@pytest.fixture(scope="module")
def stack(sandbox: SandboxStatus, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Run a sandbox backend (Compose project 3dpot-triage) and a Prometheus scraping it every second."""
    root = tmp_path_factory.mktemp("triage-stack")
    api, prometheus = ports(2)
    settings = make_settings(
        sandbox_dir=root,
        compose_project="3dpot-triage",
        api_url=f"http://127.0.0.1:{api}",
        prometheus_url=f"http://127.0.0.1:{prometheus}",
        log_paths=[str(root / "logs" / "*.log*")],
    )
    # A container left by an interrupted run would be reused, bound to that run's port.
    manager.stop_backend(settings)
    try:
        manager.start_backend(settings)
        manager.start_prometheus(settings)
        # Rates over 30 s need a few scrapes; P95 is the last to appear.
        wait_for_query(
            settings,
            "histogram_quantile(0.95, sum by (le) (rate(http_request_duration_seconds_bucket[30s]))) > 0",
            timeout=40,
        )
        yield settings
    finally:
        manager.stop_backend(settings)
        manager.stop_prometheus(settings)


async def test_faults_turn_5xx_latency_and_auth_critical_and_the_logs_lead_to_the_trace(
    stack: Settings,
) -> None:
    before = await triage(stack, window=WINDOW)
    calm = by_id(before)
    assert calm["http_5xx_ratio"].status == "ok", calm["http_5xx_ratio"]
    assert calm["http_p95_latency"].status == "ok"
    p95_before = calm["http_p95_latency"].value
    assert p95_before is not None and p95_before < 0.5
    assert calm["auth_failures"].status == "ok" and calm["containers_running"].status == "ok"

    # 10 % of API requests fail, every API request waits 2.5 s, and ten extra failed logins a second.
    set_faults(stack, error_rate=0.1, latency_ms=2500, auth_burst=10)
    try:
        await asyncio.sleep(WINDOW.total_seconds() + 6)
        after = await triage(stack, window=WINDOW)
    finally:
        set_faults(stack, **CLEAR_FAULTS)
    found = by_id(after)

    ratio = found["http_5xx_ratio"]
    assert ratio.status == "critical", ratio
    assert ratio.value is not None and 0.05 < ratio.value < 0.2
    assert ratio.threshold == "critical > 5 %"
    endpoints = ratio.evidence[1]
    assert endpoints.title == "Endpoints answering 5xx" and endpoints.rows
    assert all(row[0].startswith("/api/v1/") for row in endpoints.rows)
    assert "HTTP 5xx errors" in [advice.title for advice in ratio.advice]

    p95 = found["http_p95_latency"]
    assert p95.status == "critical" and p95.value is not None and p95.value > 2
    assert p95.value > p95_before + 2  # the added latency moved P95
    assert p95.evidence[1].rows, "the slowest endpoints are listed"

    assert found["auth_failures"].status == "critical"
    assert found["mfa_failures"].status in {"warn", "critical"}

    logs = found["log_errors"]
    assert logs.status == "warn" and logs.value is not None and logs.value > 10
    samples = logs.evidence[1]
    trace_id = samples.rows[0][1]
    assert after.status == "critical"
    statuses = [finding.status for finding in after.findings]
    assert statuses == sorted(statuses, key=["critical", "warn", "unknown", "ok"].index)

    # The sample trace id leads to the failing request's log line.
    lookup = await run_lookup(LookupArgs(kind="trace", id=trace_id), stack.log_paths, None, timeout=2)
    assert lookup.log_lines >= 1
    assert any(entry.data.get("status_code", 0) >= 500 for entry in lookup.entries)

    # The real report renders within Slack's limits.
    reply = triage_reply(after)
    for message in [reply.main, *reply.thread]:
        assert validate_blocks(message.blocks) == []


async def test_containers_running_version_cpu_and_a_stopped_backend(stack: Settings) -> None:
    checklist = only("containers")
    report = await triage(stack, checklist)
    found = by_id(report)
    assert found["containers_running"].figure == "1 of 1 running"
    assert found["backend_version"].figure == "v2.0.5"
    cpu = found["containers_cpu"]
    # The figure is the container's real CPU, which a busy machine moves: judge it by the thresholds.
    assert cpu.value is not None and cpu.value >= 0
    assert cpu.status == ("critical" if cpu.value > 0.95 else "warn" if cpu.value > 0.8 else "ok")
    assert found["containers_memory"].value is not None and found["containers_memory"].value < 0.8
    assert found["containers_restarts"].status == "ok"
    client = manager.docker_client(stack)
    try:
        client.containers.get(manager.backend_container_name(stack)).stop(timeout=10)
    finally:
        client.close()
    try:
        stopped = by_id(await triage(stack, checklist))
    finally:
        manager.start_backend(stack)
    assert stopped["containers_running"].status == "critical"
    assert stopped["containers_running"].figure == "0 of 1 running"
    assert "exited" in stopped["containers_running"].headline
    assert stopped["containers_cpu"].status == "unknown"
    assert "service_health" not in {advice.title for advice in stopped["containers_running"].advice}
    assert stopped["containers_running"].advice[0].title == "Service health"


# --- history backfilled with promtool: exact figures -----------------------------------------

STEP = 15
HISTORY = 3600  # one hour of samples, ending an hour ago


def _counter(name: str, labels: str, per_second: float, start: int) -> list[str]:
    return [f"{name}{{{labels}}} {per_second * t:g} {start + t}" for t in range(0, HISTORY + 1, STEP)]


def history(start: int) -> str:
    """Write an hour of the runbook's metrics with known rates, as OpenMetrics for promtool."""
    lines = ["# TYPE http_requests counter"]
    for labels, rate in (
        ('method="GET",path="/api/v1/projects",status="200"', 7.0),
        ('method="GET",path="/api/v1/projects",status="500"', 0.7),
        ('method="POST",path="/api/v1/uploads",status="201"', 2.0),
        ('method="POST",path="/api/v1/uploads",status="503"', 0.3),
    ):
        lines += _counter("http_requests_total", labels, rate, start)
    # Per-second rates of the cumulative buckets: P95 of the sum is 2 + (114-110)/(120-110)*0.5 = 2.2 s.
    buckets = {
        "/api/v1/projects": [0, 0, 0, 0, 10, 30, 50, 80, 90, 100, 100, 100, 100],
        "/api/v1/uploads": [0, 0, 0, 0, 20, 20, 20, 20, 20, 20, 20, 20, 20],
    }
    bounds = [
        "0.005",
        "0.01",
        "0.025",
        "0.05",
        "0.1",
        "0.25",
        "0.5",
        "1.0",
        "2.0",
        "2.5",
        "5.0",
        "10.0",
        "+Inf",
    ]
    lines.append("# TYPE http_request_duration_seconds histogram")
    for path, rates in buckets.items():
        for t in range(0, HISTORY + 1, STEP):
            for bound, rate in zip(bounds, rates, strict=True):
                labels = f'path="{path}",le="{bound}"'
                lines.append(f"http_request_duration_seconds_bucket{{{labels}}} {rate * t:g} {start + t}")
            lines.append(
                f'http_request_duration_seconds_count{{path="{path}"}} {rates[-1] * t:g} {start + t}'
            )
            lines.append(
                f'http_request_duration_seconds_sum{{path="{path}"}} {rates[-1] * t * 0.5:g} {start + t}'
            )
    lines.append("# TYPE rate_limit_hits counter")
    lines += _counter("rate_limit_hits_total", 'reason="login_attempts_exceeded"', 0.8, start)
    lines += _counter("rate_limit_hits_total", 'reason="api_rate_limit"', 0.4, start)
    lines.append("# TYPE auth_failures counter")
    lines += _counter("auth_failures_total", 'reason="invalid_password"', 0.6, start)
    lines += _counter("auth_failures_total", 'reason="mfa_failed"', 0.6, start)
    lines.append("# TYPE permission_denied counter")
    lines += _counter("permission_denied_total", "", 6.0, start)
    lines.append("# TYPE idle_requests counter")
    lines += _counter("idle_requests_total", "", 0.0, start)
    return "\n".join(lines) + "\n# EOF\n"


@pytest.fixture(scope="module")
def backfilled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, datetime]]:
    """A second Prometheus, on a port of its own, holding an hour of backfilled history."""
    root = tmp_path_factory.mktemp("triage-backfill")
    prometheus, nothing = ports(2)
    settings = make_settings(
        sandbox_dir=root,
        prometheus_url=f"http://127.0.0.1:{prometheus}",
        api_url=f"http://127.0.0.1:{nothing}",  # nothing there: only the backfilled series exist
    )
    start = (int(time.time()) - 2 * 3600) // STEP * STEP
    try:
        manager.backfill_prometheus(settings, history(start))
        yield settings, datetime.fromtimestamp(start + HISTORY - 120, UTC)
    finally:
        manager.stop_prometheus(settings)


async def test_backfilled_history_gives_exact_figures(backfilled: tuple[Settings, datetime]) -> None:
    settings, at = backfilled
    report = await triage(settings, only("promql"), at=at)
    found = by_id(report)
    ratio = found["http_5xx_ratio"]
    assert ratio.value == pytest.approx(0.10, abs=1e-9)
    assert (ratio.status, ratio.figure) == ("critical", "10 %")
    assert ratio.evidence[1].rows == [["/api/v1/projects", "0.7/s"], ["/api/v1/uploads", "0.3/s"]]
    assert ratio.headline == "10 %, above the critical threshold of 5 % — top path: /api/v1/projects (0.7/s)"

    p95 = found["http_p95_latency"]
    assert p95.value == pytest.approx(2.2, abs=1e-9)
    assert (p95.status, p95.figure) == ("critical", "2.2 s")
    assert p95.evidence[1].rows == [["/api/v1/projects", "2.25 s"], ["/api/v1/uploads", "97.5 ms"]]

    limits = found["rate_limit_hits"]
    assert limits.value == pytest.approx(1.2) and limits.status == "warn"
    assert limits.evidence[1].rows == [["login_attempts_exceeded", "0.8/s"], ["api_rate_limit", "0.4/s"]]
    assert limits.threshold == "warn > 0.9/s, critical > 3/s (3×/10× baseline 0.3/s)"
    assert found["auth_failures"].value == pytest.approx(1.2) and found["auth_failures"].status == "warn"
    assert found["mfa_failures"].value == pytest.approx(0.6) and found["mfa_failures"].status == "warn"
    denied = found["permission_denied"]
    assert denied.value == pytest.approx(6.0) and denied.status == "critical"
    assert report.status == "critical"
    assert [f.status for f in report.findings] == ["critical", "critical", "critical", "warn", "warn", "warn"]


async def test_prometheus_errors_nan_and_empty_answers_are_shown_for_what_they_are(
    backfilled: tuple[Settings, datetime],
) -> None:
    settings, at = backfilled
    checklist = only(
        text="""
checks:
  - id: broken
    title: Broken query
    kind: promql
    query: sum(rate(http_requests_total[$window])
    critical: 1
  - id: idle_ratio
    title: Ratio with no traffic
    kind: promql
    query: sum(rate(http_requests_total{status="500"}[$window]) * 0) / sum(rate(idle_requests_total[$window]))
    unit: percent
    critical: 0.05
  - id: missing
    title: Missing metric
    kind: promql
    query: sum(rate(no_such_metric_total[$window]))
    critical: 1
  - id: missing_ok
    title: Missing metric, fine
    kind: promql
    query: sum(rate(no_such_metric_total[$window]))
    if_empty: ok
"""
    )
    found = by_id(await triage(settings, checklist, at=at))
    broken = found["broken"]
    assert broken.status == "unknown"
    assert broken.reason is not None and broken.reason.startswith(
        "unexpected answer: Prometheus error bad_data:"
    )
    assert "parse error" in broken.reason
    idle = found["idle_ratio"]
    assert (idle.status, idle.figure) == ("unknown", "NaN")
    assert idle.reason == "Prometheus answered NaN (0/0: no requests in the window)"
    assert (found["missing"].status, found["missing"].figure) == ("unknown", "no data")
    assert found["missing_ok"].status == "ok"


async def test_prometheus_adapter_reports_error_type() -> None:
    with silent_server() as port:
        adapter = PrometheusAdapter(f"http://127.0.0.1:{port}", 0.5)
        with pytest.raises(Exception) as caught:
            await adapter.query("up")
    assert "timeout" in str(caught.value).lower()


# --- PostgreSQL: a real slow query and a real lock wait -----------------------------------------

POSTGRES_CHECKS = """
checks:
  - id: postgres_connections
    title: PostgreSQL connections
    kind: postgres_connections
    warn: 0.001
    critical: 0.99
  - id: postgres_slow_queries
    title: Slow queries
    kind: postgres_slow_queries
    slower_than: 1s
    warn: 0
  - id: postgres_locks
    title: Waiting locks
    kind: postgres_locks
    warn: 0
  - id: postgres_size
    title: Database size
    kind: postgres_size
"""


async def test_postgres_reports_a_running_slow_query_and_an_ungranted_lock(sandbox: SandboxStatus) -> None:
    dsn = make_settings().platform_database_url
    sleeper, holder, waiter = [await asyncpg.connect(dsn) for _ in range(3)]
    key = int.from_bytes(os.urandom(4), "big")
    sleeper_pid, holder_pid, waiter_pid = (conn.get_server_pid() for conn in (sleeper, holder, waiter))
    sleeping = asyncio.create_task(sleeper.execute("SELECT pg_sleep(30) /* triage test */"))
    await holder.execute("SELECT pg_advisory_lock($1)", key)
    waiting = asyncio.create_task(waiter.execute("SELECT pg_advisory_lock($1)", key))
    database = PostgresAdapter("postgres", dsn, 2.0)
    try:
        await asyncio.sleep(1.3)
        report = await run_triage(
            TriageArgs(), TriageSources(None, database, None, None, None, []), only(text=POSTGRES_CHECKS)
        )
    finally:
        await holder.execute("SELECT pg_advisory_unlock($1)", key)
        await holder.execute("SELECT pg_cancel_backend($1)", sleeper_pid)
        await asyncio.gather(sleeping, waiting, return_exceptions=True)
        for conn in (sleeper, holder, waiter):
            await conn.close()
        await database.aclose()
    found = by_id(report)
    slow = found["postgres_slow_queries"]
    assert slow.status == "warn" and slow.value is not None and slow.value >= 2
    rows = {row[0]: row for row in slow.evidence[0].rows}
    assert "pg_sleep(30) /* triage test */" in rows[str(sleeper_pid)][5]
    assert rows[str(sleeper_pid)][4] == "Timeout:PgSleep"
    assert rows[str(waiter_pid)][4] == "Lock:advisory"
    locks = found["postgres_locks"]
    assert locks.status == "warn"
    waiting_row = next(row for row in locks.evidence[0].rows if row[0] == str(waiter_pid))
    assert waiting_row[1:3] == ["advisory", "ExclusiveLock"]
    assert str(holder_pid) in waiting_row[5]
    assert f"pid {waiter_pid} waits for ExclusiveLock held by pid {holder_pid}" in locks.headline
    connections = found["postgres_connections"]
    assert connections.status == "warn" and connections.figure.endswith("%)")
    assert found["postgres_size"].status == "ok" and found["postgres_size"].figure.endswith("MB")


async def test_security_events_of_the_last_day_from_the_audit_log(sandbox: SandboxStatus) -> None:
    database = PostgresAdapter("postgres", make_settings().platform_database_url, 2.0)
    try:
        report = await run_triage(
            TriageArgs(), TriageSources(None, database, None, None, None, []), only("audit")
        )
    finally:
        await database.aclose()
    (audit,) = report.findings
    # The seeded brute-force attack: mariana.costa, 24 failed logins from four IPs.
    assert audit.status == "warn" and audit.value is not None and audit.value >= 24
    assert audit.headline.startswith(
        f"{int(audit.value)} failed logins for one user, above the warn threshold of 5"
    )
    events, failed = audit.evidence
    actions = {row[0] for row in events.rows}
    assert actions <= {"LOGIN (failed)", "MFA_CHALLENGE_FAILED", "RATE_LIMIT_EXCEEDED", "PERMISSION_DENIED"}
    assert "LOGIN (failed)" in actions and "MFA_CHALLENGE_FAILED" in actions
    assert failed.rows[0][0] == "mariana.costa"
    assert "192.168.1.100" in failed.rows[0][2] and "185.220.101.42" in failed.rows[0][2]


# --- Redis with limits of its own ---------------------------------------------------------------


@pytest.fixture
async def small_redis(tmp_path: Path) -> AsyncIterator[str]:
    """Run a real redis-server with maxmemory 2 MB and maxclients 10."""
    binary = shutil.which("redis-server")
    assert binary is not None, "redis-server comes with this machine kind's Redis"
    port = free_port()
    process = subprocess.Popen(
        [
            binary,
            *("--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"),
            *("--maxmemory", "2mb", "--maxmemory-policy", "noeviction", "--maxclients", "10"),
            *("--dir", str(tmp_path)),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        client = aioredis.Redis.from_url(url)
        for _ in range(100):
            try:
                await client.ping()
                break
            except Exception:
                await asyncio.sleep(0.05)
        await client.aclose()
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


async def test_redis_memory_against_maxmemory_and_clients_against_maxclients(small_redis: str) -> None:
    filler = aioredis.Redis.from_url(small_redis)
    extra = [aioredis.Redis.from_url(small_redis) for _ in range(7)]
    adapter = RedisAdapter(small_redis, 2.0)
    try:
        for index in range(1000):
            info = await filler.info("memory")
            if info["used_memory"] / info["maxmemory"] > 0.85:
                break
            await filler.set(f"k{index}", b"x" * 10_000)
        for client in extra:
            await client.ping()
        report = await run_triage(
            TriageArgs(),
            TriageSources(None, None, adapter, None, None, []),
            only("redis_memory", "redis_clients"),
        )
    finally:
        for client in [filler, *extra]:
            await client.aclose()
        await adapter.aclose()
    found = by_id(report)
    memory = found["redis_memory"]
    assert memory.status in {"warn", "critical"} and memory.value is not None and memory.value > 0.8
    assert "of 2.0 MB" in memory.figure and "noeviction" in memory.headline
    clients = found["redis_clients"]
    assert clients.status in {"warn", "critical"}, clients
    assert clients.figure in {"9 of 10", "10 of 10"}


# --- storage, clock, and sources that are down or hung ----------------------------------------


async def test_storage_usage_and_a_missing_bucket(sandbox: SandboxStatus) -> None:
    report = await triage(make_settings(), only("storage"))
    (bucket,) = report.findings
    assert bucket.status == "ok" and "objects" in bucket.figure and "reachable" in bucket.headline
    missing = await triage(make_settings(s3_bucket="no-such-bucket-for-triage"), only("storage"))
    (gone,) = missing.findings
    assert (gone.status, gone.figure) == ("critical", "bucket missing")
    assert gone.advice[0].title == "Storage full"


async def test_clock_skew_against_postgres_and_redis(sandbox: SandboxStatus) -> None:
    settings = make_settings()
    database = PostgresAdapter("postgres", settings.platform_database_url, 2.0)
    redis = RedisAdapter(settings.redis_url, 2.0)
    try:
        fine = await run_triage(
            TriageArgs(), TriageSources(None, database, redis, None, None, []), only("clock")
        )

        def behind() -> datetime:
            return datetime.now(UTC) - timedelta(seconds=40)

        skewed_sources = TriageSources(None, database, redis, None, None, [], clock=behind)
        skewed = await run_triage(TriageArgs(), skewed_sources, only("clock"))
    finally:
        await database.aclose()
        await redis.aclose()
    (ok,) = fine.findings
    assert ok.status == "ok" and ok.value is not None and ok.value < 0.5
    assert {row[0] for row in ok.evidence[0].rows} == {"PostgreSQL now()", "Redis TIME"}
    (bad,) = skewed.findings
    assert bad.status == "critical" and bad.value == pytest.approx(40, abs=0.5)
    assert bad.advice[0].title == "MFA codes not working"
    assert any("ntpdate" in step for step in bad.advice[0].steps)


def _error_log(directory: Path) -> list[str]:
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    record = {
        "timestamp": now,
        "level": "error",
        "path": "/api/v1/projects",
        "status_code": 500,
        "trace_id": "ab" * 16,
    }
    (directory / "app.log").write_text(json.dumps(record) + "\n")
    return [str(directory / "*.log")]


async def test_dead_sources_are_unknown_with_the_reason_while_the_rest_answer(tmp_path: Path) -> None:
    dead = f"127.0.0.1:{free_port()}"
    settings = make_settings(
        prometheus_url=f"http://{dead}",
        platform_database_url=f"postgresql://postgres@{dead}/platform",
        redis_url=f"redis://{dead}/0",
        s3_endpoint_url=f"http://{dead}",
        docker_host=f"tcp://{dead}",
        log_paths=_error_log(tmp_path / "logs"),
    )
    report = await triage(settings)
    found = by_id(report)
    answered = {"log_errors", "disk_space"}
    for finding in report.findings:
        if finding.id in answered:
            continue
        assert finding.status == "unknown", finding
        assert finding.reason is not None and finding.reason.startswith("refused"), finding
        assert finding.headline.startswith("could not check: refused")
    assert found["log_errors"].status == "warn" and found["log_errors"].value == 1
    assert found["disk_space"].status == "ok"
    assert found["postgres_connections"].advice[0].title == "Database connection failed"
    assert found["redis_memory"].advice[0].title == "Redis connection timeout"
    assert report.status == "warn"


async def test_hung_sources_are_all_asked_at_once_and_each_check_is_cut_at_its_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """How long a triage of hung sources takes: benchmarks/triage_bench.py."""
    events: list[tuple[str, str]] = []
    measure = orchestration._measure

    async def noted(check: Any, run: Any, timeout: float) -> Any:
        events.append(("asked", check.id))
        try:
            found = await measure(check, run, timeout)
        except asyncio.CancelledError:  # what the check's own time limit does to it
            events.append(("cut", check.id))
            raise
        except BaseException:
            events.append(("failed", check.id))
            raise
        events.append(("answered", check.id))
        return found

    monkeypatch.setattr(orchestration, "_measure", noted)
    with silent_server() as port:
        hung = f"127.0.0.1:{port}"
        settings = make_settings(
            prometheus_url=f"http://{hung}",
            platform_database_url=f"postgresql://postgres@{hung}/platform",
            redis_url=f"redis://{hung}/0",
            s3_endpoint_url=f"http://{hung}",
            docker_host=f"tcp://{hung}",
            log_paths=_error_log(tmp_path / "logs"),
            dependency_timeout_seconds=5,
        )
        report = await triage(settings, default_timeout=0.5)
    found = by_id(report)
    local = {"log_errors", "disk_space"}  # read from this machine, never hung
    hung_checks = {finding.id for finding in report.findings} - local
    assert len(hung_checks) == len(report.findings) - 2 > 10
    for finding in report.findings:
        if finding.id in local:
            continue
        assert (finding.status, finding.reason) == ("unknown", "timeout: no answer within 0.5 s"), finding
        assert finding.timeout_seconds == 0.5
    assert found["log_errors"].status == "warn"
    # Every check was asked before any was given up on (concurrent, not one after another), and
    # each hung one was cut by its own 0.5 s limit, not by the sources' 5 s timeouts.
    asked = [check for kind, check in events if kind == "asked"]
    assert events[: len(asked)] == [("asked", check) for check in asked], events
    assert set(asked) == {finding.id for finding in report.findings}
    assert {check for kind, check in events if kind == "cut"} == hung_checks, events
    assert {check for kind, check in events if kind == "answered"} == local, events


async def test_engine_adapter_names_a_missing_socket() -> None:
    engine = EngineAdapter("unix:///nonexistent/podman.sock", "3dpot", "backend", 1.0)
    with pytest.raises(Exception) as caught:
        await engine.platform_stats()
    assert "refused" in str(caught.value)


async def test_storage_adapter_counts_at_most_what_it_is_asked(sandbox: SandboxStatus) -> None:
    settings = make_settings()
    storage = StorageAdapter(
        settings.s3_endpoint_url,
        settings.s3_bucket,
        settings.aws_access_key_id,
        settings.aws_secret_access_key.get_secret_value(),
        settings.s3_region,
        2.0,
    )
    partial = await storage.usage(max_objects=5)
    full = await storage.usage()
    assert (partial.objects, partial.complete) == (5, False)
    assert full.complete and full.objects >= 40 and full.bytes > partial.bytes


@pytest.mark.usefixtures("postgres")  # the CLI records its run in the bot's database
def test_cli_triage_json_exits_1_and_reports_each_finding(tmp_path: Path) -> None:
    dead = f"127.0.0.1:{free_port()}"
    env = {
        **os.environ,
        "CHATOPS_PROMETHEUS_URL": f"http://{dead}",
        "CHATOPS_REDIS_URL": f"redis://{dead}/0",
        "CHATOPS_S3_ENDPOINT_URL": f"http://{dead}",
        "DOCKER_HOST": f"tcp://{dead}",
        "CHATOPS_LOG_PATHS": ",".join(_error_log(tmp_path / "logs")),
        "CHATOPS_TRIAGE_CHECK_TIMEOUT_SECONDS": "3",
    }
    done = subprocess.run(
        [sys.executable, "-m", "bot", "triage", "--json"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=60,
    )
    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    statuses = {finding["id"]: finding["status"] for finding in report["findings"]}
    assert statuses["log_errors"] == "warn" and statuses["http_5xx_ratio"] == "unknown"
    assert all(finding["timeout_seconds"] == 3 for finding in report["findings"])
    assert not math.isnan(report["duration_ms"])
    text = subprocess.run(
        [sys.executable, "-m", "bot", "triage", "logs", "error", "since=1h"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=60,
    )
    assert text.returncode == 0, text.stderr
    assert "/api/v1/projects" in text.stdout and "1 matching" in text.stdout
