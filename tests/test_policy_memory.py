"""Restart-safe policy memory: what the policy remembers survives a trip through the TaskQueue's
status, and a restarted operator decides exactly as an uninterrupted one (issue 9).

The e2e counterpart (a real operator restarted on the emulated API) is
tests/e2e/test_operator_restart.py.
"""

from __future__ import annotations

import json
from typing import Any, cast

from hypothesis import given, settings
from hypothesis import strategies as st

from herder_operator.policy import Decision, History, Observation, WorkerView, decide, prune
from herder_operator.reconciler import Reconciler
from herder_operator.spec import PolicyMemory, TaskQueueSpec, TaskQueueStatus
from test_policy import make_spec, specs


def through_status(rec: Reconciler, spec: TaskQueueSpec) -> Reconciler:
    """Serialise the memory as the operator writes it to status, read it back as a new operator."""
    raw = json.loads(json.dumps(TaskQueueStatus(memory=rec.memory()).dump()))
    memory = PolicyMemory.model_validate(raw["memory"])
    # The pool and client are never touched by memory()/restore().
    return Reconciler(spec, cast(Any, None), cast(Any, None), memory=memory)


def run(
    spec: TaskQueueSpec,
    steps: list[tuple[float, Observation, int]],
    restart_at: int | None = None,
) -> list[Decision]:
    """Drive the policy the way Reconciler.step does, optionally 'restarting' before a step."""
    rec = Reconciler(spec, cast(Any, None), cast(Any, None))
    out = []
    for i, (now, obs, replicas) in enumerate(steps):
        if i == restart_at:
            rec = through_status(rec, spec)
        now = round(now * 1000) / 1000  # Reconciler.step works in whole milliseconds
        history = (rec.history or History(replicas=replicas)).with_replicas(replicas)
        d = decide(spec, obs, history, now)
        rec.history = d.history
        out.append(d)
    return out


@st.composite
def traces(draw: st.DrawFn) -> list[tuple[float, Observation, int]]:
    n = draw(st.integers(2, 40))
    t = 1_800_000_000.0
    out = []
    replicas = draw(st.integers(0, 8))
    for _ in range(n):
        t += draw(st.floats(0.5, 40.0))
        obs = Observation(
            ready=draw(st.integers(0, 60)),
            active=draw(st.integers(0, 60)),
            workers=tuple(WorkerView(id=f"w{i}") for i in range(replicas)),
        )
        out.append((t, obs, replicas))
        replicas = draw(st.integers(0, 8))
    return out


@settings(max_examples=150, deadline=None)
@given(spec=specs(), trace=traces(), data=st.data())
def test_a_restart_anywhere_changes_no_decision(
    spec: TaskQueueSpec, trace: list[tuple[float, Observation, int]], data: st.DataObject
) -> None:
    restart = data.draw(st.integers(1, len(trace) - 1))
    uninterrupted = run(spec, trace)
    restarted = run(spec, trace, restart_at=restart)
    assert [(d.desired, d.drain, d.undrain, d.reason) for d in restarted] == [
        (d.desired, d.drain, d.undrain, d.reason) for d in uninterrupted
    ]


def test_restart_mid_stabilization_and_mid_cooldown_holds_like_before() -> None:
    # The issue's example: 10 workers busy, then demand drops to 2 workers' worth.
    spec = make_spec(
        concurrency=1, maxReplicas=10, scaleDown={"stabilizationSeconds": 60, "cooldownSeconds": 30}
    )
    busy = Observation(ready=0, active=10, workers=tuple(WorkerView(f"w{i}", in_flight=1) for i in range(10)))
    calm = Observation(
        ready=0, active=2, workers=tuple(WorkerView(f"w{i}", in_flight=i < 2) for i in range(10))
    )
    t0 = 1_800_000_000.0
    trace = [
        (t0, busy, 10),
        (t0 + 5, calm, 10),
        (t0 + 20, calm, 10),
        (t0 + 59, calm, 10),
        (t0 + 61, calm, 10),
    ]
    for restart in (None, 1, 2, 3, 4):
        ds = run(spec, trace, restart_at=restart)
        assert [d.desired for d in ds] == [10, 10, 10, 10, 2], restart
        assert ds[3].reason.startswith("steady at 10")  # not "scale down 10->2" after a restart
        assert "(highest over 60s)" in ds[4].reason

    # Mid-cooldown: scaled up at t0, demand gone at once; the cooldown still counts from t0.
    spec = make_spec(
        concurrency=1, scaleDown={"stabilizationSeconds": 0, "cooldownSeconds": 30}, minReplicas=1
    )
    trace = [(t0, busy, 1), (t0 + 10, calm, 10), (t0 + 25, calm, 10), (t0 + 31, calm, 10)]
    for restart in (None, 1, 2, 3):
        ds = run(spec, trace, restart_at=restart)
        assert [d.desired for d in ds] == [10, 10, 10, 2], restart
        assert "held: cooldown" in ds[2].reason


def test_fresh_memory_says_how_much_history_it_had() -> None:
    spec = make_spec(concurrency=1, scaleDown={"stabilizationSeconds": 60, "cooldownSeconds": 0})
    calm = Observation(ready=0, active=2, workers=tuple(WorkerView(f"w{i}") for i in range(4)))
    d0 = decide(spec, calm, History(replicas=4), 1000.0)
    d1 = decide(spec, calm, d0.history.with_replicas(4), 1003.0)
    assert d1.desired == 2
    assert "over 3s of history (window 60s)" in d1.reason, d1.reason


@settings(max_examples=300, deadline=None)
@given(
    values=st.lists(st.tuples(st.floats(0.001, 50.0), st.integers(0, 20)), min_size=1, max_size=60),
    up=st.integers(0, 120),
    down=st.integers(0, 120),
    later=st.lists(st.floats(0.0, 200.0), max_size=5),
)
def test_pruning_keeps_every_later_window_answer(
    values: list[tuple[float, int]], up: int, down: int, later: list[float]
) -> None:
    recs: list[tuple[float, int]] = []
    t = 0.0
    for gap, r in values:
        t += gap
        recs.append((t, r))
    now = t
    kept = prune(recs, now, up, down)
    assert kept and kept[-1] == recs[-1] and set(kept) <= set(recs)
    for extra in [0.0, *later]:
        q = now + extra
        full_up = [r for s, r in recs if s >= q - up]
        full_down = [r for s, r in recs if s >= q - down]
        got_up = [r for s, r in kept if s >= q - up]
        got_down = [r for s, r in kept if s >= q - down]
        assert (min(full_up) if full_up else None) == (min(got_up) if got_up else None)
        assert (max(full_down) if full_down else None) == (max(got_down) if got_down else None)
