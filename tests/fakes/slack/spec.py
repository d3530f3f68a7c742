"""Slack's published description of the Web API, read per method, and the content rules it implies."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

from slack_sdk.models.blocks import Block

from tests.fakes.slack.documented import EVERY_METHOD_PARAMS, EXTRA_ERRORS, EXTRA_METHODS, GENERIC_ERRORS
from tests.fakes.slack.models import Rejection
from tests.fakes.specs import load_spec

WEB_API_SPEC = "slack/web_api_openapi_v2.json"

# Slack's own limits for a message (also enforced by slack_sdk's models).
MAX_MESSAGE_BLOCKS = 50
MAX_MESSAGE_TEXT = 40_000

# Fields that slack_sdk JSON-encodes into a form field; they are decoded before recording so
# that tests can assert on structures instead of strings.
JSON_FIELDS = frozenset({"blocks", "attachments", "view", "files", "metadata"})

# Slack accepts any JSON body as "form" when the spec lists application/json; multipart is
# the other encoding of Swagger 2 `formData` parameters (files.upload uses it).
FORM_TYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})


@dataclass(frozen=True)
class MethodSpec:
    """What Slack publishes about one Web API method: the description, plus documented.py."""

    name: str
    verbs: frozenset[str]
    consumes: frozenset[str]
    params: Mapping[str, Mapping[str, Any]]
    required: frozenset[str]
    source: str
    # Every error name Slack may answer for this method: the description's enum, the generic
    # errors every method's page lists, and what the page adds (documented.EXTRA_ERRORS).
    errors: frozenset[str] = frozenset()


@cache
def method_spec(method: str) -> MethodSpec | None:
    """Return the published description of a Web API method, or None if Slack has no such method."""
    spec = load_spec(WEB_API_SPEC)
    path = spec["paths"].get(f"/{method}")
    enum: list[str] = []
    if path is not None:
        # Each path has exactly one operation (get or post) in this description.
        verbs = frozenset(verb.upper() for verb in path)
        operation = next(iter(path.values()))
        consumes = operation.get("consumes") or spec.get("consumes") or ["application/x-www-form-urlencoded"]
        parameters = list(operation.get("parameters", []))
        schema = operation.get("responses", {}).get("default", {}).get("schema", {})
        enum = schema.get("properties", {}).get("error", {}).get("enum", [])
        source = WEB_API_SPEC
    elif method in EXTRA_METHODS:
        extra = EXTRA_METHODS[method]
        verbs = frozenset(verb.upper() for verb in extra["verbs"])
        consumes = extra["consumes"]
        parameters = list(extra["parameters"])
        source = "docs.slack.dev method reference"
    else:
        return None
    params = {**EVERY_METHOD_PARAMS, **{p["name"]: p for p in parameters}}
    required = frozenset(p["name"] for p in parameters if p.get("required"))
    errors = frozenset(enum) | GENERIC_ERRORS | EXTRA_ERRORS.get(method, frozenset())
    return MethodSpec(method, verbs, frozenset(consumes), params, required, source, errors)


def validate_blocks(blocks: Any, limit: int = MAX_MESSAGE_BLOCKS) -> list[str]:
    """Return why `blocks` is not valid Block Kit (empty list when valid), using slack_sdk's models."""
    if isinstance(blocks, str):
        try:
            blocks = json.loads(blocks)
        except json.JSONDecodeError as exc:
            return [f"blocks is not valid JSON: {exc}"]
    if not isinstance(blocks, list):
        return [f"blocks must be a JSON array, got {type(blocks).__name__}"]
    errors: list[str] = []
    if len(blocks) > limit:
        errors.append(f"no more than {limit} items allowed [json-pointer:/blocks] ({len(blocks)} given)")
    for index, raw in enumerate(blocks):
        if not isinstance(raw, dict):
            errors.append(f"block {index} must be an object")
            continue
        try:
            block = Block.parse(raw)
            if block is None:
                # Block.parse returns None for a missing or unknown type; Slack rejects those.
                errors.append(f"block {index}: unknown block type {raw.get('type')!r}")
                continue
            block.validate_json()
        except Exception as exc:  # any model error means Slack would reject it
            errors.append(f"block {index} ({raw.get('type')}): {exc}")
    return errors


def check_type(name: str, value: Any, type_: str | None) -> str | None:
    """Return why a parameter value does not match its declared Swagger type, if it doesn't."""
    if isinstance(value, str):
        text = value.strip()
        if type_ == "integer" and not re.fullmatch(r"-?\d+", text):
            return f"[ERROR] expected an integer for field {name}, got {value!r}"
        if type_ == "number":
            try:
                float(text)
            except ValueError:
                return f"[ERROR] expected a number for field {name}, got {value!r}"
        if type_ == "boolean" and text.lower() not in {"true", "false", "1", "0"}:
            return f"[ERROR] expected a boolean for field {name}, got {value!r}"
        return None
    # JSON bodies carry native types; a string-typed field may hold an object (blocks, view).
    if type_ == "integer" and (isinstance(value, bool) or not isinstance(value, int)):
        return f"[ERROR] expected an integer for field {name}, got {value!r}"
    if type_ == "number" and (isinstance(value, bool) or not isinstance(value, (int, float))):
        return f"[ERROR] expected a number for field {name}, got {value!r}"
    if type_ == "boolean" and not isinstance(value, (bool, int)):
        return f"[ERROR] expected a boolean for field {name}, got {value!r}"
    return None


def check_complete_upload(files: Any) -> None:
    """Enforce the documented shape of completeUploadExternal's `files`: [{"id", "title"?}, ...]."""
    if not isinstance(files, list) or not files:
        raise Rejection("invalid_arguments", "[ERROR] files must be a non-empty JSON array")
    for index, entry in enumerate(files):
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str) or not entry["id"]:
            raise Rejection("invalid_arguments", f"[ERROR] files[{index}] needs a string id")
        if "title" in entry and not isinstance(entry["title"], str):
            raise Rejection("invalid_arguments", f"[ERROR] files[{index}].title must be a string")


def truthy(value: Any) -> bool:
    """Interpret a Slack boolean parameter sent as a form string or a JSON value."""
    if isinstance(value, str):
        return value.strip().lower() in {"true", "1"}
    return bool(value)


def bearer(header: str | None) -> str | None:
    """Extract the token from an `Authorization: Bearer ...` header."""
    if header and header.lower().startswith("bearer "):
        return header[7:].strip() or None
    return None


def as_str(value: Any) -> str | None:
    """Return a string parameter value or None."""
    return value if isinstance(value, str) and value else None
