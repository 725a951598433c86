"""The scaling policy: a pure function from spec, observation, history and clock to a decision.

No I/O here; the reconciler feeds it and acts on the result. See docs/scaling.md for the formula.

Terms:
- *replicas*: what the pool runs now, draining workers included.
- *serving*: replicas minus draining workers; the policy's `desired` is the serving count it
  wants, which is also where replicas end once the drained workers are removed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from herder_operator.spec import TaskQueueSpec


@dataclass(frozen=True)
class WorkerView:
    """One pool member as the policy sees it."""

    id: str
    in_flight: int = 0
    capacity: int = 0
    draining: bool = False
    # False: a pod/process of the pool that has no registry entry (starting up, or never will);
    # it holds no job, so it is the cheapest to remove.
    registered: bool = True


@dataclass(frozen=True)
class Observation:
    """One read of the queue (None when Redis cannot be read) joined with the pool's members."""

    ready: int  # due now; scheduled (future) jobs are not demand yet
    active: int
    workers: tuple[WorkerView, ...] = ()
    paused: bool = False  # the queue is paused in Redis: ready jobs cannot be claimed

    @property
    def idle(self) -> bool:
        return self.ready == 0 and self.active == 0


@dataclass(frozen=True)
class History:
    """What the policy remembers between steps. The reconciler sets `replicas` from the pool."""

    replicas: int
    recommendations: tuple[tuple[float, int], ...] = ()
    last_scale_up: float | None = None
    last_scale_down: float | None = None
    idle_since: float | None = None  # start of the current idle streak (nothing ready or active)
    since: float | None = None  # first step of this memory: how much history the windows really had

    def with_replicas(self, replicas: int) -> History:
        return dataclasses.replace(self, replicas=replicas)


@dataclass(frozen=True)
class Decision:
    desired: int  # serving workers wanted (= replicas once drains finish)
    reason: str
    current: int = 0  # serving workers when decided
    drain: tuple[str, ...] = ()  # workers to stop claiming and remove once idle
    undrain: tuple[str, ...] = ()  # draining workers to put back to work instead of adding new ones
    recommendation: int | None = None  # this step's raw recommendation (before windows)
    history: History = field(default_factory=lambda: History(replicas=0))

    @property
    def direction(self) -> str:
        if self.desired > self.current:
            return "up"
        if self.desired < self.current:
            return "down"
        return "none"


def clamp(n: int, spec: TaskQueueSpec) -> int:
    return max(spec.min_replicas, min(spec.max_replicas, n))


