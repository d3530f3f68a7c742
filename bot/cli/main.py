"""`chatops`: every slash command from a terminal, plus serve, config and the sandbox."""

from __future__ import annotations

import gc
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

# Only what help needs is imported here: `chatops --help` and `chatops <command> --help` answer at
# once. The settings, the runtime and a command's runner and renderer are imported when it runs.
from bot.cli.usage import EXIT_OK, EXIT_USAGE, answer_help, known, terminal_usage, unknown_command

if TYPE_CHECKING:
    from bot.config import Settings
    from commands.base import CommandResult

EXIT_DEGRADED = 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    as_json = "--json" in args
    args = [arg for arg in args if arg != "--json"]
    args, png_file = _take_png(args)
    if png_file == "":
        print("chatops: --png needs a file name", file=sys.stderr)
        return EXIT_USAGE
    helped = answer_help(args)
    if helped is not None:
        return helped
    name, rest = args[0], args[1:]
    if not known(name):
        print(unknown_command(name), file=sys.stderr)
        return EXIT_USAGE
    if name == "sandbox":
        # The sandbox is a development aid with its own small CLI (its own settings, errors, exit codes).
        from sandbox.__main__ import main as sandbox_main

        return sandbox_main((["--json"] if as_json else []) + rest)
    if name in ("config", "serve", "migrate") and rest:
        print(f"chatops {name}: unexpected argument '{rest[0][:40]}' ({name} takes none)", file=sys.stderr)
        print(f"usage: chatops {name}", file=sys.stderr)
        return EXIT_USAGE
    import asyncio

    from bot.config import ConfigError, load_settings

    try:
        settings = load_settings()
    except ConfigError as error:
        print(f"chatops: {error}", file=sys.stderr)
        return EXIT_USAGE
    if name == "config":
        return _print_config(settings, as_json)
    if name == "triage":
        _begin_lookup(settings, rest)
    from bot.observability import configure_logging

    # The terminal shows results; only errors of the bot itself go to stderr as log lines.
    configure_logging("ERROR" if name != "serve" else settings.log_level)
    if name == "serve":
        from bot.web.server import serve

        return int(asyncio.run(serve(settings)))
    if name == "migrate":
        return asyncio.run(_migrate(settings))
    if name in ("mfa", "approve", "audit-trail"):
        from bot.cli.gate import run_gate_command

        return asyncio.run(run_gate_command(settings, name, rest, as_json))
    return asyncio.run(run_command(settings, name, rest, as_json, png_file))


def _begin_lookup(settings: Settings, tokens: list[str]) -> None:
    """Begin a lookup's scan of the logs now, in forked processes: it goes on while the rest of the
    command loads and the databases answer, and the lookup takes its answer (commands/triage/lookups.py).
    """
    from commands import logsearch
    from commands.base import UsageError
    from commands.triage_grammar import LookupArgs, parse

    try:
        command = parse(tokens)
    except UsageError:
        return  # the run itself says what is wrong
    if isinstance(command, LookupArgs):
        logsearch.begin(logsearch.expand(settings.log_paths), command.needles())


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
    from bot.dispatch import CommandTimeout, execute, lookup, new_request_id
    from bot.invocation import Invocation
    from bot.services import Services
    from bot.state import migrate_best_effort, runtime_role
    from commands.base import UsageError
    from commands.destructive import Proposal

    try:
        spec = lookup(name)
    except UsageError:
        print(unknown_command(name), file=sys.stderr)
        return EXIT_USAGE
    # The gate (roles, MFA, the lock, the trail) is built only when a command proposes a change.
    services = Services.build(settings)
    try:
        await migrate_best_effort(
            services.migrations_db(), settings.dependency_timeout_seconds, runtime_role(settings)
        )
        invocation = Invocation(request_id=new_request_id(), source="cli", user_id=settings.cli_user)
        try:
            result = await execute(spec, services, tokens, invocation)
        except UsageError as error:
            from bot.render.common import plain

            print(f"chatops {spec.name}: {plain(error.message, quote_code=True)}", file=sys.stderr)
            print(f"usage: {terminal_usage(spec.name, error.usage or spec.usage)}", file=sys.stderr)
            return EXIT_USAGE
        except CommandTimeout as error:
            print(f"chatops {spec.name}: {error}", file=sys.stderr)
            return EXIT_DEGRADED
        if isinstance(result, Proposal):
            from bot.cli.gate import run_through_gate
            from bot.runtime import Runtime

            return await run_through_gate(Runtime.build(settings, services), result, invocation, as_json)
        if as_json:
            print(result.model_dump_json(indent=2))
        else:
            from bot.render.common import terminal_console  # rich: not for JSON

            spec.terminal(result, terminal_console())
        sys.stdout.flush()  # the answer first, the bookkeeping after
        if settings.incident_channel:
            from bot.slack.reply import record_terminal_result  # the open incident's timeline, as Slack

            await record_terminal_result(services, spec.name, spec.slack, result, invocation)
        if png_file is not None:
            return await _write_picture(spec.name, result, png_file) or result.exit_code()
        return result.exit_code()
    finally:
        await services.aclose()


async def _write_picture(name: str, result: CommandResult, path: str) -> int | None:
    """Write a result's picture to `path`; return an exit code only when that fails."""
    import asyncio
    from pathlib import Path

    from bot.render.picture import picture_of

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
    from bot.services import Services
    from bot.state import migrate, runtime_role

    services = Services.build(settings)
    try:
        applied = await migrate(services.migrations_db(), runtime_role(settings))
    finally:
        await services.aclose()
    print("applied: " + (", ".join(applied) if applied else "nothing (up to date)"))
    return EXIT_OK


def _print_config(settings: Settings, as_json: bool) -> int:
    import json

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
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (`chatops ... | head`): stop quietly, as other command-line tools do.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = EXIT_DEGRADED
    # Everything is written: on the way out the collector need not walk every object the imports
    # made (it took 40 ms of a 450 ms trace lookup). Finalizers and exit handlers still run.
    gc.freeze()
    sys.exit(code)
