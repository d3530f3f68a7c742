"""The triage checklist: a declarative YAML file of checks, thresholds and runbook advice, validated."""

from __future__ import annotations

import math
import re
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from commands.base import Model, UsageError, parse_duration
from commands.formatting import Unit

if TYPE_CHECKING:
    import yaml

DEFAULT_CHECKLIST = Path(__file__).with_name("triage_checks.yaml")

Direction = Literal["above", "below"]
_MULTIPLE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*[x×]\s*$")
_PLACEHOLDER = re.compile(r"\$([A-Za-z_]\w*)")
_PLACEHOLDERS = frozenset({"window"})


class ChecklistError(ValueError):
    """The checklist file cannot be used; the message names the file, the entry and the problem."""


class _Strict(Model):
    # A typo in a key must be an error, not a silently ignored setting.
    model_config = ConfigDict(extra="forbid", frozen=True)


def _duration(value: Any) -> timedelta:
    if isinstance(value, timedelta):
        return value
    try:
        return parse_duration(str(value), maximum=timedelta(days=90))
    except UsageError as error:
        raise ValueError(error.message) from None


def _optional_duration(value: Any) -> timedelta | None:
    return None if value is None else _duration(value)


Duration = Annotated[timedelta, BeforeValidator(_duration)]
OptionalDuration = Annotated[timedelta | None, BeforeValidator(_optional_duration)]


class Advice(_Strict):
    """One entry of the runbook's troubleshooting: a title, where it comes from, and the steps."""

    title: str = Field(min_length=1)
    source: str = Field(min_length=1)
    steps: list[str] = Field(min_length=1)


class Breakdown(_Strict):
    """A second PromQL query that shows where a figure comes from (per path, per reason)."""

    title: str = Field(min_length=1)
    query: str = Field(min_length=1)
    label: str = Field(min_length=1)
    unit: Unit = "per_second"
    top: int = Field(default=5, ge=1, le=50)

    @field_validator("query")
    @classmethod
    def _placeholders(cls, value: str) -> str:
        return _check_placeholders(value)


class _Check(_Strict):
    id: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")
    title: str = Field(min_length=1, max_length=80)
    enabled: bool = True
    # Figures above `warn` (or below, with direction: below) are warn; above `critical`, critical.
    # A number, or "3x" for three times `baseline`.
    warn: float | str | None = None
    critical: float | str | None = None
    baseline: float | None = Field(default=None, ge=0)
    direction: Direction = "above"
    timeout_seconds: float | None = Field(default=None, gt=0, le=120)
    advice: list[str] = Field(default_factory=list)
    # Advice when the check could not run (the source is unreachable); defaults to `advice`.
    unknown_advice: list[str] | None = None

    @field_validator("warn", "critical")
    @classmethod
    def _threshold_shape(cls, value: float | str | None) -> float | str | None:
        if isinstance(value, str) and not _MULTIPLE.match(value):
            raise ValueError(f"`{value}` is not a number nor a multiple of the baseline like `3x`")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value

    @model_validator(mode="after")
    def _thresholds_consistent(self) -> _Check:
        for name in ("warn", "critical"):
            if isinstance(getattr(self, name), str) and self.baseline is None:
                raise ValueError(f"{name} is a multiple of the baseline but the check has no `baseline`")
        warn, critical = self.threshold("warn"), self.threshold("critical")
        if warn is not None and critical is not None:
            wrong = warn > critical if self.direction == "above" else warn < critical
            if wrong:
                relation = "above" if self.direction == "above" else "below"
                raise ValueError(f"warn ({warn:g}) is {relation} critical ({critical:g})")
        return self

    def threshold(self, level: Literal["warn", "critical"]) -> float | None:
        """Return a threshold as a number, resolving multiples of the baseline."""
        raw = getattr(self, level)
        if raw is None:
            return None
        if isinstance(raw, str):
            match = _MULTIPLE.match(raw)
            assert match is not None and self.baseline is not None  # checked by the validators
            return float(match.group(1)) * self.baseline
        return float(raw)

    def multiple(self, level: Literal["warn", "critical"]) -> float | None:
        """Return the factor when a threshold is written as a multiple of the baseline."""
        raw = getattr(self, level)
        if isinstance(raw, str):
            match = _MULTIPLE.match(raw)
            return float(match.group(1)) if match else None
        return None


class PromqlCheck(_Check):
    """Any PromQL expression returning one number, compared with the thresholds."""

    kind: Literal["promql"]
    query: str = Field(min_length=1)
    unit: Unit = "count"
    breakdown: Breakdown | None = None
    # What an empty answer (no series matched) means: usually that the metric is missing.
    if_empty: Literal["unknown", "ok"] = "unknown"
    # Prometheus answers NaN for 0/0 (no requests in the window).
    if_nan: Literal["unknown", "ok"] = "unknown"

    @field_validator("query")
    @classmethod
    def _placeholders(cls, value: str) -> str:
        return _check_placeholders(value)


