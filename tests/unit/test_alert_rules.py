"""The alerting rules (manifests/monitoring/netshift.rules.yaml) against Prometheus's own tools
and against the series the components really export.

`promtool check rules` parses every expression; `promtool test rules` replays the series of
tests/unit/promtool/netshift.rules.test.yaml and checks that each alert fires (labels and
text) or stays quiet where it should. Every `netshift_*` series a rule reads must be one a
component's registry defines, so that renaming a metric cannot leave an alert that never
fires. promtool comes from Debian's `prometheus` package (scripts/setup.sh).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families

from agent.metrics import AgentMetrics
from controller.metrics import ControllerMetrics
from netshift.metrics import render
from support.require import require
from webhook.metrics import WebhookMetrics

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "manifests" / "monitoring" / "netshift.rules.yaml"
RULE_TESTS = Path(__file__).parent / "promtool" / "netshift.rules.test.yaml"


def _promtool() -> str:
    found = shutil.which("promtool")
    require(found is not None, "needs promtool (Debian's prometheus package)")
    assert found is not None
    return found


def _alerts() -> list[dict[str, str]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_promtool_checks_the_rules() -> None:
    done = subprocess.run(
        [_promtool(), "check", "rules", str(RULES)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(_alerts())} rules found" in done.stdout


def test_promtool_unit_tests_fire_and_resolve_every_alert() -> None:
    done = subprocess.run(
        [_promtool(), "test", "rules", RULE_TESTS.name],
        cwd=RULE_TESTS.parent,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_has_a_promtool_test_that_expects_it_to_fire() -> None:
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    fired = {
        case["alertname"]
        for test in tests
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert {rule["alert"] for rule in _alerts()} == fired


def _exported() -> set[str]:
    """Every sample name the three components can expose (with _total, _bucket, ...)."""
    names: set[str] = set()
    for registry in (WebhookMetrics().registry, ControllerMetrics().registry):
        names |= _sample_names(render(registry).decode())
    names |= _sample_names(render(AgentMetrics().registry).decode())
    return names


def _sample_names(text: str) -> set[str]:
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        suffixes = {
            "counter": ("_total",),
            "histogram": ("_bucket", "_count", "_sum"),
        }.get(family.type, ("",))
        names |= {family.name + s for s in suffixes}
    return names


def test_every_netshift_series_a_rule_reads_is_one_a_component_exports() -> None:
    used = {
        name for rule in _alerts() for name in re.findall(r"\bnetshift_[a-z_]+\b", rule["expr"])
    }
    assert used, "the rules read no netshift series"
    assert used - _exported() == set(), "rules read series no component exports"
