"""The operator as the chart runs it (`kopf run` in its own process) logs JSON when asked, one line
per decision, and not kopf's "Timer 'reconcile' succeeded" once a second."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from operator_harness import Kube, arun, spawn_operator, stop_operators, tq_spec, until

from redis_proc import RedisProc

pytestmark = pytest.mark.timeout(180)


def test_json_logs_under_kopf_run_one_line_per_decision(
    kube: Kube, redis_server: RedisProc, tmp_path: Path
) -> None:
    log_path = tmp_path / "operator.log"
    proc = spawn_operator(kube.kubeconfig, log_path, HERDER_LOG_FORMAT="json", HERDER_LOG_LEVEL="INFO")
    try:
        kube.create_tq("logs", tq_spec(redis_server.url, minReplicas=0))

        arun(lambda c: c.enqueue("e2e", "sleep", {"seconds": 1.0}), redis_server.url)
        first = until(lambda: kube.status("logs"), lambda s: s.get("replicas") == 1, 60, "activation 0->1")
        t0 = first["memory"]["recommendations"][-1]["at"]
        # At least three more steps (timer ticks) after the decision: enough for kopf's
        # per-tick "Timer ... succeeded" lines to have appeared, were they still at INFO.
        until(
            lambda: kube.status("logs"),
            lambda s: s["memory"]["recommendations"][-1]["at"] >= t0 + 3000,
            30,
            "later steps",
        )
    finally:
        stop_operators([proc])

    lines = [ln for ln in log_path.read_text().splitlines() if ln.strip()]
    records = []
    for ln in lines:
        try:
            records.append(json.loads(ln))
        except ValueError:
            pytest.fail(f"not a JSON line: {ln!r}")
    messages = [str(r.get("message")) for r in records]
    scaled = [r for r in records if str(r.get("message")).startswith("Scaled: scaled 0->1")]
    assert len(scaled) == 1, messages
    assert scaled[0].get("queue") == "e2e" and (scaled[0].get("object") or {}).get("name") == "logs", scaled
    assert not [m for m in messages if "Timer" in m and "succeeded" in m], messages
    assert len(records) < 40, messages  # quiet: a handful of start-up lines and the decision
