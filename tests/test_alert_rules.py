"""The shipped alerting rules are valid and fire exactly over the runbook's thresholds (promtool)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

from tests.fakes.specs import REPO_ROOT

MONITORING = REPO_ROOT / "monitoring"
RULES = MONITORING / "alerts.yml"
RULE_TESTS = MONITORING / "alerts.test.yml"


def promtool() -> str:
    """Return promtool (Debian's prometheus package ships it; scripts/install.sh installs that)."""
    found = shutil.which("promtool") or ("/usr/bin/promtool" if Path("/usr/bin/promtool").exists() else None)
    assert found, "promtool is not installed: run scripts/install.sh (Debian package prometheus)"
    return found


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *args], cwd=MONITORING, capture_output=True, text=True, timeout=60)


def test_rules_pass_promtool_check() -> None:
    result = run("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 6 rules found" in result.stdout


def test_rules_fire_over_each_threshold_and_not_under_it() -> None:
    result = run("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_rule_is_tested_firing_and_quiet() -> None:
    alerts = {
        rule["alert"] for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]
    }
    assert alerts == {
        "HighErrorRate",
        "HighLatencyP95",
        "RateLimitSurge",
        "AuthFailureSurge",
        "MfaFailureSurge",
        "PermissionDeniedSurge",
    }
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    firing = {
        case["alertname"] for test in tests for case in test["alert_rule_test"] if case.get("exp_alerts")
    }
    quiet = {
        case["alertname"] for test in tests for case in test["alert_rule_test"] if not case.get("exp_alerts")
    }
    assert firing == alerts and quiet == alerts


def test_a_broken_rule_is_caught(tmp_path: Path) -> None:
    broken = tmp_path / "alerts.yml"
    broken.write_text(RULES.read_text().replace("> 0.05", "> > 0.05", 1))
    result = run("check", "rules", str(broken))
    assert result.returncode != 0


def test_rules_carry_what_the_bot_uses() -> None:
    # The bot proposes `priority` as the incident severity and shows `summary` in Slack.
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            assert rule["labels"]["priority"] in {"P1", "P2", "P3", "P4"}, rule["alert"]
            assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
            assert rule["annotations"]["summary"], rule["alert"]
