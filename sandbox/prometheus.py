"""The sandbox's Prometheus: scraping the backend every second, history backfilled with promtool."""

from __future__ import annotations

import contextlib
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


def _prometheus_config(settings: Settings, paths: Paths) -> str:
    """Return prometheus.yml: scrape the backend every second, load the rules directory."""
    target = f"{url_host(settings.api_url)}:{url_port(settings.api_url, 18080)}"
    return f"""\
# Written by the chatops sandbox.
global:
  scrape_interval: 1s
  evaluation_interval: 1s
  scrape_timeout: 1s
rule_files:
  - {paths.prometheus_rules}/*.yml
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
            "--web.enable-lifecycle",
            "--log.level=warn",
        ]
        pid = spawn(argv, paths.pid("prometheus"), paths.out("prometheus"), cwd=paths.prometheus)
        started = True
    elif changed:
        # Reload so a changed target (another API port) takes effect without a restart.
        with contextlib.suppress(httpx.HTTPError):
            httpx.post(settings.prometheus_url.rstrip("/") + "/-/reload", timeout=HTTP_TIMEOUT)
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
    """Report Prometheus's readiness and the backend target's health."""
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
    detail = f"{base}" + (f", pid {pid}" if pid else " (not started by sandbox)")
    return ComponentStatus(
        "prometheus",
        True,
        f"{detail}, target 3dpot-backend {target}",
        {"pid": pid, "target": target},
    )
