"""The sandbox: a real backend container, Prometheus, SeaweedFS S3 and PostgreSQL, brought up once."""

from __future__ import annotations

import os
import re
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
import pytest

from bot.config import Settings
from sandbox import manager
from sandbox.backend import DURATION_BUCKETS, Faults, create_app, faults_from_env
from sandbox.images import BASE_IMAGE, VERSIONS
from sandbox.manager import SandboxStatus
from sandbox.platform_db import BRUTE_FORCE_USERNAME, generate_audit_rows
from sandbox.testing import (
    CLEAR_FAULTS,
    backend_log_lines,
    backend_metric_total,
    ensure_sandbox,
    prometheus_query,
    sandbox_settings,
    wait_for_query,
)

HEX32 = re.compile(r"^[0-9a-f]{32}$")


@pytest.fixture(scope="session")
def settings() -> Settings:
    return sandbox_settings()


@pytest.fixture(scope="session")
def sandbox(settings: Settings, postgres: str, redis: str) -> SandboxStatus:
    return ensure_sandbox(settings)


# --- backend, in process (no sandbox needed) -----------------------------------------------


def test_faulty_release_defaults_and_env_overrides() -> None:
    assert faults_from_env("v2.0.5", {}) == Faults()
    faulty = faults_from_env("v2.0.6", {})
    assert faulty.health == "fail" and faulty.error_rate == pytest.approx(0.3)
    fixed = faults_from_env("v2.0.6", {"FAULT_HEALTH": "ok", "FAULT_ERROR_RATE": "0"})
    assert fixed.health == "ok" and fixed.error_rate == 0


