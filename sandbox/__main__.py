"""Thin CLI: `python -m sandbox up|status|down|fault ...`, which is `chatops sandbox ...`.

Its grammar (key=value options anywhere, as every command's) is in sandbox/grammar.py.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys

from commands.base import UsageError
from sandbox.grammar import USAGE, parse

_USAGE_LINES = "\n       ".join(USAGE.splitlines())


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return the exit status."""
    tokens = list(sys.argv[1:] if argv is None else argv)
    if any(token in ("-h", "--help") for token in tokens) or tokens == ["help"]:
        print(f"usage: {_USAGE_LINES}")
        return 0
    try:
        args = parse(tokens)
    except UsageError as error:
        # Quoted as a terminal quotes a word, not in Slack's code marks.
        message = re.sub(r"`([^`]*)`", r"'\1'", error.message)
        print(f"sandbox: {message}\nusage: {_USAGE_LINES}", file=sys.stderr)
        return 2
    # The platform's pieces (engine, processes, HTTP) are imported once the line is understood.
    from bot.config import ConfigError, load_settings
    from sandbox.backend_container import get_faults, set_faults
    from sandbox.manager import down, status, up
    from sandbox.processes import SandboxError

    try:
        settings = load_settings()
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 2
    try:
        if args.action == "fault":
            faults = set_faults(settings, **args.faults) if args.faults else get_faults(settings)
            print(json.dumps(faults))
            return 0
        if args.action == "up":
            result = asyncio.run(up(settings, args.version, reseed=args.reseed))
        elif args.action == "down":
            result = asyncio.run(down(settings, purge=args.purge))
        else:
            result = asyncio.run(status(settings))
    except SandboxError as error:
        print(f"sandbox: {error}", file=sys.stderr)
        return 1
    print(json.dumps(result.to_dict(), indent=2) if args.as_json else result)
    if args.action == "status":
        return 0 if result.running else 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
