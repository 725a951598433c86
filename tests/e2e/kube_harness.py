"""A Kubernetes stand-in for e2e tests: kmock's in-memory API over HTTP (in its own thread and
loop, so the operator's thread and the test can both call it), a kubeconfig pointing at it, and a
fake kubelet that turns Deployments into local `herder worker` processes.

The kubelet does what the ReplicaSet controller and kubelet would, as far as Herder cares:
- keeps `spec.replicas` pods per Deployment, creating a Pod object and a process for each; a pod
  is Pending and unscheduled until the "scheduler" binds it (at once, unless `hold_pending`);
- probes readiness for real (the template's httpGet readinessProbe, against the worker's own
  port) and writes the Ready condition, phase and container restart counts into the Pod's status;
  `unready` names pods whose probe is made to fail (a probe timeout under load);
- on scale-down deletes pods in the ReplicaSet controller's order (`rs_less`, transcribed from
  `ActivePodsWithRanks.Less` in kubernetes/kubernetes pkg/controller/controller_utils.go):
  unscheduled first, Pending < Unknown < Running, not Ready first, lower pod-deletion-cost,
  (all pods share one node, so the co-location rank ties), Ready for less time, more restarts,
  newer; SIGTERMs them and SIGKILLs after the grace period;
- restarts a process that exits on its own (restartPolicy Always), counting restarts;
- a pod deleted by someone else (an eviction) is stopped and replaced.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import aiohttp.web
import kmock
import yaml

COST = "controller.kubernetes.io/pod-deletion-cost"
MERGE = "application/merge-patch+json"

RESOURCES: dict[str, dict[str, Any]] = {
    "herder.dev/v1alpha1/taskqueues": {
        "kind": "TaskQueue",
        "singular": "taskqueue",
        "namespaced": True,
        "shortnames": ["tq"],
        "subresources": ["status"],
    },
    "apps/v1/deployments": {"kind": "Deployment", "singular": "deployment", "namespaced": True},
    "v1/pods": {"kind": "Pod", "singular": "pod", "namespaced": True},
    "v1/namespaces": {"kind": "Namespace", "singular": "namespace", "namespaced": False},
    "v1/events": {"kind": "Event", "singular": "event", "namespaced": True},
    "v1/secrets": {"kind": "Secret", "singular": "secret", "namespaced": True},
    "kopf.dev/v1/kopfpeerings": {"kind": "KopfPeering", "singular": "kopfpeering", "namespaced": True},
    "kopf.dev/v1/clusterkopfpeerings": {
        "kind": "ClusterKopfPeering",
        "singular": "clusterkopfpeering",
        "namespaced": False,
    },
}
VERBS = ["get", "list", "watch", "create", "update", "patch", "delete"]


DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def deployment_errors(body: dict[str, Any]) -> list[dict[str, str]]:
    """A small part of the API server's Deployment validation, in its own words (422 causes)."""
    causes = []
    pod = ((body.get("spec") or {}).get("template") or {}).get("spec") or {}
    for i, c in enumerate(pod.get("containers") or []):
        name = str(c.get("name", ""))
        if len(name) > 63 or not DNS_LABEL.match(name):
            causes.append(
                {
                    "reason": "FieldValueInvalid",
                    "message": f'Invalid value: "{name}": a lowercase RFC 1123 label must consist of '
                    "lower case alphanumeric characters or '-', and must start and end with an "
                    "alphanumeric character",
                    "field": f"spec.template.spec.containers[{i}].name",
                }
            )
    return causes


