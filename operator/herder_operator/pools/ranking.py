"""Which pods the ReplicaSet controller deletes first when replicas drop (pure).

The controller sorts its active pods with `ActivePodsWithRanks.Less`
(kubernetes/kubernetes, pkg/controller/controller_utils.go) and deletes from the front:

1. not yet scheduled (no nodeName) before scheduled;
2. phase Pending < Unknown < Running;
3. not Ready before Ready;
4. lower `controller.kubernetes.io/pod-deletion-cost` first;
5. more pods of the same ReplicaSet on the pod's node first;
6. Ready for less time first; 7. more container restarts first; 8. newer first
   (6 and 8 on a log2 scale with random tie-breaks since LogarithmicScaleDown).

The operator only relies on keys 1-4: it lowers replicas only when every pod it wants gone is
strictly ahead of every other pod on those keys, so keys 5-8 (node layout, clocks, UIDs) never
decide which pod goes. docs/scaling.md explains how it gets there.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
# Below the default 0 of every other pod: the ReplicaSet deletes these first. A pod still draining
# carries DRAIN_COST; one being removed now goes lower still, so that it leads every drainee still
# finishing its jobs instead of tying with it (a tie is decided by clocks and UIDs).
DRAIN_COST = -1000
REMOVE_COST = -2000
PHASE_ORDER = {"Pending": 0, "Unknown": 1, "Running": 2}


@dataclass(frozen=True)
class PodRank:
    name: str
    scheduled: bool
    phase: str
    ready: bool
    cost: int

    @property
    def key(self) -> tuple[int, int, int, int]:
        """Keys 1-4 of the controller's order: smaller goes first."""
        return (int(self.scheduled), PHASE_ORDER.get(self.phase, 0), int(self.ready), self.cost)

    def describe(self) -> str:
        if not self.scheduled:
            return f"{self.name} (not scheduled)"
        if self.phase != "Running":
            return f"{self.name} ({self.phase})"
        if not self.ready:
            return f"{self.name} (not Ready)"
        return f"{self.name} (pod-deletion-cost {self.cost})"


def _cost(annotations: dict[str, str] | None) -> int:
    raw = (annotations or {}).get(DELETION_COST)
    try:
        return int(raw) if raw is not None else 0
    except ValueError:
        return 0  # the API server refuses non-int32 values; be lenient with an emulator


def rank_of(pod: Any) -> PodRank:
    """A PodRank from a kubernetes-client V1Pod."""
    meta, spec, status = pod.metadata, pod.spec, pod.status
    conds = (status.conditions if status is not None else None) or []
    ready = any(c.type == "Ready" and c.status == "True" for c in conds)
    return PodRank(
        name=str(meta.name),
        scheduled=bool(spec is not None and spec.node_name),
        phase=str((status.phase if status is not None else None) or "Pending"),
        ready=ready,
        cost=_cost(meta.annotations),
    )


def at_removal(pods: Sequence[PodRank], remove: Sequence[str]) -> list[PodRank]:
    """The ranks as the ReplicaSet sees them once the pods in `remove` carry REMOVE_COST."""
    wanted = set(remove)
    return [dataclasses.replace(p, cost=REMOVE_COST) if p.name in wanted else p for p in pods]


def removal_blocker(pods: Sequence[PodRank], delete: int, remove: Sequence[str]) -> str | None:
    """None when dropping `delete` pods certainly deletes only pods named in `remove`;
    otherwise a sentence saying which pod would outrank which."""
    if delete <= 0:
        return None
    wanted = set(remove)
    ours = [p for p in pods if p.name in wanted]
    others = [p for p in pods if p.name not in wanted]
    if delete > len(ours):
        short = delete - len(ours)
        return f"{short} more pod(s) would go than the {len(ours)} chosen"
    if not others:
        return None
    # The `delete` pods of ours that go first must all be strictly ahead of every other pod.
    last = sorted(ours, key=lambda p: p.key)[delete - 1]
    first_other = min(others, key=lambda p: p.key)
    if last.key < first_other.key:
        return None
    return f"{first_other.describe()} would be deleted before {last.describe()}"
