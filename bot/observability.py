"""The bot's own structured logs and Prometheus metrics."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from contextvars import ContextVar
from types import ModuleType
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# structlog is imported at the first line logged, not with this module: it imports rich (for its
# console renderer and tracebacks, unused here), which cost every command's start 40 ms, and a
# command at the terminal usually logs nothing.
_level: str | None = None  # what configure_logging asked for, applied when structlog is imported
_applied: str | None = None
# What every line logged in this context carries (the request id, the command); replaced, never
# changed in place: a task's copy of the context must not see another task's keys.
_context: ContextVar[dict[str, Any] | None] = ContextVar("chatops_log_context", default=None)


def configure_logging(level: str = "INFO") -> None:
    """Log structured JSON lines to stderr; the request id comes from the bound context."""
    global _level
    logging.basicConfig(format="%(message)s", stream=sys.stderr, level=level)
    # At DEBUG the Slack SDK logs request bodies (an enrollment's seed, tokens): never below INFO.
    for name in ("slack_sdk", "slack_bolt"):
        logging.getLogger(name).setLevel(max(logging.INFO, logging.getLevelName(level)))
    _level = level
    if "structlog" in sys.modules:
        _structlog()


def _structlog() -> ModuleType:
    """Return structlog, configured as configure_logging last asked."""
    global _applied
    import structlog

    if _level is not None and _applied != _level:
        structlog.configure(
            processors=[
                _merge_context,
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                structlog.processors.format_exc_info,
                structlog.processors.JSONRenderer(),
            ],
            wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(_level)),
            logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
            cache_logger_on_first_use=True,
        )
        _applied = _level
    return structlog


# The level of each logging method: a line below the configured level is dropped here, before
# structlog is imported for it.
_METHOD_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "exception": logging.ERROR,
    "critical": logging.CRITICAL,
}


class _Logger:
    """A named structlog logger, structlog imported when the first line is logged."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, method: str) -> Any:
        level = _METHOD_LEVELS.get(method)
        if _level is not None and level is not None and level < logging.getLevelName(_level):
            return _drop
        return getattr(_structlog().get_logger(self._name), method)


def _drop(*_args: Any, **_kwargs: Any) -> None:
    return None


def get_logger(name: str) -> Any:
    """Return the named logger (info, warning, exception...: structlog's methods)."""
    return _Logger(name)


def bind_context(**values: Any) -> None:
    """Add these keys to every line logged from this context on."""
    _context.set({**(_context.get() or {}), **values})


def unbind_context(*keys: str) -> None:
    """Stop adding these keys to the lines logged from this context."""
    _context.set({key: value for key, value in (_context.get() or {}).items() if key not in keys})


def _merge_context(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> dict[str, Any]:
    # As structlog's merge_contextvars: the line's own keys win over the context's.
    return {**(_context.get() or {}), **event}


class BotMetrics:
    """Counters and histograms of what the bot does, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.commands = Counter(
            "chatops_commands_total",
            "Commands run, by command, source and outcome.",
            ["command", "source", "outcome"],
            registry=self.registry,
        )
        self.command_duration = Histogram(
            "chatops_command_duration_seconds",
            "Time from receiving a command to having its result.",
            ["command"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 30),
            registry=self.registry,
        )
        self.command_failures = Counter(
            "chatops_command_failures_total",
            "Commands that raised instead of returning a result.",
            ["command"],
            registry=self.registry,
        )
        self.ack_latency = Histogram(
            "chatops_ack_latency_seconds",
            "Time from a Slack request arriving to its acknowledgement.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 3),
            registry=self.registry,
        )
        self.slack_requests_refused = Counter(
            "chatops_slack_requests_refused_total",
            "Requests to /slack/events or /alerts refused before anything ran, by HTTP status.",
            ["status"],
            registry=self.registry,
        )
        self.requests_deduplicated = Counter(
            "chatops_requests_deduplicated_total",
            "Requests from Slack answered without running because they were accepted before, by why.",
            ["why"],
            registry=self.registry,
        )
        self.mfa_failures = Counter(
            "chatops_mfa_failures_total",
            "TOTP step-up failures, by outcome (wrong_code, replayed, locked_out, ...).",
            ["outcome"],
            registry=self.registry,
        )
        self.gate_refusals = Counter(
            "chatops_gate_refusals_total",
            "Destructive requests the gate refused, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.slack_rate_limited = Counter(
            "chatops_slack_rate_limited_total",
            "Slack Web API calls answered 429 (retried after Retry-After), by method.",
            ["method"],
            registry=self.registry,
        )
        self.lock_waits = Counter(
            "chatops_lock_refusals_total",
            "Destructive operations refused because another one held the environment's lock.",
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "chatops_commands_in_flight",
            "Commands acknowledged and still running.",
            registry=self.registry,
        )
        self.slack_api_errors = Counter(
            "chatops_slack_api_errors_total",
            "Slack Web API calls that failed, by method and error.",
            ["method", "error"],
            registry=self.registry,
        )
