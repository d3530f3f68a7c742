"""Read what Slack said when a Web API call failed."""

from __future__ import annotations

from slack_sdk.errors import SlackApiError

# Errors after which the bot cannot post in that channel; a command's response_url still can.
NOT_POSTABLE = frozenset({"channel_not_found", "not_in_channel", "is_archived"})


def slack_error_code(error: SlackApiError) -> str:
    """Return Slack's error code (`not_in_channel`), or `unknown` when the answer carries none."""
    code = error.response.get("error") if error.response is not None else None
    return str(code) if code else "unknown"
