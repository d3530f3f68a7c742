"""The machine's own PostgreSQL and Redis: whether they answer, and how to start and stop them.

The start commands are the machine's own (Debian's cluster tool for PostgreSQL, a daemonized
redis-server); the `postgres` and `redis` fixtures of tests/conftest.py start a service that does
not answer, and tests/test_service_faults.py stops and starts them on purpose.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import redis

POSTGRES_HOST, POSTGRES_PORT = "127.0.0.1", 5432
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
ADMIN_DSN = f"postgresql://postgres@{POSTGRES_HOST}:{POSTGRES_PORT}/postgres"
REDIS_URL = f"redis://{REDIS_HOST}:{REDIS_PORT}/0"
START_SECONDS = 30.0


def _cluster() -> tuple[str, str]:
    """Return the PostgreSQL cluster (version, name) installed on this machine."""
    version = sorted(Path("/etc/postgresql").iterdir())[-1].name
    return version, "main"


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, check=True, timeout=60, capture_output=True, text=True)


def wait_until(ready: Callable[[], object], what: str, seconds: float = START_SECONDS) -> None:
    """Poll `ready` until it returns something true; any error means "not yet"."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if ready():
                return
        time.sleep(0.2)
    raise AssertionError(f"{what} did not answer within {seconds:g} s")


def postgres_answers() -> bool:
    """Return whether PostgreSQL accepts connections on 127.0.0.1:5432."""
    done = subprocess.run(
        ["pg_isready", "-h", POSTGRES_HOST, "-p", str(POSTGRES_PORT), "-q", "-t", "2"], timeout=10
    )
    return done.returncode == 0


def start_postgres() -> None:
    """Start the machine's cluster and wait until it accepts connections."""
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", *_cluster(), "start"],
        timeout=60,
        capture_output=True,
    )  # "already running" is not an error here: the wait below decides
    wait_until(postgres_answers, "PostgreSQL")


def stop_postgres() -> None:
    """Stop the machine's cluster (fast shutdown: open connections are cut)."""
    _run("pg_ctlcluster", "--skip-systemctl-redirect", *_cluster(), "stop", "-m", "fast")


def redis_answers() -> bool:
    """Return whether Redis answers PING on 127.0.0.1:6379."""
    try:
        return bool(redis.Redis(host=REDIS_HOST, port=REDIS_PORT, socket_timeout=1).ping())
    except redis.RedisError:
        return False


def start_redis() -> None:
    """Start Redis as the machine does (no persistence) and wait until it answers."""
    log = "/var/log/redis/ci.log" if Path("/var/log/redis").is_dir() else "/tmp/redis-ci.log"
    _run(
        "redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "-::1", "--port", str(REDIS_PORT),
        "--save", "", "--appendonly", "no", "--dir", "/var/lib/redis", "--logfile", log,
    )  # fmt: skip
    wait_until(redis_answers, "Redis")


def stop_redis() -> None:
    """Shut Redis down without saving."""
    # The connection closes as the server goes down.
    with contextlib.suppress(redis.ConnectionError):
        redis.Redis(host=REDIS_HOST, port=REDIS_PORT, socket_timeout=2).shutdown(nosave=True)


def ensure_postgres() -> str:
    """Start PostgreSQL if it does not answer; return the admin DSN."""
    if not postgres_answers():
        start_postgres()
    return ADMIN_DSN


def ensure_redis() -> str:
    """Start Redis if it does not answer; return its URL."""
    if not redis_answers():
        start_redis()
    return REDIS_URL
