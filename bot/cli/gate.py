"""The gate at the terminal: plan, typed confirmation, TOTP read from the terminal, progress."""

from __future__ import annotations

import asyncio
import dataclasses
import getpass
import json
import sys
import uuid

from bot.cli.usage import APPROVE_USAGE, AUDIT_TRAIL_USAGE, BOT_COMMANDS
from bot.config import Settings
from bot.gate.gate import Approval, Refused
from bot.gate.mfa_command import qr_text
from bot.invocation import Invocation
from bot.render.common import plain, terminal_console
from bot.render.gate import (
    execution_footer,
    outcome_message,
    plan_message,
    terminal_execution,
    terminal_plan,
)
from bot.render.steps import StepBars
from bot.runtime import Runtime
from bot.slack import incidents
from bot.slack.gate_notices import announce_reset
from bot.slack.incidents import user_resolver
from bot.state import migrate_best_effort, runtime_role
from commands.base import Arguments, UsageError
from commands.destructive import Proposal

EXIT_OK, EXIT_NOT_DONE, EXIT_USAGE = 0, 1, 2


async def _ask(prompt: str, secret: bool = False) -> str:
    """Read one answer without blocking the event loop: from the terminal, or from piped input.

    A code is read without echo at a terminal; piped (a script answering, as the demo does), it is
    read from standard input, never from an argument.
    """
    reader = getpass.getpass if secret and sys.stdin.isatty() else input
    try:
        return (await asyncio.to_thread(reader, prompt)).strip()
    except EOFError:
        return ""


def _need_user(settings: Settings) -> str:
    if not settings.cli_user:
        raise UsageError("set CHATOPS_CLI_USER to your Slack user id to use the gate from the terminal")
    return settings.cli_user


async def run_through_gate(
    runtime: Runtime, proposal: Proposal, invocation: Invocation, as_json: bool
) -> int:
    """Show the plan, take the confirmation and the TOTP code, then execute with progress."""
    console = terminal_console()
    err = terminal_console(stderr=True)
    terminal_plan(proposal.plan, err if as_json else console)
    try:
        user = _need_user(runtime.services.settings)
        approval = await runtime.gate.propose(proposal, invocation)
    except UsageError as error:
        print(f"chatops: {plain(error.message, quote_code=True)}", file=sys.stderr)
        return EXIT_USAGE
    except Refused as refusal:
        print(f"chatops: refused: {plain(refusal.message, quote_code=True)}", file=sys.stderr)
        return EXIT_NOT_DONE
    await _record_in_incident(runtime, approval, plan_message(approval).text)
    typed = None
    if approval.typed_word:
        typed = await _ask(f"Type {approval.typed_word} to confirm: ")
    else:
        if (await _ask("Proceed? Type yes to continue: ")).lower() != "yes":
            await runtime.gate.cancel(approval.id, user)
            print("chatops: cancelled; nothing was changed", file=sys.stderr)
            return EXIT_NOT_DONE
    return await _confirm_and_run(runtime, approval, user, typed, as_json)


async def _confirm_and_run(
    runtime: Runtime, approval: Approval, user: str, typed: str | None, as_json: bool
) -> int:
    code = await _ask("TOTP code: ", secret=True)
    try:
        confirmation = await runtime.gate.confirm(approval.id, user, code, typed)
    except Refused as refusal:
        print(f"chatops: refused: {plain(refusal.message, quote_code=True)}", file=sys.stderr)
        return EXIT_NOT_DONE
    if confirmation.kind == "mfa_failed":
        assert confirmation.verification is not None
        print(f"chatops: {plain(confirmation.verification.message, quote_code=True)}", file=sys.stderr)
        return EXIT_NOT_DONE
    if confirmation.kind == "awaiting_second":
        print(
            f"Confirmed. A second operator must now run: chatops approve {approval.id}"
            f" (before {approval.expires_at:%H:%M:%S} UTC)"
        )
        return EXIT_OK
    return await _execute(runtime, confirmation.approval, as_json)


async def _execute(runtime: Runtime, approval: Approval, as_json: bool) -> int:
    err = terminal_console(stderr=True)
    try:
        # A live line per step with a bar for long ones; plain lines when stderr is not a terminal.
        with StepBars(err) as bars:
            result = await runtime.gate.execute(approval, bars.publish)
    except Refused as refusal:
        print(f"chatops: not run: {plain(refusal.message, quote_code=True)}", file=sys.stderr)
        if refusal.new_plan is not None:
            terminal_plan(refusal.new_plan.plan, err)
        return EXIT_NOT_DONE
    if as_json:
        print(result.model_dump_json(indent=2))
    else:
        terminal_execution(result, terminal_console())
    sys.stdout.flush()  # the answer first, the bookkeeping after
    outcome = outcome_message(approval.plan.title, result, execution_footer(approval))
    await _record_in_incident(runtime, approval, outcome.text)
    return result.exit_code()


async def _record_in_incident(runtime: Runtime, approval: Approval, text: str) -> None:
    """Put a plan or its outcome into the open incident of CHATOPS_INCIDENT_CHANNEL, as Slack does.

    Slack records both in the timeline of the channel's incident (bot/listeners/gate.py); from the
    terminal, the incident is the configured channel's. Never raises (incidents.record logs).
    """
    channel = runtime.services.settings.incident_channel
    if channel:
        await incidents.record(
            runtime.services.state_db, channel, f"/{approval.command}", text, approval.requester
        )


