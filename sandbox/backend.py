"""Stand-in for the 3dPot backend: a small Starlette API with runbook metrics, JSON logs and faults.

Run it with `python -m sandbox.backend`; environment variables:

- HOST (default 0.0.0.0), PORT (default 8000), APP_VERSION (default v2.0.5),
  LOG_PATH (JSON-lines request log; default ./logs/backend.log),
- TRAFFIC_RPS (default 20; 0 disables the built-in traffic generator: real requests to this very
  process over loopback, counted in its metrics like any other; its mix stays under every threshold
  of monitoring/alerts.yml, so a healthy sandbox fires no alert),
- FAULT_ERROR_RATE (0..1 share of 5xx), FAULT_LATENCY_MS (added latency),
  FAULT_AUTH_BURST (extra login/MFA failures per second), FAULT_HEALTH (`fail` or `ok`).

Version v2.0.6 is the faulty release: unless the fault variables say otherwise it starts with a
failing /health and about 30% of API requests answering 5xx (its image may set FAULT_HEALTH=ok: a
release that passes /health and fails under traffic). The faults can be changed at runtime
through `POST /_sandbox/faults` and read through `GET /_sandbox/faults`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import logging.handlers
import os
import random
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
)
from prometheus_client.exposition import generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Match, Route

SERVICE_NAME = "3dpot-backend"
FAULTY_VERSIONS = frozenset({"v2.0.6"})
# The defaults a faulty release starts with when no FAULT_* variable overrides them.
FAULTY_DEFAULT_ERROR_RATE = 0.3
# The runbook alerts on P95 > 2 s, so the buckets must reach well past it.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 2.5, 5.0, 10.0)
# Paths that are about the sandbox or the probes, not the API: no faults, no latency.
INTERNAL_PREFIXES = ("/_sandbox", "/metrics", "/health")
ERROR_MESSAGES = (
    "OperationalError: could not obtain connection from pool within 2.0s (pool exhausted)",
    "TimeoutError: Redis read timed out after 1.0s",
    "KeyError: 'owner_id' in ProjectSerializer.to_representation",
    "botocore.exceptions.EndpointConnectionError: Could not connect to the S3 endpoint",
    "RuntimeError: inconsistent state in upload session",
)


@dataclass
class Faults:
    """Current fault injection switches."""

    error_rate: float = 0.0
    latency_ms: float = 0.0
    auth_burst: float = 0.0
    health: str = "ok"

    def update(self, data: dict[str, Any]) -> None:
        """Apply the known keys of `data`, validating each; raise ValueError on a bad value."""
        if "error_rate" in data:
            rate = float(data["error_rate"])
            if not 0.0 <= rate <= 1.0:
                raise ValueError("error_rate must be within 0..1")
            self.error_rate = rate
        if "latency_ms" in data:
            latency = float(data["latency_ms"])
            if not 0.0 <= latency <= 60_000:
                raise ValueError("latency_ms must be within 0..60000")
            self.latency_ms = latency
        if "auth_burst" in data:
            burst = float(data["auth_burst"])
            if not 0.0 <= burst <= 1000:
                raise ValueError("auth_burst must be within 0..1000")
            self.auth_burst = burst
        if "health" in data:
            health = str(data["health"]).lower()
            if health not in {"ok", "fail"}:
                raise ValueError("health must be 'ok' or 'fail'")
            self.health = health


def faults_from_env(version: str, env: dict[str, str] | None = None) -> Faults:
    """Build the start-up faults from FAULT_* variables, with the faulty release's defaults."""
    env = dict(os.environ) if env is None else env
    faults = Faults()
    if version in FAULTY_VERSIONS:
        faults.error_rate = FAULTY_DEFAULT_ERROR_RATE
        faults.health = "fail"
    faults.update(
        {
            key: env[name]
            for key, name in (
                ("error_rate", "FAULT_ERROR_RATE"),
                ("latency_ms", "FAULT_LATENCY_MS"),
                ("auth_burst", "FAULT_AUTH_BURST"),
                ("health", "FAULT_HEALTH"),
            )
            if env.get(name, "").strip()
        }
    )
    return faults


