"""The operator's model of the ReplicaSet controller's victim order, and the worker's readiness."""

from __future__ import annotations

import urllib.error
import urllib.request

from herder.health import serve
from herder_operator.pools.ranking import DRAIN_COST, PodRank, at_removal, removal_blocker


def p(
    name: str, *, scheduled: bool = True, phase: str = "Running", ready: bool = True, cost: int = 0
) -> PodRank:
    return PodRank(name, scheduled, phase, ready, cost)


def test_marked_ready_pods_go_first_when_everyone_is_ready() -> None:
    pods = [p("busy"), p("idle", cost=-1000)]
    assert removal_blocker(pods, 1, ["idle"]) is None


def test_a_busy_pod_that_is_not_ready_outranks_a_ready_marked_pod() -> None:
    pods = [p("busy", ready=False), p("idle", cost=-1000)]
    why = removal_blocker(pods, 1, ["idle"])
    assert why is not None and "busy (not Ready)" in why
    # Once the drained pod fails its readiness probe too, the cost decides.
    assert removal_blocker([p("busy", ready=False), p("idle", ready=False, cost=-1000)], 1, ["idle"]) is None


def test_pending_and_unscheduled_pods_outrank_running_ones() -> None:
    for other in (
        p("x", phase="Pending", ready=False),
        p("x", scheduled=False, phase="Pending", ready=False),
    ):
        why = removal_blocker([other, p("idle", ready=False, cost=-1000)], 1, ["idle"])
        assert why is not None and why.startswith("x ("), why
    # A Pending pod we chose ourselves is fine: it goes first anyway.
    assert removal_blocker([p("x", phase="Pending", ready=False), p("busy")], 1, ["x"]) is None


def test_ties_after_cost_count_as_blocking() -> None:
    # Another pod with the same cost: keys 5-8 (node, clocks, UIDs) would decide. Not good enough.
    pods = [p("other", cost=-1000), p("idle", cost=-1000)]
    assert removal_blocker(pods, 1, ["idle"]) is not None


def test_only_the_first_n_of_the_chosen_need_to_lead() -> None:
    pods = [p("a", ready=False, cost=-1000), p("b", cost=-1000), p("c", ready=False)]
    assert removal_blocker(pods, 1, ["a", "b"]) is None  # a goes; b waits for a later step
    assert removal_blocker(pods, 2, ["a", "b"]) is not None  # b (Ready) would lose to c
    assert removal_blocker(pods, 3, ["a", "b"]) is not None  # more than chosen
    assert removal_blocker(pods, 0, []) is None


def test_a_removed_pod_leads_the_drainees_still_finishing() -> None:
    # CI, load ~10: "busy" was drained on a stale tie and still runs a job; "idle" is drained and
    # removable. Both not Ready with the drain cost: a tie, so the scale-down was held until the
    # busy one's drain timeout (then its job is handed back).
    pods = [
        p("busy", ready=False, cost=DRAIN_COST),
        p("idle", ready=False, cost=DRAIN_COST),
        p("serving", ready=False),
    ]
    assert removal_blocker(pods, 1, ["idle"]) is not None
    # scale_to gives the removed pod a lower cost than the drain cost first: it goes alone.
    assert removal_blocker(at_removal(pods, ["idle"]), 1, ["idle"]) is None
    # Still only as many as were chosen, and never ahead of a pod ranked earlier on keys 1-3.
    assert removal_blocker(at_removal(pods, ["idle"]), 2, ["idle"]) is not None
    pending = [p("x", phase="Pending", ready=False), *pods]
    assert removal_blocker(at_removal(pending, ["idle"]), 1, ["idle"]) is not None


def test_worker_readiness_fails_while_draining() -> None:
    state = {"draining": False}
    server = serve(0, ready=lambda: not state["draining"], addr="127.0.0.1")
    try:
        port = server.server_address[1]

        def get(path: str) -> int:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
                    return int(r.status)
            except urllib.error.HTTPError as exc:
                return exc.code

        assert get("/readyz") == 200 and get("/metrics") == 200
        state["draining"] = True
        assert get("/readyz") == 503
        assert get("/healthz") == 200  # liveness is not readiness: a draining worker is alive
        assert get("/nope") == 404
    finally:
        server.shutdown()
        server.server_close()
