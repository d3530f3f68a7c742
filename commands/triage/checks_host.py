"""The checks of the machine and its engine: disk space, the platform's containers, server clocks."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from collections.abc import Awaitable, Sequence
from datetime import timedelta
from typing import NamedTuple

from adapters.base import ClockReading, DependencyError, classify
from adapters.engine import ContainerStats
from commands.formatting import format_bytes, format_span, format_value
from commands.triage.models import Evidence
from commands.triage.sources import Measurement, TriageRun, need
from commands.triage_checklist import ClockCheck, ContainersCheck, DiskCheck


def _disk_paths(check: DiskCheck, run: TriageRun) -> list[str]:
    if check.paths:
        return check.paths
    # The directory part of each log glob, before its first wildcard.
    found = []
    for pattern in run.sources.log_paths:
        fixed = re.split(r"[*?\[]", pattern, maxsplit=1)[0]
        found.append(os.path.dirname(fixed) or ".")
    return found


def _disk_usage(paths: Sequence[str]) -> list[tuple[str, int, int, int]]:
    seen: set[int] = set()
    found = []
    for path in paths:
        try:
            device = os.stat(path).st_dev
        except OSError:
            continue
        if device in seen:
            continue
        seen.add(device)
        usage = shutil.disk_usage(path)
        found.append((path, usage.total, usage.used, usage.free))
    return found


async def measure_disk(check: DiskCheck, run: TriageRun) -> Measurement:
    """Measure the fullest filesystem holding the checked paths (or the log directories)."""
    paths = _disk_paths(check, run)
    usages = await asyncio.to_thread(_disk_usage, paths)
    if not usages:
        return Measurement(
            None, "no path", status="unknown", reason=f"none of {', '.join(paths) or 'no paths'} exists here"
        )
    rows = [
        [path, format_value(used / total if total else 0, "percent"), format_bytes(free), format_bytes(total)]
        for path, total, used, free in usages
    ]
    worst = max(usages, key=lambda item: item[2] / item[1] if item[1] else 0)
    share = worst[2] / worst[1] if worst[1] else 0.0
    evidence = [Evidence(title="Filesystems", columns=["path", "used", "free", "size"], rows=rows)]
    return Measurement(
        share,
        f"{format_value(share, 'percent')} used",
        "percent",
        f"{format_bytes(worst[3])} free on {worst[0]}",
        evidence,
    )


async def measure_containers(check: ContainersCheck, run: TriageRun) -> Measurement:
    """Measure the platform's containers: running, restarts, version, CPU or memory."""
    engine = need(run.sources.engine, "the container engine")
    stats: list[ContainerStats] = await run.shared(
        ("engine-stats", check.sample_seconds), lambda: engine.platform_stats(check.sample_seconds)
    )
    evidence = [_containers_table(stats, run.window, check)]
    project = engine.compose_project
    if not stats:
        return Measurement(
            None,
            "no containers",
            status="critical" if check.measure == "running" else "unknown",
            reason=f"the engine runs no container of Compose project {project}",
        )
    if check.measure == "running":
        down = [item for item in stats if item.status != "running"]
        detail = ", ".join(f"{item.name} {item.status}" for item in down)
        return Measurement(
            float(len(down)), f"{len(stats) - len(down)} of {len(stats)} running", "count", detail, evidence
        )
    if check.measure == "restarts":
        worst = max(stats, key=lambda item: item.restart_count)
        return Measurement(
            float(worst.restart_count),
            f"{worst.restart_count} restart{'s' if worst.restart_count != 1 else ''}",
            "count",
            f"most: {worst.name}" if worst.restart_count else "",
            evidence,
        )
    if check.measure == "version":
        backend = [item for item in stats if item.service == run.sources.backend_service]
        if not backend:
            return Measurement(
                None,
                "no backend",
                status="unknown",
                reason=f"no container of service {run.sources.backend_service} in project {project}",
                evidence=evidence,
            )
        versions = sorted({item.version or item.image for item in backend})
        images = ", ".join(sorted({item.image for item in backend}))
        return Measurement(None, ", ".join(versions), "count", f"image {images}", evidence)
    if check.measure == "cpu":
        judged = [
            (found, item) for item in stats if (found := judged_cpu(item, run.window, check)) is not None
        ]
        if not judged:
            return Measurement(
                None, "not measured", status="unknown", reason="no running container", evidence=evidence
            )
        cpu, worst = max(judged, key=lambda pair: pair[0].percent)
        share = cpu.percent / 100
        figure = f"{format_value(share, 'percent')} of a core"
        return Measurement(share, figure, "percent", f"{worst.name}, {cpu.over}", evidence)
    measured = [item for item in stats if item.memory_bytes is not None and item.memory_limit_bytes]
    if not measured:
        return Measurement(
            None, "not measured", status="unknown", reason="no running container", evidence=evidence
        )
    worst = max(measured, key=lambda item: (item.memory_bytes or 0) / (item.memory_limit_bytes or 1))
    share = (worst.memory_bytes or 0) / (worst.memory_limit_bytes or 1)
    return Measurement(
        share,
        f"{format_bytes(worst.memory_bytes or 0)} of {format_bytes(worst.memory_limit_bytes or 0)}",
        "percent",
        worst.name,
        evidence,
    )


