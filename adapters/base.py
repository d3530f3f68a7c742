"""What every adapter shares: the ping contract and how failures are named."""

from __future__ import annotations

import asyncio
import errno
import importlib
import socket
import ssl
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

Reason = Literal["refused", "timeout", "auth failed", "unexpected answer", "not found", "error"]


class DependencyError(Exception):
    """A dependency failed in a way the user should hear about, with the reason named."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason: Reason = reason
        self.detail = detail


@dataclass(frozen=True)
class ClockReading:
    """A server's clock and the local clock read around the call (the skew is known within their gap)."""

    server: datetime
    sent: datetime
    received: datetime


class Pingable(Protocol):
    """An outside system that can say whether it is there."""

    name: str

    async def ping(self) -> str:
        """Check the system and return a short description of what answered."""
        ...


_AUTH_WORDS = (
    "password authentication failed",
    "invalidpassword",
    "authentication",
    "noauth",
    "wrongpass",
    "invalidaccesskeyid",
    "signaturedoesnotmatch",
    "accessdenied",
    "unauthorized",
    "forbidden",
    "401",
    "403",
    "invalid_auth",
    "not_authed",
)
_REFUSED_WORDS = (
    "connection refused",
    "connect call failed",
    "refused",
    "errno 111",
    "no such file",
    "all connection attempts failed",
    "could not connect to the endpoint",
    "failed to establish a new connection",
)
_TIMEOUT_WORDS = ("timed out", "timeout")


def classify(error: BaseException) -> DependencyError:
    """Turn any exception from a client library into a DependencyError with a reason."""
    if isinstance(error, DependencyError):
        return error
    if isinstance(error, (asyncio.TimeoutError, TimeoutError, socket.timeout)):
        return DependencyError("timeout", "no answer in time")
    if isinstance(error, ConnectionRefusedError):
        return DependencyError("refused", "connection refused")
    if isinstance(error, OSError) and error.errno in (errno.ECONNREFUSED, errno.ENOENT):
        return DependencyError("refused", "connection refused")
    if isinstance(error, ssl.SSLError):
        return DependencyError("error", f"TLS error: {error}")
    by_type = _classify_by_type(error)
    if by_type is not None:
        return by_type
    text = f"{type(error).__name__}: {error}"
    lowered = text.lower()
    if any(word in lowered for word in _TIMEOUT_WORDS):
        return DependencyError("timeout", _short(text))
    if any(word in lowered for word in _REFUSED_WORDS):
        return DependencyError("refused", _short(text))
    if any(word in lowered for word in _AUTH_WORDS):
        return DependencyError("auth failed", _short(text))
    return DependencyError("error", _short(text))


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _library(name: str, owners: set[str]) -> Any:
    """Import a client library when an error's classes come from it; None otherwise."""
    return importlib.import_module(name) if name.partition(".")[0] in owners else None


def _classify_by_type(error: BaseException) -> DependencyError | None:
    """Name the failure from the client library's own exception types.

    Only the libraries the error's own classes come from are asked (imported here, if need be):
    importing redis or requests to learn that an asyncpg error is not theirs would cost a tenth
    of a second each.
    """
    owners = {kind.__module__.partition(".")[0] for kind in type(error).__mro__}
    httpx = _library("httpx", owners)
    asyncpg = _library("asyncpg", owners)
    redis_errors = _library("redis.exceptions", owners)
    botocore_errors = _library("botocore.exceptions", owners)
    requests = _library("requests", owners)
    if httpx is not None and isinstance(error, httpx.TimeoutException):
        return DependencyError("timeout", "no answer in time")
    if httpx is not None and isinstance(error, httpx.ConnectError):
        return DependencyError("refused", _short(f"cannot connect: {error}"))
    if asyncpg is not None and isinstance(
        error, (asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError)
    ):
        return DependencyError("auth failed", _short(str(error)))
    if asyncpg is not None and isinstance(error, asyncpg.InvalidCatalogNameError):
        return DependencyError("not found", _short(str(error)))
    if redis_errors is not None and isinstance(error, redis_errors.AuthenticationError):
        return DependencyError("auth failed", _short(str(error)))
    if redis_errors is not None and isinstance(error, redis_errors.TimeoutError):
        return DependencyError("timeout", "no answer in time")
    if botocore_errors is not None and isinstance(
        error, (botocore_errors.ConnectTimeoutError, botocore_errors.ReadTimeoutError)
    ):
        return DependencyError("timeout", "no answer in time")
    if botocore_errors is not None and isinstance(error, botocore_errors.EndpointConnectionError):
        return DependencyError(
            "refused", _short(f"cannot connect to {error.kwargs.get('endpoint_url', '?')}")
        )
    if requests is not None and isinstance(error, requests.Timeout):
        return DependencyError("timeout", "no answer in time")
    if requests is not None and isinstance(error, requests.ConnectionError):
        if "FileNotFoundError" in str(error) or "No such file" in str(error):
            return DependencyError("refused", "socket does not exist (engine not running?)")
        url = getattr(error.request, "url", None) if error.request is not None else None
        return DependencyError("refused", f"cannot connect to {url}" if url else "cannot connect")
    return None
