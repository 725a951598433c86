"""The operator serves Prometheus metrics on HERDER_METRICS_PORT (where the chart's Service and
ServiceMonitor look): the queue collector for each TaskQueue it manages, added and removed with
them, and its own reconcile metrics. Real kopf on kmock, real Redis, real HTTP scrapes."""

from __future__ import annotations

import httpx
import pytest
from operator_harness import GROUP, NS, PLURAL, VERSION, Cluster, tq_spec, until
from prometheus_client.parser import text_string_to_metric_families

from redis_proc import RedisProc, free_port

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def metrics_port(monkeypatch: pytest.MonkeyPatch) -> int:
    port = free_port()
    monkeypatch.setenv("HERDER_METRICS_PORT", str(port))
    return port


def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of the endpoint by (name, labels); empty while it does not answer."""
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    except httpx.HTTPError:
        return {}
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


TQ = {"queue": "e2e", "taskqueue": "default/m"}


def value(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def test_operator_serves_queue_and_reconcile_metrics(
    metrics_port: int, cluster: Cluster, redis_server: RedisProc
) -> None:
    from kubernetes import client as k8s

    cluster.create_tq("m", tq_spec(redis_server.url, minReplicas=2))
    got = until(
        lambda: scrape(metrics_port),
        lambda m: (
            value(m, "herder_queue_workers", **TQ) == 2
            and value(m, "herder_operator_current_replicas", **TQ) == 2
        ),
        60,
        "queue and operator series of the TaskQueue",
    )
    assert value(got, "herder_queue_jobs", **TQ, state="ready") == 0
    assert value(got, "herder_operator_desired_replicas", **TQ) == 2
    assert value(got, "herder_operator_max_replicas", **TQ) == 4
    decisions = {
        dict(k[1])["reason"]: v
        for k, v in got.items()
        if k[0] == "herder_operator_decisions_total" and ("taskqueue", "default/m") in k[1]
    }
    assert decisions.get("steady", 0) >= 1 and "other" not in decisions, decisions
    assert (value(got, "herder_operator_reconcile_duration_seconds_count", **TQ) or 0) >= 1
    assert value(got, "herder_queue_redis_up", taskqueue="default/m") == 1
    assert value(got, "herder_operator_taskqueues") == 1

    # Removed with the TaskQueue.
    k8s.CustomObjectsApi(cluster.api).delete_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "m")
    gone = until(
        lambda: scrape(metrics_port),
        lambda m: value(m, "herder_operator_taskqueues") == 0,
        60,
        "TaskQueue forgotten",
    )
    assert not [k for k in gone if ("taskqueue", "default/m") in k[1]], "series left behind"
