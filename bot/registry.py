"""Every command the bot knows: how to parse, run and render it, for Slack and the terminal.

Adding a command: a module in `commands/`, a runner in `bot/runners/` (`run`, and `execute` when it
is destructive), a renderer in `bot/render/`, one `CommandSpec` here, the slash command in `app.yaml`.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

if TYPE_CHECKING:  # types only: importing the registry must stay cheap (`chatops --help`)
    from rich.console import Console

    from bot.config import Settings
    from bot.gate.authz import Role
    from bot.invocation import Invocation
    from bot.render.common import SlackReply
    from bot.services import Services
    from commands.base import CommandResult
    from commands.destructive import Execution, Plan, Progress

T = TypeVar("T")


@dataclass(frozen=True)
class Ref:
    """Where a runner's, renderer's or grammar's attribute lives; imported the first time it is used.

    A command's modules pull in what they talk to (boto3, matplotlib, the Docker SDK...): the table
    names them, and `chatops --help` or one command's run imports only what it uses. A reference
    points downwards like an import does (tests/test_architecture.py reads them as imports).
    """

    module: str
    attribute: str

    def load(self) -> Any:
        """Import the module and return the attribute."""
        return getattr(importlib.import_module(self.module), self.attribute)

    def constant(self) -> Any:
        """Return a constant of the module (a usage), read from its source when it is a literal.

        Help needs a command's usage, not its module: running the module would import what the
        command talks to (jinja2, asyncpg...). A value that is not a literal is imported as usual.
        """
        module = sys.modules.get(self.module)
        if module is not None:
            return getattr(module, self.attribute)
        try:
            return read_literal(self.module, self.attribute)
        except LookupError:
            return self.load()


def read_literal(module: str, attribute: str) -> Any:
    """Read a module-level constant written as a literal (or imported from where it is one) from
    the module's source, without running it; LookupError when it cannot be read that way."""
    try:
        tree = ast.parse(_source(module).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError) as error:
        raise LookupError(f"{module}: {error}") from None
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            for alias in node.names:  # re-exported: `from commands.incident_grammar import USAGE`
                if (alias.asname or alias.name) == attribute:
                    return read_literal(node.module, alias.name)
        value: ast.expr | None = None
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign):
            target, value = node.target, node.value
        else:
            continue
        if isinstance(target, ast.Name) and target.id == attribute and value is not None:
            try:
                return ast.literal_eval(value)
            except ValueError:
                break
    raise LookupError(f"{module}.{attribute} is not a literal")


def _source(module: str) -> Path:
    """Return the file of one of our modules without importing it (nor its parent packages)."""
    top, *rest = module.split(".")
    spec = importlib.util.find_spec(top)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"{top} is not a package")
    folder = Path(next(iter(spec.submodule_search_locations))).joinpath(*rest)
    return folder / "__init__.py" if folder.is_dir() else folder.with_suffix(".py")


def _resolved(value: T | Ref) -> T:
    return cast(T, value.load()) if isinstance(value, Ref) else value


RunFunction = Callable[["Services", list[str], "Invocation"], Awaitable["CommandResult"]]
ExecuteFunction = Callable[["Services", "Plan", "Progress"], Awaitable["Execution"]]
RoleFunction = Callable[[list[str]], "Role"]
CostFunction = Callable[[list[str], "Settings"], "tuple[Role, str] | None"]


