"""One reconcile step, shared by the Kubernetes operator and `herder up`: observe the queue,
decide (pure policy), act on a Pool. Drain-aware: a worker leaves the pool only once it is idle
(drained) or its drain timeout has passed."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from redis.exceptions import RedisError

from herder.client import HerderClient
from herder.errors import NotFound
from herder.models import QueueStatus, WorkerInfo
from herder_operator.policy import Decision, History, Observation, WorkerView, decide
from herder_operator.spec import Condition, ConditionType, Phase, TaskQueueSpec, TaskQueueStatus, WorkerCounts

log = logging.getLogger(__name__)


class Pool(Protocol):
    """Where the workers run: a Deployment, or processes on this machine."""

    async def replicas(self) -> int:
        """The replica count the pool is set to (draining workers included)."""
        ...

    async def members(self) -> list[str]:
        """Worker ids (pod names / process names) that exist and are not being removed."""
        ...

    async def scale_to(self, replicas: int, remove: Sequence[str] = ()) -> None:
        """Set the replica count; `remove` names the members that must be the ones to go."""
        ...


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass
class StepReport:
    """What one step saw and did: the input for status, conditions, Events and the live table."""

    at: float
    status: QueueStatus | None
    error: str | None
    replicas: int
    new_replicas: int
    decision: Decision
    workers_ready: int = 0
    workers_draining: int = 0
    events: list[Event] = field(default_factory=list)

    @property
    def scaled(self) -> bool:
        return self.new_replicas != self.replicas


def observe(status: QueueStatus, members: Sequence[str]) -> Observation:
    """Join the registry with the pool's members: only members count, unknown members hold nothing."""
    registry: dict[str, WorkerInfo] = {w.id: w for w in status.workers}
    views = []
    for m in members:
        w = registry.get(m)
        if w is None:
            views.append(WorkerView(id=m, registered=False))
        else:
            views.append(WorkerView(id=m, in_flight=w.in_flight, capacity=w.capacity, draining=w.draining))
    return Observation(ready=status.ready, active=status.active, workers=tuple(views), paused=status.paused)


