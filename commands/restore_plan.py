"""`/restore <id>`: the plan the gate shows before a restore (what is overwritten, age, size, way back)."""

from __future__ import annotations

from datetime import UTC, datetime

from commands.backup import TABLES_SQL, describe_error
from commands.backup_store import TYPE_LABELS, BackupType, Manifest
from commands.base import UsageError
from commands.destructive import Plan, Proposal
from commands.formatting import format_bytes
from commands.restore_inputs import USAGE, Part, RestoreArgs, RestoreDeps, parts_type
from commands.restore_verify import load_checked

TYPED_WORD = "RESTORE"


def _parts(manifest: Manifest, requested: BackupType | None) -> list[Part]:
    wanted = requested or manifest.type
    have = {"db": manifest.has_database, "storage": manifest.has_storage}
    needed: list[Part] = {"full": ["db", "storage"], "db": ["db"], "storage": ["storage"]}[wanted]  # type: ignore[assignment]
    missing = [part for part in needed if not have[part]]
    if missing:
        holds = TYPE_LABELS[manifest.type]
        raise UsageError(
            f"backup {manifest.id} holds {holds} only; it cannot restore {TYPE_LABELS[wanted]}"
            f" (ask for type={manifest.type}, or pick another backup)",
            USAGE,
        )
    return needed


def _major(version: str) -> int:
    return int(version.split(".")[0])


def _age(created: datetime, now: datetime) -> str:
    seconds = max(0, int((now - created).total_seconds()))
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 86400 * 2:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


async def _current_state(deps: RestoreDeps, parts: list[Part]) -> tuple[list[str], list[str]]:
    """Describe what is there now (best effort: a dependency that is down becomes a warning)."""
    lines: list[str] = []
    warnings: list[str] = []
    sources = deps.sources
    if "db" in parts:
        try:
            async with sources.platform_db.connection() as conn:
                size = int(await conn.fetchval("SELECT pg_database_size(current_database())"))
                tables = await conn.fetch(TABLES_SQL)
            estimate = sum(int(row["estimate"]) for row in tables)
            lines.append(
                f"database {sources.pg.database}: {len(tables)} tables, about {estimate:,} rows,"
                f" {format_bytes(size)}"
            )
        except Exception as error:  # shown in the plan; the executor's own steps will fail properly
            warnings.append(f"database {sources.pg.database} did not answer: {describe_error(error)}")
    if "storage" in parts:
        for bucket in sources.buckets:
            try:
                listing = await sources.transfer.list_objects(bucket)
                total = sum(item.size for item in listing)
                lines.append(f"bucket {bucket}: {len(listing):,} objects, {format_bytes(total)}")
            except Exception as error:
                warnings.append(f"bucket {bucket} did not answer: {describe_error(error)}")
    try:
        states = await deps.backend.states()
        lines.append(
            f"backend {deps.backend_label}: " + ", ".join(f"{name} {state}" for name, state in states)
        )
    except Exception as error:
        problem = describe_error(error)
        warnings.append(f"the container engine did not answer for {deps.backend_label}: {problem}")
    return lines, warnings


def estimate_seconds(manifest: Manifest, parts: list[Part]) -> float:
    """Guess the duration from the backup's own timings (dump and copy times) and its size."""
    seconds = 20.0  # stopping and starting the backend, the health check
    seconds += manifest.total_bytes / 200e6  # reading every file for its checksum
    if "db" in parts and manifest.database is not None:
        # An emergency dump of about the same size, then a restore (indexes make it slower).
        seconds += manifest.database.seconds * 3.5
    if "storage" in parts:
        seconds += manifest.objects_seconds * 2.2
    return round(seconds, 0)


async def plan_restore(
    deps: RestoreDeps, args: RestoreArgs, requested_by: str, now: datetime | None = None
) -> Proposal:
    """Check the backup and build the plan the gate shows: what is overwritten, age, size, way back."""
    now = now or datetime.now(UTC)
    entry, manifest = await load_checked(deps, args.id)
    parts = _parts(manifest, args.type)
    sources = deps.sources
    if "db" in parts and manifest.database is not None:
        restorer = await sources.pg.program_version("pg_restore")
        if _major(restorer) < _major(manifest.database.pg_dump_version):
            raise UsageError(
                f"backup {args.id} was made by pg_dump {manifest.database.pg_dump_version};"
                f" this pg_restore ({restorer}) is older and cannot read it",
                USAGE,
            )
    current, warnings = await _current_state(deps, parts)
    target: list[str] = []
    database = manifest.database
    if "db" in parts and database is not None:
        target.append(
            f"database {sources.pg.database}: overwritten with the backup's {len(database.tables)} tables"
            f" ({sum(database.tables.values()):,} rows, PostgreSQL {database.server_version})"
        )
    if "storage" in parts:
        for bucket in manifest.buckets:
            objects = [item for item in manifest.objects if item.bucket == bucket]
            target.append(
                f"bucket {bucket}: made equal to the backup ({len(objects):,} objects,"
                f" {format_bytes(sum(item.size for item in objects))}); objects not in the backup are removed"
            )
    target.append(f"backend {deps.backend_label}: stopped during the restore, then started again")
    label = "database and objects" if parts == ["db", "storage"] else TYPE_LABELS[parts_type(parts)]
    age = _age(manifest.created_at, now)
    warnings.insert(
        0,
        f"the backup is {age} old: every change made since {manifest.created_at:%Y-%m-%d %H:%M} UTC"
        " is undone (it stays in the emergency backup)",
    )
    if manifest.warnings:
        warnings.append(f"the backup noted: {'; '.join(manifest.warnings[:3])}")
    if set(manifest.buckets) != set(sources.buckets) and "storage" in parts:
        warnings.append(
            f"the backup holds buckets {', '.join(manifest.buckets)};"
            f" configured now: {', '.join(sources.buckets)}"
        )
    estimate = estimate_seconds(manifest, parts)
    plan = Plan(
        title=f"Restore the {label} from backup {manifest.id}",
        current=[
            *current,
            f"backup {manifest.id}: {entry.type_label}, {format_bytes(entry.size)}, {age} old",
        ],
        target=target,
        kept=[
            "an emergency backup of everything overwritten, taken once the backend is stopped",
            f"backup {manifest.id} itself",
        ],
        way_back=[
            "chatops restore <emergency backup id> — the id is given at the end, and on any failure",
        ],
        warnings=[*warnings, f"the platform is down for about {estimate:.0f} s"],
        estimated_seconds=estimate,
        state={
            "backup": manifest.id,
            "manifest": manifest.checksum,
            "parts": list(parts),
            "store": sources.store.location,
            "database": sources.pg.database,
            "buckets": list(manifest.buckets) if "storage" in parts else [],
            "backend": deps.backend_label,
        },
        details={"backup_id": manifest.id, "parts": list(parts), "requested_by": requested_by},
    )
    arguments = [manifest.id] + ([f"--type={args.type}"] if args.type else [])
    return Proposal(command="restore", arguments=arguments, plan=plan, typed_word=TYPED_WORD)