class CommandSpec:
    """One command: its grammar, its run, its renderings.

    `run` parses the tokens and returns a result. A destructive command's `run` returns a
    `Proposal` (its plan) for the gate, and `execute` carries the plan out once approved.

    The name, summary, role and subcommands are plain values; `usage`, `run`, `slack`, `terminal`,
    `execute`, `tokenize`, `role_for` and `cost` may be given as a `Ref`, imported on first access
    (and kept), or as the value itself.
    """

    def __init__(
        self,
        name: str,
        summary: str,
        usage: str | Ref,
        run: RunFunction | Ref,
        slack: Callable[[Any], SlackReply] | Ref,
        terminal: Callable[[Any, Console], None] | Ref,
        role: Role = "viewer",
        execute: ExecuteFunction | Ref | None = None,
        timeout_seconds: float = 60.0,
        # How Slack's command text becomes tokens; commands taking free text keep it whole (apostrophes).
        tokenize: Callable[[str], list[str]] | Ref = Ref("commands.base", "tokenize"),
        # The role one invocation needs when it depends on the arguments (reading versus changing).
        role_for: RoleFunction | Ref | None = None,
        # A read that costs (any PromQL, a large export) may need more, by the settings: that role and
        # the sentence that says why, or None when this invocation is not such a read.
        cost: CostFunction | Ref | None = None,
        # The first words that pick a form of the command (`/audit export`), for help and tests.
        subcommands: tuple[str, ...] = (),
    ) -> None:
        self.name = name
        self.summary = summary
        self.role: Role = role
        self.timeout_seconds = timeout_seconds
        self.subcommands = subcommands
        # Where the usage is read from (None when given as text), and the text once read.
        self.usage_ref = usage if isinstance(usage, Ref) else None
        self._usage = usage if isinstance(usage, str) else None
        self._run = run
        self._slack = slack
        self._terminal = terminal
        self._execute = execute
        self._tokenize = tokenize
        self._role_for = role_for
        self._cost = cost

    def __repr__(self) -> str:
        return f"CommandSpec(name={self.name!r})"

    @property
    def usage(self) -> str:
        """Return the command's usage, as its grammar writes it (`/name ...`), without running it."""
        if self._usage is None:
            assert self.usage_ref is not None
            self._usage = str(self.usage_ref.constant())
        return self._usage

    @property
    def run(self) -> RunFunction:
        """Return the runner: parse the tokens, run, return a result (or a destructive plan)."""
        self._run = _resolved(self._run)
        return self._run

    @property
    def slack(self) -> Callable[[Any], SlackReply]:
        """Return the Block Kit renderer of the result."""
        self._slack = _resolved(self._slack)
        return self._slack

    @property
    def terminal(self) -> Callable[[Any, Console], None]:
        """Return the terminal renderer of the result."""
        self._terminal = _resolved(self._terminal)
        return self._terminal

    @property
    def execute(self) -> ExecuteFunction | None:
        """Return how an approved plan is carried out, or None for a command that changes nothing."""
        if self._execute is not None:
            self._execute = _resolved(self._execute)
        return self._execute

    @property
    def destructive(self) -> bool:
        """Return whether the command can change something (through the gate), without importing it."""
        return self._execute is not None

    @property
    def tokenize(self) -> Callable[[str], list[str]]:
        """Return how Slack's command text becomes tokens."""
        self._tokenize = _resolved(self._tokenize)
        return self._tokenize

    @property
    def role_for(self) -> RoleFunction | None:
        """Return the function naming the role one invocation needs, when it depends on arguments."""
        if self._role_for is not None:
            self._role_for = _resolved(self._role_for)
        return self._role_for

    @property
    def cost(self) -> CostFunction | None:
        """Return the function naming what a costly read needs, if the command has costly reads."""
        if self._cost is not None:
            self._cost = _resolved(self._cost)
        return self._cost

    def required_role(self, tokens: list[str]) -> Role:
        """Return the role this invocation needs to read or change what it asks, cost aside.

        Authorising a caller takes `requirement()`, which adds what a costly read needs.
        """
        role_for = self.role_for
        return role_for(tokens) if role_for is not None else self.role

    def requirement(self, tokens: list[str], settings: Settings) -> Requirement:
        """Return the role this invocation needs, cost included, and what a caller without it hears."""
        role = self.required_role(tokens)
        refusal = f"you are not allowed to run /{self.name}"
        cost = self.cost
        costly = cost(tokens, settings) if cost is not None else None
        if costly is not None and _RANK[costly[0]] > _RANK[role]:
            return Requirement(costly[0], f"{refusal}: {costly[1]}")
        return Requirement(role, refusal)