class CpuJudgement(NamedTuple):
    """A container's CPU over a triage's window: percent of one core, and how it was taken."""

    percent: float
    over: str  # said in the finding: "sampled over 0.5 s", "averaged over its 12 s since it started ..."
    since_start: bool


def judged_cpu(item: ContainerStats, window: timedelta, check: ContainersCheck) -> CpuJudgement | None:
    """Return a container's CPU over the triage's window, and how it was taken.

    A container younger than the window is judged on its average since it started, which is its
    CPU over the window: a sample of its first seconds (interpreter start-up, 100 % of a core for
    a moment) would say nothing of the window. An older one is sampled over `sample_seconds`, as
    `docker stats` shows it (the engine keeps no history to average a longer window on).
    """
    age = item.age_seconds
    if age is not None and item.lifetime_cpu_percent is not None and 0 < age < window.total_seconds():
        lived, span = format_span(age), format_span(window.total_seconds())
        over = f"averaged over its {lived} since it started (younger than the {span} window)"
        return CpuJudgement(item.lifetime_cpu_percent, over, since_start=True)
    if item.cpu_percent is None:
        return None
    return CpuJudgement(item.cpu_percent, f"sampled over {check.sample_seconds:g} s", since_start=False)


def _cpu_cell(item: ContainerStats, window: timedelta, check: ContainersCheck) -> str:
    judged = judged_cpu(item, window, check)
    if judged is None:
        return "—"
    figure = format_value(judged.percent / 100, "percent")
    return f"{figure} (its {format_span(item.age_seconds or 0)} so far)" if judged.since_start else figure


def _containers_table(stats: list[ContainerStats], window: timedelta, check: ContainersCheck) -> Evidence:
    rows = [
        [
            item.name,
            item.service or "—",
            item.status,
            _cpu_cell(item, window, check),
            format_bytes(item.memory_bytes) if item.memory_bytes is not None else "—",
            str(item.restart_count),
            item.image,
        ]
        for item in stats
    ]
    return Evidence(
        title="Platform containers",
        columns=["container", "service", "state", "CPU (of a core)", "memory", "restarts", "image"],
        rows=rows,
    )


async def measure_clock(check: ClockCheck, run: TriageRun) -> Measurement:
    """Measure how far the PostgreSQL and Redis clocks are from the bot's."""
    readers: list[tuple[str, Awaitable[ClockReading]]] = []
    if run.sources.platform_db is not None:
        readers.append(("PostgreSQL now()", run.sources.platform_db.server_clock(run.sources.clock)))
    if run.sources.redis is not None:
        readers.append(("Redis TIME", run.sources.redis.server_clock(run.sources.clock)))
    if not readers:
        raise DependencyError("error", "neither PostgreSQL nor Redis is configured")
    answers = await asyncio.gather(*(reader for _, reader in readers), return_exceptions=True)
    rows = []
    skews: list[tuple[str, float]] = []
    failures = []
    for (name, _), answer in zip(readers, answers, strict=True):
        if isinstance(answer, BaseException):
            failure = classify(answer)
            failures.append((name, failure))
            rows.append([name, "—", "—", f"{failure.reason}: {failure.detail}"])
            continue
        middle = answer.sent + (answer.received - answer.sent) / 2
        skew = (answer.server - middle).total_seconds()
        uncertainty = (answer.received - answer.sent).total_seconds() / 2
        skews.append((name, skew))
        rows.append([name, f"{skew:+.3f} s", f"±{uncertainty:.3f} s", "answered"])
    evidence = [
        Evidence(
            title="Server clock minus the bot's clock",
            columns=["source", "skew", "uncertainty", "state"],
            rows=rows,
            note="A skew makes TOTP codes fail (runbook: MFA codes not working).",
        )
    ]
    if not skews:
        raise failures[0][1]
    name, worst = max(skews, key=lambda item: abs(item[1]))
    detail = f"{name} {worst:+.3f} s"
    if failures:
        detail += "; " + ", ".join(f"{failed} unreachable" for failed, _ in failures)
    return Measurement(abs(worst), f"{abs(worst):.3f} s", "seconds", detail, evidence)
