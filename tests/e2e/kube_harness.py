"""A Kubernetes stand-in for e2e tests: kmock's in-memory API over HTTP (in its own thread and
loop, so the operator's thread and the test can both call it), a kubeconfig pointing at it, and a
fake kubelet that turns Deployments into local `herder worker` processes.

The kubelet does what the ReplicaSet controller and kubelet would, as far as Herder cares:
- keeps `spec.replicas` pods per Deployment, creating a Pod object and a process for each;
- on scale-down deletes the pods with the lowest `controller.kubernetes.io/pod-deletion-cost`
  first (newest first among equals), SIGTERMs them and SIGKILLs after the grace period;
- restarts a process that exits on its own (restartPolicy Always).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

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


class Emulator(kmock.KubernetesEmulator):
    """What an API server fills on create and kmock does not: generateName, uid, creationTimestamp."""

    async def _handle(self, request: Any) -> Any:
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
    proc: subprocess.Popen[bytes]
    log: IO[bytes] | None = None


@dataclass
class Deleted:
    pod: str
    cost: int
    others: dict[str, int]  # cost of every pod that stayed


@dataclass
class Kubelet:
    api: Any  # kubernetes.client.ApiClient
    namespace: str
    env: dict[str, str]
    log_dir: Path
    period: float = 0.2
    pods: dict[str, PodProc] = field(default_factory=dict)
    terminating: dict[str, tuple[PodProc, float]] = field(default_factory=dict)
    deleted: list[Deleted] = field(default_factory=list)
    killed: list[str] = field(default_factory=list)  # SIGKILLed after the grace period
    exit_codes: dict[str, int | None] = field(default_factory=dict)
    restarts: int = 0
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        from kubernetes import client as k8s

        self.apps = k8s.AppsV1Api(self.api)
        self.core = k8s.CoreV1Api(self.api)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="kubelet", daemon=True)
        self._seq = 0

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
            try:
                p.proc.wait(max(5.0, min(p.grace, 40.0)))
            except subprocess.TimeoutExpired:
                p.proc.kill()
                p.proc.wait(10)
            if p.log:
                p.log.close()
        self.terminating.clear()

    # ---- the loop ---------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.sync()
            except Exception as exc:  # keep going: the API may be briefly unavailable
                self.errors.append(repr(exc))
            self._stop.wait(self.period)

    def sync(self) -> None:
        deps = raw(self.apps.list_namespaced_deployment, self.namespace).get("items", [])
        pods = raw(self.core.list_namespaced_pod, self.namespace).get("items", [])
        for dep in deps:
            self._sync_deployment(dep, pods)
        self._reap()

    def _sync_deployment(self, dep: dict[str, Any], all_pods: list[dict[str, Any]]) -> None:
        selector = dep["spec"]["selector"]["matchLabels"]
        want = int(dep["spec"].get("replicas") or 0)
        pods = [
            p
            for p in all_pods
            if all((p["metadata"].get("labels") or {}).get(k) == v for k, v in selector.items())
            and not p["metadata"].get("deletionTimestamp")
        ]
        template = dep["spec"]["template"]
        for _ in range(want - len(pods)):
            self._create_pod(dep, template)
        if len(pods) > want:

            def cost(p: dict[str, Any]) -> int:
                return int((p["metadata"].get("annotations") or {}).get(COST) or 0)

            # The ReplicaSet's order (as far as it matters here): lower cost first, then newer.
            ranked = sorted(pods, key=lambda p: (cost(p), -int(p["metadata"]["labels"].get("seq", "0"))))
            victims, stay = ranked[: len(pods) - want], ranked[len(pods) - want :]
            for v in victims:
                self.deleted.append(
                    Deleted(v["metadata"]["name"], cost(v), {s["metadata"]["name"]: cost(s) for s in stay})
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
            },
            "spec": template["spec"],
            "status": {"phase": "Running"},
        }
        self.core.create_namespaced_pod(self.namespace, body)
        c = template["spec"]["containers"][0]
        args = [a.replace("$(POD_NAME)", name) for a in c.get("args", [])]
        if "--metrics-port" in args:  # every pod has its own network namespace; processes do not
            i = args.index("--metrics-port")
            del args[i : i + 2]
        env = dict(self.env)
        for e in c.get("env", []):
            if "value" in e:
                env[e["name"]] = e["value"]
            elif e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name":
                env[e["name"]] = name
        cmd = [sys.executable, "-m", "herder.cli", *args]
        grace = float(template["spec"].get("terminationGracePeriodSeconds", 30))
        self.pods[name] = self._spawn(PodProc(name, cmd, env, grace, proc=None))  # type: ignore[arg-type]

    def _spawn(self, p: PodProc) -> PodProc:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        p.log = open(self.log_dir / f"{p.name}.log", "ab")
        p.proc = subprocess.Popen(p.cmd, env=p.env, stdout=subprocess.DEVNULL, stderr=p.log)
        return p

    def _delete_pod(self, name: str) -> None:
        self.core.delete_namespaced_pod(name, self.namespace)
        p = self.pods.pop(name, None)
        if p is not None:
            self._signal(p, signal.SIGTERM)
            self.terminating[name] = (p, time.monotonic() + p.grace)

    def _signal(self, p: PodProc, sig: int) -> None:
        if p.proc.poll() is None:
            os.kill(p.proc.pid, sig)

    def _reap(self) -> None:
        for name, p in list(self.pods.items()):
            if p.proc.poll() is not None:  # restartPolicy Always: same pod, new process
                self.restarts += 1
                if p.log:
                    p.log.close()
                self.pods[name] = self._spawn(p)
        for name, (p, deadline) in list(self.terminating.items()):
            if p.proc.poll() is not None:
                self.exit_codes[name] = p.proc.returncode
                del self.terminating[name]
                if p.log:
                    p.log.close()
            elif time.monotonic() > deadline:
                self.killed.append(name)
                p.proc.kill()
