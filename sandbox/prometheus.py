"""The sandbox's Prometheus: scraping the backend every second, history backfilled with promtool,
evaluating a copy of the runbook's alerting rules (monitoring/alerts.yml) every second and sending
what fires to the sandbox's Alertmanager."""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from sandbox.component import (
    HTTP_TIMEOUT,
    START_TIMEOUT,
    STOP_TIMEOUT,
    ComponentStatus,
    Paths,
    http_ok,
    url_host,
    url_port,
)
from sandbox.processes import SandboxError, find_program, running_pid, spawn, terminate, wait_until

if TYPE_CHECKING:
    from bot.config import Settings


# The runbook's alerting rules, as production runs them; the sandbox evaluates a copy (see below).
RULES_SOURCE = Path(__file__).resolve().parent.parent / "monitoring" / "alerts.yml"
RULES_COPY = "alerts.yml"
EVALUATION_INTERVAL = "1s"
_FOR = re.compile(r"^(\s+for:\s*)(\S+)(\s*(?:#.*)?)$", re.MULTILINE)
# A range selector of PromQL (`[5m]`); a subquery's (`[5m:1m]`) is left alone.
_RANGE = re.compile(r"\[((?:\d+[smhdwy])+)\]")


def sandbox_rules(settings: Settings, source: Path = RULES_SOURCE) -> str:
    """Return the sandbox's copy of the alerting rules: the same, but for `for:` set to
    settings.sandbox_alert_for and every rate's window to settings.sandbox_alert_rate_window (each
    unless empty), with a header that says so."""
    text = source.read_text()
    changes = []
    if settings.sandbox_alert_for:
        durations = ", ".join(sorted({match[1] for match in _FOR.findall(text)})) or "none"
        changes.append(f"every `for:` set to {settings.sandbox_alert_for} (there: {durations})")
        text = _FOR.sub(lambda m: f"{m.group(1)}{settings.sandbox_alert_for}{m.group(3)}", text)
    if settings.sandbox_alert_rate_window:
        windows = ", ".join(sorted(set(_RANGE.findall(text)))) or "none"
        changes.append(f"every rate's window set to {settings.sandbox_alert_rate_window} (there: {windows})")
        text = _RANGE.sub(f"[{settings.sandbox_alert_rate_window}]", text)
    if not changes:
        return f"# Copied by the chatops sandbox from {source}, unchanged.\n{text}"
    header = (
        f"# Copied by the chatops sandbox from {source}, with {' and '.join(changes)} so that a demo"
        " does not wait (the descriptions still say the rules' own); CHATOPS_SANDBOX_ALERT_FOR and"
        " CHATOPS_SANDBOX_ALERT_RATE_WINDOW choose them.\n"
    )
    return header + text


def duration_seconds(text: str) -> float:
    """Read a Prometheus duration (`1m`, `1m30s`) as seconds; 0 for an empty one."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    parts = re.findall(r"(\d+)([smhdwy])", text)
    if "".join(amount + unit for amount, unit in parts) != text.strip():
        raise ValueError(f"not a duration: {text!r}")
    return float(sum(int(amount) * units[unit] for amount, unit in parts))


def rule_rate_window(settings: Settings) -> float:
    """Return the window, in seconds, of the rates in the rules the sandbox evaluates."""
    if settings.sandbox_alert_rate_window:
        return duration_seconds(settings.sandbox_alert_rate_window)
    return max((duration_seconds(found) for found in _RANGE.findall(RULES_SOURCE.read_text())), default=300.0)


def check_rules(path: Path) -> None:
    """Run `promtool check rules` on a rules file; raise with its message if it fails."""
    result = subprocess.run(
        [find_program("promtool"), "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if result.returncode != 0:
        raise SandboxError(f"promtool check rules {path}: {(result.stdout + result.stderr).strip()[-500:]}")


def _write_rules(settings: Settings, paths: Paths) -> bool:
    """Write the sandbox's copy of the rules (checked by promtool first); return True if it changed."""
    target = paths.prometheus_rules / RULES_COPY
    if not RULES_SOURCE.is_file():
        # An install without the repository's monitoring/ folder: no rules, and the status says so.
        if target.exists():
            target.unlink()
            return True
        return False
    text = sandbox_rules(settings)
    if target.exists() and target.read_text() == text:
        return False
    candidate = paths.prometheus_rules / f".{RULES_COPY}.new"  # outside the rule_files glob
    candidate.write_text(text)
    try:
        check_rules(candidate)
    except SandboxError:
        candidate.unlink()
        raise
    candidate.replace(target)
    return True


