"""The Grafana dashboard shipped with the bot: valid PromQL over metrics the bot really exposes."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import yaml

from bot.observability import BotMetrics

DASHBOARD = Path(__file__).resolve().parents[1] / "monitoring" / "grafana" / "chatops-dashboard.json"
_SUFFIXES = re.compile(r"_(total|bucket|count|sum)$")


def expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def test_the_dashboard_shows_every_metric_of_the_bot_and_nothing_else() -> None:
    families = {family.name for family in BotMetrics().registry.collect()}
    used = {
        _SUFFIXES.sub("", name) for expr in expressions() for name in re.findall(r"chatops_[a-z_]+", expr)
    }
    assert used == families


def test_every_expression_is_valid_promql(tmp_path: Path) -> None:
    records = [{"record": f"chatops:panel_{index}", "expr": expr} for index, expr in enumerate(expressions())]
    rules_file = tmp_path / "dashboard_rules.yml"
    rules_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": records}]}))
    checked = subprocess.run(
        ["promtool", "check", "rules", str(rules_file)], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
