"""Render plans, progress and outcomes of destructive commands, for Slack and the terminal."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape as escape_markup

from bot.render.common import Block, Message, context, escape, header, mention, section
from commands.destructive import Execution, Plan, Step

if TYPE_CHECKING:
    from bot.gate.gate import Approval

CONFIRM_ACTION = "gate_confirm"
CANCEL_ACTION = "gate_cancel"
MFA_VIEW = "gate_mfa"
TOTP_BLOCK = "totp"
TYPED_WORD_BLOCK = "typed_word"

_STEP_EMOJI = {
    "pending": ":white_circle:",
    "running": ":hourglass_flowing_sand:",
    "done": ":white_check_mark:",
    "failed": ":x:",
    "skipped": ":fast_forward:",
}


def _bullets(lines: list[str]) -> str:
    return "\n".join(f"• {escape(line)}" for line in lines) or "• (nothing)"


def plan_sections(plan: Plan) -> list[Block]:
    """Build the blocks that describe a plan: now, after, kept, way back, warnings."""
    blocks = [
        section(f"*Now*\n{_bullets(plan.current)}"),
        section(f"*After*\n{_bullets(plan.target)}"),
    ]
    if plan.kept:
        blocks.append(section(f"*Kept*\n{_bullets(plan.kept)}"))
    if plan.way_back:
        blocks.append(section(f"*Way back*\n{_bullets(plan.way_back)}"))
    if plan.warnings:
        blocks.append(section(f":warning: *Warnings*\n{_bullets(plan.warnings)}"))
    return blocks


def plan_message(approval: Approval) -> Message:
    """Build the plan message with Confirm and Cancel buttons."""
    plan = approval.plan
    who = mention(approval.requester)
    steps = "Confirm asks for your TOTP code"
    if approval.typed_word:
        steps += f" and the word `{escape(approval.typed_word)}`"
    if approval.needs_second_approver:
        steps += "; then a second operator approves with their own code"
    blocks: list[Block] = [header(f"Plan: {plan.title}"), *plan_sections(plan)]
    estimate = f" · about {plan.estimated_seconds:.0f} s" if plan.estimated_seconds else ""
    blocks.append(
        context(
            f"Requested by {who} · `/{approval.command} {escape(' '.join(approval.arguments))}`"
            f" · {approval.environment}{estimate} · expires {approval.expires_at:%H:%M:%S} UTC · {steps}"
        )
    )
    blocks.append(_buttons(approval, "Confirm"))
    return Message(text=f"Plan: {escape(plan.title)} (awaiting confirmation by {who})", blocks=blocks)


def awaiting_second_message(approval: Approval) -> Message:
    """Build the plan message once its requester confirmed, waiting for a second operator."""
    blocks: list[Block] = [header(f"Plan: {approval.plan.title}"), *plan_sections(approval.plan)]
    blocks.append(
        section(
            f":lock: Confirmed by {mention(approval.requester)}. A second operator must approve"
            f" with their own TOTP code before {approval.expires_at:%H:%M:%S} UTC."
        )
    )
    blocks.append(_buttons(approval, "Approve as second operator"))
    return Message(text=f"Plan awaiting a second approver: {escape(approval.plan.title)}", blocks=blocks)


def _buttons(approval: Approval, confirm_label: str) -> Block:
    value = str(approval.id)
    return {
        "type": "actions",
        "block_id": "gate_actions",
        "elements": [
            {
                "type": "button",
                "action_id": CONFIRM_ACTION,
                "text": {"type": "plain_text", "text": confirm_label},
                "style": "danger",
                "value": value,
            },
            {
                "type": "button",
                "action_id": CANCEL_ACTION,
                "text": {"type": "plain_text", "text": "Cancel"},
                "value": value,
            },
        ],
    }


def mfa_modal(approval: Approval, second: bool) -> dict[str, Any]:
    """Build the modal that asks for the TOTP code (and the typed word where required)."""
    blocks: list[Block] = [
        section(
            f"*{escape(approval.plan.title)}*\n" + ("Second approval." if second else "Confirm your plan.")
        ),
    ]
    if approval.typed_word and not second:
        blocks.append(
            {
                "type": "input",
                "block_id": TYPED_WORD_BLOCK,
                "label": {"type": "plain_text", "text": f"Type {approval.typed_word} to confirm"},
                "element": {"type": "plain_text_input", "action_id": "value", "max_length": 40},
            }
        )
    blocks.append(
        {
            "type": "input",
            "block_id": TOTP_BLOCK,
            "label": {"type": "plain_text", "text": "TOTP code from your authenticator"},
            "element": {
                "type": "plain_text_input",
                "action_id": "value",
                "min_length": 6,
                "max_length": 6,
                "placeholder": {"type": "plain_text", "text": "123456"},
            },
        }
    )
    return {
        "type": "modal",
        "callback_id": MFA_VIEW,
        "private_metadata": str(approval.id),
        "title": {"type": "plain_text", "text": "Step-up MFA"},
        "submit": {"type": "plain_text", "text": "Approve"},
        "close": {"type": "plain_text", "text": "Back"},
        "blocks": blocks,
    }


def execution_footer(approval: Approval) -> str:
    """Write the footer of an execution's messages (mrkdwn): the command as typed and who approved it."""
    approvers = mention(approval.requester) + (
        f" and {mention(approval.second_approver)}" if approval.second_approver else ""
    )
    return f"`/{approval.command} {escape(' '.join(approval.arguments))}` · approved by {approvers}"