def _prometheus_config(settings: Settings, paths: Paths) -> str:
    """Return prometheus.yml: scrape the backend every second, evaluate the rules directory every
    second, and send alerts to the Alertmanager of the same sandbox directory, found through the
    file that `start_alertmanager` writes (a Prometheus of a test's own, in a directory of its own,
    sends none to the shared one)."""
    target = f"{url_host(settings.api_url)}:{url_port(settings.api_url, 18080)}"
    targets = paths.alertmanager_targets
    return f"""\
# Written by the chatops sandbox.
global:
  scrape_interval: 1s
  evaluation_interval: {EVALUATION_INTERVAL}
  scrape_timeout: 1s
rule_files:
  - {paths.prometheus_rules}/*.yml
alerting:
  alertmanagers:
    - file_sd_configs:
        - files: ["{targets.parent}/{targets.stem}*{targets.suffix}"]
scrape_configs:
  - job_name: 3dpot-backend
    metrics_path: /metrics
    static_configs:
      - targets: ["{target}"]
        labels:
          environment: {settings.environment}
"""


def start_prometheus(settings: Settings, extra_blocks_dir: Path | str | None = None) -> ComponentStatus:
    """Start Prometheus (if not running) and wait for /-/ready.

    With `extra_blocks_dir`, every TSDB block in it (a directory holding meta.json, as made by
    `promtool tsdb create-blocks-from openmetrics`) is copied into the data directory first,
    restarting a running Prometheus so that it loads them.
    """
    paths = Paths(settings)
    paths.make()
    pid = running_pid(paths.pid("prometheus"), "prometheus")
    if extra_blocks_dir is not None:
        blocks = [p for p in Path(extra_blocks_dir).iterdir() if (p / "meta.json").is_file()]
        if not blocks:
            raise SandboxError(f"prometheus: no TSDB blocks in {extra_blocks_dir}")
        if pid is not None:
            terminate(paths.pid("prometheus"), "prometheus", STOP_TIMEOUT)
            pid = None
        for block in blocks:
            target = paths.prometheus_data / block.name
            if not target.exists():
                shutil.copytree(block, target)
    config = _prometheus_config(settings, paths)
    changed = not paths.prometheus_config.exists() or paths.prometheus_config.read_text() != config
    if changed:
        paths.prometheus_config.write_text(config)
    changed = _write_rules(settings, paths) or changed
    started = False
    listen = f"{url_host(settings.prometheus_url)}:{url_port(settings.prometheus_url, 9090)}"
    if pid is None:
        argv = [
            find_program("prometheus"),
            f"--config.file={paths.prometheus_config}",
            f"--storage.tsdb.path={paths.prometheus_data}",
            # Backfilled history must stay inside retention to be queryable.
            "--storage.tsdb.retention.time=30d",
            f"--web.listen-address={listen}",
            # The address alerts link back to (generatorURL), instead of the host's name.
            f"--web.external-url={settings.prometheus_url.rstrip('/')}",
            "--web.enable-lifecycle",
            "--log.level=warn",
        ]
        pid = spawn(argv, paths.pid("prometheus"), paths.out("prometheus"), cwd=paths.prometheus)
        started = True
    elif changed:
        # Reload so a changed target (another API port) or rule takes effect without a restart.
        with contextlib.suppress(httpx.HTTPError):
            response = httpx.post(settings.prometheus_url.rstrip("/") + "/-/reload", timeout=HTTP_TIMEOUT)
            if response.status_code != 200:
                raise SandboxError(f"prometheus: reload refused: {response.text.strip()[:300]}")
    ready = settings.prometheus_url.rstrip("/") + "/-/ready"
    wait_until(
        lambda: http_ok(ready),
        START_TIMEOUT,
        "prometheus",
        pid=pid,
        output=paths.out("prometheus"),
    )
    verb = "started" if started else "reused"
    return ComponentStatus("prometheus", True, f"{settings.prometheus_url}, pid {pid}, {verb}", {"pid": pid})


