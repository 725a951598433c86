"""The real operator (kopf, via KopfRunner) against kmock's Kubernetes API over HTTP, with a fake
kubelet running `herder worker` processes and real Redis."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from kopf.testing import KopfRunner
from kube_harness import KmockThread, Kubelet, raw

from herder.client import HerderClient
from herder.models import Job, JobState
from herder.settings import HerderSettings
from redis_proc import RedisProc

pytestmark = pytest.mark.timeout(240)

NS = "default"
GROUP, VERSION, PLURAL = "herder.dev", "v1alpha1", "taskqueues"
T = TypeVar("T")


def arun(fn: Callable[[HerderClient], Awaitable[T]], url: str) -> T:
    async def main() -> T:
        async with HerderClient(HerderSettings(redis_url=url, redis_connect_timeout=0.5)) as c:
            return await fn(c)

    return asyncio.run(main())


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


@dataclass
class Cluster:
    api: Any
    kubelet: Kubelet
    runner: KopfRunner

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


@pytest.fixture
def cluster(tmp_path: Path, worker_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Cluster]:
    from kubernetes import client as k8s
    from kubernetes import config

    server = KmockThread().start()
    kubeconfig = server.kubeconfig(tmp_path / "kubeconfig")
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    # The client reads KUBECONFIG once, at import; kopf's login uses this default location.
    monkeypatch.setattr("kubernetes.config.kube_config.KUBE_CONFIG_DEFAULT_LOCATION", str(kubeconfig))
    api = config.new_client_from_config(str(kubeconfig))
    # Peering: the operator refuses to act unless it holds the peering object's lease.
    peering = {
        "apiVersion": "kopf.dev/v1",
        "kind": "ClusterKopfPeering",
        "metadata": {"name": "herder-operator", "uid": str(uuid.uuid4())},
        "status": {},
    }
    k8s.CustomObjectsApi(api).create_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", peering)
    kubelet = Kubelet(api, NS, worker_env, tmp_path / "pods").start()
    args = ["run", "-m", "herder_operator.handlers", "--all-namespaces", "--peering", "herder-operator"]
    try:
        with KopfRunner(args, timeout=60) as runner:
            yield Cluster(api, kubelet, runner)
    finally:
        kubelet.stop()
        server.stop()


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


def test_burst_scales_up_to_max_and_back_without_interrupting(
    cluster: Cluster, redis_server: RedisProc
) -> None:
    url = redis_server.url
    cluster.create_tq("burst", tq_spec(url))
    until(lambda: cluster.replicas("burst"), lambda n: n == 1, 30, "Deployment created at minReplicas")
    dep = cluster.deployment("burst")
    assert dep is not None
    assert dep["metadata"]["ownerReferences"][0]["kind"] == "TaskQueue"
    assert dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 45
    until(
        lambda: arun(lambda c: c.status("e2e"), url),
        lambda s: len(s.workers) == 1,
        30,
        "first worker registered",
    )

    async def enqueue(c: HerderClient) -> list[str]:
        return [(await c.enqueue("e2e", "sleep", {"seconds": 1.0})).id for _ in range(50)]

    ids = arun(enqueue, url)
    until(lambda: cluster.replicas("burst"), lambda n: n == 4, 60, "scaled up to maxReplicas")

    async def jobs(c: HerderClient) -> list[Job]:
        return [await c.get_job(i, "e2e") for i in ids]

    done = until(
        lambda: arun(jobs, url),
        lambda js: all(j.state == JobState.succeeded for j in js),
        120,
        "all 50 succeeded",
    )
    assert all(j.attempts == 1 and not j.errors for j in done), [j.errors for j in done if j.errors]
    until(lambda: cluster.replicas("burst"), lambda n: n == 1, 60, "back to minReplicas")
    until(lambda: len(cluster.kubelet.pods), lambda n: n == 1, 30, "one pod left")

    k = cluster.kubelet
    assert len(k.deleted) == 3 and not k.killed, (k.deleted, k.killed)
    # The ReplicaSet stand-in (the controller's full ranking) deleted only pods the operator marked.
    assert all(d.cost < 0 for d in k.deleted), k.deleted
    assert k.restarts == 0 and not k.errors, (k.restarts, k.errors)
    until(lambda: cluster.condition("burst", "Ready").get("status"), lambda s: s == "True", 30, "Ready")
    st = cluster.status("burst")
    assert st["desiredReplicas"] == 1 and st["phase"] == "Ready" and st["lastScaleReason"]
    assert cluster.condition("burst", "RedisReachable")["status"] == "True"
    reasons = {e.get("reason") for e in cluster.events()}
    assert {"Scaled", "Draining"} <= reasons, reasons


def test_invalid_taskqueue_gets_a_condition_and_no_deployment(
    cluster: Cluster, redis_server: RedisProc
) -> None:
    cluster.create_tq("bad", tq_spec(redis_server.url, minReplicas=5, maxReplicas=2))
    cond = until(lambda: cluster.condition("bad", "Ready"), lambda c: bool(c), 30, "Ready condition")
    assert cond["status"] == "False" and cond["reason"] == "InvalidSpec"
    assert "minReplicas" in cond["message"]
    assert cluster.status("bad")["phase"] == "Invalid"
    events = [e for e in cluster.events() if e.get("reason") == "InvalidSpec"]
    assert events and events[0]["type"] == "Warning"
    # A valid one created after it is handled, so the operator is alive; the invalid one still has nothing.
    cluster.create_tq("good", tq_spec(redis_server.url))
    until(lambda: cluster.replicas("good"), lambda n: n == 1, 30, "valid TaskQueue handled")
    assert cluster.deployment("bad") is None


def test_redis_unreachable_reports_and_holds_replicas(
    cluster: Cluster, tmp_path: Path, redis_server: RedisProc
) -> None:
    private = RedisProc(tmp_path / "outage").start()
    try:
        cluster.create_tq("outage", tq_spec(private.url, minReplicas=2))
        until(lambda: cluster.replicas("outage"), lambda n: n == 2, 30, "two replicas")
        until(
            lambda: cluster.condition("outage", "RedisReachable").get("status"),
            lambda s: s == "True",
            30,
            "RedisReachable",
        )
        private.stop()
        # minReplicas 0 with an idle queue would scale down, if the operator could see the queue.
        cluster.patch_spec(
            "outage", {"minReplicas": 0, "scaleDown": {"stabilizationSeconds": 0, "cooldownSeconds": 0}}
        )
        cond = until(
            lambda: cluster.condition("outage", "RedisReachable"),
            lambda c: c.get("status") == "False",
            30,
            "RedisReachable=False",
        )
        assert cond["reason"] == "RedisUnreachable"
        time.sleep(4)  # several poll intervals: give a wrong scale-down every chance to happen
        assert cluster.replicas("outage") == 2
        assert cluster.status("outage")["phase"] == "Degraded"
        assert not cluster.kubelet.deleted
        assert any(e.get("reason") == "RedisUnreachable" for e in cluster.events())
    finally:
        private.stop()


def test_rejected_deployment_shows_as_condition_and_event_naming_the_field(
    cluster: Cluster, redis_server: RedisProc
) -> None:
    # Valid for the CRD (podTemplate is free-form) but the API server refuses the Deployment (422).
    template = {"spec": {"containers": [{"name": "Bad_Name"}]}}
    spec = tq_spec(redis_server.url, worker={"image": "herder:dev", "podTemplate": template})
    cluster.create_tq("rejected", spec)
    cond = until(
        lambda: cluster.condition("rejected", "Ready"),
        lambda c: c.get("reason") == "DeploymentRejected",
        30,
        "DeploymentRejected condition",
    )
    assert cond["status"] == "False"
    assert "spec.template.spec.containers[0].name" in cond["message"], cond
    assert cluster.status("rejected")["phase"] == "Degraded"
    assert cluster.condition("rejected", "Degraded")["status"] == "True"
    warnings = [e for e in cluster.events() if e.get("reason") == "DeploymentRejected"]
    assert warnings and warnings[0]["type"] == "Warning"
    assert "spec.template.spec.containers[0].name" in warnings[0]["message"]
    # Retried with backoff (the message counts the retries), one Event per distinct failure.
    until(
        lambda: cluster.condition("rejected", "Ready").get("message", ""),
        lambda m: "retry 2 in" in m or "retry 3 in" in m,
        30,
        "a retry",
    )
    assert len([e for e in cluster.events() if e.get("reason") == "DeploymentRejected"]) == 1
    assert cluster.deployment("rejected") is None
    # Fixing the template recovers: Deployment created, Ready again, a Recovered Event.
    cluster.patch_spec(
        "rejected", {"worker": {"podTemplate": {"spec": {"containers": [{"name": "worker"}]}}}}
    )
    until(lambda: cluster.replicas("rejected"), lambda n: n == 1, 30, "Deployment created after the fix")
    until(
        lambda: cluster.condition("rejected", "Ready").get("reason"),
        lambda r: r != "DeploymentRejected",
        30,
        "condition cleared",
    )
    assert any(e.get("reason") == "Recovered" for e in cluster.events())
