"""The real operator against the emulated Kubernetes API (kube_harness), as the e2e tests drive
it: TaskQueues and what the operator makes of them (`Kube`, `Cluster`), and the operator started
in this process (KopfRunner) or as `kopf run` in its own, the way the chart runs it. The fixtures
built from these (`kube`, `cluster`) are in conftest.py."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from kopf.testing import KopfRunner
from kube_harness import Kubelet, raw

from herder.client import HerderClient
from herder.models import Job, QueueStatus
from herder.settings import HerderSettings
from procs import wait_or_kill

NS = "default"
GROUP, VERSION, PLURAL = "herder.dev", "v1alpha1", "taskqueues"
PEERING = "herder-operator"
# `kopf run` arguments, the chart's: every namespace, one peering shared by all replicas.
OPERATOR_ARGS = ["run", "-m", "herder_operator.handlers", "--all-namespaces", "--peering", PEERING]
T = TypeVar("T")


def arun(fn: Callable[[HerderClient], Awaitable[T]], url: str) -> T:
    async def main() -> T:
        # Not 0.5 s: under load ~8 a local connect can take longer, and the probe's error fails
        # the test (seen with test_operator_ranking). A stopped Redis still refuses at once.
        async with HerderClient(HerderSettings(redis_url=url, redis_connect_timeout=5.0)) as c:
            return await fn(c)

    return asyncio.run(main())


def queue_status(url: str) -> QueueStatus:
    """The test queue (`e2e`)'s status."""
    return arun(lambda c: c.status("e2e"), url)


def enqueue_sleeps(url: str, n: int, seconds: float) -> list[str]:
    """`n` jobs of the built-in `sleep` task on the test queue; their ids."""

    async def enqueue(c: HerderClient) -> list[str]:
        return [(await c.enqueue("e2e", "sleep", {"seconds": seconds})).id for _ in range(n)]

    return arun(enqueue, url)


def jobs(url: str, ids: list[str]) -> list[Job]:
    async def get(c: HerderClient) -> list[Job]:
        return [await c.get_job(i, "e2e") for i in ids]

    return arun(get, url)


def until(
    probe: Callable[[], T], ok: Callable[[T], bool], timeout: float, what: str, every: float = 0.25
) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if ok(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached within {timeout}s; last: {value!r}")
        time.sleep(every)


def tq_spec(redis_url: str, **over: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "queue": "e2e",
        "redis": {"url": redis_url},
        "worker": {"image": "herder:dev", "concurrency": 5},
        "minReplicas": 1,
        "maxReplicas": 4,
        "targetUtilization": 100,
        "scaleUp": {"stabilizationSeconds": 0},
        "scaleDown": {"stabilizationSeconds": 2, "cooldownSeconds": 3},
        "pollIntervalSeconds": 1,
        "drainTimeoutSeconds": 30,
    }
    spec.update(over)
    return spec


def create_peering(api: Any) -> None:
    """The peering object: the operator refuses to act unless it holds its lease."""
    from kubernetes import client as k8s

    peering = {
        "apiVersion": "kopf.dev/v1",
        "kind": "ClusterKopfPeering",
        "metadata": {"name": PEERING, "uid": str(uuid.uuid4())},
        "status": {},
    }
    k8s.CustomObjectsApi(api).create_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", peering)


@dataclass
class Kube:
    """The emulated API server through the kubernetes client, and the kubeconfig naming it."""

    api: Any
    kubeconfig: Path

    def create_tq(self, name: str, spec: dict[str, Any]) -> None:
        from kubernetes import client as k8s

        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "TaskQueue",
            # kmock is no API server: the harness fills what one would.
            "metadata": {
                "name": name,
                "namespace": NS,
                "uid": str(uuid.uuid4()),
                "generation": 1,
                "resourceVersion": "1",
                "creationTimestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            },
            "spec": spec,
        }
        k8s.CustomObjectsApi(self.api).create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, body)

    def patch_spec(self, name: str, patch: dict[str, Any]) -> None:
        from kubernetes import client as k8s

        k8s.CustomObjectsApi(self.api).patch_namespaced_custom_object(
            GROUP, VERSION, NS, PLURAL, name, {"spec": patch}, _content_type="application/merge-patch+json"
        )

    def tq(self, name: str) -> dict[str, Any]:
        from kubernetes import client as k8s

        api = k8s.CustomObjectsApi(self.api)
        result: dict[str, Any] = raw(api.get_namespaced_custom_object, GROUP, VERSION, NS, PLURAL, name)
        return result

    def status(self, name: str) -> dict[str, Any]:
        return dict(self.tq(name).get("status") or {})

    def condition(self, name: str, type_: str) -> dict[str, Any]:
        for c in self.status(name).get("conditions", []) or []:
            if c.get("type") == type_:
                return dict(c)
        return {}

    def deployment(self, name: str) -> dict[str, Any] | None:
        from kubernetes import client as k8s

        items = raw(k8s.AppsV1Api(self.api).list_namespaced_deployment, NS).get("items", [])
        return next((d for d in items if d["metadata"]["name"] == f"{name}-workers"), None)

    def replicas(self, name: str) -> int | None:
        dep = self.deployment(name)
        return None if dep is None else int(dep["spec"].get("replicas") or 0)

    def events(self) -> list[dict[str, Any]]:
        from kubernetes import client as k8s

        items: list[dict[str, Any]] = raw(k8s.CoreV1Api(self.api).list_namespaced_event, NS).get("items", [])
        return items


@dataclass
class Cluster(Kube):
    """The API with a fake kubelet running worker processes, and the operator in this process."""

    kubelet: Kubelet
    runner: KopfRunner

    def restart(self) -> None:
        """Stop the operator (as a pod deletion would) and start a new one in its place."""
        self.runner.__exit__(None, None, None)
        self.runner = start_runner()


def start_runner() -> KopfRunner:
    runner = KopfRunner(OPERATOR_ARGS, timeout=60)
    runner.__enter__()
    return runner


def spawn_operator(kubeconfig: Path, log_path: Path, **env: str) -> subprocess.Popen[bytes]:
    """The operator as `kopf run` in its own process, output (both streams) to `log_path`."""
    full_env = dict(os.environ, KUBECONFIG=str(kubeconfig), HERDER_METRICS_PORT="0", **env)
    with open(log_path, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "kopf", *OPERATOR_ARGS], env=full_env, stdout=out, stderr=subprocess.STDOUT
        )


def stop_operators(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM to every one still running, then wait for each: a SIGKILL after 30 s."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        wait_or_kill(p, 30)


def reconcile_steps(name: str) -> float:
    """Reconcile steps the in-process operator finished or failed for TaskQueue `name`, from its
    own metrics: an observable tick, so a test proves "nothing happened over N polls" without sleeping."""
    from herder_operator import metrics

    m = metrics.METRICS
    if m is None:
        return 0.0
    total = 0.0
    for family in m.registry.collect():
        if family.name not in (
            "herder_operator_reconcile_duration_seconds",
            "herder_operator_reconcile_errors",
        ):
            continue
        for s in family.samples:
            if s.labels.get("taskqueue") == f"{NS}/{name}" and s.name.endswith(("_count", "_total")):
                total += s.value
    return total
