"""The pure Deployment builder: ownership, restricted security, drain-aware grace, Redis from a Secret."""

from __future__ import annotations

from typing import Any

from herder_operator.pools.kubernetes import DELETION_COST, build_deployment
from herder_operator.spec import TaskQueueSpec

OWNER = {"apiVersion": "herder.dev/v1alpha1", "kind": "TaskQueue", "metadata": {"name": "jobs", "uid": "u-1"}}


def spec(**over: Any) -> TaskQueueSpec:
    raw: dict[str, Any] = {
        "queue": "jobs",
        "redis": {"url": "redis://redis:6379/0", "secretRef": {"name": "redis-creds"}},
        "worker": {"image": "herder:1", "concurrency": 4, "app": "myapp.tasks"},
        "drainTimeoutSeconds": 120,
    }
    raw.update(over)
    return TaskQueueSpec.model_validate(raw)


def container(dep: dict[str, Any]) -> dict[str, Any]:
    c: dict[str, Any] = dep["spec"]["template"]["spec"]["containers"][0]
    return c


def test_owned_labelled_and_unscaled() -> None:
    dep = build_deployment(spec(), OWNER, namespace="ns")
    meta = dep["metadata"]
    assert meta["name"] == "jobs-workers" and meta["namespace"] == "ns"
    ref = meta["ownerReferences"][0]
    assert (ref["kind"], ref["uid"], ref["controller"]) == ("TaskQueue", "u-1", True)
    assert dep["spec"]["selector"]["matchLabels"] == {"herder.dev/taskqueue": "jobs"}
    assert dep["spec"]["template"]["metadata"]["labels"]["herder.dev/taskqueue"] == "jobs"
    assert "replicas" not in dep["spec"]  # updates never fight the autoscaler
    assert build_deployment(spec(), OWNER, namespace="ns", replicas=3)["spec"]["replicas"] == 3
    assert DELETION_COST == "controller.kubernetes.io/pod-deletion-cost"


def test_restricted_pod_security() -> None:
    pod = build_deployment(spec(), OWNER, namespace="ns")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container({"spec": {"template": {"spec": pod}}})["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert pod["automountServiceAccountToken"] is False
    assert {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}} in pod["volumes"]
    # Claude Code workspaces get their own writable emptyDir under a root-owned image directory.
    assert {"name": "claude-workspaces", "emptyDir": {}} in pod["volumes"]
    [c] = pod["containers"]
    assert {"name": "claude-workspaces", "mountPath": "/var/lib/herder/claude"} in c["volumeMounts"]


def test_default_resources_unless_set() -> None:
    c = container(build_deployment(spec(), OWNER, namespace="ns"))
    assert c["resources"]["requests"]["memory"] == "512Mi" and c["resources"]["limits"]["memory"] == "2Gi"
    mine = {"requests": {"cpu": "2"}, "limits": {"memory": "8Gi"}}
    c = container(build_deployment(spec(worker={"image": "i", "resources": mine}), OWNER, namespace="ns"))
    assert c["resources"] == mine
    template = {"spec": {"containers": [{"name": "w", "resources": {"requests": {"cpu": "1"}}}]}}
    c = container(build_deployment(spec(worker={"podTemplate": template}), OWNER, namespace="ns"))
    assert c["resources"] == {"requests": {"cpu": "1"}}


def test_grace_follows_drain_timeout_and_worker_args() -> None:
    dep = build_deployment(spec(), OWNER, namespace="ns")
    assert dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 135
    c = container(dep)
    args = c["args"]
    assert args[:2] == ["worker", "jobs"]
    assert args[args.index("--concurrency") + 1] == "4"
    assert args[args.index("--drain-timeout") + 1] == "120"
    assert args[args.index("--name") + 1] == "$(POD_NAME)"
    assert args[args.index("--app") + 1] == "myapp.tasks"
    assert {"name": "metrics", "containerPort": 9100, "protocol": "TCP"} in c["ports"]


def test_redis_credentials_come_from_the_secret() -> None:
    env = {e["name"]: e for e in container(build_deployment(spec(), OWNER, namespace="ns"))["env"]}
    assert env["HERDER_REDIS_URL"]["value"] == "redis://redis:6379/0"
    assert env["HERDER_REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "redis-creds",
        "key": "password",
        "optional": True,
    }
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    url_from_secret = spec(redis={"secretRef": {"name": "s"}, "tls": {"enabled": True, "secretName": "ca"}})
    dep = build_deployment(url_from_secret, OWNER, namespace="ns", url_in_secret=True)
    env = {e["name"]: e for e in container(dep)["env"]}
    assert env["HERDER_REDIS_URL"]["valueFrom"]["secretKeyRef"]["key"] == "url"
    assert env["HERDER_REDIS_TLS_CA_CERTS"]["value"] == "/etc/herder/tls/ca.crt"
    assert {"name": "redis-tls", "secret": {"secretName": "ca"}} in dep["spec"]["template"]["spec"]["volumes"]


def test_a_cluster_queue_tells_its_workers() -> None:
    dep = build_deployment(spec(redis={"url": "redis://rc:6379/0", "cluster": True}), OWNER, namespace="ns")
    env = {e["name"]: e for e in container(dep)["env"]}
    assert env["HERDER_REDIS_CLUSTER"]["value"] == "true"
    plain = {e["name"] for e in container(build_deployment(spec(), OWNER, namespace="ns"))["env"]}
    assert "HERDER_REDIS_CLUSTER" not in plain
    # the local pool (herder up, e2e) tells its worker processes the same
    from herder_operator.pools.local import LocalPool

    local = LocalPool(
        "q", spec(redis={"url": "redis://rc:6379/0", "cluster": True}), "redis://rc:6379/0", env={}
    )
    assert local.environment()["HERDER_REDIS_CLUSTER"] == "true"
    assert "HERDER_REDIS_CLUSTER" not in LocalPool("q", spec(), "redis://r:6379/0", env={}).environment()


def test_pod_template_is_completed_not_replaced() -> None:
    template = {
        "metadata": {"labels": {"team": "a"}},
        "spec": {
            "containers": [
                {"name": "main", "image": "custom:1", "env": [{"name": "X", "value": "1"}]},
                {"name": "side", "image": "s"},
            ],
            "priorityClassName": "batch",
        },
    }
    dep = build_deployment(spec(worker={"podTemplate": template}), OWNER, namespace="ns")
    pod = dep["spec"]["template"]
    assert (
        pod["metadata"]["labels"]["team"] == "a" and pod["metadata"]["labels"]["herder.dev/queue"] == "jobs"
    )
    assert pod["spec"]["priorityClassName"] == "batch"
    main, side = pod["spec"]["containers"]
    assert main["image"] == "custom:1" and main["args"][0] == "worker"
    assert {"name": "X", "value": "1"} in main["env"] and side["image"] == "s"
    # Sidecars get the restricted defaults they leave unset (the Pod Security Standard covers them).
    assert side["securityContext"]["allowPrivilegeEscalation"] is False
    assert "readOnlyRootFilesystem" not in side["securityContext"]
    assert template["spec"]["containers"][0].get("args") is None  # the spec's template is not mutated
