"""Request and trace ids as platforms write them, and how to look for one in JSON text.

The runbook fixes no format (it greps and uses `LIKE '%…%'`): UUIDs, `req-4242424`, ULIDs, 16- and
32-hex ids, AWS X-Ray `1-5759e988-bd862e3fe1be46a994272793`, W3C traceparent headers. So any token
of printable, non-space characters is an id; only what cannot be one is refused, by name: spaces,
control or invisible characters, quotes, more than MAX_ID_LENGTH characters.

An id is always searched for literally: as a parameter compared with `=` or `strpos` in SQL, and
with `bytes.find` in log files. `%`, `_`, `*`, `.` or `\\` in an id mean themselves.
"""

from __future__ import annotations

import json
import unicodedata

from commands.base import UsageError

MAX_ID_LENGTH = 128
# ASCII quotes, and the typographic ones a chat client or a word processor puts in their place.
QUOTES = frozenset("'\"`‘’‚‛“”„‟‹›«»")
_SHOWN = 40


def parse_id(text: str, what: str, usage: str = "") -> str:
    """Return the id (surrounding spaces dropped), or refuse it naming what makes it no id."""
    candidate = text.strip()
    if not candidate:
        raise UsageError(f"{what} is empty", usage)
    problem = id_problem(candidate)
    if problem:
        raise UsageError(f"`{_shown(candidate)}` is not {what}: {problem}", usage)
    return candidate


def id_problem(candidate: str) -> str | None:
    """Say why a token cannot be an id, or return None when it can."""
    if len(candidate) > MAX_ID_LENGTH:
        return f"it is {len(candidate)} characters long, and an id has at most {MAX_ID_LENGTH}"
    for char in candidate:
        if unicodedata.category(char) == "Zs":
            return "it contains a space, and an id is one word"
        if char in QUOTES:
            return f"it contains a quote ({char}), which no id holds: type the id without quotes"
        if not char.isprintable():
            name = unicodedata.name(char, f"U+{ord(char):04X}")
            return f"it contains a control or invisible character ({name})"
    return None


def json_forms(identifier: str) -> list[str]:
    """Return how the id appears inside JSON text: as written by `json.dumps` and by PostgreSQL.

    Only a backslash (doubled) and, with ensure_ascii, a non-ASCII character (as `\\uXXXX`) change;
    quotes and control characters, which JSON escapes too, are not in any id.
    """
    forms = [json.dumps(identifier, ensure_ascii=False)[1:-1], json.dumps(identifier)[1:-1]]
    return list(dict.fromkeys(forms))


def _shown(text: str) -> str:
    """Show refused input safely: control characters visible, long input cut."""
    visible = "".join(char if char.isprintable() else f"\\x{ord(char):02x}" for char in text)
    return visible if len(visible) <= _SHOWN else visible[: _SHOWN - 1] + "…"
