"""Scale-down against the ReplicaSet controller's full victim ranking (the fake kubelet ranks
unscheduled, phase, readiness, pod-deletion-cost, ready time, restarts, age, like the real one).

Each case has a busy pod that the controller would rank *before* the idle pods the operator
drained: not Ready (a probe timeout under load), restarted and not Ready again yet, or Pending
(another container still starting). Before the fix the controller deleted the busy pod and its
job was handed back; now the removed pods are exactly the drained ones and no job is handed back.
"""

from __future__ import annotations

from typing import Any

import pytest
from kube_harness import raw
from operator_harness import NS, Cluster, arun, enqueue_sleeps, jobs, queue_status, tq_spec, until

from herder.models import JobState
from redis_proc import RedisProc

pytestmark = pytest.mark.timeout(240)


def pod(c: Cluster, name: str) -> dict[str, Any] | None:
    from kubernetes import client as k8s

    items = raw(k8s.CoreV1Api(c.api).list_namespaced_pod, NS).get("items", [])
    return next((p for p in items if p["metadata"]["name"] == name), None)


def is_ready(p: dict[str, Any] | None) -> bool:
    conds = ((p or {}).get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds)


@pytest.mark.parametrize("case", ["not-ready", "restarted", "pending"])
def test_scale_down_removes_only_the_drained_pods(
    cluster: Cluster,
    redis_server: RedisProc,
    case: str,
) -> None:
    url = redis_server.url
    spec = tq_spec(
        url,
        worker={"image": "herder:dev", "concurrency": 1},
        minReplicas=1,
        maxReplicas=3,
        # A few seconds of window: the registry's in-flight counts (a heartbeat old) settle before
        # the choice. Under load a stale tie may still drain the busy pod; the operator then swaps
        # it for an idle one (DrainSwapped), and this test still sees only the idle pods go.
        scaleDown={"stabilizationSeconds": 3, "cooldownSeconds": 0},
        drainTimeoutSeconds=120,
    )
    cluster.create_tq("rank", spec)
    st = until(lambda: queue_status(url), lambda s: len(s.workers) == 1, 60, "first worker")
    busy = st.workers[0].id
    k = cluster.kubelet

    if case == "restarted":
        k.crash(busy)
        until(lambda: k.restarts, lambda n: n == 1, 30, "container restarted")
    if case == "pending":
        k.pending_phase.add(busy)  # a second container still starting: phase Pending, not Ready
        until(
            lambda: (pod(cluster, busy) or {}).get("status", {}).get("phase"),
            lambda p: p == "Pending",
            30,
            "Pending",
        )
    else:
        k.unready.add(busy)  # probe timeouts under load / not Ready again yet after the restart
    until(lambda: is_ready(pod(cluster, busy)), lambda r: not r, 30, "busy pod not Ready")

    [long_id] = enqueue_sleeps(url, 1, 600.0)
    # Waits for the restarted worker to register again, too: it claims the job once it is up.
    until(
        lambda: arun(lambda c: c.get_job(long_id, "e2e"), url),
        lambda j: j.worker == busy,
        60,
        "long job on it",
    )

    short_ids = enqueue_sleeps(url, 2, 2.0)
    until(lambda: cluster.replicas("rank"), lambda n: n == 3, 60, "scaled up to 3")
    others = until(lambda: set(k.pods) - {busy}, lambda s: len(s) == 2, 30, "two more pods")

    until(
        lambda: jobs(url, short_ids),
        lambda js: all(j.state == JobState.succeeded for j in js),
        60,
        "short jobs done",
    )
    if case == "pending":
        # The operator holds the scale-down and says why, while the Pending pod would go first.
        until(
            lambda: [e for e in cluster.events() if e.get("reason") == "ScaleDownHeld"],
            lambda es: any(busy in e.get("message", "") for e in es),
            60,
            "ScaleDownHeld naming the Pending pod",
        )
        assert cluster.replicas("rank") == 3 and not k.deleted, k.deleted
        k.pending_phase.discard(busy)  # the other container started
    until(lambda: cluster.replicas("rank"), lambda n: n == 1, 60, "scaled down to 1")
    until(lambda: set(k.pods), lambda s: s == {busy}, 30, "only the busy pod left")

    assert {d.pod for d in k.deleted} == others, k.deleted
    assert all(d.cost < 0 for d in k.deleted), k.deleted  # the pods the operator marked
    assert not k.killed, k.killed
    job = arun(lambda c: c.get_job(long_id, "e2e"), url)
    # Still running where it started, never handed back.
    assert job.state == JobState.active and job.worker == busy, job
    assert job.attempts == 1 and not job.errors, job.errors
    arun(lambda c: c.cancel(long_id, "e2e"), url)  # so that teardown need not wait for it


def test_status_says_scaling_until_the_workers_are_up(cluster: Cluster, redis_server: RedisProc) -> None:
    url = redis_server.url
    spec = tq_spec(
        url,
        worker={"image": "herder:dev", "concurrency": 1},
        minReplicas=1,
        maxReplicas=3,
        scaleDown={"stabilizationSeconds": 0, "cooldownSeconds": 0},
    )
    cluster.create_tq("truth", spec)
    until(lambda: cluster.status("truth").get("phase"), lambda p: p == "Ready", 60, "Ready with one worker")
    k = cluster.kubelet
    k.hold_pending = True  # the new pods find no node: replicas go up, workers do not

    ids = enqueue_sleeps(url, 3, 5.0)
    until(lambda: cluster.replicas("truth"), lambda n: n == 3, 60, "replicas 3")
    cond = until(
        lambda: cluster.condition("truth", "Ready"),
        lambda c: c.get("reason") == "ScalingUp" and "of 3 workers ready" in c.get("message", ""),
        30,
        "Ready=False while the workers are not up",
    )
    assert cond["status"] == "False"
    assert cluster.status("truth")["phase"] == "Scaling"  # before: Ready right after the scale-up
    k.release()

    until(lambda: jobs(url, ids), lambda js: all(j.state == JobState.succeeded for j in js), 60, "jobs done")
    # Back down: the reason of the replica change is the scale-down decision, not "steady at 1".
    until(lambda: cluster.replicas("truth"), lambda n: n == 1, 60, "back to 1")
    st = until(lambda: cluster.status("truth"), lambda s: s.get("phase") == "Ready", 60, "Ready again")
    assert str(st.get("lastScaleReason", "")).startswith("scale down "), st.get("lastScaleReason")
    scaled = [
        e["message"] for e in cluster.events() if e.get("reason") == "Scaled" and "removing" in e["message"]
    ]
    assert scaled and all("steady at" not in m for m in scaled), scaled