class PostgresConnectionsCheck(_Check):
    """Client connections against `max_connections` (the figure is the used share)."""

    kind: Literal["postgres_connections"]


class PostgresSlowQueriesCheck(_Check):
    """Queries active for longer than `slower_than` (the figure is how many)."""

    kind: Literal["postgres_slow_queries"]
    slower_than: Duration = timedelta(seconds=1)
    show: int = Field(default=10, ge=1, le=50)


class PostgresLocksCheck(_Check):
    """Locks that are not granted (the figure is how many)."""

    kind: Literal["postgres_locks"]
    show: int = Field(default=10, ge=1, le=50)


class PostgresSizeCheck(_Check):
    """Size of the platform database in bytes."""

    kind: Literal["postgres_size"]


class RedisMemoryCheck(_Check):
    """Memory used against `maxmemory` (the figure is the used share; none when unlimited)."""

    kind: Literal["redis_memory"]


class RedisClientsCheck(_Check):
    """Connected clients against `maxclients` (the figure is the used share)."""

    kind: Literal["redis_clients"]


class StorageCheck(_Check):
    """The bucket answers; its usage, counted over at most `max_objects` objects."""

    kind: Literal["storage"]
    max_objects: int = Field(default=10_000, ge=1, le=1_000_000)
    # With a capacity, the figure is the used share of it; without, bytes (no threshold).
    capacity_bytes: int | None = Field(default=None, ge=1)


class DiskCheck(_Check):
    """Used share of the filesystems holding `paths` (default: the directories of the log paths)."""

    kind: Literal["disk"]
    paths: list[str] = Field(default_factory=list)


class ContainersCheck(_Check):
    """A figure over the platform's containers from the engine (Compose project labels)."""

    kind: Literal["containers"]
    measure: Literal["cpu", "memory", "restarts", "running", "version"]
    # CPU is measured over this interval between two stats samples.
    sample_seconds: float = Field(default=0.5, gt=0, le=10)


class ClockCheck(_Check):
    """The bot's clock against PostgreSQL's and Redis's (the figure is the largest skew, seconds)."""

    kind: Literal["clock"]


class LogsCheck(_Check):
    """Error lines in the JSON-lines logs over the window (the figure is how many)."""

    kind: Literal["logs"]
    # Default: the triage window.
    since: OptionalDuration = None
    top: int = Field(default=5, ge=1, le=50)
    samples: int = Field(default=5, ge=0, le=50)


class AuditCheck(_Check):
    """Security events in the platform's audit_log (the figure is the most failed logins of one user)."""

    kind: Literal["audit"]
    since: Duration = timedelta(hours=24)
    actions: list[str] = Field(
        default_factory=lambda: ["LOGIN", "MFA_CHALLENGE_FAILED", "RATE_LIMIT_EXCEEDED", "PERMISSION_DENIED"],
        min_length=1,
    )
    top: int = Field(default=3, ge=1, le=20)

    @field_validator("actions")
    @classmethod
    def _action_names(cls, value: list[str]) -> list[str]:
        for action in value:
            if not re.fullmatch(r"[A-Z][A-Z0-9_]{0,63}", action):
                raise ValueError(f"`{action}` is not an audit action name (upper case, like LOGIN)")
        return value


Check = Annotated[
    PromqlCheck
    | PostgresConnectionsCheck
    | PostgresSlowQueriesCheck
    | PostgresLocksCheck
    | PostgresSizeCheck
    | RedisMemoryCheck
    | RedisClientsCheck
    | StorageCheck
    | DiskCheck
    | ContainersCheck
    | ClockCheck
    | LogsCheck
    | AuditCheck,
    Field(discriminator="kind"),
]

KINDS: tuple[str, ...] = (
    "promql",
    "postgres_connections",
    "postgres_slow_queries",
    "postgres_locks",
    "postgres_size",
    "redis_memory",
    "redis_clients",
    "storage",
    "disk",
    "containers",
    "clock",
    "logs",
    "audit",
)


class Checklist(_Strict):
    """The whole file: default window and timeout, the advice, and the checks in order."""

    window: Duration = timedelta(minutes=5)
    timeout_seconds: float = Field(default=5.0, gt=0, le=120)
    advice: dict[str, Advice] = Field(default_factory=dict)
    checks: list[Check] = Field(min_length=1)

    @model_validator(mode="after")
    def _references(self) -> Checklist:
        seen: set[str] = set()
        for index, check in enumerate(self.checks):
            if check.id in seen:
                raise ValueError(f"checks[{index}]: id `{check.id}` is used twice")
            seen.add(check.id)
            for key in [*check.advice, *(check.unknown_advice or [])]:
                if key not in self.advice:
                    known = ", ".join(sorted(self.advice)) or "none"
                    raise ValueError(f"checks[{index}]: advice `{key}` is not defined (known: {known})")
        return self

    def enabled(self) -> list[Check]:
        """Return the checks to run, in file order."""
        return [check for check in self.checks if check.enabled]