def recommend(spec: TaskQueueSpec, obs: Observation) -> int:
    """ceil(demand / (concurrency x utilization)), demand = ready (unless paused) + active; unclamped."""
    demand = obs.active + (0 if obs.paused else obs.ready)
    per_worker_x100 = spec.worker.concurrency * spec.target_utilization  # integer maths: no float drift
    return -(-demand * 100 // per_worker_x100)


def choose_drain(workers: Sequence[WorkerView], n: int) -> tuple[str, ...]:
    """The n cheapest workers to remove: idle first (unregistered before registered), then least busy."""
    candidates = sorted(
        (w for w in workers if not w.draining), key=lambda w: (w.in_flight, w.registered, w.id)
    )
    return tuple(w.id for w in candidates[: max(0, n)])


def choose_undrain(workers: Sequence[WorkerView], n: int) -> tuple[str, ...]:
    """Draining workers to reuse: the busiest first, as they would take longest to go away."""
    draining = sorted((w for w in workers if w.draining), key=lambda w: (-w.in_flight, w.id))
    return tuple(w.id for w in draining[: max(0, n)])


def swap_busy_drainees(
    workers: Sequence[WorkerView], ours: Collection[str]
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(drainees to undrain, serving workers to drain instead): each of our drainees that runs a
    job is swapped for a serving worker that runs none.

    `choose_drain` ranks by in-flight counts that are a heartbeat old, so a tie can send a busy
    worker to drain while another has just gone idle; left alone, that worker's jobs are handed
    back at the drain timeout. Once the counts settle this puts the choice right. Only drainees
    in `ours` (the operator's own choices) are swapped: a `herder drain` by a person stands.
    """
    busy = sorted(
        (w for w in workers if w.draining and w.id in ours and w.in_flight > 0),
        key=lambda w: (-w.in_flight, w.id),
    )
    idle = sorted(
        (w for w in workers if not w.draining and w.in_flight == 0), key=lambda w: (w.registered, w.id)
    )
    n = min(len(busy), len(idle))
    return tuple(w.id for w in busy[:n]), tuple(w.id for w in idle[:n])


def prune(
    recs: Sequence[tuple[float, int]], now: float, up_window: float, down_window: float
) -> tuple[tuple[float, int], ...]:
    """Keep only the recommendations a later step can still need (exactly the same decisions).

    Windows only move forward, so the max over any later down-window is found among the entries
    larger than everything after them (a monotonic queue), and the min over any later up-window
    among those smaller than everything after them. Under steady load this is one entry, which
    keeps the memory small enough to live in the TaskQueue's status.
    """
    keep: set[int] = set()
    for window, sign in ((down_window, 1), (up_window, -1)):  # max over down, min over up
        best: int | None = None
        for i in range(len(recs) - 1, -1, -1):
            t, r = recs[i]
            if t < now - window:
                break
            if best is None or sign * r > sign * best:
                keep.add(i)
                best = r
    return tuple(recs[i] for i in sorted(keep))


def _span(history: History, now: float, window: int) -> str:
    """'over 60s', or how much of the window the memory really covers (e.g. after a fresh start)."""
    since = history.since if history.since is not None else now
    covered = now - since
    if covered >= window:
        return f"over {window}s"
    return f"over {covered:.0f}s of history (window {window}s)"


def decide(spec: TaskQueueSpec, obs: Observation | None, history: History, now: float) -> Decision:
    replicas = history.replicas
    if spec.paused:
        return Decision(
            desired=replicas,
            current=replicas,
            reason=f"paused (spec.paused): holding {replicas} replicas",
            history=history,
        )
    if obs is None:
        # Fail safe: without queue data we cannot know who is busy, so nothing is removed.
        target = clamp(replicas, spec)
        return Decision(
            desired=target,
            current=replicas,
            reason=f"Redis unreachable: holding {replicas} replicas"
            + (f", raising to minReplicas {target}" if target > replicas else ""),
            history=history,
        )

    n_draining = sum(1 for w in obs.workers if w.draining)
    current = max(0, replicas - n_draining)
    rec = clamp(recommend(spec, obs), spec)
    recs = prune(
        (*history.recommendations, (now, rec)),
        now,
        spec.scale_up.stabilization_seconds,
        spec.scale_down.stabilization_seconds,
    )
    up_from = now - spec.scale_up.stabilization_seconds
    down_from = now - spec.scale_down.stabilization_seconds
    up_target = min(r for t, r in recs if t >= up_from)  # only a recommendation that held the window
    down_target = max(r for t, r in recs if t >= down_from)
    idle_since = (history.idle_since if history.idle_since is not None else now) if obs.idle else None
    demand = f"{obs.ready} ready + {obs.active} active"
    per_worker = f"{spec.worker.concurrency}x{spec.target_utilization}%"

    desired, reason = current, f"steady at {current}: {demand} -> {rec} at {per_worker}"
    if current < spec.min_replicas:
        desired, reason = spec.min_replicas, f"raise to minReplicas {spec.min_replicas}"
    elif current > spec.max_replicas:
        desired, reason = spec.max_replicas, f"lower to maxReplicas {spec.max_replicas}"
    elif up_target > current or (current == 0 and rec > 0):
        # Activation (0 -> 1 with a backlog) ignores window and cooldown: a backlog never waits alone.
        target = max(up_target, 1 if current == 0 else 0)
        last = history.last_scale_up
        if current > 0 and last is not None and now - last < spec.scale_up.cooldown_seconds:
            reason = f"scale-up to {target} held: scale-up cooldown ({spec.scale_up.cooldown_seconds}s)"
        else:
            step = spec.scale_up.max_step
            desired = min(target, current + step) if step else target
            reason = f"scale up {current}->{desired}: {demand} need {target} workers at {per_worker}"
    elif down_target < current:
        events = [t for t in (history.last_scale_up, history.last_scale_down) if t is not None]
        cooldown = spec.scale_down.cooldown_seconds
        target = down_target
        if events and now - max(events) < cooldown:
            reason = f"scale-down to {target} held: cooldown ({cooldown}s after the last scaling)"
        else:
            if target == 0 and (idle_since is None or now - idle_since < cooldown):
                target = 1  # scale to zero only after a whole cooldown with nothing ready or active
            if target < current:
                step = spec.scale_down.max_step
                desired = max(target, current - step) if step else target
                reason = (
                    f"scale down {current}->{desired}: {demand} need {down_target} "
                    f"(highest {_span(history, now, spec.scale_down.stabilization_seconds)})"
                )
            else:
                reason = f"holding {current}: scale to zero waits for {cooldown}s idle"
    desired = clamp(desired, spec)
    scaled_up, scaled_down = desired > current, desired < current

    drain: tuple[str, ...] = ()
    undrain: tuple[str, ...] = ()
    if scaled_down:
        # Replicas whose pod/process does not exist yet go first: removing them costs nothing.
        unborn = max(0, replicas - len(obs.workers))
        drain = choose_drain(obs.workers, current - desired - unborn)
    elif scaled_up:
        undrain = choose_undrain(obs.workers, desired - current)

    next_history = History(
        replicas=replicas,
        recommendations=recs,
        last_scale_up=now if scaled_up else history.last_scale_up,
        last_scale_down=now if scaled_down else history.last_scale_down,
        idle_since=idle_since,
        since=history.since if history.since is not None else now,
    )
    return Decision(
        desired=desired,
        current=current,
        drain=drain,
        undrain=undrain,
        reason=reason,
        recommendation=rec,
        history=next_history,
    )
