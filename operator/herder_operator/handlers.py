"""kopf handlers, kept thin: they translate events into calls on the Reconciler and write status,
conditions and Kubernetes Events.

    kopf run -m herder_operator.handlers --all-namespaces --peering herder-operator

One timer per TaskQueue runs the reconcile loop; peering (mandatory) makes sure that of two
operator replicas only one acts. Every handler failure becomes a condition and a Warning Event
on the TaskQueue (see `_failed`), retried with exponential backoff.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
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
from herder_operator.reconciler import Reconciler, StepReport, failed_status, invalid_status, status_of
from herder_operator.spec import (
    GROUP,
    PLURAL,
    VERSION,
    Condition,
    PolicyMemory,
    TaskQueueSpec,
    spec_errors,
)

log = logging.getLogger(__name__)
PEERING_NAME = "herder-operator"
TIMER_INTERVAL = 1.0  # the timer ticks every second; spec.pollIntervalSeconds decides when to step
BACKOFF_MAX = 300.0  # seconds between retries of a TaskQueue that fails the same way, at most
TRANSIENT_BACKOFF_MAX = 30.0  # for errors that may go away by themselves (API hiccups, timeouts)
PERMANENT = frozenset({"DeploymentRejected", "Rejected", "Forbidden", "SecretKeyMissing", "NotFound"})
PEERING_LIFETIME = 15  # seconds a crashed operator's peering entry blocks a successor, at most


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


@dataclass
class Failure:
    attempts: int
    retry_at: float
    reason: str
    message: str


FAILURES: dict[str, Failure] = {}  # by TaskQueue uid: what failed last, and when to try again


def _api() -> Any:
    import kubernetes

    return kubernetes.client.ApiClient()


class _QuietTimers(logging.Filter):
    """kopf logs "Timer 'reconcile' succeeded." at INFO once per second per TaskQueue: demote to
    DEBUG (and drop it unless DEBUG is on), so INFO holds one line per decision."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = str(record.msg)
        if msg.startswith("Timer ") and msg.endswith(" succeeded."):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger().isEnabledFor(logging.DEBUG)
        return True


def configure_logging() -> None:
    """HERDER_LOG_FORMAT=json and HERDER_LOG_LEVEL under `kopf run` (which set up logging first)."""
    fmt = os.environ.get("HERDER_LOG_FORMAT", "").lower()
    level = os.environ.get("HERDER_LOG_LEVEL", "").upper()
    if fmt == "json":
        # kopf's JSON formatter: one object per line, with the TaskQueue as "object".
        kopf.configure(log_format=kopf.LogFormat.JSON, log_refkey="object", debug=level == "DEBUG")
    if level in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        logging.getLogger().setLevel(level)
    objects = logging.getLogger("kopf.objects")
    if not any(isinstance(f, _QuietTimers) for f in objects.filters):
        objects.addFilter(_QuietTimers())


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    configure_logging()
    if settings.peering.name == "default":
        settings.peering.name = PEERING_NAME
    settings.peering.mandatory = True  # two replicas must never both scale the same queue
    # Fast failover: the newest operator has the highest priority, so a replacement for a crashed
    # pod acts at once instead of pausing until the dead peer's entry expires; the old one (if it
    # is alive after all) pauses as soon as it sees the newcomer. A short lifetime bounds the
    # hand-over to a standby replica. Both can be overridden by environment.
    settings.peering.priority = int(os.environ.get("HERDER_PEERING_PRIORITY", int(time.time() * 1000)))
    settings.peering.lifetime = int(os.environ.get("HERDER_PEERING_LIFETIME", PEERING_LIFETIME))
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
    FAILURES.clear()
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


def _memory(status: Any) -> PolicyMemory | None:
    """The policy memory a previous operator left in the status (None if absent or unreadable)."""
    raw = (status or {}).get("memory")
    if not raw:
        return None
    try:
        return PolicyMemory.model_validate(dict(raw))
    except (ValidationError, TypeError, ValueError):
        log.warning("ignoring an unreadable status.memory; starting with no history")
        return None


