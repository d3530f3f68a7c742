"""The sandbox's grammar: `chatops sandbox up | status | down | fault ...`, as every command's.

Options are `key=value` anywhere in the line (commands/base.py); the argparse spellings of earlier
versions (`--error-rate 0.1`, `--latency-ms 200`, `--purge`, `--clear`...) are read as the options
they name. Light on purpose: `chatops sandbox --help` imports this module and nothing else here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from commands.base import Arguments, UsageError, normalise_flags

USAGE = (
    "chatops sandbox up [version=vX.Y.Z] [reseed=yes] | status | down [purge=yes]\n"
    "chatops sandbox fault [error-rate=0..1] [latency=200ms] [auth-burst=N] [health=ok|fail]"
    " | fault clear | fault   (no option: show the faults)"
)
Action = Literal["up", "status", "down", "fault"]
ACTIONS: tuple[Action, ...] = ("up", "status", "down", "fault")
# Every fault off: what `fault clear` sets.
CLEAR: dict[str, Any] = {"error_rate": 0.0, "latency_ms": 0.0, "auth_burst": 0.0, "health": "ok"}

_VALUED = {"version", "error-rate", "latency", "latency-ms", "auth-burst", "health"}
_SWITCHES = {"reseed", "purge", "clear", "json"}
_LATENCY = re.compile(r"^(\d+(?:\.\d+)?)(ms|s)?$")
_MAX_LATENCY_MS = 60_000.0


@dataclass(frozen=True)
class SandboxArgs:
    """What one `chatops sandbox` line asks."""

    action: Action
    version: str | None = None
    reseed: bool = False
    purge: bool = False
    # The faults to change (none: show them).
    faults: dict[str, Any] = field(default_factory=dict)
    as_json: bool = False


def parse(tokens: list[str]) -> SandboxArgs:
    """Read one sandbox line; an unknown or misplaced word is named in the error."""
    args = Arguments.parse(normalise_flags(tokens, _VALUED, _SWITCHES, USAGE), USAGE)
    as_json = args.option("json", _yes, False)
    action = args.next_positional("what to do: up, status, down or fault")
    if action == "up":
        version = args.option("version", _version, None)
        reseed = args.option("reseed", _yes, False)
        args.done()
        return SandboxArgs("up", version=version, reseed=reseed, as_json=as_json)
    if action == "status":
        args.done()
        return SandboxArgs("status", as_json=as_json)
    if action == "down":
        purge = args.option("purge", _yes, False)
        args.done()
        return SandboxArgs("down", purge=purge, as_json=as_json)
    if action == "fault":
        return SandboxArgs("fault", faults=_faults(args), as_json=as_json)
    raise args.fail(f"unknown subcommand `{action[:40]}` (use up, status, down or fault)")


def _faults(args: Arguments) -> dict[str, Any]:
    clear = args.option("clear", _yes, False)
    if args.positionals[:1] == ["clear"]:
        args.positionals.pop(0)
        clear = True
    faults: dict[str, Any] = dict(CLEAR) if clear else {}
    error_rate = args.option("error_rate", _share, None)
    latency = args.option("latency", _milliseconds, None)
    latency_ms = args.option("latency_ms", _milliseconds, None)
    auth_burst = args.option("auth_burst", _per_second, None)
    health = args.option("health", _health, None)
    args.done()
    if latency is not None and latency_ms is not None:
        raise args.fail("give the latency once (latency=200ms)")
    given = {
        "error_rate": error_rate,
        "latency_ms": latency if latency is not None else latency_ms,
        "auth_burst": auth_burst,
        "health": health,
    }
    faults.update({key: value for key, value in given.items() if value is not None})
    return faults


def _yes(text: str) -> bool:
    if text.lower() not in ("yes", "no", "true", "false"):
        raise UsageError("use yes or no")
    return text.lower() in ("yes", "true")


def _version(text: str) -> str:
    from sandbox.images import VERSIONS  # the images' module talks to the engine: only when asked

    if text not in VERSIONS:
        raise UsageError(f"`{text[:20]}` is not a sandbox version; versions: {', '.join(VERSIONS)}")
    return text


def _share(text: str) -> float:
    value = _number(text)
    if not 0.0 <= value <= 1.0:
        raise UsageError(f"`{text[:20]}` is not a share between 0 and 1 (0.1 is 10 %)")
    return value


def _milliseconds(text: str) -> float:
    """Read a latency: `200ms`, `0.2s`, or a bare number of milliseconds."""
    match = _LATENCY.match(text.strip().lower())
    if not match:
        raise UsageError(f"`{text[:20]}` is not a latency (200ms, 1.5s, or milliseconds)")
    value = float(match.group(1)) * (1000.0 if match.group(2) == "s" else 1.0)
    if value > _MAX_LATENCY_MS:
        raise UsageError(f"`{text[:20]}` is more than the most the sandbox adds, 60s")
    return value


def _per_second(text: str) -> float:
    value = _number(text)
    if not 0.0 <= value <= 1000.0:
        raise UsageError(f"`{text[:20]}` is not a rate between 0 and 1000 per second")
    return value


def _health(text: str) -> str:
    if text.lower() not in ("ok", "fail"):
        raise UsageError(f"`{text[:20]}` is not a health: use ok or fail")
    return text.lower()


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"`{text[:20]}` is not a number") from None
    if value != value:  # NaN
        raise UsageError("NaN is not a number here")
    return value
