"""The sandbox's alerting path: Prometheus evaluates the runbook's rules and sends to a real
Alertmanager, which posts webhook v4 with the bot's bearer token; a release that passes /health
but fails under traffic sets it off.

The configs are checked by the tools that read them (promtool, amtool). The end-to-end test deploys
the faulty release on the shared sandbox with a receiver standing in for the bot's /alerts; it
prints how long the fault took to reach the webhook (benchmarks/alerting_bench.py reports it),
asserting no time.
"""

from __future__ import annotations

import asyncio
import glob
import json
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from pydantic import SecretStr

from bot.config import Settings
from commands.alert import Notification
from sandbox import manager
from sandbox.alert_drill import ALERT, expected_bounds, faulty_release_drill, parse_time
from sandbox.alertmanager import (
    GROUP_INTERVAL,
    GROUP_WAIT,
    _write_targets,
    alertmanager_config,
    alertmanager_status,
    start_alertmanager,
    stop_alertmanager,
    webhook_url,
)
from sandbox.backend import faults_from_env
from sandbox.component import Paths
from sandbox.images import PASSES_HEALTH_ENV, _dockerfile
from sandbox.manager import SandboxStatus
from sandbox.prometheus import RULES_SOURCE, _prometheus_config, _write_rules, rule_rate_window, sandbox_rules
from tests.conftest import make_settings
from tests.netutil import free_port


def tool(name: str) -> str:
    found = shutil.which(name)
    assert found, f"{name} is not installed: run scripts/install.sh"
    return found


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def without_for(text: str) -> object:
    rules = yaml.safe_load(text)
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule.pop("for", None)
    return rules


# --- the generated configs ------------------------------------------------------------------------


def test_generated_configs_pass_promtool_and_amtool(tmp_path: Path) -> None:
    settings = make_settings(sandbox_dir=tmp_path, alertmanager_token=SecretStr('it\'s: a "token"'))
    paths = Paths(settings)
    paths.make()
    assert _write_rules(settings, paths)
    paths.prometheus_config.write_text(_prometheus_config(settings, paths))
    paths.alertmanager_config.write_text(alertmanager_config(settings))

    checked = run(tool("promtool"), "check", "config", str(paths.prometheus_config))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 6 rules found" in checked.stdout
    checked = run(tool("amtool"), "check-config", str(paths.alertmanager_config))
    assert checked.returncode == 0, checked.stdout + checked.stderr

    prometheus = yaml.safe_load(paths.prometheus_config.read_text())
    assert prometheus["global"]["evaluation_interval"] == "1s"
    # The Alertmanager of its own sandbox directory, from the file start_alertmanager writes.
    [files] = prometheus["alerting"]["alertmanagers"][0]["file_sd_configs"]
    assert [Path(found) for found in glob.glob(files["files"][0])] == []
    _write_targets(settings, paths)
    assert [Path(found) for found in glob.glob(files["files"][0])] == [paths.alertmanager_targets]
    assert json.loads(paths.alertmanager_targets.read_text()) == [{"targets": ["127.0.0.1:9093"]}]
    alertmanager = yaml.safe_load(paths.alertmanager_config.read_text())
    assert alertmanager["route"]["group_wait"] == GROUP_WAIT == "5s"
    assert alertmanager["route"]["group_interval"] == GROUP_INTERVAL == "10s"
    [webhook] = alertmanager["receivers"][0]["webhook_configs"]
    assert webhook["url"] == "http://127.0.0.1:3000/alerts"
    assert webhook["http_config"]["authorization"] == {"type": "Bearer", "credentials": 'it\'s: a "token"'}


def test_the_sandbox_copy_of_the_rules_changes_only_their_for_and_rate_windows(tmp_path: Path) -> None:
    production = RULES_SOURCE.read_text()
    copy = sandbox_rules(make_settings(sandbox_alert_for="15s", sandbox_alert_rate_window=""))
    assert without_for(copy) == without_for(production)
    durations = {rule["for"] for group in yaml.safe_load(copy)["groups"] for rule in group["rules"]}
    assert durations == {"15s"}
    assert "every `for:` set to 15s (there: 2m, 5m)" in copy.splitlines()[0]
    # Empty: the rules' own durations and windows.
    unchanged = make_settings(sandbox_alert_for="", sandbox_alert_rate_window="")
    assert yaml.safe_load(sandbox_rules(unchanged)) == yaml.safe_load(production)
    # The rate windows: every range of every expression, and nothing else.
    shorter = sandbox_rules(make_settings(sandbox_alert_for="", sandbox_alert_rate_window="1m"))
    assert "every rate's window set to 1m (there: 5m)" in shorter.splitlines()[0]
    expressions = [rule["expr"] for group in yaml.safe_load(shorter)["groups"] for rule in group["rules"]]
    assert all("[1m]" in expression and "[5m]" not in expression for expression in expressions)
    assert shorter.split("\n", 1)[1].replace("[1m]", "[5m]") == production
    assert rule_rate_window(make_settings(sandbox_alert_rate_window="1m30s")) == 90
    assert rule_rate_window(make_settings(sandbox_alert_rate_window="")) == 300
    for number, text in enumerate((copy, shorter, sandbox_rules(make_settings()))):
        written = tmp_path / f"alerts-{number}.yml"
        written.write_text(text)
        checked = run(tool("promtool"), "check", "rules", str(written))
        assert checked.returncode == 0, checked.stdout + checked.stderr


