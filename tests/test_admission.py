"""No confused deputy: what a TaskQueue author may make the operator do on their behalf.

Pure checks on the built Deployment, and `admit` against kmock's API over HTTP (real Secrets,
real kubernetes client)."""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e.kube_harness import KmockThread
from herder_operator.admission import host_allowed, pod_violations, secret_names, service_account_problems
from herder_operator.config import OperatorConfig
from herder_operator.credentials import Refused, admit
from herder_operator.pools.kubernetes import build_deployment
from herder_operator.spec import TaskQueueSpec

OWNER = {"metadata": {"name": "jobs", "uid": "u-1"}}


def spec(**over: Any) -> TaskQueueSpec:
    raw: dict[str, Any] = {
        "queue": "jobs",
        "redis": {"url": "redis://redis:6379/0"},
        "worker": {"image": "herder:1"},
    }
    raw.update(over)
    return TaskQueueSpec.model_validate(raw)


def pod_of(s: TaskQueueSpec) -> dict[str, Any]:
    pod: dict[str, Any] = build_deployment(s, OWNER, namespace="ns")["spec"]["template"]["spec"]
    return pod


HOSTILE_TEMPLATE: dict[str, Any] = {
    "spec": {
        "hostPID": True,
        "hostNetwork": True,
        "serviceAccountName": "cluster-admin-sa",
        "containers": [
            {
                "name": "w",
                "securityContext": {
                    "privileged": True,
                    "runAsUser": 0,
                    "capabilities": {"add": ["SYS_ADMIN"]},
                },
                "volumeMounts": [{"name": "root", "mountPath": "/host"}],
            }
        ],
        "volumes": [{"name": "root", "hostPath": {"path": "/"}}],
    }
}


def test_the_operators_own_worker_pod_meets_the_restricted_standard() -> None:
    sidecar = {
        "spec": {"containers": [{"name": "w"}, {"name": "side", "image": "s"}], "initContainers": [{}]}
    }
    for s in (spec(), spec(worker={"podTemplate": sidecar})):
        pod = pod_of(s)
        assert pod_violations(pod) == []
        assert service_account_problems(pod, []) == []


def test_a_hostile_pod_template_is_named_field_by_field() -> None:
    pod = pod_of(spec(worker={"podTemplate": HOSTILE_TEMPLATE}))
    found = "; ".join(pod_violations(pod))
    for needle in ("hostPID", "hostNetwork", "privileged", "runAsUser: 0", "SYS_ADMIN", "hostPath"):
        assert needle in found, (needle, found)
    assert service_account_problems(pod, []) == [
        "serviceAccountName: cluster-admin-sa is not in the operator's allowed ServiceAccounts"
    ]
    assert service_account_problems(pod, ["cluster-admin-sa"]) == []
    token = pod_of(spec(worker={"podTemplate": {"spec": {"automountServiceAccountToken": True}}}))
    assert service_account_problems(token, []) != []
    unconfined = {"spec": {"securityContext": {"seccompProfile": {"type": "Unconfined"}}}}
    assert pod_violations(pod_of(spec(worker={"podTemplate": unconfined})))


def test_secret_names_finds_every_way_a_pod_reads_a_secret() -> None:
    template = {
        "spec": {
            "containers": [{"envFrom": [{"secretRef": {"name": "a"}}]}],
            "initContainers": [
                {"env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "b", "key": "k"}}}]}
            ],
            "volumes": [
                {"name": "v1", "secret": {"secretName": "c"}},
                {"name": "v2", "projected": {"sources": [{"secret": {"name": "d"}}]}},
            ],
        }
    }
    s = spec(redis={"secretRef": {"name": "creds"}}, worker={"podTemplate": template})
    assert secret_names(pod_of(s)) == {"a", "b", "c", "d", "creds"}


@pytest.mark.parametrize(
    ("url", "patterns", "ok"),
    [
        ("redis://redis.herder.svc:6379/0", [], True),
        ("redis://redis.herder.svc:6379/0", ["redis.herder.svc"], True),
        ("redis://REDIS.herder.svc/0", ["redis.herder.svc:6379"], True),
        ("redis://redis.herder.svc:6380/0", ["redis.herder.svc:6379"], False),
        ("rediss://a.redis.example:6379", ["*.redis.example"], True),
        ("redis://attacker.example:6379", ["*.redis.example", "redis"], False),
        ("redis://user:pw@attacker.example:6379", ["redis"], False),
    ],
)
def test_redis_host_allow_list(url: str, patterns: list[str], ok: bool) -> None:
    assert host_allowed(url, patterns) is ok


# ---- admit() against a Kubernetes API ------------------------------------------------------------


@pytest.fixture
def core(tmp_path: Path) -> Iterator[Any]:
    from kubernetes import client as k8s
    from kubernetes import config

    server = KmockThread().start()
    try:
        api = config.new_client_from_config(str(server.kubeconfig(tmp_path / "kubeconfig")))
        yield k8s.CoreV1Api(api)
    finally:
        server.stop()


def put_secret(core: Any, name: str, data: dict[str, str], labelled: bool) -> None:
    labels = {"herder.dev/credentials": "true"} if labelled else {}
    core.create_namespaced_secret(
        "ns",
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": "ns", "labels": labels, "uid": str(uuid.uuid4())},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
        },
    )