ENSURING: dict[str, asyncio.Lock] = {}  # by uid: the create handler and the timer take turns


async def _ensure(
    body: Any, spec: TaskQueueSpec, namespace: str, name: str, uid: str, patch: Any, status: Any, meta: Any
) -> Runtime | None:
    async with ENSURING.setdefault(uid, asyncio.Lock()):
        return await _ensure_locked(body, spec, namespace, name, uid, patch, status, meta)


async def _ensure_locked(
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
    fresh = runtime is None
    if runtime is None:
        pool = KubernetesPool(_api(), namespace, name, spec)
        client = HerderClient(admitted.settings)
        who = op_metrics.Identity(namespace, name, spec.queue)
        # Read back what the previous operator (or this one, before a Redis change) remembered.
        rec = Reconciler(
            spec,
            pool,
            client,
            memory=_memory(status),
            last_scale_reason=(status or {}).get("lastScaleReason"),
        )
        rec.log_extra["k8s_ref"] = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "TaskQueue",
            "name": name,
            "uid": uid,
            "namespace": namespace,
        }
        runtime = Runtime(rec, pool, client, key, who, tmpdir=admitted.tmpdir)
    elif admitted.tmpdir is not None:
        admitted.tmpdir.cleanup()  # same settings: the runtime keeps its own copy
    runtime.reconciler.update_spec(spec)
    runtime.pool.spec = spec
    runtime.pool.url_in_secret = admitted.url_in_secret
    runtime.identity = op_metrics.Identity(namespace, name, spec.queue)
    if op_metrics.METRICS is not None:
        op_metrics.METRICS.track(uid, runtime.identity, admitted.settings)
    owner = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "TaskQueue", "metadata": {"name": name, "uid": uid}}
    try:
        created = await runtime.pool.ensure(owner)
    except BaseException:
        if fresh:
            await runtime.close()  # registered only once the Deployment is there
        raise
    RUNTIMES[uid] = runtime
    if created:
        kopf.event(body, type="Normal", reason="Created", message=f"created Deployment {runtime.pool.name}")
    runtime.next_step = 0.0  # act on the new spec at the next tick
    return runtime


def describe_failure(exc: BaseException) -> tuple[str, str]:
    """(reason, message) for a condition and an Event: what failed, in the API's own words."""
    if isinstance(exc, ApiException):
        try:
            st = json.loads(exc.body or "{}")
        except (TypeError, ValueError):
            st = {}
        st = st if isinstance(st, dict) else {}
        details = st.get("details") or {}
        causes = details.get("causes") or [] if isinstance(details, dict) else []
        fields = "; ".join(
            f"{c.get('field')}: {c.get('message')}" for c in causes if isinstance(c, dict) and c.get("field")
        )
        what = (
            f"{details.get('kind', 'object')} {details.get('name', '')}".strip()
            if isinstance(details, dict)
            else "object"
        )
        if exc.status == 422:
            return "DeploymentRejected" if what.startswith("Deployment") else "Rejected", (
                f"the API server refused {what}: {fields or st.get('message') or exc.reason}"
            )
        if exc.status in (401, 403):
            return "Forbidden", f"the operator may not do this (RBAC): {st.get('message') or exc.reason}"
        if exc.status == 404:
            return "NotFound", f"{st.get('message') or exc.reason}"
        return "KubernetesAPIError", f"HTTP {exc.status}: {st.get('message') or exc.reason}"
    if isinstance(exc, KeyError):
        return "SecretKeyMissing", f"key {exc} not found (check spec.redis.secretRef)"
    return "ReconcileError", f"{type(exc).__name__}: {exc}"[:1024]


def backoff(reason: str, attempts: int) -> float:
    """2, 4, 8 ... seconds; capped lower for failures that usually heal by themselves."""
    cap = BACKOFF_MAX if reason in PERMANENT else TRANSIENT_BACKOFF_MAX
    return min(cap, 2.0 ** min(max(attempts, 1), 16))


