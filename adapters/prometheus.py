"""Prometheus's HTTP API through a requests session, run in a pool of threads of its own."""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from adapters.base import DependencyError

if TYPE_CHECKING:
    import requests


class PrometheusAdapter:
    """The Prometheus server that scrapes the platform."""

    name = "prometheus"

    def __init__(self, url: str, timeout: float) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._session: requests.Session | None = None
        self._lock = threading.Lock()

    @property
    def session(self) -> requests.Session:
        """Return the HTTP session, made on first use (requests is imported only then)."""
        if self._session is None:
            with self._lock:
                if self._session is None:
                    import requests
                    from requests.adapters import HTTPAdapter
                    from urllib3.util.retry import Retry

                    session = requests.Session()
                    # No retries: a retry would stretch a dead Prometheus past the caller's timeout.
                    session.mount(self.url, HTTPAdapter(max_retries=Retry(total=0)))
                    self._session = session
        return self._session

    def _ready(self) -> str:
        response = self.session.get(f"{self.url}/-/ready", timeout=self.timeout)
        if response.status_code != 200:
            raise DependencyError(
                "unexpected answer", f"/-/ready answered {response.status_code}: {response.text[:80]}"
            )
        return "ready"

    async def ping(self) -> str:
        """Ask Prometheus whether it is ready to serve queries."""
        return await asyncio.to_thread(self._ready)

    def _query(self, promql: str, at: float | None, timeout: float) -> QueryResult:
        params = {"query": promql, "timeout": f"{timeout:g}s"}
        if at is not None:
            params["time"] = f"{at:.3f}"
        import requests

        try:
            response = self.session.get(f"{self.url}/api/v1/query", params=params, timeout=timeout)
        except requests.RequestException as error:
            # Without retries urllib3 wraps a read timeout in a ConnectionError: tell them apart by text.
            if isinstance(error, requests.Timeout) or "timed out" in str(error).lower():
                raise DependencyError("timeout", f"no answer from {self.url} in time") from None
            # The URL with its query string would drown the reason; the server's address is enough.
            raise DependencyError("refused", f"cannot connect to {self.url}") from None
        try:
            body: Any = response.json()
        except ValueError:
            raise DependencyError(
                "unexpected answer", f"/api/v1/query answered {response.status_code}: {response.text[:80]}"
            ) from None
        # Prometheus sends its own errors (bad_data 400, timeout 503, ...) as JSON with errorType.
        if isinstance(body, dict) and body.get("status") == "error":
            raise PrometheusQueryError(str(body.get("errorType") or "unknown"), str(body.get("error") or ""))
        if response.status_code != 200 or not isinstance(body, dict) or body.get("status") != "success":
            raise DependencyError(
                "unexpected answer", f"/api/v1/query answered {response.status_code}: {str(body)[:80]}"
            )
        warnings = [str(item) for item in body.get("warnings") or []]
        return parse_query_data(body.get("data"), warnings)

    async def query(self, promql: str, at: float | None = None, timeout: float | None = None) -> QueryResult:
        """Run an instant query (at a Unix time, default now) and return its parsed samples.

        An error answer raises PrometheusQueryError with Prometheus's errorType and message.
        """
        loop = asyncio.get_running_loop()
        call = functools.partial(self._query, promql, at, timeout or self.timeout)
        return await loop.run_in_executor(_query_threads(), call)

    def _query_range(self, promql: str, start: float, end: float, step: float, timeout: float) -> RangeResult:
        params = {
            "query": promql,
            "start": f"{start:.3f}",
            "end": f"{end:.3f}",
            "step": f"{step:g}",
            "timeout": f"{timeout:g}s",
        }
        import requests

        try:
            response = self.session.get(f"{self.url}/api/v1/query_range", params=params, timeout=timeout)
        except requests.Timeout:
            raise DependencyError("timeout", f"no answer from {self.url} in time") from None
        except requests.ConnectionError:
            raise DependencyError("refused", f"cannot connect to {self.url}") from None
        try:
            body: Any = response.json()
        except ValueError:
            raise DependencyError(
                "unexpected answer",
                f"/api/v1/query_range answered {response.status_code}: {response.text[:80]}",
            ) from None
        if isinstance(body, dict) and body.get("status") == "error":
            raise PrometheusQueryError(str(body.get("errorType") or "unknown"), str(body.get("error") or ""))
        if response.status_code != 200 or not isinstance(body, dict) or body.get("status") != "success":
            raise DependencyError(
                "unexpected answer", f"/api/v1/query_range answered {response.status_code}: {str(body)[:80]}"
            )
        warnings = [str(item) for item in body.get("warnings") or []]
        return parse_range_data(body.get("data"), warnings)

    async def query_range(
        self, promql: str, start: float, end: float, step: float, timeout: float | None = None
    ) -> RangeResult:
        """Run a range query (Unix times, step in seconds) and return every series' points.

        An error answer (an invalid expression is `bad_data`) raises PrometheusQueryError with
        Prometheus's errorType and message.
        """
        loop = asyncio.get_running_loop()
        call = functools.partial(self._query_range, promql, start, end, step, timeout or self.timeout)
        return await loop.run_in_executor(_query_threads(), call)


