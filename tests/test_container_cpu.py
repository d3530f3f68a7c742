"""Container CPU is judged over the triage's window: a container younger than the window on its
average since it started (a sample of its first second is interpreter start-up), an older one
sampled as `docker stats` does; the finding says which."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from adapters.engine import ContainerStats, EngineAdapter
from adapters.engine_stats import engine_timestamp, lifetime_cpu
from commands.triage.checks_host import measure_containers
from commands.triage.sources import TriageRun, TriageSources
from commands.triage_checklist import ContainersCheck, load_checklist
from sandbox.manager import SandboxStatus
from tests.conftest import make_settings

CPU_CHECK = next(
    check
    for check in load_checklist(None).checks
    if isinstance(check, ContainersCheck) and check.measure == "cpu"
)


def stats(name: str, sample: float, age: float, lifetime: float) -> ContainerStats:
    return ContainerStats(
        name=name, service="backend", status="running", restart_count=0, image="3dpot-backend:v2.0.5",
        version="v2.0.5", cpu_percent=sample, memory_bytes=1, memory_limit_bytes=10, started_at=None,
        age_seconds=age, lifetime_cpu_percent=lifetime,
    )  # fmt: skip


@dataclass
class FakeEngine:
    """The engine's answer, fixed: only what measure_containers reads."""

    found: list[ContainerStats] = field(default_factory=list)
    compose_project: str = "3dpot"

    async def platform_stats(self, sample_seconds: float = 0.5) -> list[ContainerStats]:
        return self.found


async def measure(found: list[ContainerStats], window: timedelta) -> tuple[float | None, str, list[str]]:
    engine = FakeEngine(found)
    sources = TriageSources(None, None, None, None, engine, [])  # type: ignore[arg-type]
    run = TriageRun(sources, window, datetime(2026, 12, 6, 8, 0, tzinfo=UTC))
    measured = await measure_containers(CPU_CHECK, run)
    return measured.value, measured.detail, [row[3] for row in measured.evidence[0].rows]


async def test_a_container_younger_than_the_window_is_judged_on_its_life_so_far() -> None:
    # The demo's first report used to say "Container CPU 106 % critical": one sample of start-up.
    value, detail, cells = await measure([stats("3dpot-backend-1", 106.0, 12.0, 9.0)], timedelta(minutes=1))
    assert value == pytest.approx(0.09)
    assert detail == (
        "3dpot-backend-1, averaged over its 12 s since it started (younger than the 1 min window)"
    )
    assert cells == ["9 % (its 12 s so far)"]


async def test_an_older_container_is_sampled_and_the_worst_is_shown() -> None:
    older = stats("3dpot-backend-1", 40.0, 600.0, 7.0)
    young = stats("3dpot-worker-1", 106.0, 5.0, 20.0)
    value, detail, cells = await measure([older, young], timedelta(minutes=5))
    assert value == pytest.approx(0.40)
    assert detail == "3dpot-backend-1, sampled over 0.5 s"
    assert cells == ["40 %", "20 % (its 5 s so far)"]


def test_the_lifetime_average_comes_from_the_cumulative_counter_and_the_engines_clocks() -> None:
    sample = {
        "read": "2026-12-06T08:30:16.739652278Z",
        "cpu_stats": {"cpu_usage": {"total_usage": 2_000_000_000}},
    }
    age, percent = lifetime_cpu(sample, "2026-12-06T08:30:06.739652278Z")
    assert age == pytest.approx(10.0) and percent == pytest.approx(20.0)
    assert lifetime_cpu(sample, None) == (None, None)
    assert lifetime_cpu(sample, "0001-01-01T00:00:00Z") == (None, None)  # Go's zero time: never started
    assert lifetime_cpu({"read": sample["read"]}, "2026-12-06T08:30:06Z")[1] is None
    assert engine_timestamp("2026-12-06T08:30:16+01:00") == engine_timestamp("2026-12-06T07:30:16Z")


async def test_the_real_backend_is_judged_and_the_finding_says_how(sandbox: SandboxStatus) -> None:
    settings = make_settings()
    engine = EngineAdapter(settings.docker_host, settings.compose_project, settings.backend_service, 5.0)
    try:
        [backend] = [item for item in await engine.platform_stats() if item.service == "backend"]
    finally:
        engine.close()
    assert backend.age_seconds is not None and backend.age_seconds > 0
    assert backend.lifetime_cpu_percent is not None and backend.lifetime_cpu_percent >= 0
    young = await measure([backend], timedelta(seconds=backend.age_seconds + 3600))
    assert "since it started" in young[1] and young[0] == pytest.approx(backend.lifetime_cpu_percent / 100)
    old = await measure([backend], timedelta(seconds=backend.age_seconds / 2))
    assert old[1] == f"{backend.name}, sampled over 0.5 s"
