"""An alert as Prometheus Alertmanager sends it (webhook version 4), and what it suggests for an incident."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Literal
from urllib.parse import parse_qs, urlsplit

from pydantic import ConfigDict, Field, field_validator

from adapters.incident_store import SEVERITIES, Severity
from commands.base import Model

# A PromQL range (`[5m]`, `[1h30m]`, a subquery's `[5m:30s]`): its duration.
_RANGE = re.compile(r"\[((?:\d+(?:ms|[smhdwy]))+)(?::[^\]]*)?\]")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def _seconds(duration: str) -> float:
    return sum(
        int(amount) * _UNIT_SECONDS[unit] for amount, unit in re.findall(r"(\d+)(ms|[smhdwy])", duration)
    )


# Alertmanager's convention for severity, mapped to incident severities when declaring from an alert.
SEVERITY_FROM_LABEL: dict[str, Severity] = {"critical": "P2", "error": "P2", "warning": "P3", "info": "P4"}


class Alert(Model):
    """One alert of a notification, as Alertmanager sends it."""

    model_config = ConfigDict(populate_by_name=True)

    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    starts_at: datetime = Field(alias="startsAt")
    ends_at: datetime | None = Field(default=None, alias="endsAt")
    generator_url: str = Field(default="", alias="generatorURL")
    fingerprint: str = Field(pattern=r"^[A-Za-z0-9]{1,64}$")

    @field_validator("ends_at", mode="after")
    @classmethod
    def _zero_is_none(cls, value: datetime | None) -> datetime | None:
        # Alertmanager writes Go's zero time (0001-01-01T00:00:00Z) for an alert that has not ended.
        return None if value is not None and value.year <= 1 else value

    @property
    def name(self) -> str:
        """Return the alert's name."""
        return self.labels.get("alertname", "alert")

    def severity(self) -> Severity:
        """Return the incident severity this alert suggests (label priority=P1..P4, else severity)."""
        priority = self.labels.get("priority", "").upper()
        for severity in SEVERITIES:
            if priority == severity:
                return severity
        return SEVERITY_FROM_LABEL.get(self.labels.get("severity", "").lower(), "P3")

    def expression_window(self) -> timedelta | None:
        """Return the longest range of the rule's expression (`[1m]` in `rate(x[1m])`), read from
        the generatorURL Prometheus gives the alert; None when there is none to read.

        A triage the alert starts judges over the same window as the rule that fired it.
        """
        query = parse_qs(urlsplit(self.generator_url).query)
        expressions = query.get("g0.expr", [])
        ranges = [_seconds(found) for expression in expressions for found in _RANGE.findall(expression)]
        return timedelta(seconds=max(ranges)) if ranges else None

    def title(self) -> str:
        """Return a one-line title for an incident declared from this alert."""
        summary = self.annotations.get("summary", "")
        return f"{self.name}: {summary}"[:120] if summary else self.name[:120]


class Notification(Model):
    """Alertmanager's webhook payload, version 4."""

    model_config = ConfigDict(populate_by_name=True)

    version: Literal["4"]
    group_key: str = Field(alias="groupKey")
    truncated_alerts: int = Field(default=0, alias="truncatedAlerts", ge=0)
    status: Literal["firing", "resolved"]
    receiver: str
    group_labels: dict[str, str] = Field(alias="groupLabels")
    common_labels: dict[str, str] = Field(alias="commonLabels")
    common_annotations: dict[str, str] = Field(alias="commonAnnotations")
    external_url: str = Field(alias="externalURL")
    alerts: list[Alert]
