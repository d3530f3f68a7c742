"""`chatops`: every slash command from a terminal, plus serve, config and the sandbox."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import structlog

from bot.config import ConfigError, Settings, load_settings
from bot.dispatch import CommandTimeout, execute, lookup, new_request_id
from bot.invocation import Invocation
from bot.observability import configure_logging
from bot.registry import COMMANDS
from bot.render.common import terminal_console
from bot.render.picture import picture_of
from bot.runtime import Runtime
from bot.services import Services
from bot.state import migrate, migrate_best_effort, runtime_role
from commands.base import CommandResult, UsageError
from commands.destructive import Proposal

EXIT_OK, EXIT_DEGRADED, EXIT_USAGE = 0, 1, 2

log = structlog.get_logger("chatops.cli")


def usage_text() -> str:
    """Describe the CLI."""
    lines = [
        "usage: chatops <command> [arguments] [--json] [--png FILE]",
        "",
        "Slash commands (same arguments as in Slack):",
    ]
    lines += [f"  {name:<10} {spec.summary}" for name, spec in COMMANDS.items()]
    lines += [
        "",
        "Bot:",
        "  serve      run the Slack app (Socket Mode with SLACK_APP_TOKEN, else HTTP),",
        "             with /metrics and /healthz",
        "  config     print the effective settings, secrets masked",
        "  migrate    apply the bot's database migrations",
        "  mfa        enroll | confirm | status | reset <user>: TOTP step-up for CHATOPS_CLI_USER",
        "  approve    <approval id>: give the second approval of a plan (two-person rule)",
        "  audit-trail verify | recent: check the hash chain of the bot's audit trail",
        "  sandbox    up [--version vX.Y.Z] | status | down [--purge] | fault key=value ...",
        "             the local stand-in 3dPot platform",
        "",
        "Exit codes: 0 healthy, 1 degraded or down, 2 usage or configuration error.",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    as_json = "--json" in args
    args = [arg for arg in args if arg != "--json"]
    args, png_file = _take_png(args)
    if png_file == "":
        print("chatops: --png needs a file name", file=sys.stderr)
        return EXIT_USAGE
    if not args or args[0] in {"-h", "--help", "help"}:
        print(usage_text())
        return EXIT_OK if args else EXIT_USAGE
    try:
        settings = load_settings()
    except ConfigError as error:
        print(f"chatops: {error}", file=sys.stderr)
        return EXIT_USAGE
    # The terminal shows results; only errors of the bot itself go to stderr as log lines.
    configure_logging("ERROR" if args[0] != "serve" else settings.log_level)
    name, rest = args[0], args[1:]
    if name == "config":
        return _print_config(settings, as_json)
    if name == "serve":
        from bot.web.server import serve

        return int(asyncio.run(serve(settings)))
    if name == "migrate":
        return asyncio.run(_migrate(settings))
    if name == "sandbox":
        # The sandbox is a development aid with its own small CLI; imported only when asked for.
        from sandbox.__main__ import main as sandbox_main

        return sandbox_main((["--json"] if as_json else []) + rest)
    if name in ("mfa", "approve", "audit-trail"):
        from bot.cli.gate import run_gate_command

        return asyncio.run(run_gate_command(settings, name, rest, as_json))
    return asyncio.run(run_command(settings, name, rest, as_json, png_file))


def _take_png(args: list[str]) -> tuple[list[str], str | None]:
    """Take `--png FILE` (or `--png=FILE`) out of the arguments; "" when FILE is missing."""
    for index, arg in enumerate(args):
        if arg == "--png":
            file = args[index + 1] if index + 1 < len(args) else ""
            return args[:index] + args[index + 2 :], file
        if arg.startswith("--png="):
            return args[:index] + args[index + 1 :], arg.removeprefix("--png=")
    return args, None


async def run_command(
    settings: Settings, name: str, tokens: list[str], as_json: bool, png_file: str | None = None
) -> int:
    """Run one slash command from the terminal and print its result (and write its picture)."""
    try:
        spec = lookup(name)
    except UsageError as error:
        print(f"chatops: {error.message}\n\n{usage_text()}", file=sys.stderr)
        return EXIT_USAGE
    runtime = Runtime.build(settings)
    services = runtime.services
    try:
        await migrate_best_effort(
            services.migrations_db(), settings.dependency_timeout_seconds, runtime_role(settings)
        )
        invocation = Invocation(request_id=new_request_id(), source="cli", user_id=settings.cli_user)
        try:
            result = await execute(spec, services, tokens, invocation)
        except UsageError as error:
            print(f"chatops {spec.name}: {error.message}", file=sys.stderr)
            print(f"usage: {error.usage or spec.usage}", file=sys.stderr)
            return EXIT_USAGE
        except CommandTimeout as error:
            print(f"chatops {spec.name}: {error}", file=sys.stderr)
            return EXIT_DEGRADED
        if isinstance(result, Proposal):
            from bot.cli.gate import run_through_gate

            return await run_through_gate(runtime, result, invocation, as_json)
        if as_json:
            print(result.model_dump_json(indent=2))
        else:
            spec.terminal(result, terminal_console())
        from bot.slack.reply import record_terminal_result  # the open incident's timeline, as Slack

        await record_terminal_result(services, spec.name, spec.slack, result, invocation)
        if png_file is not None:
            return await _write_picture(spec.name, result, png_file) or result.exit_code()
        return result.exit_code()
    finally:
        await services.aclose()


async def _write_picture(name: str, result: CommandResult, path: str) -> int | None:
    """Write a result's picture to `path`; return an exit code only when that fails."""
    png = await picture_of(result)
    if png is None:
        print(f"chatops {name}: --png: this command draws no picture", file=sys.stderr)
        return EXIT_USAGE
    try:
        await asyncio.to_thread(Path(path).write_bytes, png)
    except OSError as error:
        print(f"chatops {name}: --png: cannot write {path}: {error.strerror}", file=sys.stderr)
        return EXIT_USAGE
    # stderr: with --json, stdout holds the JSON only.
    print(f"wrote {path} ({len(png):,} bytes)", file=sys.stderr)
    return None


async def _migrate(settings: Settings) -> int:
    services = Services.build(settings)
    try:
        applied = await migrate(services.migrations_db(), runtime_role(settings))
    finally:
        await services.aclose()
    print("applied: " + (", ".join(applied) if applied else "nothing (up to date)"))
    return EXIT_OK


def _print_config(settings: Settings, as_json: bool) -> int:
    shown = settings.masked()
    if as_json:
        print(json.dumps(shown, indent=2))
    else:
        width = max(len(key) for key in shown)
        for key, value in shown.items():
            print(f"{key:<{width}}  {value}")
    return EXIT_OK


def entrypoint() -> None:
    """Console-script entry point."""
    sys.exit(main())
