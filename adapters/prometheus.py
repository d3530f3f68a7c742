"""Prometheus through prometheus-api-client, run in a worker thread."""

from __future__ import annotations

import asyncio

from prometheus_api_client import PrometheusConnect
from urllib3.util.retry import Retry

from adapters.base import DependencyError


class PrometheusAdapter:
    """The Prometheus server that scrapes the platform."""

    name = "prometheus"

    def __init__(self, url: str, timeout: float) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        # No retries: a retry would stretch a dead Prometheus past the caller's timeout.
        self.client = PrometheusConnect(url=self.url, retry=Retry(total=0), timeout=timeout)

    def _ready(self) -> str:
        response = self.client._session.get(f"{self.url}/-/ready", timeout=self.timeout)
        if response.status_code != 200:
            raise DependencyError(
                "unexpected answer", f"/-/ready answered {response.status_code}: {response.text[:80]}"
            )
        return "ready"

    async def ping(self) -> str:
        """Ask Prometheus whether it is ready to serve queries."""
        return await asyncio.to_thread(self._ready)