class Emulator(kmock.KubernetesEmulator):
    """What an API server fills on create and kmock does not: generateName, uid, creationTimestamp;
    and a Deployment the API server would refuse is refused (422 with causes naming the field)."""

    async def _handle(self, request: Any) -> Any:
        resource = str(getattr(request.resource, "plural", "") or "")
        if (
            resource == "deployments"
            and request.action in (kmock.action.CREATE, kmock.action.UPDATE)
            and isinstance(request.data, dict)
            and (causes := deployment_errors(request.data))
        ):
            name = (request.data.get("metadata") or {}).get("name") or request.name
            return aiohttp.web.json_response(
                {
                    "apiVersion": "v1",
                    "kind": "Status",
                    "metadata": {},
                    "status": "Failure",
                    "message": f'Deployment.apps "{name}" is invalid: '
                    + ", ".join(f"{c['field']}: {c['message']}" for c in causes),
                    "reason": "Invalid",
                    "details": {"name": name, "group": "apps", "kind": "Deployment", "causes": causes},
                    "code": 422,
                },
                status=422,
            )
        if request.action == kmock.action.CREATE and isinstance(request.data, dict):
            meta = request.data.setdefault("metadata", {})
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = f"{meta['generateName']}{uuid.uuid4().hex[:8]}"
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("creationTimestamp", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        return await super()._handle(request)


class KmockThread:
    """kmock's KubernetesEmulator served over HTTP from a background thread."""

    def __init__(self) -> None:
        self.url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="kmock", daemon=True)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        except BaseException as exc:
            self._error = exc
            self._ready.set()
        finally:
            loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        async with Emulator() as km, kmock.Server(km) as server:
            for key, info in RESOURCES.items():
                km.resources[key] = kmock.ResourceInfo(verbs=VERBS, **info)
            self.url = str(server.url).rstrip("/")
            self._ready.set()
            await self._stop.wait()

    def start(self) -> KmockThread:
        self._thread.start()
        if not self._ready.wait(15) or self._error is not None:
            raise RuntimeError(f"kmock did not start: {self._error!r}")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(15)

    def kubeconfig(self, path: Path) -> Path:
        path.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "kmock", "cluster": {"server": self.url}}],
                    "users": [{"name": "test", "user": {"token": "test"}}],
                    "contexts": [
                        {
                            "name": "kmock",
                            "context": {"cluster": "kmock", "user": "test", "namespace": "default"},
                        }
                    ],
                    "current-context": "kmock",
                }
            )
        )
        return path


def raw(call: Any, *args: Any, **kwargs: Any) -> Any:
    """Call a kubernetes-client method and return the JSON as plain dicts (no model classes)."""
    resp = call(*args, _preload_content=False, **kwargs)
    return json.loads(resp.data)


@dataclass
class PodProc:
    name: str
    cmd: list[str]
    env: dict[str, str]
    grace: float
    proc: subprocess.Popen[bytes] | None = None
    log: IO[bytes] | None = None
    port: int = 0
    probe_path: str | None = None
    restarts: int = 0
    ready: bool = False
    phase: str = "Pending"


@dataclass
class Deleted:
    pod: str
    cost: int
    others: dict[str, int]  # cost of every pod that stayed
    phase: str = "Running"
    ready: bool = True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _now_iso() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1e6) % 1_000_000:06d}Z"


def _ts(value: str | None) -> float:
    """RFC 3339 (with or without fractions) -> epoch seconds; 0 for unset (the 'zero time')."""
    if not value:
        return 0.0
    from datetime import datetime

    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


PHASE_ORDINAL = {"Pending": 0, "Unknown": 1, "Running": 2}


def _is_ready(p: dict[str, Any]) -> bool:
    conds = (p.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds)


