"""The sample alert rules in ``docs/alerts.yaml``: ``promtool check rules`` where promtool is
installed; everywhere, a parse that checks their shape and that they name only metrics the
daemon exports."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from agentcron.metrics import METRIC_NAMES

RULES = Path(__file__).resolve().parents[2] / "docs" / "alerts.yaml"
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
EXPORTED = {name + suffix for name, kind in METRIC_NAMES.items() for suffix in SUFFIXES[kind]} | {
    "up"
}


def rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text())
    (group,) = document["groups"]
    assert group["name"] == "agentcron"
    return list(group["rules"])


def test_the_rules_cover_failing_runs_missed_occurrences_lag_and_a_down_daemon() -> None:
    names = {rule["alert"] for rule in rules()}
    assert {
        "AgentcronDown",
        "AgentcronRunsFailing",
        "AgentcronOccurrencesMissed",
        "AgentcronFireLagHigh",
    } <= names


def test_every_rule_is_well_formed_and_names_only_exported_metrics() -> None:
    for rule in rules():
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert {"summary", "description"} <= set(rule["annotations"])
        if "for" in rule:
            assert re.fullmatch(r"\d+[smh]", rule["for"])
        expr = rule["expr"]
        assert expr.count("(") == expr.count(")"), rule["alert"]
        metrics = set(re.findall(r"\b(agentcron_[a-z_]+|up)\b", expr))
        assert metrics, rule["alert"]
        assert metrics <= EXPORTED, (rule["alert"], metrics - EXPORTED)


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_promtool_accepts_the_rules() -> None:
    done = subprocess.run(
        ["promtool", "check", "rules", str(RULES)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