def backfill_prometheus(settings: Settings, openmetrics: str) -> ComponentStatus:
    """Turn OpenMetrics text into TSDB blocks with promtool and (re)start Prometheus with them."""
    if not openmetrics.rstrip().endswith("# EOF"):
        openmetrics = openmetrics.rstrip("\n") + "\n# EOF\n"
    with tempfile.TemporaryDirectory(prefix="chatops-backfill-") as tmp:
        source = Path(tmp) / "input.om"
        source.write_text(openmetrics)
        blocks = Path(tmp) / "blocks"
        blocks.mkdir()
        result = subprocess.run(
            [
                find_program("promtool"),
                "tsdb",
                "create-blocks-from",
                "openmetrics",
                str(source),
                str(blocks),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if result.returncode != 0:
            raise SandboxError(f"promtool failed: {result.stderr.strip() or result.stdout.strip()}")
        return start_prometheus(settings, extra_blocks_dir=blocks)


def stop_prometheus(settings: Settings) -> ComponentStatus:
    """Stop Prometheus; its data stays."""
    paths = Paths(settings)
    was = terminate(paths.pid("prometheus"), "prometheus", STOP_TIMEOUT)
    return ComponentStatus("prometheus", False, "stopped" if was else "was not running")


def prometheus_status(settings: Settings) -> ComponentStatus:
    """Report Prometheus's readiness, the backend target's health, the alerting rules and where
    their alerts go."""
    paths = Paths(settings)
    pid = running_pid(paths.pid("prometheus"), "prometheus")
    base = settings.prometheus_url.rstrip("/")
    if not http_ok(base + "/-/ready"):
        return ComponentStatus("prometheus", False, f"{base} not ready")
    target = "unknown"
    try:
        data = httpx.get(base + "/api/v1/targets", timeout=HTTP_TIMEOUT).json()
        states = [
            t.get("health", "unknown")
            for t in data.get("data", {}).get("activeTargets", [])
            if t.get("labels", {}).get("job") == "3dpot-backend"
        ]
        target = states[0] if states else "not discovered yet"
    except (httpx.HTTPError, ValueError):
        pass
    rules, active, alertmanagers = _alerting_state(base)
    detail = f"{base}" + (f", pid {pid}" if pid else " (not started by sandbox)")
    detail += f", target 3dpot-backend {target}"
    detail += f", {len(rules)} alerting rules"
    shortened = [
        f"{name} {value}"
        for name, value in (
            ("for:", settings.sandbox_alert_for),
            ("rates over", settings.sandbox_alert_rate_window),
        )
        if value
    ]
    if rules and shortened:
        detail += f" ({', '.join(shortened)} in the sandbox)"
    detail += ", " + (", ".join(f"{name} {state}" for name, state in active) if active else "none active")
    detail += ", alerts to " + (", ".join(alertmanagers) if alertmanagers else "no Alertmanager")
    return ComponentStatus(
        "prometheus",
        True,
        detail,
        {
            "pid": pid,
            "target": target,
            "rules": rules,
            "alerts": dict(active),
            "alertmanagers": alertmanagers,
        },
    )


def _alerting_state(base: str) -> tuple[list[str], list[tuple[str, str]], list[str]]:
    """Return the alerting rules loaded, the active ones (pending or firing), and the Alertmanagers."""
    rules: list[str] = []
    active: list[tuple[str, str]] = []
    alertmanagers: list[str] = []
    with contextlib.suppress(httpx.HTTPError, ValueError, AttributeError, TypeError, KeyError):
        groups = httpx.get(base + "/api/v1/rules", params={"type": "alert"}, timeout=HTTP_TIMEOUT).json()
        for group in groups["data"]["groups"]:
            for rule in group["rules"]:
                rules.append(str(rule["name"]))
                if rule.get("state") in ("pending", "firing"):
                    active.append((str(rule["name"]), str(rule["state"])))
    with contextlib.suppress(httpx.HTTPError, ValueError, AttributeError, TypeError, KeyError):
        found = httpx.get(base + "/api/v1/alertmanagers", timeout=HTTP_TIMEOUT).json()
        alertmanagers = [str(item["url"]) for item in found["data"]["activeAlertmanagers"]]
    return rules, active, alertmanagers