def run_admit(core: Any, s: TaskQueueSpec, **config: Any) -> Any:
    return asyncio.run(admit(s, "ns", "jobs", core, OperatorConfig(**config)))


def test_admit_reads_only_secrets_labelled_for_herder(core: Any) -> None:
    put_secret(core, "other-app-db", {"password": "not-yours"}, labelled=False)
    put_secret(core, "herder-redis", {"username": "w", "password": "pw", "url": "redis://r:6379/0"}, True)
    with pytest.raises(Refused, match=r"Secret other-app-db .* not labelled herder.dev/credentials=true"):
        run_admit(core, spec(redis={"url": "redis://r:6379/0", "secretRef": {"name": "other-app-db"}}))
    with pytest.raises(Refused, match=r"Secret missing .* not found"):
        run_admit(core, spec(redis={"url": "redis://r:6379/0", "secretRef": {"name": "missing"}}))
    # A labelled Redis Secret does not open the others: env, envFrom and volumes are checked too.
    sneaky = {"spec": {"containers": [{"envFrom": [{"secretRef": {"name": "other-app-db"}}]}]}}
    with pytest.raises(Refused, match="other-app-db \\(used by the worker pod\\)"):
        run_admit(core, spec(redis={"secretRef": {"name": "herder-redis"}}, worker={"podTemplate": sneaky}))
    ok = run_admit(core, spec(redis={"secretRef": {"name": "herder-redis"}}))
    assert ok.url_in_secret and ok.settings.redis_url == "redis://r:6379/0"
    assert ok.settings.redis_username == "w" and ok.settings.redis_password.get_secret_value() == "pw"


def test_credentials_go_only_to_their_own_host(core: Any) -> None:
    put_secret(core, "herder-redis", {"password": "pw", "url": "redis://r:6379/0"}, True)
    put_secret(core, "bare", {"password": "pw"}, True)
    with pytest.raises(Refused, match="differs from the url in Secret herder-redis"):
        run_admit(core, spec(redis={"url": "redis://evil:6379/0", "secretRef": {"name": "herder-redis"}}))
    with pytest.raises(Refused, match="allowed Redis hosts"):
        run_admit(
            core,
            spec(redis={"url": "redis://evil:6379/0", "secretRef": {"name": "bare"}}),
            redis_allowed_hosts=["r"],
        )
    with pytest.raises(Refused, match="no Redis url"):
        run_admit(core, spec(redis={"secretRef": {"name": "bare"}}))
    assert run_admit(core, spec(redis={"secretRef": {"name": "herder-redis"}}), redis_allowed_hosts=["r"])


def test_pod_policy_is_the_operators_choice(core: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    hostile = spec(worker={"podTemplate": HOSTILE_TEMPLATE})
    with pytest.raises(Refused, match="privileged") as info:
        run_admit(core, hostile)
    assert "hostPath" in str(info.value) and "cluster-admin-sa" in str(info.value)
    monkeypatch.setenv("HERDER_OPERATOR_ALLOW_PRIVILEGED_PODS", "true")
    monkeypatch.setenv("HERDER_OPERATOR_ALLOWED_SERVICE_ACCOUNTS", "builder, cluster-admin-sa")
    config = OperatorConfig()
    assert config.allowed_service_accounts == ["builder", "cluster-admin-sa"]
    assert asyncio.run(admit(hostile, "ns", "jobs", core, config)).settings.redis_url


def test_a_cluster_queue_gets_cluster_settings_or_a_clear_refusal(core: Any) -> None:
    ok = run_admit(core, spec(redis={"url": "redis://redis-cluster:6379/0", "cluster": True}))
    assert ok.settings.redis_cluster
    assert not run_admit(core, spec(redis={"url": "redis://r:6379/0"})).settings.redis_cluster
    with pytest.raises(Refused, match="only database 0"):
        run_admit(core, spec(redis={"url": "redis://redis-cluster:6379/3", "cluster": True}))
