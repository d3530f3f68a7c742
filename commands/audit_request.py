"""What an `/audit` request asks for: its form, the rows it is about, its window and limit."""

from __future__ import annotations

import ipaddress
import re
import shlex
import uuid
from datetime import timedelta
from typing import Any, Literal

from commands.base import Model, UsageError, format_duration
from commands.ids import parse_id

Form = Literal["user", "ip", "request", "failed-logins", "mfa", "security"]
FORMS: tuple[Form, ...] = ("user", "ip", "request", "failed-logins", "mfa", "security")
ExportFormat = Literal["csv", "json"]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# The runbook's "security events" (Triagem Inicial, item 5) and its MFA query.
SECURITY_ACTIONS = ("LOGIN", "MFA_CHALLENGE_FAILED", "RATE_LIMIT_EXCEEDED", "PERMISSION_DENIED")
MFA_ACTIONS = ("MFA_CHALLENGE_FAILED",)
DEFAULT_SINCE = timedelta(hours=24)
DEFAULT_EXPORT_SINCE = timedelta(days=7)
DEFAULT_MIN_FAILURES = 5
# Longer text than this is refused before any query: it cannot be a username, and 16 kB still
# covers anything hostile a slash command can carry.
MAX_TEXT = 16_384

_UUID_SHAPE = re.compile(r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}")
_UUID_LOOKALIKE = re.compile(r"[0-9a-fA-F-]{20,45}")


class AuditFilter(Model):
    """Which audit_log rows a request is about (all conditions hold together)."""

    user_id: uuid.UUID | None = None
    username: str | None = None
    network: Network | None = None
    request_ids: list[str] | None = None
    actions: list[str] | None = None
    failed_logins: bool = False

    def describe(self) -> str:
        """Name the filter in a few words for titles."""
        parts = []
        if self.user_id is not None:
            parts.append(f"user {self.user_id}")
        if self.username is not None:
            parts.append(f"user {clip(self.username, 60)}")
        if self.network is not None:
            parts.append(f"ip {_network_text(self.network)}")
        if self.request_ids:
            parts.append(f"request {clip(self.request_ids[0], 60)}")
        if self.failed_logins:
            parts.append("failed logins")
        if self.actions:
            parts.append("action " + ",".join(self.actions))
        return ", ".join(parts) or "all events"


class AuditQuery(Model):
    """One investigation form with its subject, window and limit."""

    form: Form
    subject: str = ""
    filter: AuditFilter
    since: timedelta = DEFAULT_SINCE
    limit: int = 20
    min_failures: int = DEFAULT_MIN_FAILURES
    note: str = ""

    def export_arguments(self, fmt: ExportFormat = "csv") -> str:
        """Write the `/audit export` arguments that fetch every row this query counted."""
        words = ["export", fmt, self.form]
        if self.subject.startswith("-"):
            # As an option, a subject like `-o` cannot be read as the terminal's `-o FILE`.
            words[-1] = shlex.quote(f"{self.form}={self.subject}")
        elif self.subject:
            words.append(shlex.quote(self.subject))
        words.append(f"since={format_duration(self.since)}")
        return " ".join(words)


class ExportRequest(Model):
    """`/audit export`: every matching row as CSV or JSON."""

    format: ExportFormat
    form: Form | None = None
    filter: AuditFilter
    since: timedelta = DEFAULT_EXPORT_SINCE
    limit: int
    output: str | None = None

    def describe(self) -> str:
        """Name what is exported: the form when it is only a form, else the filter."""
        if self.form in ("failed-logins", "mfa", "security") and self.filter == form_filter(self.form, "")[0]:
            return self.form
        return self.filter.describe()


class IndexesRequest(Model):
    """`/audit indexes`: print the shipped index file."""


AuditRequest = AuditQuery | ExportRequest | IndexesRequest


def form_filter(form: Form, subject: str) -> tuple[AuditFilter, str]:
    """Return the rows a form is about, and a note when the subject was normalized."""
    if form == "user":
        return AuditFilter(**user_fields(subject)), ""
    if form == "ip":
        fields = ip_fields(subject)
        network = fields["network"]
        note = ""
        if "/" in subject and _network_text(network) != subject.strip():
            note = f"searched {_network_text(network)}"
        return AuditFilter(**fields), note
    if form == "request":
        return AuditFilter(**request_fields(subject)), ""
    if form == "failed-logins":
        return AuditFilter(failed_logins=True), ""
    if form == "mfa":
        return AuditFilter(actions=list(MFA_ACTIONS)), ""
    return AuditFilter(actions=list(SECURITY_ACTIONS)), ""


def check_text(value: str, what: str) -> str:
    """Accept any text PostgreSQL can store as a parameter; refuse what it cannot."""
    if value == "":
        raise UsageError(f"{what} is empty")
    if len(value) > MAX_TEXT:
        raise UsageError(f"{what} is {len(value)} characters long; at most {MAX_TEXT} are accepted")
    if "\x00" in value:
        raise UsageError(f"{what} contains a NUL character, which PostgreSQL text cannot hold")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError(f"{what} is not valid Unicode (it holds a lone surrogate)") from None
    return value


def user_fields(text: str) -> dict[str, Any]:
    """Read a user id (a UUID) or else a username."""
    check_text(text, "the user")
    candidate = text.strip()
    if _UUID_SHAPE.fullmatch(candidate):
        return {"user_id": uuid.UUID(candidate)}
    if _UUID_LOOKALIKE.fullmatch(candidate) and candidate.count("-") >= 3:
        raise UsageError(f"`{clip(text, 40)}` looks like a user id but is not a UUID (8-4-4-4-12 hex digits)")
    return {"username": text}


def ip_fields(text: str) -> dict[str, Any]:
    """Read an IPv4/IPv6 address (searched as a /32 or /128) or a CIDR network."""
    check_text(text, "the address")
    candidate = text.strip()
    if "%" in candidate:
        raise UsageError(f"`{clip(text, 40)}` has a zone index (%…), which audit_log addresses never carry")
    try:
        network = ipaddress.ip_network(candidate, strict=False)
    except ValueError:
        raise UsageError(
            f"`{clip(text, 40)}` is not an IP address or CIDR network"
            " (examples: 192.0.2.10, 10.0.0.0/8, 2001:db8::1, 2001:db8::/32)"
        ) from None
    return {"network": network}


def request_fields(text: str) -> dict[str, Any]:
    """Read a request id as platforms write it (any token: UUID, ULID, `req-4242424`, X-Ray ...).

    It is matched exactly as typed; a UUID also in both spellings platforms write (hex, dashed).
    """
    identifier = parse_id(text, "a request id")
    spellings = [identifier]
    if _UUID_SHAPE.fullmatch(identifier):
        parsed = uuid.UUID(identifier)
        spellings += [parsed.hex, str(parsed)]
    return {"request_ids": list(dict.fromkeys(spellings))}


def clip(text: str, limit: int) -> str:
    """Shorten text to at most limit characters, an ellipsis marking the cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _network_text(network: Network) -> str:
    """Write a network as typed for a single address (no /32 or /128), else in CIDR form."""
    if network.prefixlen == network.max_prefixlen:
        return str(network.network_address)
    return str(network)
