"""The operator's metrics module: bounded decision kinds, the port setting."""

from __future__ import annotations

import pytest

from herder_operator.metrics import metrics_port, reason_kind
from herder_operator.policy import History, Observation, WorkerView, decide
from herder_operator.spec import TaskQueueSpec


def test_every_policy_reason_has_a_kind() -> None:
    spec = TaskQueueSpec.model_validate(
        {
            "queue": "q",
            "redis": {"url": "redis://r"},
            "worker": {"image": "i", "concurrency": 1},
            "minReplicas": 1,
            "maxReplicas": 3,
            "targetUtilization": 100,
            "scaleDown": {"stabilizationSeconds": 0, "cooldownSeconds": 0},
        }
    )
    idle = Observation(ready=0, active=0, workers=(WorkerView(id="a"), WorkerView(id="b")), paused=False)
    busy = Observation(ready=9, active=0, workers=(WorkerView(id="a"),), paused=False)
    cases = {
        "redis_unreachable": decide(spec, None, History(replicas=1), 100.0),
        "min_replicas": decide(spec, idle, History(replicas=0), 100.0),
        "max_replicas": decide(spec, idle, History(replicas=5), 100.0),
        "scale_up": decide(spec, busy, History(replicas=1), 100.0),
        "scale_down": decide(spec, idle, History(replicas=2), 100.0),
        "steady": decide(spec, Observation(0, 1, (WorkerView(id="a", in_flight=1),), False), History(1), 1.0),
    }
    for kind, d in cases.items():
        assert reason_kind(d.reason) == kind, (kind, d.reason)
    paused = decide(spec.model_copy(update={"paused": True}), idle, History(replicas=2), 1.0)
    assert reason_kind(paused.reason) == "paused"
    assert reason_kind("something new") == "other"


@pytest.mark.parametrize(("raw", "port"), [("", None), ("0", None), ("9100", 9100), (" 8080 ", 8080)])
def test_metrics_port(raw: str, port: int | None) -> None:
    assert metrics_port({"HERDER_METRICS_PORT": raw}) == port


@pytest.mark.parametrize("raw", ["abc", "70000", "-1"])
def test_bad_metrics_port_fails_loudly(raw: str) -> None:
    with pytest.raises(ValueError):
        metrics_port({"HERDER_METRICS_PORT": raw})
