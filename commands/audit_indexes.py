"""`/audit indexes`: the reviewed index file the audit queries need, and which indexes are in place."""

from __future__ import annotations

import re
from importlib import resources

import asyncpg

from commands.audit_queries import CLIENT_TIMEOUT_MARGIN, ReadOnlyDatabase
from commands.base import CommandResult, Model

INDEX_FILE = "audit_indexes.sql"
_NAME = re.compile(r"CREATE INDEX CONCURRENTLY IF NOT EXISTS (\w+)", re.IGNORECASE)


class IndexStatement(Model):
    """One CREATE INDEX of the file, what it serves, and whether the database has it."""

    name: str
    purpose: str
    sql: str
    present: bool | None = None
    valid: bool | None = None


class AuditIndexes(CommandResult):
    """The index file, parsed, with the platform database's answer when it could be asked."""

    text: str
    preamble: str
    statements: list[IndexStatement]
    database: str
    checked: bool
    detail: str

    @property
    def missing(self) -> list[str]:
        """Return the names of indexes the database lacks (or has left invalid)."""
        return [item.name for item in self.statements if item.present is False or item.valid is False]


def index_file_text() -> str:
    """Return the shipped index file."""
    return resources.files("commands").joinpath(INDEX_FILE).read_text(encoding="utf-8")


def parse_index_file(text: str) -> tuple[str, list[IndexStatement]]:
    """Split the file into its preamble and its statements, each with the comment above it."""
    blocks = [block.strip("\n") for block in re.split(r"\n\s*\n", text.strip()) if block.strip()]
    preamble, statements = blocks[0], []
    for block in blocks[1:]:
        lines = block.splitlines()
        comment = [line.removeprefix("--").strip() for line in lines if line.startswith("--")]
        sql = "\n".join(line for line in lines if not line.startswith("--"))
        match = _NAME.search(sql)
        if match is None or not sql.rstrip().endswith(";"):
            raise ValueError(f"{INDEX_FILE}: a block is not one CREATE INDEX statement:\n{block}")
        statements.append(IndexStatement(name=match.group(1), purpose=" ".join(comment), sql=sql))
    return preamble, statements


def index_statements() -> list[str]:
    """Return each CREATE INDEX of the file, to run one by one (tests and benchmarks apply them)."""
    return [item.sql for item in parse_index_file(index_file_text())[1]]


async def indexes(db: ReadOnlyDatabase, statement_timeout: float) -> AuditIndexes:
    """Parse the file and ask the platform database, read-only, which of its indexes exist."""
    text = index_file_text()
    preamble, statements = parse_index_file(text)
    checked, detail = False, ""
    try:
        async with db.read_only(statement_timeout) as conn:
            timeout = statement_timeout + CLIENT_TIMEOUT_MARGIN
            present = await conn.fetch(
                """SELECT c.relname AS name, i.indisvalid AS valid
                   FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
                   WHERE i.indrelid = to_regclass('audit_log')""",
                timeout=timeout,
            )
            has_table = await conn.fetchval("SELECT to_regclass('audit_log') IS NOT NULL", timeout=timeout)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
        detail = f"could not ask {db.database}: {type(error).__name__}: {error}"[:300]
    else:
        checked = True
        found = {record["name"]: record["valid"] for record in present}
        for item in statements:
            item.present = item.name in found
            item.valid = found.get(item.name)
        detail = "" if has_table else f"database {db.database} has no audit_log table"
    return AuditIndexes(
        text=text,
        preamble=preamble,
        statements=statements,
        database=db.database,
        checked=checked,
        detail=detail,
    )