async def run_gate_command(settings: Settings, name: str, tokens: list[str], as_json: bool) -> int:
    """Run `chatops mfa ...`, `chatops approve <id>` or `chatops audit-trail ...`."""
    runtime = Runtime.build(settings)
    try:
        await migrate_best_effort(
            runtime.services.migrations_db(), settings.dependency_timeout_seconds, runtime_role(settings)
        )
        if name == "audit-trail":
            return await _audit_trail(runtime, tokens, as_json)
        user = _need_user(settings)
        if name == "approve":
            return await _approve(runtime, user, tokens, as_json)
        return await _mfa(runtime, user, tokens)
    except UsageError as error:
        print(f"chatops {name}: {plain(error.message, quote_code=True)}", file=sys.stderr)
        # The terminal's own grammar (`chatops mfa confirm` asks for the code), not Slack's.
        print(f"usage: {BOT_COMMANDS[name].usage_text()}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        await runtime.services.aclose()


async def _mfa(runtime: Runtime, user: str, tokens: list[str]) -> int:
    if tokens[:1] == ["confirm"]:
        if len(tokens) > 1:
            # A code on the command line ends up in shell history and process lists.
            raise UsageError(
                "the code is read from the terminal, not from an argument: run `chatops mfa confirm`"
            )
        tokens = ["confirm", await _ask("TOTP code: ", secret=True)]
    client = runtime.slack_client
    answer = await runtime.mfa_command.run(
        user, tokens, resolve_user=user_resolver(client) if client is not None else None
    )
    print(plain(answer.text))
    if answer.enrollment is not None:
        print(qr_text(answer.enrollment.uri))
        print(f"key: {answer.enrollment.secret}")
        print(f"uri: {answer.enrollment.uri}")
    if answer.reset_target is not None:
        code = await _ask("Your own TOTP code: ", secret=True)
        done = await runtime.mfa_command.reset(user, answer.reset_target, code)
        print(
            f"MFA enrollment of {done.target} {'removed' if done.removed else 'was not there'};"
            f" {len(done.cancelled)} plan(s) of theirs cancelled"
        )
        if client is not None:
            channel = runtime.services.settings.incident_channel
            for problem in await announce_reset(client, runtime.services.state_db, done, user, channel):
                print(f"chatops: {problem}", file=sys.stderr)
    return EXIT_OK if answer.ok else EXIT_NOT_DONE


def parse_approve(tokens: list[str]) -> uuid.UUID:
    """Read `chatops approve <approval id>`."""
    args = Arguments.parse(tokens, APPROVE_USAGE)
    given = args.next_positional("the approval id printed with the plan")
    args.done()
    try:
        return uuid.UUID(given)
    except ValueError:
        raise UsageError(f"`{given[:40]}` is not an approval id", APPROVE_USAGE) from None


def parse_audit_trail(tokens: list[str]) -> str:
    """Read `chatops audit-trail [verify | recent]` (verify when nothing is said)."""
    args = Arguments.parse(tokens, AUDIT_TRAIL_USAGE)
    action = args.optional_positional() or "verify"
    if action not in ("verify", "recent"):
        raise UsageError(f"unknown subcommand `{action[:40]}` (use verify or recent)", AUDIT_TRAIL_USAGE)
    args.done()
    return action


async def _approve(runtime: Runtime, user: str, tokens: list[str], as_json: bool) -> int:
    approval_id = parse_approve(tokens)
    try:
        approval = await runtime.gate.may_confirm(approval_id, user)
    except Refused as refusal:
        print(f"chatops: refused: {plain(refusal.message, quote_code=True)}", file=sys.stderr)
        return EXIT_NOT_DONE
    terminal_plan(approval.plan, terminal_console(stderr=True))
    return await _confirm_and_run(runtime, approval, user, None, as_json)


async def _audit_trail(runtime: Runtime, tokens: list[str], as_json: bool) -> int:
    action = parse_audit_trail(tokens)
    if action == "verify":
        report = await runtime.trail.verify()
        if as_json:
            print(json.dumps(dataclasses.asdict(report), indent=2))
        else:
            verdict = "intact" if report.ok else "TAMPERED"
            anchored = (
                f", anchored at {report.anchored_rows}" if report.anchored_rows is not None else ", no anchor"
            )
            print(f"audit trail: {report.rows} rows{anchored}: {verdict}")
            for problem in report.problems:
                print(f"  problem: {problem}")
            for note in report.notes:
                print(f"  note: {note}")
        return EXIT_OK if report.ok else EXIT_NOT_DONE
    if action == "recent":
        rows = await runtime.trail.recent()
        if as_json:
            print(json.dumps(rows, indent=2, default=str))
        else:
            for row in rows:
                print(
                    f"{row['at']:%Y-%m-%d %H:%M:%S} {row['actor'] or '-':<12} {row['action']:<22}"
                    f" {row['decision']:<14} {row['outcome'] or ''} {row['arguments'] or ''}"
                )
        return EXIT_OK
    raise AssertionError(action)  # checked above
