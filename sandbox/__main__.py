"""Thin CLI: `python -m sandbox up|status|down|fault ...`."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from sandbox.backend_container import get_faults, set_faults
from sandbox.images import VERSIONS
from sandbox.manager import down, status, up
from sandbox.processes import SandboxError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sandbox", description=__doc__)
    parser.add_argument("--json", action="store_true", help="print the status as JSON")
    sub = parser.add_subparsers(dest="command", required=True)
    up_parser = sub.add_parser("up", help="start (or reuse) every component")
    up_parser.add_argument("--version", choices=VERSIONS, help="backend version to run")
    up_parser.add_argument("--reseed", action="store_true", help="re-seed the audit_log")
    sub.add_parser("status", help="report every component")
    down_parser = sub.add_parser("down", help="stop every component")
    down_parser.add_argument(
        "--purge", action="store_true", help="also delete data, images and the platform database"
    )
    fault = sub.add_parser("fault", help="show or change the backend's injected faults")
    fault.add_argument("--error-rate", type=float, help="share of API requests answering 5xx")
    fault.add_argument("--latency-ms", type=float, help="latency added to API requests")
    fault.add_argument("--auth-burst", type=float, help="failed logins/MFA checks per second")
    fault.add_argument("--health", choices=("ok", "fail"), help="make /health fail or pass")
    fault.add_argument("--clear", action="store_true", help="turn every fault off")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return the exit status."""
    from bot.config import ConfigError, load_settings

    args = _parser().parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 2
    try:
        if args.command == "fault":
            changes: dict[str, Any] = {}
            if args.clear:
                changes = {"error_rate": 0, "latency_ms": 0, "auth_burst": 0, "health": "ok"}
            for key in ("error_rate", "latency_ms", "auth_burst", "health"):
                value = getattr(args, key)
                if value is not None:
                    changes[key] = value
            faults = set_faults(settings, **changes) if changes else get_faults(settings)
            print(json.dumps(faults))
            return 0
        if args.command == "up":
            result = asyncio.run(up(settings, args.version, reseed=args.reseed))
        elif args.command == "down":
            result = asyncio.run(down(settings, purge=args.purge))
        else:
            result = asyncio.run(status(settings))
    except SandboxError as error:
        print(f"sandbox: {error}", file=sys.stderr)
        return 1
    print(json.dumps(result.to_dict(), indent=2) if args.json else result)
    if args.command == "status":
        return 0 if result.running else 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
