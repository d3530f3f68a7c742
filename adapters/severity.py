"""Incident severities, P1 (worst) to P4: the record's, the grammar's and the settings' one list."""

from __future__ import annotations

from typing import Literal

Severity = Literal["P1", "P2", "P3", "P4"]
SEVERITIES: tuple[Severity, ...] = ("P1", "P2", "P3", "P4")