class Metrics:
    """The runbook's metrics, in a registry of their own."""

    def __init__(self, version: str) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "http_requests_total",
            "HTTP requests handled.",
            ["method", "path", "status"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "http_request_duration_seconds",
            "HTTP request duration in seconds.",
            ["method", "path"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.rate_limit_hits = Counter(
            "rate_limit_hits_total",
            "Requests refused by the rate limiter.",
            ["reason"],
            registry=self.registry,
        )
        self.auth_failures = Counter(
            "auth_failures_total",
            "Failed authentications.",
            ["reason"],
            registry=self.registry,
        )
        self.permission_denied = Counter(
            "permission_denied_total",
            "Requests refused for lack of permission.",
            registry=self.registry,
        )
        self.build_info = Gauge(
            "app_build_info",
            "Version of the running backend (always 1).",
            ["service", "version"],
            registry=self.registry,
        )
        self.build_info.labels(service=SERVICE_NAME, version=version).set(1)
        # Make the label sets the runbook queries exist from the first scrape, at zero.
        for reason in ("login_attempts_exceeded", "api_rate_limit"):
            self.rate_limit_hits.labels(reason=reason)
        for reason in ("invalid_password", "mfa_failed", "unknown_user", "token_expired"):
            self.auth_failures.labels(reason=reason)


def _utc_now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _make_request_logger(log_path: Path) -> logging.Logger:
    """Return a logger writing raw JSON lines to `log_path`, rotated so it cannot fill the disk."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    logger = logging.getLogger(f"sandbox.backend.requests.{log_path}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    if not logger.handlers:
        handler = logging.handlers.RotatingFileHandler(
            log_path, maxBytes=20 * 1024 * 1024, backupCount=3, encoding="utf-8"
        )
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    return logger


class ApiError(Exception):
    """An expected API failure that becomes a JSON error response."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class InjectedFault(Exception):
    """A 5xx injected by the error-rate fault; its message names the pretend root cause."""


class BackendState:
    """Everything one backend process holds: version, faults, metrics, logger, fake data."""

    def __init__(self, version: str, log_path: Path, faults: Faults, port: int, rps: float) -> None:
        self.version = version
        self.faults = faults
        self.metrics = Metrics(version)
        self.logger = _make_request_logger(log_path)
        self.port = port
        self.rps = rps
        self.rng = random.Random()
        self.started = time.monotonic()
        self.projects: dict[int, dict[str, Any]] = {
            i: {"id": i, "name": f"project-{i}", "owner": f"user{i % 7}", "status": "active"}
            for i in range(1, 26)
        }

    def log(self, level: str, event: str, **fields: Any) -> None:
        """Write one JSON line to the request log."""
        record = {
            "timestamp": _utc_now_iso(),
            "level": level,
            "event": event,
            "service": SERVICE_NAME,
            "version": self.version,
            **fields,
        }
        self.logger.info(json.dumps(record, separators=(",", ":"), default=str))


def _route_template(app: Starlette, request: Request) -> str:
    """Return the matched route's path template, keeping metric label cardinality bounded."""
    for route in app.routes:
        match, _ = route.matches(request.scope)
        if match == Match.FULL and isinstance(route, Route):
            return route.path
    return "unmatched"


def _state(request: Request) -> BackendState:
    state: BackendState = request.app.state.backend
    return state


async def _json_body(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ApiError(400, "invalid JSON body") from None
    if not isinstance(body, dict):
        raise ApiError(400, "JSON body must be an object")
    return body


# --- endpoints -------------------------------------------------------------------------------


async def health(request: Request) -> Response:
    """Report liveness the way the real backend does."""
    state = _state(request)
    if state.faults.health == "fail":
        return JSONResponse(
            {
                "status": "unhealthy",
                "service": SERVICE_NAME,
                "version": state.version,
                "error": "database migration check failed",
            },
            status_code=503,
        )
    return JSONResponse({"status": "healthy", "service": SERVICE_NAME, "version": state.version})


async def metrics(request: Request) -> Response:
    """Expose the Prometheus metrics."""
    data = generate_latest(_state(request).metrics.registry)
    return Response(data, media_type=CONTENT_TYPE_LATEST)


async def list_projects(request: Request) -> Response:
    """List projects."""
    projects = list(_state(request).projects.values())
    return JSONResponse({"items": projects[:20], "total": len(projects)})


async def get_project(request: Request) -> Response:
    """Return one project or 404."""
    try:
        project_id = int(request.path_params["project_id"])
    except ValueError:
        raise ApiError(404, "project not found") from None
    project = _state(request).projects.get(project_id)
    if project is None:
        raise ApiError(404, "project not found")
    return JSONResponse(project)


async def create_project(request: Request) -> Response:
    """Create a project; viewers are refused."""
    state = _state(request)
    body = await _json_body(request)
    if body.get("role") == "viewer":
        state.metrics.permission_denied.inc()
        raise ApiError(403, "permission denied: projects:create")
    new_id = max(state.projects, default=0) + 1
    project = {"id": new_id, "name": str(body.get("name", f"project-{new_id}")), "status": "active"}
    # Keep the fake store small: the generator creates projects forever.
    if len(state.projects) > 200:
        state.projects.pop(min(state.projects))
    state.projects[new_id] = project
    return JSONResponse(project, status_code=201)


async def delete_project(request: Request) -> Response:
    """Delete a project; only admins may."""
    state = _state(request)
    body = await _json_body(request) if await request.body() else {}
    if body.get("role") != "admin":
        state.metrics.permission_denied.inc()
        raise ApiError(403, "permission denied: projects:delete")
    try:
        project_id = int(request.path_params["project_id"])
    except ValueError:
        raise ApiError(404, "project not found") from None
    if state.projects.pop(project_id, None) is None:
        raise ApiError(404, "project not found")
    return Response(status_code=204)


async def login(request: Request) -> Response:
    """Check a password; the fake accepts `correct-horse`."""
    state = _state(request)
    body = await _json_body(request)
    if body.get("attempts", 0) and int(body["attempts"]) > 5:
        state.metrics.rate_limit_hits.labels(reason="login_attempts_exceeded").inc()
        raise ApiError(429, "too many login attempts")
    if body.get("password") != "correct-horse":
        state.metrics.auth_failures.labels(reason="invalid_password").inc()
        raise ApiError(401, "invalid credentials")
    return JSONResponse({"token": secrets.token_hex(16), "mfa_required": True})


async def mfa(request: Request) -> Response:
    """Check an MFA code; the fake accepts `123456`."""
    state = _state(request)
    body = await _json_body(request)
    if str(body.get("code")) != "123456":
        state.metrics.auth_failures.labels(reason="mfa_failed").inc()
        raise ApiError(401, "invalid MFA code")
    return JSONResponse({"token": secrets.token_hex(16)})


async def upload(request: Request) -> Response:
    """Accept an upload; large bursts hit the API rate limiter."""
    state = _state(request)
    body = await request.body()
    if request.headers.get("x-burst") == "1":
        state.metrics.rate_limit_hits.labels(reason="api_rate_limit").inc()
        raise ApiError(429, "rate limit exceeded")
    key = f"uploads/{uuid.uuid4().hex}.stl"
    return JSONResponse({"key": key, "size": len(body)}, status_code=201)


async def get_faults(request: Request) -> Response:
    """Return the current faults."""
    return JSONResponse(asdict(_state(request).faults))


async def set_faults(request: Request) -> Response:
    """Change faults at runtime."""
    state = _state(request)
    body = await _json_body(request)
    try:
        state.faults.update(body)
    except (TypeError, ValueError) as error:
        raise ApiError(400, str(error)) from None
    state.log("warning", "faults_changed", faults=asdict(state.faults))
    return JSONResponse(asdict(state.faults))


ROUTES = [
    Route("/health", health, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
    Route("/api/v1/projects", list_projects, methods=["GET"]),
    Route("/api/v1/projects", create_project, methods=["POST"]),
    Route("/api/v1/projects/{project_id}", get_project, methods=["GET"]),
    Route("/api/v1/projects/{project_id}", delete_project, methods=["DELETE"]),
    Route("/api/v1/auth/login", login, methods=["POST"]),
    Route("/api/v1/auth/mfa", mfa, methods=["POST"]),
    Route("/api/v1/uploads", upload, methods=["POST"]),
    Route("/_sandbox/faults", get_faults, methods=["GET"]),
    Route("/_sandbox/faults", set_faults, methods=["POST"]),
]


# --- middleware ------------------------------------------------------------------------------


class RequestMiddleware:
    """Inject faults, record the metrics and write one JSON log line per request."""

    def __init__(self, app: Any, starlette_app: Starlette) -> None:
        self.app = app
        # Starlette does not put itself into the scope before middleware runs; keep it here.
        self.starlette_app = starlette_app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Handle one ASGI call."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        starlette_app = self.starlette_app
        state: BackendState = starlette_app.state.backend
        request = Request(scope)
        path = request.url.path
        template = _route_template(starlette_app, request)
        request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
        trace_id = _trace_id(request.headers.get("traceparent")) or secrets.token_hex(16)
        started = time.perf_counter()
        status_holder = {"status": 500}
        error: str | None = None

        async def send_wrapper(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                headers.append((b"x-trace-id", trace_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        internal = path.startswith(INTERNAL_PREFIXES)
        try:
            if not internal and state.faults.latency_ms > 0:
                await asyncio.sleep(state.faults.latency_ms / 1000)
            if not internal and state.rng.random() < state.faults.error_rate:
                raise InjectedFault(state.rng.choice(ERROR_MESSAGES))
            await self.app(scope, receive, send_wrapper)
        except ApiError as api_error:
            response = JSONResponse({"detail": api_error.detail}, status_code=api_error.status)
            await response(scope, receive, send_wrapper)
            if api_error.status >= 500:
                error = api_error.detail
        except Exception as exc:  # every failure must become a logged 500, as in prod
            # Injected messages already read like a traceback's last line.
            error = str(exc) if isinstance(exc, InjectedFault) else f"{type(exc).__name__}: {exc}"
            response = JSONResponse(
                {"detail": "internal server error", "request_id": request_id}, status_code=500
            )
            await response(scope, receive, send_wrapper)
        duration = time.perf_counter() - started
        status = status_holder["status"]
        if path == "/metrics":
            # Scrapes every second would drown the API's series and log; prod does not count them.
            return
        state.metrics.requests.labels(request.method, template, str(status)).inc()
        state.metrics.duration.labels(request.method, template).observe(duration)
        level = "error" if status >= 500 else "warning" if status >= 400 else "info"
        fields: dict[str, Any] = {
            "method": request.method,
            "path": path,
            "status_code": status,
            "duration_ms": round(duration * 1000, 2),
            "request_id": request_id,
            "trace_id": trace_id,
            "client_ip": scope.get("client", ("", 0))[0] if scope.get("client") else None,
        }
        if error:
            fields["error"] = error
        state.log(level, "http_request", **fields)


def _trace_id(traceparent: str | None) -> str | None:
    """Take the trace id out of a W3C traceparent header, if well formed."""
    if not traceparent:
        return None
    parts = traceparent.split("-")
    if len(parts) == 4 and len(parts[1]) == 32:
        return parts[1]
    return None


# --- traffic generator -----------------------------------------------------------------------


TrafficCall = Callable[[httpx.AsyncClient, random.Random], Awaitable[httpx.Response]]


def _traffic_mix() -> list[tuple[float, TrafficCall]]:
    """Return weighted request kinds that look like the real API's traffic."""

    async def list_p(c: httpx.AsyncClient, r: random.Random) -> httpx.Response:
        return await c.get("/api/v1/projects", params={"page": r.randint(1, 3)})

    async def get_p(c: httpx.AsyncClient, r: random.Random) -> httpx.Response:
        return await c.get(f"/api/v1/projects/{r.randint(1, 40)}")

    # Refusals (403) and MFA failures stay at about 0.14/s and 0.05/s at 20 requests a second:
    # under the runbook's alert thresholds (0.2/s and 0.1/s).
    async def create_p(c: httpx.AsyncClient, r: random.Random) -> httpx.Response:
        role = "viewer" if r.random() < 0.05 else "editor"
        return await c.post("/api/v1/projects", json={"name": f"p{r.randint(1, 999)}", "role": role})

    async def delete_p(c: httpx.AsyncClient, r: random.Random) -> httpx.Response:
        role = "admin" if r.random() < 0.9 else "editor"
        return await c.request("DELETE", f"/api/v1/projects/{r.randint(1, 60)}", json={"role": role})

    async def login_ok(c: httpx.AsyncClient, r: random.Random) -> httpx.Response:
        bad = r.random() < 0.1
        attempts = r.randint(6, 9) if r.random() < 0.03 else 1
        password = "wrong" if bad else "correct-horse"
        return await c.post("/api/v1/auth/login", json={"password": password, "attempts": attempts})

    async def mfa_p(c: httpx.AsyncClient, r: random.Random) -> httpx.Response:
        code = "000000" if r.random() < 0.03 else "123456"
        return await c.post("/api/v1/auth/mfa", json={"code": code})

    async def upload_p(c: httpx.AsyncClient, r: random.Random) -> httpx.Response:
        burst = "1" if r.random() < 0.05 else "0"
        return await c.post("/api/v1/uploads", content=b"solid x\nendsolid x\n", headers={"x-burst": burst})

    async def health_p(c: httpx.AsyncClient, r: random.Random) -> httpx.Response:
        return await c.get("/health")

    return [
        (35, list_p),
        (20, get_p),
        (8, create_p),
        (3, delete_p),
        (12, login_ok),
        (8, mfa_p),
        (9, upload_p),
        (5, health_p),
    ]


async def _auth_failure(c: httpx.AsyncClient, r: random.Random) -> httpx.Response:
    """Make one failed login or MFA check, as a brute-force attack would."""
    if r.random() < 0.6:
        return await c.post("/api/v1/auth/login", json={"password": secrets.token_hex(4), "attempts": 1})
    return await c.post("/api/v1/auth/mfa", json={"code": f"{r.randint(0, 999999):06d}"})


async def run_traffic(state: BackendState, stop: asyncio.Event) -> None:
    """Send requests to this very process over loopback until `stop` is set."""
    rng = random.Random()
    mix = _traffic_mix()
    weights = [w for w, _ in mix]
    calls = [c for _, c in mix]
    # Bound in-flight requests so injected latency cannot grow tasks without limit.
    in_flight = asyncio.Semaphore(200)
    tasks: set[asyncio.Task[None]] = set()
    base_url = f"http://127.0.0.1:{state.port}"
    timeout = httpx.Timeout(30.0, connect=2.0)
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=50)

    async def one(client: httpx.AsyncClient, call: TrafficCall) -> None:
        try:
            await call(client, rng)
        except httpx.HTTPError:
            pass  # The generator only exists to move metrics; a failed request is just traffic.
        finally:
            in_flight.release()

    def spawn(client: httpx.AsyncClient, call: TrafficCall) -> None:
        task = asyncio.create_task(one(client, call))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async with httpx.AsyncClient(base_url=base_url, timeout=timeout, limits=limits) as client:
        burst_credit = 0.0
        tick = 0.1
        normal_credit = 0.0
        while not stop.is_set():
            normal_credit += state.rps * tick
            burst_credit += state.faults.auth_burst * tick
            while normal_credit >= 1:
                normal_credit -= 1
                if in_flight.locked():
                    break
                await in_flight.acquire()
                spawn(client, rng.choices(calls, weights)[0])
            while burst_credit >= 1:
                burst_credit -= 1
                if in_flight.locked():
                    break
                await in_flight.acquire()
                spawn(client, _auth_failure)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), tick)
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


# --- application -----------------------------------------------------------------------------


def create_app(
    version: str | None = None,
    log_path: Path | str | None = None,
    faults: Faults | None = None,
    port: int | None = None,
    traffic_rps: float | None = None,
) -> Starlette:
    """Build the backend app; arguments default to the environment variables."""
    # The image's baked-in version wins over APP_VERSION: a rollback that recreates the container
    # from the old one's attrs copies its Env (APP_VERSION of the newer image) along.
    version = version or _image_version() or os.environ.get("APP_VERSION") or "v2.0.5"
    log_path = Path(log_path or os.environ.get("LOG_PATH") or "logs/backend.log")
    port = port if port is not None else int(os.environ.get("PORT", "8000"))
    rps = traffic_rps if traffic_rps is not None else float(os.environ.get("TRAFFIC_RPS", "20"))
    state = BackendState(version, log_path, faults or faults_from_env(version), port, rps)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        state.log("info", "startup", port=port, faults=asdict(state.faults), traffic_rps=rps)
        stop = asyncio.Event()
        traffic: asyncio.Task[None] | None = None
        if rps > 0:
            traffic = asyncio.create_task(run_traffic(state, stop))
        try:
            yield
        finally:
            stop.set()
            if traffic is not None:
                with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                    await asyncio.wait_for(traffic, 3)
            state.log("info", "shutdown")

    app = Starlette(routes=ROUTES, lifespan=lifespan)
    app.state.backend = state
    app.add_middleware(RequestMiddleware, starlette_app=app)
    return app


def _image_version() -> str | None:
    """Read the version baked into the container image, if running in one."""
    path = Path("/etc/3dpot/VERSION")
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def main() -> None:
    """Serve the backend with uvicorn (which turns SIGTERM into a graceful, prompt shutdown)."""
    import uvicorn

    host = os.environ.get("HOST", "0.0.0.0")
    port = int(os.environ.get("PORT", "8000"))
    app = create_app(port=port)
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=3,
    )


if __name__ == "__main__":
    main()
