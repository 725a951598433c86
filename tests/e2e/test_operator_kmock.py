"""The real operator (kopf, via KopfRunner) against kmock's Kubernetes API over HTTP, with a fake
kubelet running `herder worker` processes and real Redis."""

from __future__ import annotations

from pathlib import Path

import pytest
from operator_harness import Cluster, enqueue_sleeps, jobs, queue_status, reconcile_steps, tq_spec, until

from herder.models import JobState
from redis_proc import RedisProc

pytestmark = pytest.mark.timeout(240)


def test_burst_scales_up_to_max_and_back_without_interrupting(
    cluster: Cluster, redis_server: RedisProc
) -> None:
    url = redis_server.url
    cluster.create_tq("burst", tq_spec(url))
    until(lambda: cluster.replicas("burst"), lambda n: n == 1, 30, "Deployment created at minReplicas")
    dep = cluster.deployment("burst")
    assert dep is not None
    assert dep["metadata"]["ownerReferences"][0]["kind"] == "TaskQueue"
    assert dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 45
    until(lambda: queue_status(url), lambda s: len(s.workers) == 1, 30, "first worker registered")
    ids = enqueue_sleeps(url, 50, 1.0)
    until(lambda: cluster.replicas("burst"), lambda n: n == 4, 60, "scaled up to maxReplicas")
    done = until(
        lambda: jobs(url, ids),
        lambda js: all(j.state == JobState.succeeded for j in js),
        120,
        "all 50 succeeded",
    )
    assert all(j.attempts == 1 and not j.errors for j in done), [j.errors for j in done if j.errors]
    until(lambda: cluster.replicas("burst"), lambda n: n == 1, 60, "back to minReplicas")
    until(lambda: len(cluster.kubelet.pods), lambda n: n == 1, 30, "one pod left")

    k = cluster.kubelet
    assert len(k.deleted) == 3 and not k.killed, (k.deleted, k.killed)
    # The ReplicaSet stand-in (the controller's full ranking) deleted only pods the operator marked.
    assert all(d.cost < 0 for d in k.deleted), k.deleted
    assert k.restarts == 0 and not k.errors, (k.restarts, k.errors)
    until(lambda: cluster.condition("burst", "Ready").get("status"), lambda s: s == "True", 30, "Ready")
    st = cluster.status("burst")
    assert st["desiredReplicas"] == 1 and st["phase"] == "Ready" and st["lastScaleReason"]
    assert cluster.condition("burst", "RedisReachable")["status"] == "True"
    reasons = {e.get("reason") for e in cluster.events()}
    assert {"Scaled", "Draining"} <= reasons, reasons


def test_invalid_taskqueue_gets_a_condition_and_no_deployment(
    cluster: Cluster, redis_server: RedisProc
) -> None:
    cluster.create_tq("bad", tq_spec(redis_server.url, minReplicas=5, maxReplicas=2))
    cond = until(lambda: cluster.condition("bad", "Ready"), lambda c: bool(c), 30, "Ready condition")
    assert cond["status"] == "False" and cond["reason"] == "InvalidSpec"
    assert "minReplicas" in cond["message"]
    assert cluster.status("bad")["phase"] == "Invalid"
    events = [e for e in cluster.events() if e.get("reason") == "InvalidSpec"]
    assert events and events[0]["type"] == "Warning"
    # A valid one created after it is handled, so the operator is alive; the invalid one still has nothing.
    cluster.create_tq("good", tq_spec(redis_server.url))
    until(lambda: cluster.replicas("good"), lambda n: n == 1, 30, "valid TaskQueue handled")
    assert cluster.deployment("bad") is None


def test_redis_unreachable_reports_and_holds_replicas(
    cluster: Cluster, tmp_path: Path, redis_server: RedisProc
) -> None:
    private = RedisProc(tmp_path / "outage").start()
    try:
        cluster.create_tq("outage", tq_spec(private.url, minReplicas=2))
        until(lambda: cluster.replicas("outage"), lambda n: n == 2, 30, "two replicas")
        until(
            lambda: cluster.condition("outage", "RedisReachable").get("status"),
            lambda s: s == "True",
            30,
            "RedisReachable",
        )
        private.stop()
        # minReplicas 0 with an idle queue would scale down, if the operator could see the queue.
        cluster.patch_spec(
            "outage", {"minReplicas": 0, "scaleDown": {"stabilizationSeconds": 0, "cooldownSeconds": 0}}
        )
        cond = until(
            lambda: cluster.condition("outage", "RedisReachable"),
            lambda c: c.get("status") == "False",
            30,
            "RedisReachable=False",
        )
        assert cond["reason"] == "RedisUnreachable"
        # Three more reconcile steps of this TaskQueue (counted by the in-process operator's own
        # metrics) give a wrong scale-down every chance to happen; no fixed sleep.
        seen = reconcile_steps("outage")
        until(lambda: reconcile_steps("outage"), lambda n: n >= seen + 3, 60, "three more reconcile steps")
        assert cluster.replicas("outage") == 2
        assert cluster.status("outage")["phase"] == "Degraded"
        assert not cluster.kubelet.deleted
        assert any(e.get("reason") == "RedisUnreachable" for e in cluster.events())
    finally:
        private.stop()


def test_rejected_deployment_shows_as_condition_and_event_naming_the_field(
    cluster: Cluster, redis_server: RedisProc
) -> None:
    # Valid for the CRD (podTemplate is free-form) but the API server refuses the Deployment (422).
    template = {"spec": {"containers": [{"name": "Bad_Name"}]}}
    spec = tq_spec(redis_server.url, worker={"image": "herder:dev", "podTemplate": template})
    cluster.create_tq("rejected", spec)
    cond = until(
        lambda: cluster.condition("rejected", "Ready"),
        lambda c: c.get("reason") == "DeploymentRejected",
        30,
        "DeploymentRejected condition",
    )
    assert cond["status"] == "False"
    assert "spec.template.spec.containers[0].name" in cond["message"], cond
    assert cluster.status("rejected")["phase"] == "Degraded"
    assert cluster.condition("rejected", "Degraded")["status"] == "True"
    warnings = [e for e in cluster.events() if e.get("reason") == "DeploymentRejected"]
    assert warnings and warnings[0]["type"] == "Warning"
    assert "spec.template.spec.containers[0].name" in warnings[0]["message"]
    # Retried with backoff (the message counts the retries), one Event per distinct failure.
    until(
        lambda: cluster.condition("rejected", "Ready").get("message", ""),
        lambda m: "retry 2 in" in m or "retry 3 in" in m,
        30,
        "a retry",
    )
    assert len([e for e in cluster.events() if e.get("reason") == "DeploymentRejected"]) == 1
    assert cluster.deployment("rejected") is None
    # Fixing the template recovers: Deployment created, Ready again, a Recovered Event.
    cluster.patch_spec(
        "rejected", {"worker": {"podTemplate": {"spec": {"containers": [{"name": "worker"}]}}}}
    )
    until(lambda: cluster.replicas("rejected"), lambda n: n == 1, 30, "Deployment created after the fix")
    until(
        lambda: cluster.condition("rejected", "Ready").get("reason"),
        lambda r: r != "DeploymentRejected",
        30,
        "condition cleared",
    )
    assert any(e.get("reason") == "Recovered" for e in cluster.events())