def progress_message(title: str, steps: list[Step], footer: str) -> Message:
    """Build the message that shows an execution's steps, updated in place.

    `title` is plain text (the plan's); `footer` is mrkdwn the caller escaped (`execution_footer`).
    """
    lines = []
    for step in steps:
        timing = f" · {step.duration_ms / 1000:.1f} s" if step.duration_ms is not None else ""
        detail = f" — {escape(step.detail)}" if step.detail else ""
        lines.append(f"{_STEP_EMOJI[step.status]} {escape(step.name)}{timing}{detail}")
    blocks: list[Block] = [header(title), section("\n".join(lines) or "starting…"), context(footer)]
    now = escape(steps[-1].name) if steps else "starting"
    return Message(text=f"{escape(title)}: {now}", blocks=blocks)


def outcome_message(title: str, result: Execution, footer: str) -> Message:
    """Build the final message of an execution: outcome, steps, the state of each part, the way back.

    `title` is plain text and `footer` mrkdwn, as for `progress_message`.
    """
    verdict = ":white_check_mark: Succeeded" if result.succeeded else ":x: Failed"
    message = progress_message(title, result.steps, footer)
    blocks = [message.blocks[0], section(f"*{verdict}* — {escape(result.summary)}"), message.blocks[1]]
    if result.state:
        blocks.append(section("*State now*\n" + _bullets(result.state)))
    if result.way_back:
        blocks.append(section(f"*Way back*\n`{escape(result.way_back)}`"))
    blocks.append(message.blocks[2])
    verb = "succeeded" if result.succeeded else "failed"
    return Message(text=f"{escape(title)}: {verb} — {escape(result.summary)}", blocks=blocks)


def notice_message(title: str, markdown: str) -> Message:
    """Build a short message that replaces a plan (cancelled, refused, expired).

    `title` is plain text (escaped here for the fallback text); the caller escapes `markdown`.
    """
    return Message(text=f"{escape(title)}: {markdown}", blocks=[header(title), section(markdown)])


def terminal_plan(plan: Plan, console: Console) -> None:
    """Print a plan."""
    console.print(f"[bold]Plan: {escape_markup(plan.title)}[/]")
    for label, lines in (
        ("Now", plan.current),
        ("After", plan.target),
        ("Kept", plan.kept),
        ("Way back", plan.way_back),
        ("Warnings", plan.warnings),
    ):
        if lines:
            console.print(f"[bold]{label}[/]")
            for line in lines:
                console.print(f"  • {escape_markup(line)}")


def terminal_execution(result: Execution, console: Console) -> None:
    """Print an execution's outcome."""
    style = "green" if result.succeeded else "red"
    console.print(
        f"[bold {style}]{'Succeeded' if result.succeeded else 'Failed'}[/]: {escape_markup(result.summary)}"
    )
    for step in result.steps:
        timing = f" ({step.duration_ms / 1000:.1f} s)" if step.duration_ms is not None else ""
        console.print(f"  {step.status:<8} {escape_markup(step.name)}{timing} {escape_markup(step.detail)}")
    for line in result.state:
        console.print(f"  state: {escape_markup(line)}")
    if result.way_back:
        console.print(f"  way back: {escape_markup(result.way_back)}")
