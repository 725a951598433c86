"""Failover: operators as separate `kopf run` processes against the emulated API.

One replica: after a crash (SIGKILL) its replacement acts at once, while the dead operator's
peering entry is still alive (before: it paused until that entry expired, up to 60 s).
Two replicas: when the leader crashes, the standby takes over once the leader's short peering
lifetime has passed (the time is printed; docs/operator.md has the numbers).
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from operator_harness import PEERING, Kube, spawn_operator, stop_operators, tq_spec, until

from redis_proc import RedisProc

pytestmark = pytest.mark.timeout(240)


class Operators:
    def __init__(self, kubeconfig: Path, log_dir: Path) -> None:
        self.kubeconfig, self.log_dir = kubeconfig, log_dir
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, lifetime: int, priority: int | None = None) -> subprocess.Popen[bytes]:
        env = {"HERDER_PEERING_LIFETIME": str(lifetime)}
        if priority is not None:
            env["HERDER_PEERING_PRIORITY"] = str(priority)
        proc = spawn_operator(self.kubeconfig, self.log_dir / f"operator-{len(self.procs)}.log", **env)
        self.procs.append(proc)
        return proc


@pytest.fixture
def operators(kube: Kube, tmp_path: Path) -> Iterator[Operators]:
    ops = Operators(kube.kubeconfig, tmp_path)
    try:
        yield ops
    finally:
        stop_operators(ops.procs)


def _ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


def test_a_replacement_acts_at_once_and_a_standby_takes_over(
    kube: Kube,
    operators: Operators,
    redis_server: RedisProc,
) -> None:
    from kubernetes import client as k8s

    custom = k8s.CustomObjectsApi(kube.api)
    kube.create_tq("fo", tq_spec(redis_server.url, minReplicas=1))

    def last_step() -> int:
        recs = (kube.status("fo").get("memory") or {}).get("recommendations") or [{}]
        return int(recs[-1].get("at") or 0)

    def peers() -> dict[str, Any]:
        obj = custom.get_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", PEERING)
        return dict(obj.get("status") or {})

    # One replica, crashed: the dead peer stays "alive" in the peering object for its lifetime (60 s,
    # kopf's default, to make the difference plain).
    first = operators.start(lifetime=60)
    until(last_step, lambda t: t > 0, 60, "the first operator steps")
    until(peers, lambda p: len(p) == 1, 30, "the first operator in the peering")
    first.kill()
    first.wait(10)
    dead = next(iter(peers().values()))
    dead_until = _ms(dead["lastseen"]) + int(dead["lifetime"]) * 1000
    killed_at = int(time.time() * 1000)
    operators.start(lifetime=60)
    resumed = until(last_step, lambda t: t > killed_at, 60, "the replacement steps")
    assert resumed < dead_until, (resumed, dead_until)  # it did not wait for the dead peer

    # Two replicas with a short lifetime (10 s): the higher priority leads, the other pauses; kill
    # the leader, the standby takes over once the leader's entry has expired.
    replacement = operators.procs[1]
    top = 10**13  # above the start-time priorities of the operators started so far
    standby = operators.start(lifetime=10, priority=top)
    leader = operators.start(lifetime=10, priority=top + 1)
    until(peers, lambda p: {v["priority"] for v in p.values()} >= {top, top + 1}, 60, "both peers")
    replacement.send_signal(signal.SIGTERM)  # leaves cleanly (and had paused in their favour)
    replacement.wait(30)
    seen = last_step()
    until(last_step, lambda t: t > seen, 60, "the leader steps")
    leader.kill()
    leader.wait(10)
    crashed_at = int(time.time() * 1000)
    took_over = until(last_step, lambda t: t > crashed_at, 90, "the standby takes over")
    assert standby.poll() is None
    print(f"hand-over after a leader crash: {(took_over - crashed_at) / 1000:.1f} s (peering lifetime 10 s)")