class Reconciler:
    """Holds one TaskQueue's policy history and drain deadlines between steps."""

    def __init__(self, spec: TaskQueueSpec, pool: Pool, client: HerderClient) -> None:
        self.spec = spec
        self.pool = pool
        self.client = client
        self.history: History | None = None
        self.deadlines: dict[str, float] = {}  # worker id -> time after which it is removed anyway
        self.last_scale_time: float | None = None
        self.last_scale_reason: str | None = None
        self.last: StepReport | None = None

    def update_spec(self, spec: TaskQueueSpec) -> None:
        self.spec = spec

    async def step(self, now: float | None = None) -> StepReport:
        now = time.time() if now is None else now
        spec = self.spec
        replicas = await self.pool.replicas()
        members = await self.pool.members()
        status: QueueStatus | None = None
        error: str | None = None
        try:
            status = await self.client.status(spec.queue)
        except (RedisError, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        obs = observe(status, members) if status is not None else None
        history = (self.history or History(replicas=replicas)).with_replicas(replicas)
        decision = decide(spec, obs, history, now)
        self.history = decision.history
        report = StepReport(
            at=now, status=status, error=error, replicas=replicas, new_replicas=replicas, decision=decision
        )
        if status is not None:
            ids = set(members)
            report.workers_draining = sum(1 for w in status.workers if w.id in ids and w.draining)
            report.workers_ready = sum(1 for w in status.workers if w.id in ids and not w.draining)
        if error is not None and (self.last is None or self.last.error is None):
            # One Event per outage, not one per poll.
            report.events.append(Event("Warning", "RedisUnreachable", f"cannot read queue: {error}"))
        if spec.paused:
            self.last = report
            return report
        if status is None:
            # Fail safe: only ever add workers (to reach minReplicas) while blind.
            if decision.desired > replicas:
                await self._scale(report, decision.desired, ())
            self.last = report
            return report
        await self._act(report, status, members, now)
        self.last = report
        return report

    async def _act(self, report: StepReport, status: QueueStatus, members: list[str], now: float) -> None:
        spec, decision = self.spec, report.decision
        queue = spec.queue
        registry = {w.id: w for w in status.workers}
        present = set(members)
        # Forget deadlines of members that are gone (removed, crashed, replaced).
        self.deadlines = {k: v for k, v in self.deadlines.items() if k in present}
        for wid in decision.undrain:
            try:
                await self.client.undrain_worker(queue, wid)
            except NotFound:
                pass
            self.deadlines.pop(wid, None)
        if decision.undrain:
            report.events.append(Event("Normal", "Undrained", f"reusing {', '.join(decision.undrain)}"))
        for wid in decision.drain:
            if wid in registry:
                try:
                    # exit=False: a worker that exits by itself would be restarted by its pod.
                    await self.client.drain_worker(queue, wid, exit=False)
                    self.deadlines[wid] = now + spec.drain_timeout_seconds
                    continue
                except NotFound:
                    pass
            self.deadlines[wid] = now  # never registered: holds no job, remove at once
        if decision.drain:
            report.events.append(
                Event("Normal", "Draining", f"draining {', '.join(decision.drain)}: {decision.reason}")
            )
        # Workers drained by someone else (`herder drain`) or before an operator restart are adopted.
        for w in status.workers:
            if w.id in present and w.draining and w.id not in self.deadlines and w.id not in decision.undrain:
                self.deadlines[w.id] = now + spec.drain_timeout_seconds
        removable = []
        for wid, deadline in sorted(self.deadlines.items()):
            info = registry.get(wid)
            # `drained` is the worker's own report (draining and nothing running); in_flight in the
            # registry may be a heartbeat old, so it is not trusted for this.
            if info is None or (info.draining and info.drained) or now >= deadline:
                removable.append(wid)
        # Replicas end at the serving count the policy wants plus the drainees still finishing.
        new = decision.desired + sum(1 for wid in self.deadlines if wid not in removable)
        if new < report.replicas or new > report.replicas or removable:
            await self._scale(report, new, removable)
        for wid in removable:
            self.deadlines.pop(wid, None)

    async def _scale(self, report: StepReport, new: int, remove: Sequence[str]) -> None:
        if new == report.replicas and not remove:
            return
        await self.pool.scale_to(new, remove)
        report.new_replicas = new
        reason = report.decision.reason
        if new != report.replicas:
            self.last_scale_time, self.last_scale_reason = report.at, reason
            what = f"scaled {report.replicas}->{new}"
            if remove:
                what += f", removing {', '.join(remove)}"
            report.events.append(Event("Normal", "Scaled", f"{what}: {reason}"))


# ---- status ------------------------------------------------------------------------------------


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _cond(
    previous: Sequence[Condition], type_: ConditionType, ok: bool, reason: str, message: str, now: float
) -> Condition:
    status = "True" if ok else "False"
    prev = next((c for c in previous if c.type == type_.value), None)
    # lastTransitionTime moves only when the status flips, as Kubernetes conventions require.
    since = prev.last_transition_time if prev is not None and prev.status == status else _iso(now)
    return Condition(
        type=type_.value, status=status, reason=reason, message=message, last_transition_time=since
    )


def status_of(
    report: StepReport,
    reconciler: Reconciler,
    previous: Sequence[Condition] = (),
    generation: int | None = None,
) -> TaskQueueStatus:
    spec, d, now = reconciler.spec, report.decision, report.at
    st = report.status
    redis_ok = st is not None
    scaling = report.new_replicas != d.desired or bool(reconciler.deadlines)
    conds = [
        _cond(
            previous,
            ConditionType.redis_reachable,
            redis_ok,
            "Connected" if redis_ok else "RedisUnreachable",
            "queue read" if redis_ok else f"{report.error}; holding replicas, no scale-down until it is back",
            now,
        ),
        _cond(
            previous,
            ConditionType.scaling,
            scaling,
            "ScalingUp" if d.desired > report.replicas else "Draining" if scaling else "Stable",
            d.reason,
            now,
        ),
    ]
    degraded = not redis_ok
    conds.append(
        _cond(
            previous,
            ConditionType.degraded,
            degraded,
            "RedisUnreachable" if degraded else "AsExpected",
            "check spec.redis, the Secret and network policy" if degraded else "",
            now,
        )
    )
    ready = redis_ok and not scaling
    conds.insert(
        0,
        _cond(
            previous,
            ConditionType.ready,
            ready,
            "Reconciled" if ready else ("RedisUnreachable" if not redis_ok else "Scaling"),
            d.reason,
            now,
        ),
    )
    phase = (
        Phase.paused
        if spec.paused
        else Phase.degraded
        if degraded
        else Phase.scaling
        if scaling
        else Phase.ready
    )
    return TaskQueueStatus(
        observed_generation=generation,
        phase=phase,
        ready=st.ready if st else None,
        scheduled=st.scheduled if st else None,
        waiting=st.waiting if st else None,
        active=st.active if st else None,
        dead=st.dead if st else None,
        workers=WorkerCounts(ready=report.workers_ready, draining=report.workers_draining) if st else None,
        replicas=report.new_replicas,
        desired_replicas=d.desired,
        last_scale_time=_iso(reconciler.last_scale_time) if reconciler.last_scale_time else None,
        last_scale_reason=reconciler.last_scale_reason,
        conditions=conds,
    )


def invalid_status(
    message: str,
    previous: Sequence[Condition],
    generation: int | None,
    now: float,
    reason: str = "InvalidSpec",
) -> TaskQueueStatus:
    """The spec failed validation: say what is wrong, and that nothing was changed."""
    return TaskQueueStatus(
        observed_generation=generation,
        phase=Phase.invalid,
        conditions=[
            _cond(previous, ConditionType.ready, False, reason, message, now),
            _cond(previous, ConditionType.degraded, True, reason, f"{message}; nothing was changed", now),
        ],
    )


def status_patch(status: TaskQueueStatus) -> dict[str, Any]:
    return status.dump()
