"""Herder's alert rules (charts/herder/files/alerts.yaml) with the real promtool: `check rules`,
and `test rules` on tests/alerts_test.yaml, which holds series that fire and series that must not
for every alert. The dashboard's queries are checked to parse as PromQL, and the exported metrics
pass `promtool check metrics`.

promtool is found through $HERDER_PROMTOOL, PATH, or .tools/bin/ (scripts/install-tools.sh).
Without it these tests skip, unless $CI is set: CI must have it.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest

from herder.client import HerderClient
from herder.queue_metrics import QueueCollector
from herder.settings import HerderSettings
from toolbins import find_binary

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "charts" / "herder" / "files" / "alerts.yaml"
UNIT_TESTS = Path(__file__).resolve().parent / "alerts_test.yaml"
DASHBOARD = ROOT / "charts" / "herder" / "files" / "dashboard.json"


@pytest.fixture(scope="module")
def promtool() -> str:
    path = find_binary("promtool", "HERDER_PROMTOOL")
    if path is None:
        reason = "promtool not found (set $HERDER_PROMTOOL, put it on PATH, or run scripts/install-tools.sh)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI must have it")
        pytest.skip(reason)
    return path


def run(cmd: list[str], stdin: str | None = None) -> str:
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False, input=stdin)
    out = p.stdout + p.stderr
    assert p.returncode == 0, f"{' '.join(cmd)} failed ({p.returncode}):\n{out}"
    return out


def alerts() -> set[str]:
    doc = yaml.safe_load(RULES.read_text())
    return {r["alert"] for g in doc["groups"] for r in g["rules"]}


def test_check_rules(promtool: str) -> None:
    out = run([promtool, "check", "rules", str(RULES)])
    assert f"SUCCESS: {len(alerts())} rules found" in out


def test_unit_tests(promtool: str) -> None:
    out = run([promtool, "test", "rules", str(UNIT_TESTS)])
    assert "SUCCESS" in out


def test_every_alert_fires_and_stays_quiet_in_the_unit_tests() -> None:
    doc = yaml.safe_load(UNIT_TESTS.read_text())
    assert doc["rule_files"] == ["../charts/herder/files/alerts.yaml"]
    fires: set[str] = set()
    quiet: set[str] = set()
    for test in doc["tests"]:
        for case in test.get("alert_rule_test", []):
            (fires if case.get("exp_alerts") else quiet).add(case["alertname"])
            for exp in case.get("exp_alerts") or []:
                # Annotations are compared exactly, so the templates are tested too.
                assert set(exp["exp_annotations"]) == {"summary", "description", "runbook"}
    assert fires == alerts(), f"alerts never shown firing: {alerts() - fires}"
    assert quiet == alerts(), f"alerts never shown quiet: {alerts() - quiet}"


def dashboard_exprs() -> list[tuple[str, str]]:
    dash: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return [(f"{p['id']}{t['refId']}", t["expr"]) for p in dash["panels"] for t in p["targets"]]


def test_dashboard_queries_are_valid_promql(promtool: str, tmp_path: Path) -> None:
    # Grafana's variables replaced by what they expand to; each query becomes a recording rule.
    rules = [
        {
            "record": f"herder_dashboard:panel_{ref}",
            "expr": expr.replace("$__rate_interval", "5m").replace("$queue", ".*"),
        }
        for ref, expr in dashboard_exprs()
    ]
    path = tmp_path / "dashboard-rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    out = run([promtool, "check", "rules", str(path)])
    assert f"SUCCESS: {len(rules)} rules found" in out


async def test_exported_metrics_pass_promtool_lint(
    promtool: str, settings: HerderSettings, client: HerderClient
) -> None:
    """The names the alerts and the dashboard use, as exported: queue metrics and worker metrics."""
    import herder.metrics  # noqa: F401  (registers the worker metrics on the default registry)

    await client.enqueue("default", "echo", {})
    collector = QueueCollector(settings)
    try:
        registry = CollectorRegistry()
        registry.register(collector)
        text = (await asyncio.to_thread(generate_latest, registry)).decode()
    finally:
        collector.close()
    assert 'herder_queue_jobs{queue="default",state="ready"} 1.0' in text
    run([promtool, "check", "metrics"], stdin=text)
    worker_text = generate_latest(REGISTRY).decode()
    assert "herder_worker_redis_up" in worker_text
    run([promtool, "check", "metrics"], stdin=worker_text)