def _check_placeholders(query: str) -> str:
    for name in _PLACEHOLDER.findall(query):
        if name not in _PLACEHOLDERS:
            raise ValueError(f"unknown placeholder `${name}` (only $window is replaced)")
    return query


def render_query(query: str, window: timedelta) -> str:
    """Replace `$window` with a PromQL duration."""
    seconds = int(window.total_seconds())
    text = f"{seconds // 60}m" if seconds % 60 == 0 else f"{seconds}s"
    return query.replace("$window", text)


def parse_checklist(text: str, origin: str = "<checklist>") -> Checklist:
    """Validate checklist YAML; a problem raises ChecklistError naming the entry and its line."""
    # Imported here: a lookup imports this module (with the triage package) but reads no checklist.
    import yaml

    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ChecklistError(f"{origin}: not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise ChecklistError(f"{origin}: the top level must be a mapping with `checks:`")
    try:
        return Checklist.model_validate(data)
    except ValidationError as error:
        problems = [_describe(item, data, root, origin) for item in error.errors()[:5]]
        more = len(error.errors()) - len(problems)
        if more > 0:
            problems.append(f"… and {more} more")
        raise ChecklistError("invalid triage checklist:\n  " + "\n  ".join(problems)) from None


_ENTRY = re.compile(r"^checks\[(\d+)\](?: `[^`]*`)?: ")


def _describe(item: Any, data: dict[str, Any], root: yaml.Node | None, origin: str) -> str:
    # The discriminated union puts the kind's name in the path; it says nothing to a reader.
    loc = [part for part in item["loc"] if not (isinstance(part, str) and part in KINDS)]
    message = str(item["msg"]).removeprefix("Value error, ")
    if item["type"] == "extra_forbidden":
        message = "unknown key (a typo?)"
    # Cross-entry problems come from the whole-file validator as "checks[N] ...": point at entry N.
    entry_in_message = _ENTRY.match(message)
    if not loc and entry_in_message:
        loc = ["checks", int(entry_in_message.group(1))]
        message = message[entry_in_message.end() :]
    line = _line_of(root, loc)
    where = origin + (f" line {line}" if line is not None else "")
    if len(loc) >= 2 and loc[0] == "checks" and isinstance(loc[1], int):
        checks = data.get("checks") or []
        raw = checks[loc[1]] if loc[1] < len(checks) else None
        ident = raw.get("id") if isinstance(raw, dict) else None
        entry = f"check #{loc[1] + 1}" + (f" `{ident}`" if ident else "")
        if item["type"] in {"union_tag_invalid", "union_tag_not_found"}:
            kind = raw.get("kind") if isinstance(raw, dict) else None
            wanted = f"kind `{kind}` is not" if kind else "`kind` is missing; it must be"
            return f"{where}: {entry}: {wanted} one of {', '.join(KINDS)}"
        field = ".".join(str(part) for part in loc[2:])
        return f"{where}: {entry}" + (f": {field}" if field else "") + f": {message}"
    field = ".".join(str(part) for part in loc)
    return f"{where}: {field}: {message}" if field else f"{where}: {message}"


def _line_of(node: yaml.Node | None, loc: list[Any]) -> int | None:
    """Return the 1-based line of the YAML node at `loc`, as close as the path goes."""
    import yaml

    if node is None:
        return None
    line: int = node.start_mark.line + 1
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            found = next(((key, value) for key, value in node.value if key.value == part), None)
            if found is None:
                return line
            key, node = found
            # A key's own line reads better than its value's (a nested mapping starts below it).
            line = key.start_mark.line + 1
            continue
        if isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
            continue
        return line
    return line


def load_checklist(path: Path | str | None = None) -> Checklist:
    """Read and validate the checklist file (the packaged one by default); cached per file version."""
    target = Path(path) if path is not None else DEFAULT_CHECKLIST
    try:
        stat = target.stat()
    except OSError as error:
        raise ChecklistError(f"{target}: cannot read the triage checklist: {error.strerror}") from None
    return _load_cached(str(target), stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=8)
def _load_cached(path: str, mtime_ns: int, size: int) -> Checklist:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ChecklistError(f"{path}: cannot read the triage checklist: {error}") from None
    return parse_checklist(text, path)