@dataclass(frozen=True)
class Sample:
    """One element of a query answer: its labels and its value (NaN and ±Inf kept as floats)."""

    labels: dict[str, str]
    value: float


@dataclass(frozen=True)
class QueryResult:
    """A parsed instant-query answer."""

    result_type: str
    samples: list[Sample]
    warnings: list[str] = field(default_factory=list)


class PrometheusQueryError(DependencyError):
    """Prometheus answered `status: error`; `error_type` is its errorType (bad_data, timeout, ...)."""

    def __init__(self, error_type: str, error: str) -> None:
        super().__init__("unexpected answer", f"Prometheus error {error_type}: {error}"[:300])
        self.error_type = error_type
        self.error = error


def parse_query_data(data: Any, warnings: list[str] | None = None) -> QueryResult:
    """Parse the `data` of a query answer (vector, scalar, matrix's last points, string)."""
    if not isinstance(data, dict) or "resultType" not in data:
        raise DependencyError("unexpected answer", f"query data without resultType: {str(data)[:80]}")
    kind = str(data["resultType"])
    result: Any = data.get("result") if data.get("result") is not None else []
    samples: list[Sample] = []
    try:
        if kind == "vector":
            samples = [Sample(dict(item.get("metric", {})), float(item["value"][1])) for item in result]
        elif kind == "scalar":
            samples = [Sample({}, float(result[1]))]
        elif kind == "matrix":
            samples = [
                Sample(dict(item.get("metric", {})), float(item["values"][-1][1]))
                for item in result
                if item.get("values")
            ]
        elif kind != "string":
            raise DependencyError("unexpected answer", f"unknown resultType {kind}")
    except (KeyError, IndexError, TypeError, ValueError) as error:
        raise DependencyError("unexpected answer", f"malformed {kind} result: {error}") from None
    return QueryResult(kind, samples, warnings or [])


@dataclass(frozen=True)
class RangeSeries:
    """One series of a range answer: its labels and its (Unix time, value) points, NaN kept."""

    labels: dict[str, str]
    points: list[tuple[float, float]]


@dataclass(frozen=True)
class RangeResult:
    """A parsed range-query answer (always a matrix: Prometheus refuses other types for ranges)."""

    series: list[RangeSeries]
    warnings: list[str] = field(default_factory=list)


def parse_range_data(data: Any, warnings: list[str] | None = None) -> RangeResult:
    """Parse the `data` of a range answer; values like "NaN" and "+Inf" become floats."""
    if not isinstance(data, dict) or data.get("resultType") != "matrix":
        raise DependencyError("unexpected answer", f"range data is not a matrix: {str(data)[:80]}")
    result: Any = data.get("result") or []
    try:
        series = [
            RangeSeries(
                dict(item.get("metric", {})),
                [(float(stamp), float(value)) for stamp, value in item.get("values") or []],
            )
            for item in result
        ]
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as error:
        raise DependencyError("unexpected answer", f"malformed matrix result: {error}") from None
    return RangeResult(series, warnings or [])


_THREADS: concurrent.futures.ThreadPoolExecutor | None = None


def _query_threads() -> concurrent.futures.ThreadPoolExecutor:
    """Return the threads queries run in: their own, so that a triage's queries all run at once.

    asyncio's default executor has cpu_count + 4 threads (6 on a 2-core host), fewer than one
    triage's queries plus the other checks' blocking calls.
    """
    global _THREADS
    if _THREADS is None:
        _THREADS = concurrent.futures.ThreadPoolExecutor(max_workers=16, thread_name_prefix="prometheus")
    return _THREADS