@dataclass(frozen=True)
class Requirement:
    """The role one invocation needs, and what a caller without it is told."""

    role: Role
    refusal: str


# Which of two roles asks more, when a costly read raises what its command needs.
_RANK: dict[Role, int] = {"viewer": 0, "responder": 1, "operator": 2, "mfa_admin": 3}


# The table is built without importing a single runner, renderer or grammar: each is a `Ref`, its
# module named in full (the architecture test reads these names as imports).
COMMANDS: dict[str, CommandSpec] = {
    spec.name: spec
    for spec in (
        CommandSpec(
            name="health",
            summary="API, PostgreSQL, Redis, storage, Prometheus, engine and the bot's own dependencies",
            usage=Ref("commands.health", "USAGE"),
            run=Ref("bot.runners.health", "run"),
            slack=Ref("bot.render.health", "slack"),
            terminal=Ref("bot.render.health", "terminal"),
        ),
        CommandSpec(
            name="audit",
            summary="audit_log by user, IP, request, failed logins, MFA, security; export CSV/JSON",
            usage=Ref("commands.audit", "USAGE"),
            run=Ref("bot.runners.audit", "run"),
            slack=Ref("bot.render.audit", "slack"),
            terminal=Ref("bot.render.audit", "terminal"),
            cost=Ref("bot.runners.audit", "expensive_read"),
            # An export of a million rows streams for a while; each fetch has its own statement timeout.
            timeout_seconds=300.0,
            subcommands=("user", "ip", "request", "failed-logins", "mfa", "security", "export", "indexes"),
        ),
        CommandSpec(
            name="triage",
            summary="the runbook's checks at once, worst first; trace, request and recent log lines",
            usage=Ref("commands.triage_grammar", "USAGE"),
            run=Ref("bot.runners.triage", "run"),
            slack=Ref("bot.render.triage", "slack"),
            terminal=Ref("bot.render.triage", "terminal"),
            # A trace lookup reads every log file; each check has its own, much shorter, timeout.
            timeout_seconds=120.0,
            subcommands=("trace", "request", "logs", "changes"),
        ),
        CommandSpec(
            name="rollback",
            summary="backend versions present; redeploy one or flip a flag, health-gated with auto-revert",
            usage=Ref("commands.rollback", "USAGE"),
            run=Ref("bot.runners.rollback", "run"),
            slack=Ref("bot.render.rollback", "slack"),
            terminal=Ref("bot.render.rollback", "terminal"),
            # `list` is read-only; the gate asks for the operator role before anything changes.
            role="viewer",
            execute=Ref("bot.runners.rollback", "execute"),
            subcommands=("list", "flag"),
        ),
        CommandSpec(
            name="restart",
            summary="restart one Compose service's container, then wait for it to be healthy",
            usage=Ref("commands.restart", "USAGE"),
            run=Ref("bot.runners.restart", "run"),
            slack=Ref("bot.render.rollback", "slack"),
            terminal=Ref("bot.render.rollback", "terminal"),
            role="operator",
            execute=Ref("bot.runners.restart", "execute"),
        ),
        CommandSpec(
            name="backup",
            summary="back up the platform database and buckets; prune old backups (through the gate)",
            usage=Ref("commands.backup", "USAGE"),
            run=Ref("bot.runners.backup", "run"),
            slack=Ref("bot.render.backup", "slack_backup"),
            terminal=Ref("bot.render.backup", "terminal_backup"),
            role="responder",
            role_for=Ref("bot.runners.backup", "required_role"),
            execute=Ref("bot.runners.backup", "execute"),
            # pg_dump and the copy have their own limit (CHATOPS_BACKUP_TIMEOUT_SECONDS).
            timeout_seconds=4 * 3600.0,
            subcommands=("full", "db", "storage", "prune"),
        ),
        CommandSpec(
            name="restore",
            summary="list and verify backups; restore one (emergency backup first, RESTORE, two people)",
            usage=Ref("commands.restore_inputs", "USAGE"),
            run=Ref("bot.runners.restore", "run"),
            slack=Ref("bot.render.backup", "slack_restore"),
            terminal=Ref("bot.render.backup", "terminal_restore"),
            # `list` and `verify` change nothing; the gate asks again for operators before a restore.
            role="viewer",
            role_for=Ref("bot.runners.restore", "required_role"),
            execute=Ref("bot.runners.restore", "execute"),
            timeout_seconds=4 * 3600.0,
            subcommands=("list", "verify"),
        ),
        CommandSpec(
            name="incident",
            summary="declare an incident in its own channel; updates, roles, follow-ups, resolve, stats",
            usage=Ref("commands.incident", "USAGE"),
            run=Ref("bot.runners.incident", "run"),
            slack=Ref("bot.render.incident", "slack"),
            terminal=Ref("bot.render.incident", "terminal"),
            role="responder",
            role_for=Ref("bot.runners.incident", "required_role"),
            tokenize=Ref("bot.runners.incident", "slack_text"),
            subcommands=(
                "declare",
                "update",
                "note",
                "sev",
                "commander",
                "role",
                "followup",
                "resolve",
                "timeline",
                "contacts",
                "stats",
            ),
        ),
        CommandSpec(
            name="rca",
            summary="RCA draft of an incident from its timeline; preview, then file it as a GitHub issue",
            usage=Ref("commands.rca", "USAGE"),
            run=Ref("bot.runners.rca", "run"),
            slack=Ref("bot.render.rca", "slack"),
            terminal=Ref("bot.render.rca", "terminal"),
            role="responder",
            subcommands=("file",),
        ),
        CommandSpec(
            name="graph",
            summary="5xx, p95, any triage check or PromQL over time: a PNG, thresholds and actions marked",
            usage=Ref("commands.graph", "USAGE"),
            run=Ref("bot.runners.graph", "run"),
            slack=Ref("bot.render.graph", "slack"),
            terminal=Ref("bot.render.graph", "terminal"),
            cost=Ref("bot.runners.graph", "expensive_read"),
            # PromQL quotes its label values: the text is kept whole, not split like a shell line.
            tokenize=Ref("commands.graph", "slack_tokens"),
        ),
    )
}