async def test_backend_app_in_process(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    app = create_app(version="v2.0.5", log_path=log, faults=Faults(), port=0, traffic_rps=0)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://backend") as client:
        assert (await client.get("/health")).json() == {
            "status": "healthy",
            "service": "3dpot-backend",
            "version": "v2.0.5",
        }
        assert (await client.post("/api/v1/auth/mfa", json={"code": "1"})).status_code == 401
        assert (await client.post("/api/v1/auth/login", json={"password": "x"})).status_code == 401
        assert (await client.post("/api/v1/projects", json={"role": "viewer"})).status_code == 403
        assert (await client.post("/_sandbox/faults", json={"error_rate": 2})).status_code == 400
        await client.post("/_sandbox/faults", json={"error_rate": 1, "health": "fail"})
        response = await client.get("/api/v1/projects")
        assert response.status_code == 500
        assert (await client.get("/health")).status_code == 503
        metrics = (await client.get("/metrics")).text
    for line in (
        'auth_failures_total{reason="mfa_failed"} 1.0',
        'auth_failures_total{reason="invalid_password"} 1.0',
        "permission_denied_total 1.0",
        'http_requests_total{method="GET",path="/api/v1/projects",status="500"} 1.0',
        'rate_limit_hits_total{reason="login_attempts_exceeded"} 0.0',
    ):
        assert line in metrics
    for bucket in DURATION_BUCKETS:
        assert f'le="{bucket}"' in metrics
    lines = [line for line in log.read_text().splitlines() if '"http_request"' in line]
    assert any('"status_code":500' in line and '"error":' in line for line in lines)
    assert response.headers["x-request-id"] in log.read_text()


def test_audit_rows_are_deterministic() -> None:
    now = datetime(2025, 1, 1, tzinfo=UTC)
    assert generate_audit_rows(500, now) == generate_audit_rows(500, now)


# --- the real sandbox -----------------------------------------------------------------------


def test_up_reports_every_component_running(sandbox: SandboxStatus) -> None:
    assert sandbox.running, str(sandbox)
    names = ["db", "s3", "podman", "backend", "prometheus", "alertmanager"]
    assert [c.name for c in sandbox.components] == names
    assert "sandbox" in str(sandbox)


async def test_status_reports_running(sandbox: SandboxStatus, settings: Settings) -> None:
    result = await manager.status(settings)
    assert result.running, str(result)
    assert result.component("backend").info["version"] == "v2.0.5"


def engine_objects(settings: Settings) -> dict[str, object]:
    """Return the backend container's id and start time, and the id of every sandbox image."""
    client = manager.docker_client(settings)
    try:
        container = client.containers.get(manager.backend_container_name(settings))
        found: dict[str, object] = {
            "container": container.id,
            "started_at": container.attrs["State"]["StartedAt"],
        }
        for ref in [BASE_IMAGE, *(f"{settings.backend_image}:{version}" for version in VERSIONS)]:
            found[ref] = client.images.get(ref).id
        return found
    finally:
        client.close()


def test_a_second_up_reuses_everything(sandbox: SandboxStatus, settings: Settings) -> None:
    """Up on a running sandbox starts nothing again (how long it takes: benchmarks/health_bench.py)."""
    first = ensure_sandbox(settings)
    before = engine_objects(settings)
    again = ensure_sandbox(settings)
    assert again.running, str(again)
    # The same processes, the same container and images, the same seeded data.
    for name in ("s3", "podman", "prometheus", "alertmanager"):
        assert again.component(name).info["pid"] == first.component(name).info["pid"], str(again)
    for name in ("s3", "backend", "prometheus", "alertmanager"):
        assert again.component(name).detail.endswith(", reused"), str(again)
    assert again.component("db").detail.endswith("audit_log rows (reused)"), str(again)
    assert engine_objects(settings) == before


def test_backend_health(sandbox: SandboxStatus, settings: Settings) -> None:
    response = httpx.get(f"{settings.api_url}/health", timeout=3)
    assert response.status_code == 200
    assert response.json() == {"status": "healthy", "service": "3dpot-backend", "version": "v2.0.5"}


def test_backend_container_carries_compose_labels(sandbox: SandboxStatus, settings: Settings) -> None:
    client = manager.docker_client(settings)
    try:
        found = client.containers.list(
            filters={
                "label": [
                    f"com.docker.compose.project={settings.compose_project}",
                    f"com.docker.compose.service={settings.backend_service}",
                ]
            }
        )
        assert [c.name for c in found] == [manager.BACKEND_CONTAINER]
        attrs = found[0].attrs
        assert attrs["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
        assert attrs["HostConfig"]["PortBindings"]["8000/tcp"][0]["HostPort"] == "18080"
        assert attrs["Config"]["StopTimeout"] == 10
    finally:
        client.close()


def test_prometheus_scrapes_backend(sandbox: SandboxStatus, settings: Settings) -> None:
    result = wait_for_query(settings, 'sum(http_requests_total{job="3dpot-backend"})', timeout=20)
    assert float(result[0]["value"][1]) > 0
    buckets = prometheus_query(settings, "count(http_request_duration_seconds_bucket)")
    assert buckets and float(buckets[0]["value"][1]) > 0


def test_bucket_has_objects(sandbox: SandboxStatus, settings: Settings) -> None:
    s3 = manager.s3_client(settings)
    uploads = s3.list_objects_v2(Bucket=settings.s3_bucket, Prefix="uploads/")
    projects = s3.list_objects_v2(Bucket=settings.s3_bucket, Prefix="projects/")
    assert uploads["KeyCount"] >= 10 and projects["KeyCount"] >= 10


async def test_audit_log_has_brute_force_pattern(sandbox: SandboxStatus, settings: Settings) -> None:
    conn = await asyncpg.connect(settings.platform_database_url, timeout=5)
    try:
        # The runbook's own query for failed-login patterns.
        rows = await conn.fetch(
            """
            SELECT username, COUNT(*) AS failed_attempts, array_agg(DISTINCT ip_address) AS ips
            FROM audit_log
            WHERE action = 'LOGIN'
              AND details->>'success' = 'false'
              AND timestamp > NOW() - INTERVAL '24 hours'
            GROUP BY username
            HAVING COUNT(*) > 5
            ORDER BY failed_attempts DESC
            """
        )
        assert rows and rows[0]["username"] == BRUTE_FORCE_USERNAME
        assert len(rows[0]["ips"]) >= 3
        by_ip = await conn.fetchval(
            "SELECT count(*) FROM audit_log WHERE ip_address = '192.168.1.100' "
            "AND timestamp > NOW() - INTERVAL '24 hours'"
        )
        assert by_ip > 5
        reasons = {
            r["reason"]
            for r in await conn.fetch(
                "SELECT DISTINCT details->>'reason' AS reason FROM audit_log "
                "WHERE action = 'MFA_CHALLENGE_FAILED'"
            )
        }
        assert {"invalid_code", "expired_code", "replayed_code"} <= reasons
        oldest = await conn.fetchval("SELECT min(timestamp) FROM audit_log")
        assert datetime.now(UTC) - oldest > timedelta(days=2)
        sample = await conn.fetchval(
            "SELECT details FROM audit_log WHERE action = 'PERMISSION_DENIED' LIMIT 1"
        )
        assert '"request_id"' in sample and '"trace_id"' in sample
    finally:
        await conn.close()


def test_backend_log_has_json_lines(sandbox: SandboxStatus, settings: Settings) -> None:
    deadline = time.monotonic() + 10
    requests: list[dict[str, object]] = []
    while time.monotonic() < deadline and len(requests) < 5:
        requests = [line for line in backend_log_lines(settings) if line.get("event") == "http_request"]
        time.sleep(0.2)
    assert len(requests) >= 5
    line = requests[-1]
    for key in ("timestamp", "level", "method", "path", "status_code", "duration_ms"):
        assert key in line
    assert HEX32.match(str(line["request_id"])) and HEX32.match(str(line["trace_id"]))
    assert datetime.fromisoformat(str(line["timestamp"])).tzinfo is not None


def test_error_fault_shows_in_metrics_and_logs(sandbox: SandboxStatus, settings: Settings) -> None:
    def errors() -> float:
        return backend_metric_total(
            settings, "http_requests_total", lambda labels: labels.get("status", "").startswith("5")
        )

    before = errors()
    manager.set_faults(settings, error_rate=0.1)
    try:
        assert manager.get_faults(settings)["error_rate"] == pytest.approx(0.1)
        deadline = time.monotonic() + 10
        while errors() - before < 3 and time.monotonic() < deadline:
            time.sleep(0.3)
        assert errors() - before >= 3
        logged = [
            line
            for line in backend_log_lines(settings)
            if line.get("level") == "error" and line.get("status_code") == 500
        ]
        assert logged and "error" in logged[-1]
    finally:
        manager.set_faults(settings, **CLEAR_FAULTS)


@pytest.mark.stops_services
def test_stop_and_start_s3(sandbox: SandboxStatus, settings: Settings) -> None:
    manager.stop_s3(settings)
    try:
        assert not manager.s3_status(settings).running
    finally:
        started = manager.start_s3(settings)
    assert started.running
    s3 = manager.s3_client(settings)
    assert s3.list_objects_v2(Bucket=settings.s3_bucket)["KeyCount"] > 0


@pytest.mark.stops_services
def test_faulty_version_and_recreate_from_attrs(sandbox: SandboxStatus, settings: Settings) -> None:
    """Run v2.0.6, then recreate the container from its attrs with the v2.0.5 image (a rollback)."""
    faulty = manager.start_backend(settings, "v2.0.6")
    try:
        assert faulty.info["version"] == "v2.0.6"
        response = httpx.get(f"{settings.api_url}/health", timeout=3)
        assert response.status_code == 503 and response.json()["status"] == "unhealthy"
        client = manager.docker_client(settings)
        try:
            old = client.containers.get(manager.BACKEND_CONTAINER)
            config, host = old.attrs["Config"], old.attrs["HostConfig"]
            old.stop(timeout=10)
            old.remove()
            host_config = client.api.create_host_config(
                binds=host["Binds"],
                port_bindings={
                    int(port.split("/")[0]): (b[0]["HostIp"], int(b[0]["HostPort"]))
                    for port, b in host["PortBindings"].items()
                },
                restart_policy=host["RestartPolicy"],
                init=host.get("Init"),
            )
            created = client.api.create_container(
                "3dpot-backend:v2.0.5",
                name=manager.BACKEND_CONTAINER,
                environment=config["Env"],
                labels=config["Labels"],
                ports=[int(p.split("/")[0]) for p in config["ExposedPorts"]],
                host_config=host_config,
                stop_timeout=config.get("StopTimeout"),
            )
            client.api.start(created["Id"])
        finally:
            client.close()
        deadline = time.monotonic() + 20
        body: dict[str, object] = {}
        while time.monotonic() < deadline:
            try:
                body = httpx.get(f"{settings.api_url}/health", timeout=2).json()
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        # The image's version wins over the APP_VERSION copied along with the old Env.
        assert body == {"status": "healthy", "service": "3dpot-backend", "version": "v2.0.5"}
    finally:
        manager.start_backend(settings, "v2.0.5")


@pytest.mark.stops_services
def test_a_backend_whose_processes_were_killed_is_recreated(
    sandbox: SandboxStatus, settings: Settings
) -> None:
    """A session's end kills every process it started; Podman still calls the container running."""
    client = manager.docker_client(settings)
    try:
        main_pid = int(client.containers.get(manager.BACKEND_CONTAINER).attrs["State"]["Pid"])
        conmon = int(Path(f"/proc/{main_pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        # conmon (the container's parent) first, so nothing is left to tell Podman it exited.
        for pid in (conmon, main_pid):
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)
        assert client.containers.get(manager.BACKEND_CONTAINER).status == "running"
    finally:
        client.close()
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{settings.api_url}/health", timeout=2)

    started = manager.start_backend(settings)

    assert started.running and "recreated (its process had died)" in started.detail
    assert httpx.get(f"{settings.api_url}/health", timeout=3).json()["status"] == "healthy"


@pytest.mark.stops_services
def test_backfilled_history_is_queryable(sandbox: SandboxStatus, settings: Settings) -> None:
    start = int(time.time()) - 3 * 3600
    lines = ["# TYPE sandbox_backfill_probe gauge"]
    lines += [f"sandbox_backfill_probe 42 {start + i * 60}" for i in range(60)]
    manager.backfill_prometheus(settings, "\n".join(lines) + "\n# EOF\n")
    result = prometheus_query(settings, "max_over_time(sandbox_backfill_probe[4h])")
    assert result and float(result[0]["value"][1]) == 42
    # Live scraping goes on after the restart.
    wait_for_query(settings, 'up{job="3dpot-backend"} == 1', timeout=15)
