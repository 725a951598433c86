"""The operator as the chart runs it (`kopf run` in its own process) logs JSON when asked, one line
per decision, and not kopf's "Timer 'reconcile' succeeded" once a second."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kube_harness import KmockThread
from test_operator_kmock import GROUP, NS, PLURAL, VERSION, arun, tq_spec, until

from redis_proc import RedisProc

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def api_server(tmp_path: Path) -> Iterator[tuple[Any, Path]]:
    from kubernetes import client as k8s
    from kubernetes import config

    server = KmockThread().start()
    kubeconfig = server.kubeconfig(tmp_path / "kubeconfig")
    api = config.new_client_from_config(str(kubeconfig))
    peering = {
        "apiVersion": "kopf.dev/v1",
        "kind": "ClusterKopfPeering",
        "metadata": {"name": "herder-operator", "uid": str(uuid.uuid4())},
        "status": {},
    }
    k8s.CustomObjectsApi(api).create_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", peering)
    try:
        yield api, kubeconfig
    finally:
        server.stop()


def test_json_logs_under_kopf_run_one_line_per_decision(
    api_server: tuple[Any, Path], redis_server: RedisProc, tmp_path: Path
) -> None:
    from kubernetes import client as k8s

    api, kubeconfig = api_server
    env = dict(os.environ, KUBECONFIG=str(kubeconfig), HERDER_LOG_FORMAT="json", HERDER_LOG_LEVEL="INFO")
    env["HERDER_METRICS_PORT"] = "0"
    log_path = tmp_path / "operator.log"
    cmd = [sys.executable, "-m", "kopf", "run", "-m", "herder_operator.handlers", "--all-namespaces"]
    cmd += ["--peering", "herder-operator"]
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "TaskQueue",
            "metadata": {
                "name": "logs",
                "namespace": NS,
                "uid": str(uuid.uuid4()),
                "generation": 1,
                "resourceVersion": "1",
            },
            "spec": tq_spec(redis_server.url, minReplicas=0),
        }
        custom = k8s.CustomObjectsApi(api)
        custom.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, body)

        def status() -> dict[str, Any]:
            got = custom.get_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "logs")
            return dict(got.get("status") or {})

        arun(lambda c: c.enqueue("e2e", "sleep", {"seconds": 1.0}), redis_server.url)
        first = until(status, lambda s: s.get("replicas") == 1, 60, "activation 0->1")
        t0 = first["memory"]["recommendations"][-1]["at"]
        # At least three more steps (timer ticks) after the decision: enough for kopf's
        # per-tick "Timer ... succeeded" lines to have appeared, were they still at INFO.
        until(status, lambda s: s["memory"]["recommendations"][-1]["at"] >= t0 + 3000, 30, "later steps")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)

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
