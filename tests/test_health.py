"""`/health` against real services, up, down, hung and misconfigured."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from adapters.base import Pingable
from bot.config import Settings
from bot.services import Services
from commands.health import HealthReport, check_health
from tests.netutil import free_port, silent_server

REPO = Path(__file__).resolve().parents[1]


def settings_for(**overrides: object) -> Settings:
    """Build settings from defaults (the sandbox) plus overrides, ignoring any .env file."""
    return Settings(_env_file=None, **overrides)  # type: ignore[call-arg]


async def health_of(settings: Settings) -> HealthReport:
    services = Services.build(settings)
    try:
        return await check_health(
            services.platform_dependencies(),
            services.bot_dependencies(),
            timeout=settings.dependency_timeout_seconds,
        )
    finally:
        await services.aclose()


def by_name(report: HealthReport) -> dict[str, tuple[str, str | None, str]]:
    return {check.name: (check.status, check.reason, check.detail) for check in report.checks}


class Noted:
    """A dependency whose ping is noted when it is asked and when it ends (answered or cut off)."""

    def __init__(self, inner: Pingable, events: list[tuple[str, str]]) -> None:
        self.inner = inner
        self.name = inner.name
        self.events = events

    async def ping(self) -> str:
        self.events.append(("asked", self.name))
        try:
            return await self.inner.ping()
        finally:
            self.events.append(("ended", self.name))


async def test_hung_dependencies_are_all_asked_at_once_and_reported_as_timeouts() -> None:
    """How long the report takes with every dependency hung: benchmarks/health_bench.py."""
    events: list[tuple[str, str]] = []
    with silent_server() as port:
        hung = f"127.0.0.1:{port}"
        settings = settings_for(
            api_url=f"http://{hung}",
            prometheus_url=f"http://{hung}",
            s3_endpoint_url=f"http://{hung}",
            redis_url=f"redis://{hung}/0",
            platform_database_url=f"postgresql://postgres@{hung}/platform",
            state_database_url=f"postgresql://postgres@{hung}/state",
            docker_host=f"tcp://{hung}",
            dependency_timeout_seconds=0.5,
        )
        services = Services.build(settings)
        try:
            report = await check_health(
                [Noted(dep, events) for dep in services.platform_dependencies()],
                [Noted(dep, events) for dep in services.bot_dependencies()],
                timeout=settings.dependency_timeout_seconds,
            )
        finally:
            await services.aclose()
    checks = by_name(report)
    names = {"api", "postgres", "redis", "storage", "prometheus", "engine", "state-db"}
    assert set(checks) == names
    for name, (status, reason, detail) in checks.items():
        assert (status, reason, detail) == ("down", "timeout", "no answer within 0.5 s"), name
    assert report.verdict == "down"
    # Concurrent checks: every dependency was asked before any of them was given up on.
    assert [kind for kind, _ in events] == ["asked"] * 7 + ["ended"] * 7, events
    assert {name for _, name in events} == names


async def test_dead_ports_are_reported_as_refused(postgres: str) -> None:
    dead = f"127.0.0.1:{free_port()}"
    settings = settings_for(
        api_url=f"http://{dead}",
        prometheus_url=f"http://{dead}",
        s3_endpoint_url=f"http://{dead}",
        redis_url=f"redis://{dead}/0",
        platform_database_url=f"postgresql://postgres@{dead}/platform",
        state_database_url=postgres,
        docker_host=f"tcp://{dead}",
    )
    checks = by_name(await health_of(settings))
    for name in ("api", "postgres", "redis", "storage", "prometheus", "engine"):
        assert checks[name][:2] == ("down", "refused"), (name, checks[name])
    # The bot's own database (here the server's admin database) still answers: one failure does
    # not hide the others.
    assert checks["state-db"][:2] == ("ok", None), checks["state-db"]
    assert checks["state-db"][2].startswith("PostgreSQL "), checks["state-db"]


@pytest.mark.usefixtures("postgres", "redis")
async def test_missing_database_is_reported_as_not_found() -> None:
    settings = settings_for(platform_database_url="postgresql://postgres@127.0.0.1:5432/no_such_db_here")
    status, reason, detail = by_name(await health_of(settings))["postgres"]
    assert (status, reason) == ("down", "not found")
    assert "no_such_db_here" in detail


@pytest.mark.usefixtures("postgres")  # the CLI records the run, usage errors included
def test_cli_usage_error_exits_2() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bot", "health", "now"], capture_output=True, text=True, cwd=REPO, timeout=60
    )
    assert done.returncode == 2
    assert "unexpected argument 'now'" in done.stderr


@pytest.mark.usefixtures("postgres", "redis")
def test_cli_json_reports_each_component_and_exits_1_when_down() -> None:
    dead = f"127.0.0.1:{free_port()}"
    env = {**os.environ, "CHATOPS_API_URL": f"http://{dead}", "CHATOPS_DEPENDENCY_TIMEOUT_SECONDS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "bot", "health", "--json"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=60,
    )
    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    assert report["verdict"] == "down"
    names = {check["name"] for check in report["checks"]}
    assert {"api", "postgres", "redis", "storage", "prometheus", "engine", "state-db"} <= names
    api = next(check for check in report["checks"] if check["name"] == "api")
    assert (api["status"], api["reason"]) == ("down", "refused")


def test_invalid_setting_stops_with_its_name() -> None:
    env = {**os.environ, "CHATOPS_DEPENDENCY_TIMEOUT_SECONDS": "soon"}
    done = subprocess.run(
        [sys.executable, "-m", "bot", "health"], capture_output=True, text=True, cwd=REPO, env=env, timeout=60
    )
    assert done.returncode == 2
    assert "CHATOPS_DEPENDENCY_TIMEOUT_SECONDS" in done.stderr


@pytest.mark.parametrize("command", [["config"], ["config", "--json"]])
def test_config_masks_secrets(command: list[str]) -> None:
    env = {**os.environ, "SLACK_BOT_TOKEN": "xoxb-very-secret", "AWS_SECRET_ACCESS_KEY": "s3-very-secret"}
    env["CHATOPS_STATE_DATABASE_URL"] = "postgresql://bot:hunter2@127.0.0.1:5432/chatops_state"
    done = subprocess.run(
        [sys.executable, "-m", "bot", *command], capture_output=True, text=True, cwd=REPO, env=env, timeout=60
    )
    assert done.returncode == 0
    assert "very-secret" not in done.stdout and "hunter2" not in done.stdout
    assert "SLACK_BOT_TOKEN" in done.stdout and "CHATOPS_STATE_DATABASE_URL" in done.stdout


@pytest.mark.stops_services
async def test_real_sandbox_is_healthy_and_a_stopped_s3_server_is_named(sandbox: object) -> None:
    from sandbox.seaweedfs import start_s3, stop_s3

    settings = settings_for()
    report = await health_of(settings)
    assert report.verdict == "healthy", by_name(report)
    assert {check.name for check in report.checks} == {
        "api",
        "postgres",
        "redis",
        "storage",
        "prometheus",
        "engine",
        "state-db",
    }
    await asyncio.to_thread(stop_s3, settings)
    try:
        report = await health_of(settings)
    finally:
        await asyncio.to_thread(start_s3, settings)
    checks = by_name(report)
    assert checks["storage"][:2] == ("down", "refused")
    assert report.verdict == "degraded"
    assert all(status == "ok" for name, (status, _, _) in checks.items() if name != "storage")
    assert (await health_of(settings)).verdict == "healthy"


async def test_unhealthy_api_answer_is_reported_as_such(sandbox: object) -> None:
    from sandbox.backend_container import set_faults_async

    settings = settings_for()
    await set_faults_async(settings, health="fail")
    try:
        report = await health_of(settings)
    finally:
        await set_faults_async(settings, health="ok")
    status, reason, detail = by_name(report)["api"]
    assert (status, reason) == ("down", "unexpected answer")
    assert "503" in detail and "unhealthy" in detail
    assert report.verdict == "down"


async def test_wrong_storage_secret_is_reported_as_auth_failed(sandbox: object) -> None:
    settings = settings_for(aws_secret_access_key="not-the-secret")
    status, reason, _ = by_name(await health_of(settings))["storage"]
    assert (status, reason) == ("down", "auth failed")
