"""A real operator restarted mid-stabilization, mid-cooldown and mid-drain on the emulated API:
the new process reads the policy's memory back from the TaskQueue's status and continues where
the old one stopped (issue 9: before, a restart forgot the windows and scaled down at once)."""

from __future__ import annotations

from typing import Any

import pytest
from operator_harness import Cluster, arun, enqueue_sleeps, jobs, queue_status, tq_spec, until

from herder.models import JobState
from redis_proc import RedisProc

pytestmark = pytest.mark.timeout(240)


def states(url: str, ids: list[str]) -> list[JobState]:
    return [j.state for j in jobs(url, ids)]


def memory(c: Cluster, name: str) -> dict[str, Any]:
    return dict(c.status(name).get("memory") or {})


def test_restart_mid_stabilization_and_cooldown_and_drain_keeps_the_memory(
    cluster: Cluster, redis_server: RedisProc
) -> None:
    c, url = cluster, redis_server.url
    window, cooldown = 20, 12
    spec = tq_spec(
        url,
        worker={"image": "herder:dev", "concurrency": 1},
        minReplicas=1,
        maxReplicas=3,
        scaleDown={"stabilizationSeconds": window, "cooldownSeconds": cooldown},
        drainTimeoutSeconds=60,
    )
    c.create_tq("rs", spec)
    until(lambda: queue_status(url), lambda s: len(s.workers) == 1, 60, "first worker")
    ids = enqueue_sleeps(url, 3, 5.0)  # 5 s each: a backlog the operator sees even on a slow machine
    until(lambda: c.replicas("rs"), lambda n: n == 3, 60, "scaled up to 3")
    until(
        lambda: states(url, ids),
        lambda ss: all(s == JobState.succeeded for s in ss),
        60,
        "jobs done",
    )
    # Demand is gone: the recommendation is 1, but the window still holds a 3, and the cooldown
    # since the scale-up runs. Wait for a step that saw the drop, then restart the operator.
    before = until(
        lambda: memory(c, "rs"),
        lambda m: m.get("recommendations", [{}])[-1].get("replicas") == 1,
        30,
        "a step saw the drop",
    )
    highest_at = max(r["at"] for r in before["recommendations"] if r["replicas"] == 3)
    scaled_up_at = before["lastScaleUp"]
    assert c.replicas("rs") == 3
    c.restart()

    # The restarted operator drains only once both the window and the cooldown have passed,
    # measured from what the first operator saw (its clock, in the status), not from its own start.
    after = until(lambda: memory(c, "rs"), lambda m: bool(m.get("lastScaleDown")), 90, "scale-down decided")
    assert after["lastScaleDown"] >= highest_at + window * 1000, (before, after)
    assert after["lastScaleDown"] >= scaled_up_at + cooldown * 1000, (before, after)
    assert after["since"] == before["since"]  # the same memory, continued
    reason = c.status("rs").get("conditions", [{}])
    until(lambda: c.replicas("rs"), lambda n: n == 1, 60, "scaled down to 1")
    assert f"(highest over {window}s)" in str(c.status("rs").get("lastScaleReason")), reason


def test_restart_mid_drain_keeps_the_deadline(cluster: Cluster, redis_server: RedisProc) -> None:
    c, url = cluster, redis_server.url
    spec = tq_spec(
        url,
        worker={"image": "herder:dev", "concurrency": 1},
        minReplicas=2,
        maxReplicas=2,
        scaleDown={"stabilizationSeconds": 0, "cooldownSeconds": 0},
        drainTimeoutSeconds=60,
    )
    c.create_tq("rd", spec)
    st = until(lambda: queue_status(url), lambda s: len(s.workers) == 2, 60, "two workers")
    ids = enqueue_sleeps(url, 2, 600.0)
    until(
        lambda: states(url, ids),
        lambda ss: all(s == JobState.active for s in ss),
        60,
        "both busy",
    )
    c.patch_spec("rd", {"minReplicas": 1, "maxReplicas": 1})  # one of two busy workers must go
    before = until(lambda: memory(c, "rd"), lambda m: len(m.get("draining", [])) == 1, 30, "draining one")
    c.restart()
    # The new operator keeps the drain and its deadline (before: a fresh deadline from its start).
    after = until(
        lambda: memory(c, "rd"),
        lambda m: m.get("since") == before["since"] and m.get("recommendations") != before["recommendations"],
        30,
        "a step by the new operator",
    )
    assert after["draining"] == before["draining"], (before, after)
    assert c.replicas("rd") == 2 and not c.kubelet.deleted
    draining = [w.id for w in queue_status(url).workers if w.draining]
    assert draining == [before["draining"][0]["worker"]], draining
    assert {w.id for w in st.workers} >= set(draining)
    for i in ids:
        arun(lambda cl, i=i: cl.cancel(i, "e2e"), url)  # no need to wait for the drain deadline
