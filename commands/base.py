"""What every command shares: the argument grammar, usage errors and result types."""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TypeVar

from pydantic import BaseModel, ConfigDict

T = TypeVar("T")

_OPTION = re.compile(r"^(?:--)?([a-z][a-z0-9_-]*)=(.*)$", re.DOTALL)
_DURATION = re.compile(r"^(\d{1,6})([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
# Slack turns typed quotes into typographic ones; the grammar treats them as plain quotes.
_QUOTES = str.maketrans({"“": '"', "”": '"', "‘": "'", "’": "'"})


class UsageError(ValueError):
    """Bad input: a specific message for the user, and the usage of the command."""

    def __init__(self, message: str, usage: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.usage = usage


class Model(BaseModel):
    """A pydantic model whose validator is built when first used, not when its module is imported."""

    # Every command's import defines dozens of models and one command uses a few: building all of
    # them at import cost every command's start about a hundred milliseconds.
    model_config = ConfigDict(defer_build=True)


class CommandResult(Model):
    """A command's typed answer; `ok` decides the exit code and the verdict colour."""

    @property
    def ok(self) -> bool:
        """Return whether everything the command looked at is healthy."""
        return True

    def exit_code(self) -> int:
        """Return 0 when everything is healthy, 1 when anything is degraded or down."""
        return 0 if self.ok else 1


def tokenize(text: str) -> list[str]:
    """Split slash-command text or a CLI line into tokens, honouring quotes."""
    try:
        return shlex.split(text.translate(_QUOTES), posix=True)
    except ValueError as error:
        raise UsageError(f"could not read the arguments: {error}") from None


@dataclass
class Arguments:
    """Tokens split into positionals and `key=value` options, consumed by a command's parser."""

    positionals: list[str] = field(default_factory=list)
    options: dict[str, str] = field(default_factory=dict)
    usage: str = ""

    @classmethod
    def parse(cls, tokens: list[str], usage: str = "") -> Arguments:
        """Split tokens; `key=value` and `--key=value` are options, the rest positionals."""
        parsed = cls(usage=usage)
        for token in tokens:
            match = _OPTION.match(token)
            if match:
                key = match.group(1).replace("-", "_")
                if key in parsed.options:
                    raise UsageError(f"option `{key}` given twice", usage)
                parsed.options[key] = match.group(2)
            else:
                parsed.positionals.append(token)
        return parsed

    def fail(self, message: str) -> UsageError:
        """Build a usage error carrying this command's usage."""
        return UsageError(message, self.usage)

    def next_positional(self, what: str) -> str:
        """Take the next positional argument, which is required."""
        if not self.positionals:
            raise self.fail(f"missing {what}")
        return self.positionals.pop(0)

    def optional_positional(self) -> str | None:
        """Take the next positional argument if there is one."""
        return self.positionals.pop(0) if self.positionals else None

    def option(self, name: str, convert: Callable[[str], T], default: T) -> T:
        """Take an option and convert it; a conversion error names the option."""
        if name not in self.options:
            return default
        raw = self.options.pop(name)
        try:
            return convert(raw)
        except UsageError as error:
            raise self.fail(f"{name}: {error.message}") from None
        except ValueError as error:
            raise self.fail(f"{name}: {error}") from None

    def done(self) -> None:
        """Refuse anything left over, naming it."""
        if self.options:
            raise self.fail("unknown option " + ", ".join(f"`{key}`" for key in sorted(self.options)))
        if self.positionals:
            raise self.fail("unexpected argument " + ", ".join(f"`{item}`" for item in self.positionals))


def normalise_flags(tokens: list[str], valued: set[str], switches: set[str], usage: str = "") -> list[str]:
    """Read the terminal's `--name value` and `--switch` as the grammar's `name=value` and `switch=yes`.

    `--name=value` needs nothing: the grammar reads it as `name=value` already.
    """
    result: list[str] = []
    index = 0
    while index < len(tokens):
        token = tokens[index]
        name = token[2:] if token.startswith("--") else None
        if name in switches:
            result.append(f"{name}=yes")
        elif name in valued and "=" not in token:
            if index + 1 >= len(tokens):
                raise UsageError(f"--{name} needs a value", usage)
            result.append(f"{name}={tokens[index + 1]}")
            index += 1
        else:
            result.append(token)
        index += 1
    return result


def options_last(tokens: list[str]) -> list[str]:
    """Return the tokens with the `key=value` options after the words, each kept in its order.

    For a parser that reads its first words before its options: `since=1h user ana` is read as
    `user ana since=1h`, so that an option may come anywhere in the line.
    """
    return [token for token in tokens if not _OPTION.match(token)] + [
        token for token in tokens if _OPTION.match(token)
    ]


def parse_duration(text: str, maximum: timedelta = timedelta(days=90)) -> timedelta:
    """Read a duration like 30s, 15m, 24h or 7d, bounded by `maximum`."""
    match = _DURATION.match(text.strip())
    if not match:
        raise UsageError(f"`{text[:40]}` is not a duration (use a number and s, m, h or d: 15m, 24h, 7d)")
    amount, unit = int(match.group(1)), match.group(2)
    duration = timedelta(**{_UNITS[unit]: amount})
    if duration <= timedelta(0):
        raise UsageError("a duration must be more than zero")
    if duration > maximum:
        raise UsageError(f"`{text}` is longer than the maximum of {format_duration(maximum)}")
    return duration


def parse_positive_int(text: str, maximum: int) -> int:
    """Read a whole number between 1 and `maximum`."""
    if not re.fullmatch(r"\d{1,9}", text.strip()):
        raise UsageError(f"`{text[:40]}` is not a whole number")
    value = int(text)
    if not 1 <= value <= maximum:
        raise UsageError(f"{value} is outside 1..{maximum}")
    return value


def format_duration(duration: timedelta) -> str:
    """Write a duration the way the grammar reads it (the largest whole unit)."""
    seconds = int(duration.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0 and seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
