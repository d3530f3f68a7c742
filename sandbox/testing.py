"""Helpers for tests that need the real sandbox; see `ensure_sandbox` for the session fixture.

A session-scoped fixture in tests/conftest.py can be as small as:

    @pytest.fixture(scope="session")
    def sandbox() -> SandboxStatus:
        return ensure_sandbox()
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import glob
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from sandbox.backend_container import set_faults
from sandbox.images import DEFAULT_VERSION
from sandbox.manager import SandboxStatus, up
from sandbox.processes import SandboxError

if TYPE_CHECKING:
    from bot.config import Settings

CLEAR_FAULTS: dict[str, Any] = {"error_rate": 0.0, "latency_ms": 0.0, "auth_burst": 0.0, "health": "ok"}


def sandbox_settings(**overrides: Any) -> Settings:
    """Return the bot's settings (defaults point at the sandbox), with overrides."""
    from bot.config import load_settings

    return load_settings(**overrides)


def _run(coro: Any) -> Any:
    """Run a coroutine to completion even when called from inside a running event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    # asyncio.run refuses to nest; a worker thread has a loop of its own.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result(timeout=300)


def ensure_sandbox(settings: Settings | None = None, version: str | None = DEFAULT_VERSION) -> SandboxStatus:
    """Bring the sandbox up (fast when it already runs) in a known state: `version`, no faults.

    Nothing is torn down afterwards: the next session reuses the running sandbox.
    """
    settings = settings or sandbox_settings()
    result: SandboxStatus = _run(up(settings, version))
    if not result.running:
        raise SandboxError(f"sandbox did not come up:\n{result}")
    if version == DEFAULT_VERSION:
        set_faults(settings, **CLEAR_FAULTS)
    return result


def prometheus_query(settings: Settings, query: str, timeout: float = 3.0) -> list[dict[str, Any]]:
    """Run an instant PromQL query and return its result vector."""
    response = httpx.get(
        settings.prometheus_url.rstrip("/") + "/api/v1/query",
        params={"query": query},
        timeout=timeout,
    )
    response.raise_for_status()
    result: list[dict[str, Any]] = response.json()["data"]["result"]
    return result


def wait_for_query(
    settings: Settings, query: str, timeout: float = 20.0, interval: float = 0.5
) -> list[dict[str, Any]]:
    """Poll a PromQL query until it returns something; raise after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = prometheus_query(settings, query)
        except httpx.HTTPError:
            result = []
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"no result for {query!r} after {timeout:.0f}s")
        time.sleep(interval)


def backend_log_lines(settings: Settings, limit: int = 2000) -> list[dict[str, Any]]:
    """Return the newest JSON lines of the backend's logs (settings.log_paths globs)."""
    files: list[Path] = []
    for pattern in settings.log_paths:
        files.extend(Path(p) for p in glob.glob(pattern))
    lines: list[dict[str, Any]] = []
    for path in sorted(files, key=lambda p: p.stat().st_mtime):
        with path.open(encoding="utf-8", errors="replace") as handle:
            for raw in handle:
                try:
                    lines.append(json.loads(raw))
                except json.JSONDecodeError:
                    continue  # A line being written right now may be incomplete.
    return lines[-limit:]


def backend_metric_total(
    settings: Settings, name: str, where: Callable[[dict[str, str]], bool] | None = None
) -> float:
    """Sum the samples called `name` on the backend's /metrics whose labels satisfy `where`."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(settings.api_url.rstrip("/") + "/metrics", timeout=3.0).text
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name != name:
                continue
            if where is None or where(sample.labels):
                total += sample.value
    return total
