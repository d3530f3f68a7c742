"""The demo (README command 1, `bash scripts/demo.sh`): one whole incident on the sandbox.

Each step is printed as the command a user would type (`$ chatops triage window=1m`), then its real
output: the platform healthy, a bad deploy through the gate, /triage critical with the reason, the
runbook's advice and what changed, an incident declared, the way back through the gate, /triage no
longer critical, the incident resolved and its RCA draft. Between steps it waits, and says so, for
what a person would wait for: Prometheus having data to judge, the 5xx ratio crossing 5 %.

The bad deploy is the sandbox's v2.0.6 built to pass /health while answering 30 % of requests with
5xx (CHATOPS_SANDBOX_FAULTY_RELEASE=passes-health): /health alone says nothing is wrong. The
operator is the demo operator (bot.gate.authz.DEMO_OPERATOR, a role only in the sandbox
environment), enrolled in MFA here; the demo computes its codes from the printed key, as an
authenticator app would, and types them. Its settings (its own state database, a fresh secret key,
the operator) exist only in the environment of the commands it runs.

It ends with the sandbox as it found it: v2.0.5, no faults, its own v2.0.6 image as it was.
Run: python -m sandbox.demo
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import secrets
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from sandbox.backend_container import get_faults
from sandbox.images import DEFAULT_VERSION, ensure_images
from sandbox.platform_db import drop_database, ensure_database

if TYPE_CHECKING:
    from bot.config import Settings

CHANNEL = "C0DEMO0001"  # the incident's channel (Slack is not needed: the terminal names it)
WINDOW = "1m"  # the triage's window: short, so that the way back shows within a minute
STATE_DATABASE = "chatops_demo"
ERROR_CHECK = "http_5xx_ratio"  # the runbook's 5xx check in commands/triage_checks.yaml
PROCEED, CODE = "Proceed? Type yes to continue: ", "TOTP code: "  # bot/cli/gate.py's prompts


class DemoFailed(Exception):
    """A step did not do what the story needs; the message says which."""


@dataclass
class Demo:
    """The commands' environment, the operator's TOTP key, and the transcript's clock."""

    settings: Settings
    env: dict[str, str]
    chatops: str
    started: float = field(default_factory=time.monotonic)
    key: str | None = None
    last_step: int = 0

    def say(self, text: str) -> None:
        """Print a line of the story (a shell comment, so the transcript reads as a session)."""
        print(f"\n# {text}", flush=True)

    def run(self, *words: str, answers: tuple[tuple[str, str], ...] = (), ok: tuple[int, ...] = (0,)) -> str:
        """Run `chatops <words>` as typed, print its output as it comes, and return it.

        `answers` are (prompt, answer) pairs, typed in order (stdin is not a terminal: bot/cli/gate.py
        reads them from it); each is shown after its prompt, as a terminal would echo it.
        """
        print(f"\n$ chatops {shlex.join(words)}", flush=True)
        process = subprocess.Popen(
            [self.chatops, *words],
            env=self.env,
            stdin=subprocess.PIPE if answers else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert process.stdout is not None
        if answers:
            assert process.stdin is not None
            process.stdin.write("".join(f"{answer}\n" for _, answer in answers))
            process.stdin.close()
        shown = {prompt: _shown(answer) for prompt, answer in answers}
        output = []
        for line in process.stdout:
            for prompt, answer in shown.items():
                line = _echo(line, prompt, answer)
            print(line, end="", flush=True)
            output.append(line)
        code = process.wait()
        if code not in ok:
            raise DemoFailed(f"`chatops {shlex.join(words)}` exited {code}")
        return "".join(output)

    def code(self) -> str:
        """Return the operator's next TOTP code: the current one, or the next one when the current
        one was used already (a code is accepted once; the gate allows one step either way)."""
        import pyotp

        assert self.key is not None, "enroll first"
        now = int(time.time() // 30)
        step = max(now, self.last_step + 1)
        if step > now + 1:
            time.sleep((step - 1) * 30 - time.time() + 0.5)
        self.last_step = step
        return str(pyotp.TOTP(self.key).at(step * 30))

    def elapsed(self) -> str:
        """Say how long the demo has run."""
        return f"{time.monotonic() - self.started:.0f} s"


def _echo(line: str, prompt: str, answer: str) -> str:
    """Show an answer after its prompt, and what followed on the next line, as a terminal echoes it."""
    head, found, rest = line.partition(prompt)
    if not found:
        return line
    return f"{head}{prompt}{answer}\n" + rest.removeprefix("\n")


def _shown(answer: str) -> str:
    return f"{answer}   (the operator's current code, typed by the demo)" if answer.isdigit() else answer


def demo_environment(settings: Settings, state_dsn: str) -> dict[str, str]:
    """The environment of the demo's commands: the caller's, plus the demo's own settings."""
    env = dict(os.environ)
    env.update(
        {
            "CHATOPS_ENVIRONMENT": "sandbox",  # the demo operator holds its role nowhere else
            "CHATOPS_STATE_DATABASE_URL": state_dsn,
            "CHATOPS_SECRET_KEY": secrets.token_urlsafe(32),
            "CHATOPS_OPERATORS": "U0DEMO0001",
            "CHATOPS_CLI_USER": "U0DEMO0001",
            "CHATOPS_INCIDENT_CHANNEL": CHANNEL,
            # No Slack here: the incident lives where it is declared, not in a channel of its own.
            "CHATOPS_INCIDENT_WORKSPACE": "in-place",
            "CHATOPS_SANDBOX_FAULTY_RELEASE": "passes-health",
            "COLUMNS": str(max(100, shutil.get_terminal_size((120, 40)).columns)),
        }
    )
    for name in ("SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "SLACK_SIGNING_SECRET", "GITHUB_TOKEN"):
        env.pop(name, None)  # a demo posts nowhere: everything it does is on this terminal
    return env


def _state_dsn(settings: Settings) -> str:
    return re.sub(r"/[^/?]*(\?|$)", f"/{STATE_DATABASE}\\1", settings.state_database_url, count=1)


# --- waiting for what a person would wait for -------------------------------------------------------


def _query(settings: Settings, promql: str) -> list[float]:
    response = httpx.get(
        settings.prometheus_url.rstrip("/") + "/api/v1/query", params={"query": promql}, timeout=5
    )
    response.raise_for_status()
    return [float(item["value"][1]) for item in response.json()["data"]["result"]]


def unjudged(settings: Settings, window: timedelta) -> list[str]:
    """Return the titles of the checklist's PromQL checks Prometheus cannot judge yet over `window`:
    no series (or only NaN) where the check would then say unknown."""
    from commands.triage_checklist import PromqlCheck, load_checklist, render_query

    waiting = []
    for check in load_checklist(settings.triage_checklist).enabled():
        if not isinstance(check, PromqlCheck):
            continue
        try:
            values = _query(settings, render_query(check.query, window))
        except (httpx.HTTPError, ValueError, KeyError):
            waiting.append(check.title)
            continue
        empty = not values and check.if_empty == "unknown"
        nan = bool(values) and all(math.isnan(value) for value in values) and check.if_nan == "unknown"
        if empty or nan:
            waiting.append(check.title)
    return waiting


def wait_until_judged(
    settings: Settings, window: timedelta, timeout: float = 90.0
) -> tuple[float, list[str]]:
    """Wait until Prometheus can judge every PromQL check over `window`; return the seconds waited
    and what it still could not judge when the time ran out (nothing, normally)."""
    started = time.monotonic()
    while (waiting := unjudged(settings, window)) and time.monotonic() - started < timeout:
        time.sleep(0.5)
    return time.monotonic() - started, waiting


def error_ratio(settings: Settings, window: timedelta) -> float | None:
    """Return the 5xx ratio over `window`, as the triage's check computes it."""
    from commands.triage_checklist import PromqlCheck, load_checklist, render_query

    [check] = [c for c in load_checklist(settings.triage_checklist).checks if c.id == ERROR_CHECK]
    assert isinstance(check, PromqlCheck)
    try:
        values = [
            value for value in _query(settings, render_query(check.query, window)) if not math.isnan(value)
        ]
    except (httpx.HTTPError, ValueError, KeyError):
        return None
    return max(values) if values else None


def wait_for_ratio(
    settings: Settings, window: timedelta, above: bool, threshold: float = 0.05, timeout: float = 150.0
) -> tuple[float, float | None]:
    """Wait until the 5xx ratio over `window` is above (or back under) `threshold`."""
    started = time.monotonic()
    while True:
        ratio = error_ratio(settings, window)
        crossed = ratio is not None and (ratio > threshold if above else ratio < threshold)
        if crossed or time.monotonic() - started >= timeout:
            return time.monotonic() - started, ratio
        time.sleep(1)


# --- the story -----------------------------------------------------------------------------------


def story(demo: Demo) -> None:
    """Tell the incident, step by step."""
    settings = demo.settings
    window = timedelta(minutes=1)
    demo.say("1. The platform: bring the sandbox up (v2.0.5), and look at it.")
    demo.run("sandbox", "up", f"version={DEFAULT_VERSION}")
    faults = get_faults(settings)
    if any(value not in (0, 0.0, "ok", None) for value in faults.values()):
        demo.run("sandbox", "fault", "clear")
    waited, waiting = wait_until_judged(settings, window)
    said = f"after {waited:.1f} s" if waited >= 0.5 else "at once"
    if waiting:
        demo.say(f"Prometheus still has no data for: {', '.join(waiting)} (after {waited:.0f} s)")
    else:
        demo.say(f"Prometheus can judge every check over {WINDOW} ({said}): the first report sees.")
    demo.run("health", ok=(0, 1))
    demo.run("triage", f"window={WINDOW}", ok=(0, 1))

    demo.say(
        "2. The operator (the sandbox's demo operator) enrolls in MFA; the demo keeps the key\n"
        "#    as an authenticator app would, and types its codes."
    )
    enrolled = demo.run("mfa", "enroll")
    found = re.search(r"^key: ([A-Z2-7]+)$", enrolled, re.MULTILINE)
    if found is None:
        raise DemoFailed("`chatops mfa enroll` printed no key")
    demo.key = found.group(1)
    demo.run("mfa", "confirm", answers=((CODE, demo.code()),))

    demo.say("3. A bad deploy: v2.0.6 passes /health but answers 30 % of requests with 5xx.")
    demo.run("rollback", "v2.0.6", answers=((PROCEED, "yes"), (CODE, demo.code())))
    demo.say(f"Traffic shows it, /health does not. Waiting for the 5xx ratio over {WINDOW} to cross 5 % ...")
    waited, ratio = wait_for_ratio(settings, window, above=True)
    demo.say(f"... {_percent(ratio)} after {waited:.0f} s.")
    demo.run("health", ok=(0, 1))
    demo.run("triage", f"window={WINDOW}", ok=(0, 1))

    demo.say("4. Declare the incident, then take the way back the triage names, through the gate.")
    declared = demo.run("incident", "declare", "5xx after the v2.0.6 deploy", "sev=P2", f"channel={CHANNEL}")
    demo.run("rollback", DEFAULT_VERSION, answers=((PROCEED, "yes"), (CODE, demo.code())))
    back = time.monotonic()
    demo.say(f"Waiting until the bad release's requests have left the {WINDOW} window ...")
    wait_for_ratio(settings, window, above=False)
    time.sleep(max(0.0, back + window.total_seconds() + 2 - time.monotonic()))
    ratio = error_ratio(settings, window)
    demo.say(f"... the 5xx ratio over {WINDOW} is {_percent(ratio)}, {time.monotonic() - back:.0f} s after.")
    demo.run("triage", f"window={WINDOW}", ok=(0, 1))

    demo.say("5. Resolve the incident and print its RCA draft (the timeline holds what was done).")
    demo.run("incident", "resolve", "Rolled back v2.0.6 to v2.0.5; 5xx back under 5 %", f"channel={CHANNEL}")
    incident = re.search(r"\bINC-\d+\b", declared)
    demo.run("rca", *([incident.group(0)] if incident else []))


def _percent(ratio: float | None) -> str:
    return "no answer from Prometheus" if ratio is None else f"{ratio:.1%}"


def main() -> int:
    """Tell the story; put the sandbox back as found; print the total time."""
    from bot.config import ConfigError, load_settings

    try:
        settings = load_settings()
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 2
    state_dsn = _state_dsn(settings)
    asyncio.run(drop_database(state_dsn))
    asyncio.run(ensure_database(state_dsn))
    chatops = str(Path(sys.executable).with_name("chatops"))
    demo = Demo(settings, demo_environment(settings, state_dsn), chatops)
    print(
        "chatops demo: one incident on the sandbox. The demo's own settings (only in its commands'"
        f" environment): CHATOPS_STATE_DATABASE_URL={state_dsn}, CHATOPS_OPERATORS=U0DEMO0001,"
        " CHATOPS_CLI_USER=U0DEMO0001, CHATOPS_SECRET_KEY=<random>, CHATOPS_INCIDENT_CHANNEL="
        f"{CHANNEL}, CHATOPS_SANDBOX_FAULTY_RELEASE=passes-health.",
        flush=True,
    )
    failed: DemoFailed | None = None
    try:
        story(demo)
    except DemoFailed as error:
        failed = error
    finally:
        put_back(demo)
    if failed is not None:
        print(f"\ndemo: {failed} (after {demo.elapsed()})", file=sys.stderr)
        return 1
    print(f"\nThe whole incident, told in {demo.elapsed()}.")
    return 0


def put_back(demo: Demo) -> None:
    """Leave the sandbox as the demo found it: v2.0.5, no faults, its own v2.0.6 image."""
    from sandbox.backend_container import backend_status, set_faults, start_backend

    settings = demo.settings
    status = backend_status(settings)
    if status.info.get("version") != DEFAULT_VERSION:
        start_backend(settings, DEFAULT_VERSION)
    set_faults(settings, error_rate=0, latency_ms=0, auth_burst=0, health="ok")
    ensure_images(settings)  # v2.0.6 as the sandbox's settings build it (passes-health was the demo's)
    demo.say(f"The sandbox is back as found: {backend_status(settings).detail}")


if __name__ == "__main__":
    sys.exit(main())
