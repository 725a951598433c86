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
from herder_operator.policy import Decision, History, Observation, WorkerView, decide, swap_busy_drainees
from herder_operator.spec import (
    Condition,
    ConditionType,
    DrainRecord,
    Phase,
    PolicyMemory,
    Recommendation,
    TaskQueueSpec,
    TaskQueueStatus,
    WorkerCounts,
)

log = logging.getLogger(__name__)
ADOPTED = "adopted a worker that was already draining"


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

    async def mark(self, draining: Sequence[str]) -> None:
        """Flag exactly these members as first to go (and no other member)."""
        ...

    async def removal_blocker(self, replicas: int, remove: Sequence[str]) -> str | None:
        """Why setting `replicas` now could remove a member not in `remove`; None when it cannot."""
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
    hold: str | None = None  # why a scale-down waits (another pod would be removed first)
    scale_reason: str | None = None  # the decision behind a replica change made by this step

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


def _ms(t: float) -> int:
    return round(t * 1000)


def _sec(ms: int | None) -> float | None:
    return None if ms is None else ms / 1000


class Reconciler:
    """Holds one TaskQueue's policy history and drain deadlines between steps.

    All of it round-trips through `memory()` / `restore()` (kept in the TaskQueue's status), so a
    restarted operator continues with the same windows, cooldowns and drain deadlines.
    """

    def __init__(
        self,
        spec: TaskQueueSpec,
        pool: Pool,
        client: HerderClient,
        memory: PolicyMemory | None = None,
        last_scale_reason: str | None = None,
    ) -> None:
        self.spec = spec
        self.pool = pool
        self.client = client
        self.history: History | None = None
        self.deadlines: dict[str, float] = {}  # worker id -> time after which it is removed anyway
        self.drain_reasons: dict[str, str] = {}  # worker id -> the decision that chose it
        self.last_scale_time: float | None = None
        self.last_scale_reason: str | None = last_scale_reason
        self.last: StepReport | None = None
        self.restored = False
        # Log fields: under `kopf run` the formatter prints/serialises k8s_ref like kopf's own lines.
        self.log_extra: dict[str, Any] = {"queue": spec.queue}
        if memory is not None:
            self.restore(memory)

    def update_spec(self, spec: TaskQueueSpec) -> None:
        self.spec = spec

    def restore(self, m: PolicyMemory) -> None:
        self.history = History(
            replicas=0,  # always read from the pool
            recommendations=tuple((r.at / 1000, r.replicas) for r in m.recommendations),
            last_scale_up=_sec(m.last_scale_up),
            last_scale_down=_sec(m.last_scale_down),
            idle_since=_sec(m.idle_since),
            since=_sec(m.since),
        )
        self.deadlines = {d.worker: d.deadline / 1000 for d in m.draining}
        self.drain_reasons = {d.worker: d.reason for d in m.draining}
        self.last_scale_time = _sec(m.last_scale_at)
        self.restored = True

    def memory(self) -> PolicyMemory:
        h = self.history or History(replicas=0)

        def ms(t: float | None) -> int | None:
            return None if t is None else _ms(t)

        return PolicyMemory(
            since=ms(h.since),
            recommendations=[Recommendation(at=_ms(t), replicas=r) for t, r in h.recommendations],
            last_scale_up=ms(h.last_scale_up),
            last_scale_down=ms(h.last_scale_down),
            idle_since=ms(h.idle_since),
            draining=[
                DrainRecord(worker=w, deadline=_ms(t), reason=self.drain_reasons.get(w, "")[:1024])
                for w, t in sorted(self.deadlines.items())
            ],
            last_scale_at=ms(self.last_scale_time),
        )

    async def step(self, now: float | None = None) -> StepReport:
        report = await self._step(now)
        # One log line per decision that changes something (the Events of this step); a steady
        # step logs nothing, so the log stays readable at one step per second.
        for e in report.events:
            level = logging.WARNING if e.type == "Warning" else logging.INFO
            log.log(level, "%s: %s", e.reason, e.message, extra=self.log_extra)
        return report

    async def _step(self, now: float | None = None) -> StepReport:
        # Whole milliseconds: what the status memory stores, so a restored memory compares equal.
        now = _ms(time.time() if now is None else now) / 1000
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
        self.drain_reasons = {k: v for k, v in self.drain_reasons.items() if k in self.deadlines}
        for wid in decision.undrain:
            try:
                await self.client.undrain_worker(queue, wid)
            except NotFound:
                pass
            self.deadlines.pop(wid, None)
            self.drain_reasons.pop(wid, None)
        if decision.undrain:
            report.events.append(Event("Normal", "Undrained", f"reusing {', '.join(decision.undrain)}"))
        for wid in decision.drain:
            if wid in registry:
                try:
                    # exit=False: a worker that exits by itself would be restarted by its pod.
                    await self.client.drain_worker(queue, wid, exit=False)
                    self.deadlines[wid] = now + spec.drain_timeout_seconds
                    self.drain_reasons[wid] = decision.reason
                    continue
                except NotFound:
                    pass
            self.deadlines[wid] = now  # never registered: holds no job, remove at once
            self.drain_reasons[wid] = decision.reason
        if decision.drain:
            report.events.append(
                Event("Normal", "Draining", f"draining {', '.join(decision.drain)}: {decision.reason}")
            )
        # Workers drained by someone else (`herder drain`) or before an operator restart are adopted.
        for w in status.workers:
            if w.id in present and w.draining and w.id not in self.deadlines and w.id not in decision.undrain:
                self.deadlines[w.id] = now + spec.drain_timeout_seconds
                self.drain_reasons[w.id] = ADOPTED
        if not decision.drain and not decision.undrain:
            await self._swap_busy_drainees(report, status, members, now)
        # The chosen pods carry the low deletion cost, and no other pod does (undrained, reused).
        await self.pool.mark(sorted(self.deadlines))
        removable = []
        for wid, deadline in sorted(self.deadlines.items()):
            info = registry.get(wid)
            # `drained` is the worker's own report (draining and nothing running); in_flight in the
            # registry may be a heartbeat old, so it is not trusted for this.
            if info is None or (info.draining and info.drained) or now >= deadline:
                removable.append(wid)
        # Replicas end at the serving count the policy wants plus the drainees still finishing.
        new = decision.desired + sum(1 for wid in self.deadlines if wid not in removable)
        if new < report.replicas or removable:
            # Never lower replicas while the ReplicaSet would pick a pod we did not choose (a busy
            # pod that is not Ready, a Pending one...): that pod's jobs would be handed back.
            blocker = await self.pool.removal_blocker(new, removable)
            if blocker is not None:
                report.hold = f"holding {report.replicas} replicas: {blocker}"
                if self.last is None or self.last.hold != report.hold:
                    report.events.append(Event("Normal", "ScaleDownHeld", report.hold))
                return
        if new != report.replicas or removable:
            reasons = [self.drain_reasons[w] for w in removable if self.drain_reasons.get(w)]
            # The replica change carries the decision that chose the removed workers, not this
            # step's (which is usually "steady at N" by the time they are idle).
            report.scale_reason = reasons[0] if reasons else decision.reason
            await self._scale(report, new, removable)
        for wid in removable:
            self.deadlines.pop(wid, None)
            self.drain_reasons.pop(wid, None)

    async def _swap_busy_drainees(
        self, report: StepReport, status: QueueStatus, members: list[str], now: float
    ) -> None:
        """Undrain a drainee we chose that turns out to run a job, and drain an idle worker instead
        (the choice was made on heartbeat-old counts): otherwise its job is handed back at the drain
        timeout, and it holds back the removal of the idle drainees that share its deletion cost."""
        queue = self.spec.queue
        ours = [w for w, r in self.drain_reasons.items() if r != ADOPTED]
        views = observe(status, members).workers
        busy, idle = swap_busy_drainees(views, ours)
        in_flight = {v.id: v.in_flight for v in views}
        for old, new in zip(busy, idle, strict=True):
            reason = self.drain_reasons.get(old, "")
            try:
                await self.client.undrain_worker(queue, old)
            except NotFound:
                continue  # gone meanwhile: nothing to swap
            self.deadlines.pop(old, None)
            self.drain_reasons.pop(old, None)
            try:
                await self.client.drain_worker(queue, new, exit=False)
                self.deadlines[new] = now + self.spec.drain_timeout_seconds
            except NotFound:
                self.deadlines[new] = now  # not registered: holds no job, remove at once
            self.drain_reasons[new] = reason
            report.events.append(
                Event(
                    "Normal",
                    "DrainSwapped",
                    f"draining {new} instead of {old}, which runs {in_flight.get(old, 0)} job(s): {reason}",
                )
            )

    async def _scale(self, report: StepReport, new: int, remove: Sequence[str]) -> None:
        if new == report.replicas and not remove:
            return
        await self.pool.scale_to(new, remove)
        report.new_replicas = new
        reason = report.scale_reason or report.decision.reason
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
    draining = bool(reconciler.deadlines)
    # Ready means the workers are really there: registered, serving, as many as desired.
    waiting = redis_ok and report.workers_ready < d.desired
    scaling = report.new_replicas != d.desired or draining or waiting or report.hold is not None
    if report.hold is not None:
        scaling_reason, scaling_msg = "ScaleDownHeld", report.hold
    elif draining:
        names = ", ".join(sorted(reconciler.deadlines))
        scaling_reason, scaling_msg = "Draining", f"draining {names}: {d.reason}"
    elif waiting:
        scaling_reason = "ScalingUp"
        scaling_msg = f"{report.workers_ready} of {d.desired} workers ready: {d.reason}"
    elif report.new_replicas != d.desired:
        scaling_reason, scaling_msg = "ScalingUp" if d.desired > report.new_replicas else "Draining", d.reason
    else:
        scaling_reason, scaling_msg = "Stable", d.reason
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
            scaling_reason if redis_ok else "Stable",
            scaling_msg,
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
            "Reconciled" if ready else ("RedisUnreachable" if not redis_ok else scaling_reason),
            d.reason if ready or not redis_ok else scaling_msg,
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
        memory=reconciler.memory(),
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


def failed_status(
    reason: str, message: str, previous: Sequence[Condition], generation: int | None, now: float
) -> TaskQueueStatus:
    """A handler failed (the API refused the Deployment, RBAC, a missing Secret...): say what."""
    return TaskQueueStatus(
        observed_generation=generation,
        phase=Phase.degraded,
        conditions=[
            _cond(previous, ConditionType.ready, False, reason, message, now),
            _cond(previous, ConditionType.degraded, True, reason, message, now),
        ],
    )


def status_patch(status: TaskQueueStatus) -> dict[str, Any]:
    return status.dump()