def _ready_time(p: dict[str, Any]) -> float:
    for c in (p.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready" and c.get("status") == "True":
            return _ts(c.get("lastTransitionTime"))
    return 0.0


def _restarts(p: dict[str, Any]) -> int:
    return max(
        [int(c.get("restartCount") or 0) for c in (p.get("status") or {}).get("containerStatuses") or []]
        + [0]
    )


def _cost(p: dict[str, Any]) -> int:
    return int((p["metadata"].get("annotations") or {}).get(COST) or 0)


def _after_or_zero(t1: float, t2: float) -> bool:
    if t1 == 0 or t2 == 0:
        return t1 == 0
    return t1 > t2


def rs_less(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """ActivePodsWithRanks.Less: True when `a` should be deleted before `b` (written from the Go
    source, independently of the operator's own herder_operator.pools.ranking, so that a mistake
    there shows up here). All pods share one node, so rule 5 (co-location) always ties; times are
    compared exactly (the LogarithmicScaleDown buckets only add randomness among equals)."""
    na, nb = a["spec"].get("nodeName") or "", b["spec"].get("nodeName") or ""
    if na != nb and (not na or not nb):  # 1. unassigned < assigned
        return not na
    pa = PHASE_ORDINAL.get((a.get("status") or {}).get("phase", ""), 0)
    pb = PHASE_ORDINAL.get((b.get("status") or {}).get("phase", ""), 0)
    if pa != pb:  # 2. Pending < Unknown < Running
        return pa < pb
    if _is_ready(a) != _is_ready(b):  # 3. not ready < ready
        return not _is_ready(a)
    if _cost(a) != _cost(b):  # 4. lower pod-deletion-cost first
        return _cost(a) < _cost(b)
    if _is_ready(a) and _is_ready(b) and _ready_time(a) != _ready_time(b):  # 6. ready for less time
        return _after_or_zero(_ready_time(a), _ready_time(b))
    if _restarts(a) != _restarts(b):  # 7. more restarts first
        return _restarts(a) > _restarts(b)
    ca, cb = _ts(a["metadata"].get("creationTimestamp")), _ts(b["metadata"].get("creationTimestamp"))
    if ca != cb:  # 8. newer first
        return _after_or_zero(ca, cb)
    return False


def rs_order(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    def cmp(a: dict[str, Any], b: dict[str, Any]) -> int:
        return -1 if rs_less(a, b) else 1 if rs_less(b, a) else 0

    return sorted(pods, key=functools.cmp_to_key(cmp))


@dataclass
class Kubelet:
    api: Any  # kubernetes.client.ApiClient
    namespace: str
    env: dict[str, str]
    log_dir: Path
    period: float = 0.2
    probe_period: float = 0.5
    pods: dict[str, PodProc] = field(default_factory=dict)
    terminating: dict[str, tuple[PodProc, float]] = field(default_factory=dict)
    deleted: list[Deleted] = field(default_factory=list)
    killed: list[str] = field(default_factory=list)  # SIGKILLed after the grace period
    exit_codes: dict[str, int | None] = field(default_factory=dict)
    restarts: int = 0
    errors: list[str] = field(default_factory=list)
    hold_pending: bool = False  # new pods stay Pending and unscheduled (no room on any node)
    unready: set[str] = field(default_factory=set)  # pods whose readiness probe fails
    # Pods whose phase stays Pending though the worker runs (another container still starting).
    pending_phase: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        from kubernetes import client as k8s

        self.apps = k8s.AppsV1Api(self.api)
        self.core = k8s.CoreV1Api(self.api)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="kubelet", daemon=True)
        self._seq = 0
        self._next_probe = 0.0
        self._lock = threading.RLock()

    def start(self) -> Kubelet:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(15)
        for p in list(self.pods.values()):
            self._signal(p, signal.SIGTERM)
            self.terminating[p.name] = (p, time.monotonic() + p.grace)
        self.pods.clear()
        for p, _ in self.terminating.values():
            if p.proc is None:
                continue
            try:
                p.proc.wait(max(5.0, min(p.grace, 40.0)))
            except subprocess.TimeoutExpired:
                p.proc.kill()
                p.proc.wait(10)
            if p.log:
                p.log.close()
        self.terminating.clear()

    # ---- test controls ----------------------------------------------------------------------

    def release(self) -> None:
        """The scheduler finds room: bind every Pending pod and start it."""
        with self._lock:
            self.hold_pending = False

    def crash(self, name: str) -> None:
        """The worker container dies (OOM, bug): the kubelet restarts it in the same pod."""
        with self._lock:
            p = self.pods[name]
            if p.proc is not None and p.proc.poll() is None:
                p.proc.kill()

    # ---- the loop ---------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                with self._lock:
                    self.sync()
            except Exception as exc:  # keep going: the API may be briefly unavailable
                self.errors.append(repr(exc))
            self._stop.wait(self.period)

    def sync(self) -> None:
        deps = raw(self.apps.list_namespaced_deployment, self.namespace).get("items", [])
        pods = raw(self.core.list_namespaced_pod, self.namespace).get("items", [])
        live = {p["metadata"]["name"] for p in pods}
        for name in [n for n in self.pods if n not in live]:  # deleted by someone else: evicted
            self._stop_pod(name)
        for dep in deps:
            self._sync_deployment(dep, pods)
        self._schedule(pods)
        self._reap()
        if time.monotonic() >= self._next_probe:
            self._next_probe = time.monotonic() + self.probe_period
            self._probe()

    def _sync_deployment(self, dep: dict[str, Any], all_pods: list[dict[str, Any]]) -> None:
        selector = dep["spec"]["selector"]["matchLabels"]
        want = int(dep["spec"].get("replicas") or 0)
        pods = [
            p
            for p in all_pods
            if all((p["metadata"].get("labels") or {}).get(k) == v for k, v in selector.items())
            and not p["metadata"].get("deletionTimestamp")
            and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
        ]
        template = dep["spec"]["template"]
        for _ in range(want - len(pods)):
            self._create_pod(dep, template)
        if len(pods) > want:
            ranked = rs_order(pods)
            victims, stay = ranked[: len(pods) - want], ranked[len(pods) - want :]
            for v in victims:
                self.deleted.append(
                    Deleted(
                        v["metadata"]["name"],
                        _cost(v),
                        {s["metadata"]["name"]: _cost(s) for s in stay},
                        phase=(v.get("status") or {}).get("phase", ""),
                        ready=_is_ready(v),
                    )
                )
                self._delete_pod(v["metadata"]["name"])

    def _create_pod(self, dep: dict[str, Any], template: dict[str, Any]) -> None:
        self._seq += 1
        name = f"{dep['metadata']['name']}-{self._seq:03d}-{uuid.uuid4().hex[:5]}"
        meta = template.get("metadata", {})
        body = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": self.namespace,
                "uid": str(uuid.uuid4()),
                "labels": {**meta.get("labels", {}), "seq": str(self._seq)},
                "annotations": dict(meta.get("annotations", {})),
                "creationTimestamp": _now_iso(),
            },
            "spec": template["spec"],
            "status": {"phase": "Pending"},
        }
        self.core.create_namespaced_pod(self.namespace, body)
        c = template["spec"]["containers"][0]
        args = [a.replace("$(POD_NAME)", name) for a in c.get("args", [])]
        probe = (c.get("readinessProbe") or {}).get("httpGet") or {}
        port = _free_port()  # every pod has its own network namespace; processes share one
        if "--metrics-port" in args:
            args[args.index("--metrics-port") + 1] = str(port)
        env = dict(self.env)
        for e in c.get("env", []):
            if "value" in e:
                env[e["name"]] = e["value"]
            elif e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name":
                env[e["name"]] = name
        cmd = [sys.executable, "-m", "herder.cli", *args]
        grace = float(template["spec"].get("terminationGracePeriodSeconds", 30))
        self.pods[name] = PodProc(name, cmd, env, grace, port=port, probe_path=probe.get("path"))

    def _schedule(self, pods: list[dict[str, Any]]) -> None:
        if self.hold_pending:
            return
        for p in pods:
            name = p["metadata"]["name"]
            pp = self.pods.get(name)
            if pp is None or pp.proc is not None:
                continue
            pp.phase = "Pending" if name in self.pending_phase else "Running"
            self._patch(name, {"spec": {"nodeName": "node-1"}, "status": self._status(pp)})
            self._spawn(pp)

    def _status(self, p: PodProc) -> dict[str, Any]:
        return {
            "phase": p.phase,
            "conditions": [
                {"type": "Ready", "status": "True" if p.ready else "False", "lastTransitionTime": _now_iso()}
            ],
            "containerStatuses": [
                {
                    "name": "worker",
                    "image": "herder:dev",
                    "imageID": "",
                    "ready": p.ready,
                    "restartCount": p.restarts,
                }
            ],
        }

    def _patch(self, name: str, body: dict[str, Any]) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            self.core.patch_namespaced_pod(name, self.namespace, body, _content_type=MERGE)
        except ApiException as exc:
            if exc.status != 404:
                raise

    def _probe(self) -> None:
        import urllib.error
        import urllib.request

        for name, p in list(self.pods.items()):
            if p.proc is None:
                continue
            ok = False
            if name not in self.unready and name not in self.pending_phase and p.proc.poll() is None:
                if p.probe_path is None:
                    ok = True
                else:
                    try:
                        with urllib.request.urlopen(
                            f"http://127.0.0.1:{p.port}{p.probe_path}", timeout=1
                        ) as r:
                            ok = r.status == 200
                    except (urllib.error.URLError, OSError):
                        ok = False
            phase = "Pending" if name in self.pending_phase else "Running"
            if ok != p.ready or phase != p.phase:
                p.ready, p.phase = ok, phase
                self._patch(name, {"status": self._status(p)})

    def _spawn(self, p: PodProc) -> PodProc:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        p.log = open(self.log_dir / f"{p.name}.log", "ab")
        p.proc = subprocess.Popen(p.cmd, env=p.env, stdout=subprocess.DEVNULL, stderr=p.log)
        return p

    def _delete_pod(self, name: str) -> None:
        self.core.delete_namespaced_pod(name, self.namespace)
        self._stop_pod(name)

    def _stop_pod(self, name: str) -> None:
        p = self.pods.pop(name, None)
        if p is not None and p.proc is not None:
            self._signal(p, signal.SIGTERM)
            self.terminating[name] = (p, time.monotonic() + p.grace)

    def _signal(self, p: PodProc, sig: int) -> None:
        if p.proc is not None and p.proc.poll() is None:
            os.kill(p.proc.pid, sig)

    def _reap(self) -> None:
        for name, p in list(self.pods.items()):
            if (
                p.proc is not None and p.proc.poll() is not None
            ):  # restartPolicy Always: same pod, new process
                self.restarts += 1
                p.restarts += 1
                p.ready = False
                if p.log:
                    p.log.close()
                self._patch(name, {"status": self._status(p)})
                self.pods[name] = self._spawn(p)
        for name, (p, deadline) in list(self.terminating.items()):
            assert p.proc is not None
            if p.proc.poll() is not None:
                self.exit_codes[name] = p.proc.returncode
                del self.terminating[name]
                if p.log:
                    p.log.close()
            elif time.monotonic() > deadline:
                self.killed.append(name)
                p.proc.kill()