def test_without_a_token_alertmanager_sends_none_and_the_webhook_follows_the_bot() -> None:
    settings = make_settings(http_host="0.0.0.0", http_port=3999)
    assert webhook_url(settings) == "http://127.0.0.1:3999/alerts"
    [webhook] = yaml.safe_load(alertmanager_config(settings))["receivers"][0]["webhook_configs"]
    assert "http_config" not in webhook
    elsewhere = make_settings(sandbox_alert_webhook_url="http://127.0.0.1:4000/hook")
    assert webhook_url(elsewhere) == "http://127.0.0.1:4000/hook"


def test_the_faulty_release_that_passes_health_is_baked_into_its_image_only() -> None:
    # The default leaves every image as it was built before this setting existed.
    assert "FAULT" not in _dockerfile("v2.0.6") and "FAULT" not in _dockerfile("v2.0.6", "fails-health")
    assert "FAULT" not in _dockerfile("v2.0.5", "passes-health")
    assert "ENV FAULT_HEALTH=ok FAULT_ERROR_RATE=0.3\n" in _dockerfile("v2.0.6", "passes-health")
    faults = faults_from_env("v2.0.6", PASSES_HEALTH_ENV)
    assert faults.health == "ok" and faults.error_rate == pytest.approx(0.3)
    with pytest.raises(ValueError):
        Settings(_env_file=None, sandbox_faulty_release="sometimes")  # type: ignore[call-arg]


def test_parse_time_reads_go_timestamps() -> None:
    expected = datetime(2026, 12, 6, 7, 40, 1, 123456, tzinfo=UTC).timestamp()
    assert parse_time("2026-12-06T07:40:01.123456789Z") == pytest.approx(expected)
    assert parse_time("2026-12-06T07:40:01Z") == parse_time("2026-12-06T08:40:01+01:00")


def test_alertmanager_starts_reloads_and_stops_in_a_directory_of_its_own(tmp_path: Path) -> None:
    """A second Alertmanager on a free port, not the shared sandbox's."""
    url = f"http://127.0.0.1:{free_port()}"
    settings = make_settings(sandbox_dir=tmp_path, sandbox_alertmanager_url=url)
    started = start_alertmanager(settings)
    try:
        assert started.running and started.detail.endswith(", started"), started
        assert "WITHOUT a token" in started.detail
        assert json.loads(Paths(settings).alertmanager_targets.read_text()) == [{"targets": [url[7:]]}]
        again = start_alertmanager(settings)
        assert again.detail.endswith(", reused") and again.info["pid"] == started.info["pid"], again
        token = make_settings(
            sandbox_dir=tmp_path, sandbox_alertmanager_url=url, alertmanager_token=SecretStr("s3cret")
        )
        reloaded = start_alertmanager(token)
        assert reloaded.detail.endswith(", reloaded") and "with a bearer token" in reloaded.detail, reloaded
        assert reloaded.info["pid"] == started.info["pid"]
    finally:
        stopped = stop_alertmanager(settings)
    assert stopped.detail == "stopped"
    assert not alertmanager_status(settings).running
    assert not Paths(settings).alertmanager_targets.exists()


# --- the real sandbox -----------------------------------------------------------------------------


async def test_prometheus_evaluates_the_rules_and_knows_alertmanager(sandbox: SandboxStatus) -> None:
    settings = make_settings()
    # Prometheus reads the Alertmanager's address from a file: its discovery takes a few seconds.
    for _ in range(30):
        result = await manager.status(settings)
        prometheus = result.component("prometheus").info
        if prometheus.get("alertmanagers"):
            break
        await asyncio.sleep(1)
    assert result.component("alertmanager").running, str(result)
    assert sorted(prometheus["rules"]) == sorted(rule_names())
    assert any(":9093/" in url for url in prometheus["alertmanagers"]), prometheus


def rule_names() -> list[str]:
    return [
        rule["alert"]
        for group in yaml.safe_load(RULES_SOURCE.read_text())["groups"]
        for rule in group["rules"]
    ]


@pytest.mark.stops_services  # replaces the shared backend container for a while, then puts v2.0.5 back
async def test_a_release_that_passes_health_reaches_the_webhook_with_the_token(
    sandbox: SandboxStatus,
) -> None:
    settings = make_settings()
    result = await faulty_release_drill(settings)

    assert result.health_status == 200  # /health alone would not have told
    assert result.refused == 0  # every post carried the bearer token the receiver expects
    notification = Notification.model_validate(result.notification)
    assert notification.status == "firing"
    assert notification.receiver.startswith("chatops-drill-")
    assert notification.group_labels == {"alertname": ALERT}
    [alert] = [alert for alert in notification.alerts if alert.name == ALERT]
    assert alert.labels["severity"] == "critical" and alert.severity() == "P2"
    assert alert.annotations["runbook_section"] == "1.1 HTTP Errors (5xx)"
    assert alert.ends_at is None or alert.ends_at.timestamp() > result.firing_at

    pending = f"{result.pending_at - result.deployed_at:.1f}s" if result.pending_at else "unknown"
    print(
        f"\nfault -> webhook {result.fault_to_webhook:.1f}s "
        f"(rule true after {pending}, firing after {result.firing_at - result.deployed_at:.1f}s, "
        f"webhook {result.webhook_at - result.firing_at:.1f}s after that); "
        f"bounded by {expected_bounds(settings, result.error_share or 0.3)}"
    )
    # Put back as found: v2.0.5, healthy, the sandbox's own Alertmanager config.
    after = await manager.status(settings)
    assert after.component("backend").info["version"] == "v2.0.5", str(after)
    assert after.component("backend").info["health"] == "healthy", str(after)