COMMAND_NAMES: tuple[str, ...] = tuple(COMMANDS)

# Words that ask a command for its usage instead of running it, wherever they are in the line.
HELP_FLAGS = ("--help", "-h")


def asks_for_help(words: list[str]) -> bool:
    """Return whether a command's words ask for its usage: `--help` or `-h` anywhere, or `help` alone.

    Slack passes the text split on spaces (`/audit export --help`), the terminal its argv after the
    command's name. `help` counts only alone: `/incident note help arrived` is a note.
    """
    return any(word in HELP_FLAGS for word in words) or [word.lower() for word in words] == ["help"]


def read_only(command: str, text: str) -> bool:
    """Return whether a slash command's text asks only to read (the viewer role suffices).

    When the bot cannot tell whether a request was already run (its database is down), a read is
    still answered: running it twice shows the same thing twice, and changes nothing.
    """
    spec = COMMANDS.get(command.lstrip("/"))
    if spec is None:
        return False
    if asks_for_help(text.split()):
        return True  # the usage, answered to the caller
    try:
        # A costly read is still a read: its role is checked when it runs, as every command's is.
        return spec.required_role(spec.tokenize(text)) == "viewer" and not _proposes(spec, text)
    except Exception:  # a text the grammar refuses is not known to be a read
        return False


def _proposes(spec: CommandSpec, text: str) -> bool:
    """Return whether this invocation of a destructive command asks for a plan (not a listing)."""
    if not spec.destructive:
        return False
    words = text.split()
    return not words or words[0] not in ("list", "verify")
