"""Build requests exactly as Slack sends them to an app: signed slash commands and interactions."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import secrets
import time
from typing import Any
from urllib.parse import urlencode

DEFAULT_TEAM_ID = "T0CHATOPS1"
DEFAULT_TEAM_DOMAIN = "chatops-test"
DEFAULT_APP_ID = "A0CHATOPS1"
DEFAULT_USER_ID = "U0ONCALL01"
DEFAULT_USER_NAME = "oncall"
DEFAULT_CHANNEL_ID = "C0INCIDENT"
DEFAULT_CHANNEL_NAME = "incidents"
DEFAULT_RESPONSE_URL = "https://hooks.slack.com/commands/T0CHATOPS1/1/abc"


_triggers = itertools.count(1)


def new_trigger_id() -> str:
    """Return a trigger id shaped like Slack's, new for every interaction (as Slack's are)."""
    return f"{int(time.time())}.{next(_triggers)}.{secrets.token_hex(16)}"


def sign(signing_secret: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """Return Slack's signature headers for `body`: HMAC-SHA256 of `v0:timestamp:body`, over bytes."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(signing_secret.encode(), b"v0:" + ts.encode() + b":" + body, hashlib.sha256)
    return {
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": f"v0={digest.hexdigest()}",
    }


def slash_command_form(
    command: str = "/health",
    text: str = "",
    *,
    user_id: str = DEFAULT_USER_ID,
    user_name: str = DEFAULT_USER_NAME,
    channel_id: str = DEFAULT_CHANNEL_ID,
    channel_name: str = DEFAULT_CHANNEL_NAME,
    response_url: str = DEFAULT_RESPONSE_URL,
    trigger_id: str | None = None,
    team_id: str = DEFAULT_TEAM_ID,
    team_domain: str = DEFAULT_TEAM_DOMAIN,
    api_app_id: str = DEFAULT_APP_ID,
) -> dict[str, str]:
    """Return the form fields Slack posts for a slash command invocation."""
    return {
        # `token` is the deprecated verification token; Slack still sends it.
        "token": "verification-token",
        "team_id": team_id,
        "team_domain": team_domain,
        "channel_id": channel_id,
        "channel_name": channel_name,
        "user_id": user_id,
        "user_name": user_name,
        "command": command,
        "text": text,
        "api_app_id": api_app_id,
        "is_enterprise_install": "false",
        "response_url": response_url,
        "trigger_id": trigger_id or new_trigger_id(),
    }


def signed_slash_command_request(
    signing_secret: str,
    command: str = "/health",
    text: str = "",
    user_id: str = DEFAULT_USER_ID,
    channel_id: str = DEFAULT_CHANNEL_ID,
    response_url: str = DEFAULT_RESPONSE_URL,
    timestamp: int | None = None,
    **fields: str,
) -> tuple[bytes, dict[str, str]]:
    """Return (body, headers) of a slash command request signed as Slack signs it."""
    form = slash_command_form(
        command, text, user_id=user_id, channel_id=channel_id, response_url=response_url, **fields
    )
    body = urlencode(form).encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded", **sign(signing_secret, body, timestamp)}
    return body, headers


def signed_interaction_request(
    signing_secret: str, payload: dict[str, Any], timestamp: int | None = None
) -> tuple[bytes, dict[str, str]]:
    """Return (body, headers) of an interaction request: form field `payload` holding JSON, signed."""
    body = urlencode({"payload": json.dumps(payload)}).encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded", **sign(signing_secret, body, timestamp)}
    return body, headers


def block_actions_payload(
    action_id: str,
    value: str | None = None,
    *,
    block_id: str = "actions",
    action_type: str = "button",
    user_id: str = DEFAULT_USER_ID,
    user_name: str = DEFAULT_USER_NAME,
    channel_id: str = DEFAULT_CHANNEL_ID,
    channel_name: str = DEFAULT_CHANNEL_NAME,
    message_ts: str = "1700000000.000100",
    message: dict[str, Any] | None = None,
    response_url: str = DEFAULT_RESPONSE_URL,
    trigger_id: str | None = None,
    team_id: str = DEFAULT_TEAM_ID,
    api_app_id: str = DEFAULT_APP_ID,
) -> dict[str, Any]:
    """Return a block_actions payload shaped like Slack's for a click on a message button."""
    action: dict[str, Any] = {
        "action_id": action_id,
        "block_id": block_id,
        "type": action_type,
        "action_ts": f"{time.time():.6f}",
    }
    if action_type == "button":
        action["text"] = {"type": "plain_text", "text": action_id, "emoji": True}
    if value is not None:
        action["value"] = value
    return {
        "type": "block_actions",
        "user": {"id": user_id, "username": user_name, "name": user_name, "team_id": team_id},
        "api_app_id": api_app_id,
        "token": "verification-token",
        "container": {
            "type": "message",
            "message_ts": message_ts,
            "channel_id": channel_id,
            "is_ephemeral": False,
        },
        "trigger_id": trigger_id or new_trigger_id(),
        "team": {"id": team_id, "domain": DEFAULT_TEAM_DOMAIN},
        "enterprise": None,
        "is_enterprise_install": False,
        "channel": {"id": channel_id, "name": channel_name},
        "message": message or {"type": "message", "ts": message_ts, "text": "", "blocks": []},
        "state": {"values": {}},
        "response_url": response_url,
        "actions": [action],
    }


def view_submission_payload(
    callback_id: str,
    values: dict[str, dict[str, dict[str, Any]]],
    *,
    private_metadata: str = "",
    view_id: str = "V00000001",
    user_id: str = DEFAULT_USER_ID,
    user_name: str = DEFAULT_USER_NAME,
    team_id: str = DEFAULT_TEAM_ID,
    api_app_id: str = DEFAULT_APP_ID,
    trigger_id: str | None = None,
) -> dict[str, Any]:
    """Return a view_submission payload; `values` is state.values ({block_id: {action_id: {...}}})."""
    return {
        "type": "view_submission",
        "team": {"id": team_id, "domain": DEFAULT_TEAM_DOMAIN},
        "user": {"id": user_id, "username": user_name, "name": user_name, "team_id": team_id},
        "api_app_id": api_app_id,
        "token": "verification-token",
        "trigger_id": trigger_id or new_trigger_id(),
        "view": {
            "id": view_id,
            "team_id": team_id,
            "type": "modal",
            "callback_id": callback_id,
            "private_metadata": private_metadata,
            "title": {"type": "plain_text", "text": "chatops"},
            "blocks": [],
            "state": {"values": values},
            "hash": "1700000000.abcdef",
            "app_id": api_app_id,
            "root_view_id": view_id,
            "previous_view_id": None,
            "external_id": "",
            "clear_on_close": False,
            "notify_on_close": False,
        },
        "response_urls": [],
        "is_enterprise_install": False,
        "enterprise": None,
    }