def _failed(uid: str, body: Any, patch: Any, status: Any, meta: Any, exc: BaseException, now: float) -> None:
    """A handler failed: say so on the TaskQueue (condition + Warning Event), retry with backoff."""
    reason, message = describe_failure(exc)
    prev = FAILURES.get(uid)
    attempts = (prev.attempts if prev is not None else 0) + 1
    delay = backoff(reason, attempts)
    FAILURES[uid] = Failure(attempts, now + delay, reason, message)
    if prev is None or (prev.reason, prev.message) != (reason, message):
        # The traceback once per distinct failure, not once per retry.
        log.warning("%s: %s", reason, message, exc_info=exc, extra={"k8s_ref": _ref(body)})
        kopf.event(body, type="Warning", reason=reason, message=f"{message} (retrying with backoff)")
    st = failed_status(
        reason,
        f"{message}; retry {attempts} in {delay:.0f}s",
        _conditions(status),
        meta.get("generation"),
        now,
    )
    patch.status.update(st.dump())


def _recovered(uid: str, body: Any) -> None:
    prev = FAILURES.pop(uid, None)
    if prev is not None:
        kopf.event(
            body,
            type="Normal",
            reason="Recovered",
            message=f"recovered from {prev.reason} after {prev.attempts} attempt(s)",
        )


def _ref(body: Any) -> dict[str, Any]:
    meta = body.get("metadata", {}) if hasattr(body, "get") else {}
    return {"kind": "TaskQueue", "name": meta.get("name"), "namespace": meta.get("namespace")}


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
    try:  # at once, even while backing off: the spec may be the fix
        runtime = await _ensure(body, parsed, namespace or "default", name, uid, patch, status, meta)
    except Exception as exc:
        # Not re-raised: the timer retries with our backoff, and the failure is on the TaskQueue.
        _failed(uid, body, patch, status, meta, exc, time.time())
        return
    if runtime is not None:
        _recovered(uid, body)


@kopf.on.delete(GROUP, VERSION, PLURAL, optional=True)
async def forget(*, uid: str, **_: Any) -> None:
    """The Deployment goes with its owner (garbage collection); only our connection is closed."""
    REFUSED.pop(uid, None)
    FAILURES.pop(uid, None)
    ENSURING.pop(uid, None)
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
    now = time.time()
    failure = FAILURES.get(uid)
    if failure is not None and now < failure.retry_at:
        return  # backing off
    try:
        stepped = await _reconcile_step(body, spec, patch, status, meta, namespace, name, uid, now)
    except Exception as exc:
        _failed(uid, body, patch, status, meta, exc, now)
        return
    if stepped is None:
        return
    _recovered(uid, body)
    report, rec = stepped
    for e in report.events:
        # kopf.event, not kopf.info: posting.level filters kopf's own chatter, not our decisions.
        kopf.event(body, type=e.type, reason=e.reason, message=e.message)
    new = status_of(report, rec, _conditions(status), meta.get("generation")).dump()
    if {k: v for k, v in (status or {}).items() if k in new} != new:
        # The memory with explicit nulls: a merge patch must delete a value that became unset.
        new["memory"] = rec.memory().model_dump(by_alias=True, mode="json")
        patch.status.update(new)


async def _reconcile_step(
    body: Any,
    spec: Any,
    patch: Any,
    status: Any,
    meta: Any,
    namespace: str | None,
    name: str,
    uid: str,
    now: float,
) -> tuple[StepReport, Reconciler] | None:
    """One timer tick: (re)create the runtime if needed, and step when the poll interval is due."""
    runtime = RUNTIMES.get(uid)
    if runtime is None:
        refused = REFUSED.get(uid)
        if refused is not None and now < refused[1]:
            return None  # refused: look again (a Secret may have been labelled) only now and then
        parsed = _parse(spec, body, patch, status, meta)
        if parsed is None:
            return None
        runtime = await _ensure(body, parsed, namespace or "default", name, uid, patch, status, meta)
        if runtime is None:
            return None
    if now < runtime.next_step:
        return None
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
        return None
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
    return report, rec
