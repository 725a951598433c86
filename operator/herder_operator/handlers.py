"""kopf handlers, kept thin: they translate events into calls on the Reconciler and write status,
conditions and Kubernetes Events.

    kopf run -m herder_operator.handlers --all-namespaces --peering herder-operator

One timer per TaskQueue runs the reconcile loop; peering (mandatory) makes sure that of two
operator replicas only one acts.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from herder.client import HerderClient
from herder_operator import metrics as op_metrics
from herder_operator.config import load as load_config
from herder_operator.credentials import Refused, admit
from herder_operator.pools.kubernetes import KubernetesPool
from herder_operator.reconciler import Reconciler, invalid_status, status_of
from herder_operator.spec import GROUP, PLURAL, VERSION, Condition, TaskQueueSpec, spec_errors

log = logging.getLogger(__name__)
PEERING_NAME = "herder-operator"
TIMER_INTERVAL = 1.0  # the timer ticks every second; spec.pollIntervalSeconds decides when to step


@dataclass
class Runtime:
    """Per-TaskQueue state that lives as long as the operator process."""

    reconciler: Reconciler
    pool: KubernetesPool
    client: HerderClient
    settings_key: tuple[Any, ...]
    identity: op_metrics.Identity
    next_step: float = 0.0
    tmpdir: tempfile.TemporaryDirectory[str] | None = None

    async def close(self) -> None:
        await self.client.close()
        if self.tmpdir is not None:
            self.tmpdir.cleanup()


RUNTIMES: dict[str, Runtime] = {}  # by TaskQueue uid
REFUSED: dict[str, tuple[str, float]] = {}  # uid -> (why, when to look again)
REFUSED_RECHECK = 30.0


def _api() -> Any:
    import kubernetes

    return kubernetes.client.ApiClient()


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    if settings.peering.name == "default":
        settings.peering.name = PEERING_NAME
    settings.peering.mandatory = True  # two replicas must never both scale the same queue
    settings.posting.level = logging.WARNING  # our own Events cover decisions; kopf posts errors
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP)
    settings.watching.server_timeout = 300
    # Where the chart's Service and ServiceMonitor look (HERDER_METRICS_PORT); a bad value fails here.
    op_metrics.start(op_metrics.metrics_port())


@kopf.on.cleanup()
async def cleanup(**_: Any) -> None:
    for key in list(RUNTIMES):
        await RUNTIMES.pop(key).close()
    op_metrics.stop()


def _untrack(uid: str) -> None:
    if op_metrics.METRICS is not None:
        op_metrics.METRICS.forget(uid)


def _conditions(status: Any) -> list[Condition]:
    out = []
    for raw in (status or {}).get("conditions", []) or []:
        try:
            out.append(Condition.model_validate(raw))
        except ValidationError:
            continue
    return out


def _parse(spec: Any, body: Any, patch: Any, status: Any, meta: Any) -> TaskQueueSpec | None:
    """Validate; on failure report it (condition + Event) and return None so nothing acts."""
    try:
        return TaskQueueSpec.model_validate(dict(spec))
    except ValidationError as exc:
        message = spec_errors(exc)
        already = (status or {}).get("phase") == "Invalid"
        if already and (status or {}).get("observedGeneration") == meta.get("generation"):
            return None  # reported once per generation, not on every timer tick
        st = invalid_status(message, _conditions(status), meta.get("generation"), time.time())
        patch.status.update(st.dump())
        kopf.warn(body, reason="InvalidSpec", message=message)
        return None


def _report_refusal(uid: str, body: Any, patch: Any, status: Any, meta: Any, message: str) -> None:
    """A refused TaskQueue: condition + Event once per message, re-checked every REFUSED_RECHECK."""
    previous = REFUSED.get(uid)
    REFUSED[uid] = (message, time.time() + REFUSED_RECHECK)
    if previous is not None and previous[0] == message and (status or {}).get("phase") == "Invalid":
        return
    st = invalid_status(message, _conditions(status), meta.get("generation"), time.time(), reason="Refused")
    patch.status.update(st.dump())
    kopf.warn(body, reason="Refused", message=message)


async def _ensure(
    body: Any, spec: TaskQueueSpec, namespace: str, name: str, uid: str, patch: Any, status: Any, meta: Any
) -> Runtime | None:
    """Admit the spec (Secrets, Redis host, pod security), then create or update its Runtime.

    Refused: report it, stop acting on this TaskQueue (its Deployment is left as it was) and
    return None. Nothing is connected to and nothing is written before admission passed."""
    from kubernetes import client as k8s

    try:
        admitted = await admit(spec, namespace, name, k8s.CoreV1Api(_api()), load_config())
    except Refused as exc:
        old = RUNTIMES.pop(uid, None)
        if old is not None:
            await old.close()
        _untrack(uid)
        _report_refusal(uid, body, patch, status, meta, str(exc))
        return None
    REFUSED.pop(uid, None)
    runtime = RUNTIMES.get(uid)
    key = (spec.redis.model_dump_json(), admitted.settings.model_dump_json())
    if runtime is not None and runtime.settings_key != key:
        await RUNTIMES.pop(uid).close()  # Redis connection changed: reconnect
        runtime = None
    if runtime is None:
        pool = KubernetesPool(_api(), namespace, name, spec)
        client = HerderClient(admitted.settings)
        who = op_metrics.Identity(namespace, name, spec.queue)
        runtime = Runtime(Reconciler(spec, pool, client), pool, client, key, who, tmpdir=admitted.tmpdir)
        RUNTIMES[uid] = runtime
    elif admitted.tmpdir is not None:
        admitted.tmpdir.cleanup()  # same settings: the runtime keeps its own copy
    runtime.reconciler.update_spec(spec)
    runtime.pool.spec = spec
    runtime.pool.url_in_secret = admitted.url_in_secret
    runtime.identity = op_metrics.Identity(namespace, name, spec.queue)
    if op_metrics.METRICS is not None:
        op_metrics.METRICS.track(uid, runtime.identity, admitted.settings)
    owner = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "TaskQueue", "metadata": {"name": name, "uid": uid}}
    if await runtime.pool.ensure(owner):
        kopf.event(body, type="Normal", reason="Created", message=f"created Deployment {runtime.pool.name}")
    runtime.next_step = 0.0  # act on the new spec at the next tick
    return runtime


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
async def apply(
    *,
    spec: kopf.Spec,
    body: kopf.Body,
    patch: kopf.Patch,
    status: kopf.Status,
    meta: kopf.Meta,
    namespace: str | None,
    name: str,
    uid: str,
    **_: Any,
) -> None:
    parsed = _parse(spec, body, patch, status, meta)
    if parsed is None:
        old = RUNTIMES.pop(uid, None)
        if old is not None:
            await old.close()  # stop acting; the workers are left as they are
        _untrack(uid)
        return
    await _ensure(body, parsed, namespace or "default", name, uid, patch, status, meta)


@kopf.on.delete(GROUP, VERSION, PLURAL, optional=True)
async def forget(*, uid: str, **_: Any) -> None:
    """The Deployment goes with its owner (garbage collection); only our connection is closed."""
    REFUSED.pop(uid, None)
    _untrack(uid)
    runtime = RUNTIMES.pop(uid, None)
    if runtime is not None:
        await runtime.close()


@kopf.timer(GROUP, VERSION, PLURAL, interval=TIMER_INTERVAL, initial_delay=TIMER_INTERVAL)
async def reconcile(
    *,
    spec: kopf.Spec,
    body: kopf.Body,
    patch: kopf.Patch,
    status: kopf.Status,
    meta: kopf.Meta,
    namespace: str | None,
    name: str,
    uid: str,
    **_: Any,
) -> None:
    runtime = RUNTIMES.get(uid)
    if runtime is None:
        refused = REFUSED.get(uid)
        if refused is not None and time.time() < refused[1]:
            return  # refused: look again (a Secret may have been labelled) only now and then
        parsed = _parse(spec, body, patch, status, meta)
        if parsed is None:
            return
        runtime = await _ensure(body, parsed, namespace or "default", name, uid, patch, status, meta)
        if runtime is None:
            return
    now = time.time()
    if now < runtime.next_step:
        return
    rec = runtime.reconciler
    runtime.next_step = now + rec.spec.poll_interval_seconds
    started = time.perf_counter()
    try:
        report = await rec.step(now)
    except Exception as exc:
        if op_metrics.METRICS is not None:
            op_metrics.METRICS.error(runtime.identity, exc)
        if not isinstance(exc, ApiException) or exc.status != 404:
            raise
        # The Deployment was deleted behind our back: recreate it, step on the next tick.
        owner = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "TaskQueue",
            "metadata": {"name": name, "uid": uid},
        }
        await runtime.pool.ensure(owner)
        kopf.event(
            body, type="Warning", reason="Recreated", message=f"Deployment {runtime.pool.name} was missing"
        )
        return
    if op_metrics.METRICS is not None:
        op_metrics.METRICS.step(
            runtime.identity,
            time.perf_counter() - started,
            replicas=report.new_replicas,
            desired=report.decision.desired,
            draining=len(rec.deadlines),
            reason=report.decision.reason,
            min_replicas=rec.spec.min_replicas,
            max_replicas=rec.spec.max_replicas,
        )
    for e in report.events:
        # kopf.event, not kopf.info: posting.level filters kopf's own chatter, not our decisions.
        kopf.event(body, type=e.type, reason=e.reason, message=e.message)
    new = status_of(report, rec, _conditions(status), meta.get("generation")).dump()
    if {k: v for k, v in (status or {}).items() if k in new} != new:
        patch.status.update(new)
