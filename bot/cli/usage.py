"""What `chatops` answers before it loads anything: its commands, their usage, `--help` anywhere.

Nothing here imports a runner, a renderer, an adapter or the settings: `chatops --help` and
`chatops <command> --help` print from the command table alone (a command's usage is read from its
grammar module, a light import).
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass

from bot.registry import COMMANDS, Ref, asks_for_help

EXIT_OK, EXIT_USAGE = 0, 2


@dataclass(frozen=True)
class BotCommand:
    """A command of the bot itself, at the terminal only: its name, summary, usage and subcommands."""

    name: str
    summary: str
    usage: str | Ref
    subcommands: tuple[str, ...] = ()

    def usage_text(self) -> str:
        """Return the usage, reading it from its grammar module when it lives there."""
        return str(self.usage.constant()) if isinstance(self.usage, Ref) else self.usage


# At the terminal a code is asked for, never given as an argument (shell history, process lists).
MFA_USAGE = "chatops mfa enroll | confirm | status | reset <@user or user id>"
APPROVE_USAGE = "chatops approve <approval id>"
AUDIT_TRAIL_USAGE = "chatops audit-trail verify | recent"

BOT_COMMANDS: dict[str, BotCommand] = {
    command.name: command
    for command in (
        BotCommand(
            "serve",
            "run the Slack app (Socket Mode or HTTP) with /metrics, /healthz and /alerts",
            "chatops serve",
        ),
        BotCommand("config", "print the effective settings, secrets masked", "chatops config [--json]"),
        BotCommand("migrate", "apply the bot's database migrations", "chatops migrate"),
        BotCommand(
            "mfa",
            "TOTP step-up for CHATOPS_CLI_USER: enroll, confirm, status; reset another's",
            MFA_USAGE,
            ("enroll", "confirm", "status", "reset"),
        ),
        BotCommand("approve", "give the second approval of a plan (two-person rule)", APPROVE_USAGE),
        BotCommand(
            "audit-trail",
            "check the hash chain of the bot's audit trail; its latest entries",
            AUDIT_TRAIL_USAGE,
            ("verify", "recent"),
        ),
        BotCommand(
            "sandbox",
            "the local stand-in 3dPot platform: up, status, down, faults",
            Ref("sandbox.grammar", "USAGE"),
            ("up", "status", "down", "fault"),
        ),
    )
}


def usage_text() -> str:
    """Describe the CLI: every command, one line each."""
    lines = [
        "usage: chatops <command> [arguments] [--json] [--png FILE]",
        "       chatops <command> --help",
        "",
        "Slash commands (the same arguments as in Slack):",
    ]
    lines += [f"  {name:<12} {spec.summary}" for name, spec in COMMANDS.items()]
    lines += ["", "Bot:"]
    lines += [f"  {name:<12} {command.summary}" for name, command in BOT_COMMANDS.items()]
    lines += [
        "",
        "Options are key=value, anywhere in the line (quote words with spaces).",
        "Exit codes: 0 healthy, 1 degraded or down, 2 usage or configuration error.",
    ]
    return "\n".join(lines)


def terminal_usage(name: str, usage: str) -> str:
    """Write a slash command's usage as typed at the terminal: `/audit user` -> `chatops audit user`.

    Each form the usage gives (`/restore list | /restore verify <id>`) goes on a line of its own.
    """
    forms = usage.replace(f" | /{name} ", f"\n/{name} ")
    return re.sub(rf"(?<![\w/])/{re.escape(name)}\b", f"chatops {name}", forms)


def command_help(name: str) -> str | None:
    """Return the help of one command (its usage, then what it does), or None for an unknown name."""
    spec = COMMANDS.get(name)
    if spec is not None:
        usage = terminal_usage(name, spec.usage)
        summary, subcommands = spec.summary, spec.subcommands
        notes = [
            "--json prints the result as JSON.",
            f"In Slack: /{name} with the same arguments; /{name} help.",
        ]
    elif name in BOT_COMMANDS:
        command = BOT_COMMANDS[name]
        usage, summary, subcommands, notes = command.usage_text(), command.summary, command.subcommands, []
    else:
        return None
    lines = ["usage: " + "\n       ".join(usage.splitlines()), "", f"{name}: {summary}"]
    if subcommands:
        lines.append("subcommands: " + ", ".join(subcommands))
    if "=" in usage:
        notes.insert(0, "Options are key=value, in any order, anywhere in the line.")
    return "\n".join([*lines, *notes])


def answer_help(args: list[str]) -> int | None:
    """Print help when the arguments ask for it; return the exit code, or None to run the command.

    `chatops`, `chatops --help`, `chatops help [command]`, and `--help` / `-h` anywhere after a
    command name (`chatops audit export --help`), or `help` as a command's only word.
    """
    if not args or args[0] in ("-h", "--help"):
        print(usage_text())
        return EXIT_OK if args else EXIT_USAGE
    name, rest = args[0], args[1:]
    if name == "help":
        if not rest:
            print(usage_text())
            return EXIT_OK
        name, rest = rest[0], ["--help"]
    if not asks_for_help(rest):
        return None
    text = command_help(name)
    if text is None:
        print(unknown_command(name), file=sys.stderr)
        return EXIT_USAGE
    print(text)
    return EXIT_OK


def unknown_command(name: str) -> str:
    """Say that a command does not exist, and which do."""
    return f"chatops: unknown command '{name[:40]}'\n\n{usage_text()}"


def known(name: str) -> bool:
    """Return whether `name` is a command of chatops."""
    return name in COMMANDS or name in BOT_COMMANDS
