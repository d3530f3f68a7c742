"""History of a known shape for the graph tests, backfilled into a Prometheus of their own.

Every series is sampled every 15 s for the 70 minutes before `end` (aligned on 15 s), so a range
query at 15 s resolution lands on the samples themselves. Times below are minutes before `end`:

- traffic: 10 requests/s, none at all from 20 to 14 (quiet: every rate is 0, so 0/0 is NaN);
- 5xx: 1 % of the traffic, 20 % from 45 to 30 (the spike);
- latency: every request in the (0.5, 1] s bucket, so P95 = 0.975 s; in (2, 4] during the spike,
  so P95 = 3.9 s (histogram_quantile interpolates linearly inside the bucket);
- `chatops_test_gauge{shard="a"}` = 1 + minutes since the start, `shard="b"` twice that; NaN at 50
  and 49.75; no sample at all from 30 to 22 (a scrape gap).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

STEP = 15
HISTORY_MINUTES = 70
TOTAL_RATE = 10.0
NORMAL_ERRORS, SPIKE_ERRORS = 0.01, 0.20
NORMAL_P95, SPIKE_P95 = 0.975, 3.9
SPIKE = (45.0, 30.0)
QUIET = (20.0, 14.0)
GAUGE_NAN = (50.0, 49.75)
GAUGE_GAP = (30.0, 22.0)
BUCKETS = ("0.1", "0.25", "0.5", "1", "2", "4", "+Inf")


@dataclass(frozen=True)
class History:
    """Where the history is served and when it ends."""

    url: str
    end: datetime
    data_dir: Path

    def at(self, minutes_before: float) -> datetime:
        """Return the time `minutes_before` the end."""
        return self.end - timedelta(minutes=minutes_before)


def _phase(minutes_before: float) -> str:
    """Return what the platform was doing in the 15 s interval that starts `minutes_before` the end."""
    if QUIET[1] < minutes_before <= QUIET[0]:
        return "quiet"
    if SPIKE[1] < minutes_before <= SPIKE[0]:
        return "spike"
    return "normal"


def gauge_value(minutes_before: float) -> float | None:
    """Return the gauge of shard a at a sample time; None where no sample was written."""
    if GAUGE_GAP[1] < minutes_before <= GAUGE_GAP[0]:
        return None
    if minutes_before in GAUGE_NAN:
        return math.nan
    return 1 + (HISTORY_MINUTES - minutes_before)


def openmetrics(end: datetime) -> str:
    """Write the whole history as OpenMetrics text for `promtool tsdb create-blocks-from`."""
    stamps = [
        end.timestamp() - HISTORY_MINUTES * 60 + index * STEP for index in range(HISTORY_MINUTES * 4 + 1)
    ]
    ok = errors = 1000.0
    buckets = dict.fromkeys(BUCKETS, 500.0)
    requests: list[tuple[float, float, float]] = []
    histogram: list[tuple[float, dict[str, float]]] = []
    for index, stamp in enumerate(stamps):
        if index > 0:
            # The interval that ended at this sample decides how much each counter grew.
            phase = _phase((end.timestamp() - stamps[index - 1]) / 60)
            rate = 0.0 if phase == "quiet" else TOTAL_RATE
            share = SPIKE_ERRORS if phase == "spike" else NORMAL_ERRORS
            errors += rate * share * STEP
            ok += rate * (1 - share) * STEP
            lowest = "4" if phase == "spike" else "1"
            for le in BUCKETS[BUCKETS.index(lowest) :]:
                buckets[le] += rate * STEP
        requests.append((stamp, ok, errors))
        histogram.append((stamp, dict(buckets)))
    lines = ["# HELP http_requests Requests answered.", "# TYPE http_requests counter"]
    for status, column in (("200", 1), ("500", 2)):
        for row in requests:
            lines.append(
                f'http_requests_total{{path="/api/v1/models",status="{status}"}} {row[column]} {row[0]:.0f}'
            )
    lines += [
        "# HELP http_request_duration_seconds Request latency.",
        "# TYPE http_request_duration_seconds histogram",
    ]
    for stamp, counts in histogram:
        for le in BUCKETS:
            lines.append(f'http_request_duration_seconds_bucket{{le="{le}"}} {counts[le]} {stamp:.0f}')
        lines.append(f"http_request_duration_seconds_count {counts['+Inf']} {stamp:.0f}")
        lines.append(f"http_request_duration_seconds_sum {counts['+Inf'] * 0.9} {stamp:.0f}")
    lines += ["# HELP chatops_test_gauge A gauge of known values.", "# TYPE chatops_test_gauge gauge"]
    for shard, factor in (("a", 1), ("b", 2)):
        for stamp in stamps:
            value = gauge_value((end.timestamp() - stamp) / 60)
            if value is None:
                continue
            text = "NaN" if math.isnan(value) else f"{value * factor}"
            lines.append(f'chatops_test_gauge{{shard="{shard}"}} {text} {stamp:.0f}')
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


def aligned_now() -> datetime:
    """Return now, rounded down to the step."""
    now = datetime.now(UTC).timestamp()
    return datetime.fromtimestamp(math.floor(now / STEP) * STEP, UTC)
