"""Check that an HTTP request really comes from Slack before anything reads what it asks for.

Every check here refuses with a status and a reason, never an exception: a request that is too
big, unsigned, signed with another secret, stale, from the future, or not the form Slack sends is
answered 4xx and runs nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from starlette.requests import ClientDisconnect, Request

# Slack's own requests are a few kilobytes; a modal's state is the largest. Nothing bigger is read.
MAX_BODY_BYTES = 1 << 20
# Slack's window: a request whose timestamp is more than five minutes off is refused (either way).
MAX_CLOCK_SKEW_SECONDS = 300
_SIGNATURE = re.compile(r"v0=[0-9a-f]{64}")
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
# Ids Slack gives each interaction: a request with one of these is the same request if sent again.
_ONCE_KEYS = ("event_id", "trigger_id")


class Refusal(Exception):
    """The request is refused with this HTTP status; the reason goes to the log, not the client."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class SlackRequest:
    """A request whose signature was checked, with what it carries parsed."""

    body: bytes
    headers: dict[str, str]
    form: dict[str, str]
    payload: dict[str, Any] | None  # interactions: the JSON of the `payload` field
    once_key: str  # the same for a replay or a retry of this request, different for any other

    @property
    def kind(self) -> str:
        """Return `command`, the interaction's type (`block_actions`, `view_submission`...) or `event`."""
        if "command" in self.form:
            return "command"
        if self.payload is not None:
            return str(self.payload.get("type") or "unknown")
        return "event" if self.form.get("type") == "event_callback" else "unknown"

    @property
    def retry(self) -> bool:
        """Return whether Slack says this is a retry of a delivery it thinks failed."""
        return "x-slack-retry-num" in self.headers


async def read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """Read the body, refusing (413) past `limit` bytes: memory never holds more than that."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise Refusal(400, "Content-Length is not a number")
        if int(declared) > limit:
            raise Refusal(413, f"body of {declared} bytes is over {limit}")
    chunks: list[bytes] = []
    size = 0
    try:
        # Chunked bodies declare nothing: count while reading and stop at the limit.
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise Refusal(413, f"body over {limit} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        raise Refusal(400, "the client went away while sending the body") from None
    return b"".join(chunks)


def verify(
    body: bytes, headers: dict[str, str], signing_secret: bytes, now: float | None = None
) -> SlackRequest:
    """Check the signature and timestamp, then parse the body; raise Refusal for anything wrong."""
    timestamp = headers.get("x-slack-request-timestamp", "")
    signature = headers.get("x-slack-signature", "")
    if not _TIMESTAMP.fullmatch(timestamp):
        raise Refusal(401, "missing or malformed X-Slack-Request-Timestamp")
    if abs((now if now is not None else time.time()) - int(timestamp)) > MAX_CLOCK_SKEW_SECONDS:
        raise Refusal(401, "stale or future X-Slack-Request-Timestamp")
    if not _SIGNATURE.fullmatch(signature):
        raise Refusal(401, "missing or malformed X-Slack-Signature")
    expected = hmac.new(signing_secret, b"v0:" + timestamp.encode() + b":" + body, hashlib.sha256)
    if not hmac.compare_digest(f"v0={expected.hexdigest()}".encode(), signature.encode()):
        raise Refusal(401, "bad signature")
    return parse(body, headers, fallback_key=f"signature:{signature[3:]}")


def parse(body: bytes, headers: dict[str, str], fallback_key: str) -> SlackRequest:
    """Parse a signed body as Slack sends it (a form, or JSON for events); raise Refusal(400)."""
    content_type = headers.get("content-type", "").split(";")[0].strip().lower()
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise Refusal(400, "body is not UTF-8") from None
    form: dict[str, str] = {}
    payload: dict[str, Any] | None = None
    if content_type == "application/json":
        event = _json_object(text, "body")
        form = {"type": str(event.get("type") or "")}
        payload = event
    elif content_type == "application/x-www-form-urlencoded":
        try:
            fields = parse_qs(text, keep_blank_values=True, strict_parsing=bool(text), max_num_fields=200)
        except ValueError as error:
            raise Refusal(400, f"malformed form: {error}") from None
        if any(len(values) > 1 for values in fields.values()):
            raise Refusal(400, "a form field appears twice")
        form = {key: values[0] for key, values in fields.items()}
        if "payload" in form:
            payload = _json_object(form["payload"], "payload")
    else:
        raise Refusal(400, f"unexpected Content-Type {content_type or '(none)'}")
    if "command" not in form and payload is None:
        raise Refusal(400, "neither a slash command nor an interaction")
    return SlackRequest(
        body=body,
        headers=headers,
        form=form,
        payload=payload,
        once_key=once_key(payload if payload is not None else form, fallback_key),
    )


def once_key(data: dict[str, Any], fallback: str) -> str:
    """Name a delivery so that a replay or a retry of it gets the same name (and nothing else does)."""
    for field in _ONCE_KEYS:
        value = data.get(field)
        if isinstance(value, str) and value:
            team = data.get("team_id") or (data.get("team") or {}).get("id") or ""
            return f"{field}:{team}:{value}"[:300]
    return fallback


def _json_object(text: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        raise Refusal(400, f"{what} is not valid JSON (or nested too deep)") from None
    if not isinstance(value, dict):
        raise Refusal(400, f"{what} is not a JSON object")
    return value
