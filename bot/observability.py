"""The bot's own structured logs and Prometheus metrics."""

from __future__ import annotations

import logging
import sys

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


def configure_logging(level: str = "INFO") -> None:
    """Log structured JSON lines to stderr; the request id comes from contextvars."""
    logging.basicConfig(format="%(message)s", stream=sys.stderr, level=level)
    # At DEBUG the Slack SDK logs request bodies (an enrollment's seed, tokens): never below INFO.
    for name in ("slack_sdk", "slack_bolt"):
        logging.getLogger(name).setLevel(max(logging.INFO, logging.getLevelName(level)))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


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
