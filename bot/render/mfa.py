"""The /mfa views: the enrollment shown once (a modal, or an ephemeral message), the reset's step-up."""

from __future__ import annotations

import json
from typing import Any

from bot.gate.mfa import Enrollment
from bot.gate.mfa_command import qr_text
from bot.render.common import Block, Message, context, section

ENROLL_VIEW = "mfa_enroll"
RESET_VIEW = "mfa_reset"
CODE_BLOCK = "code"


def _key_text(enrollment: Enrollment) -> str:
    # Grouped by four, as authenticator apps show keys typed by hand.
    key = " ".join(enrollment.secret[index : index + 4] for index in range(0, len(enrollment.secret), 4))
    return f"Key (type it by hand instead of scanning): `{key}`"


def _code_input(label: str) -> Block:
    return {
        "type": "input",
        "block_id": CODE_BLOCK,
        "label": {"type": "plain_text", "text": label},
        "element": {
            "type": "plain_text_input",
            "action_id": "value",
            "min_length": 6,
            "max_length": 6,
            "placeholder": {"type": "plain_text", "text": "123456"},
        },
    }


def enrollment_blocks(enrollment: Enrollment, intro: str) -> list[Block]:
    """Show a new seed: the QR code drawn as text, the key, and what to do next."""
    return [
        section(intro),
        section(f"```{qr_text(enrollment.uri)}```"),
        section(_key_text(enrollment)),
        context("Shown once: nothing of it stays in Slack. If you close this, run `/mfa enroll` again."),
    ]


def enroll_modal(enrollment: Enrollment, intro: str) -> dict[str, Any]:
    """Build the enrollment modal: the seed, and the first code to confirm it on the spot."""
    return {
        "type": "modal",
        "callback_id": ENROLL_VIEW,
        "title": {"type": "plain_text", "text": "Enroll in MFA"},
        "submit": {"type": "plain_text", "text": "Confirm"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [*enrollment_blocks(enrollment, intro), _code_input("The code your app shows now")],
    }


def enrollment_message(enrollment: Enrollment, intro: str) -> Message:
    """Build the ephemeral fallback when no modal can be opened (only the caller sees it, once)."""
    return Message(text="Your MFA enrollment (shown once)", blocks=enrollment_blocks(enrollment, intro))


def reset_modal(target: str, channel: str) -> dict[str, Any]:
    """Build the modal that asks the administrator's own code before a reset."""
    return {
        "type": "modal",
        "callback_id": RESET_VIEW,
        "private_metadata": json.dumps({"target": target, "channel": channel}),
        "title": {"type": "plain_text", "text": "Reset MFA"},
        "submit": {"type": "plain_text", "text": "Reset"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            section(
                f"Reset the MFA enrollment of <@{target}>? Their plans waiting for confirmation are"
                " cancelled; they are told by DM, and this channel sees it."
            ),
            _code_input("Your own code, to confirm it is you"),
        ],
    }


def reset_metadata(raw: str) -> tuple[str, str] | None:
    """Read the target and channel a reset modal carries; None when it is not one of ours."""
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("target"), str):
        return None
    return data["target"], str(data.get("channel") or "")
