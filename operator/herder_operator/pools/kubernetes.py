"""Kubernetes pool: one owned Deployment per TaskQueue.

`build_deployment` is pure (spec -> manifest); `KubernetesPool` applies it and implements the
Pool protocol with the official client (sync, run in a thread so kopf's loop stays free).
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Sequence
from typing import Any

from herder_operator.admission import PASSWORD_KEY, URL_KEY, USERNAME_KEY
from herder_operator.pools.ranking import DELETION_COST as DELETION_COST
from herder_operator.pools.ranking import (
    DRAIN_COST,
    REMOVE_COST,
    PodRank,
    at_removal,
    rank_of,
    removal_blocker,
)
from herder_operator.spec import GROUP, TaskQueueSpec

LABEL_TQ = f"{GROUP}/taskqueue"
LABEL_QUEUE = f"{GROUP}/queue"
GRACE_SLACK_SECONDS = 15  # beyond the drain timeout: time to hand jobs back and leave the registry
WORKER_UID = 65532  # the image's user (Dockerfile), the distroless "nonroot" uid
# The client defaults to JSON-Patch for every PATCH; our bodies are merge patches.
MERGE_PATCH = "application/merge-patch+json"
TLS_MOUNT = "/etc/herder/tls"
# Defaults when neither spec.worker.resources nor the podTemplate's container sets any: a pod with
# no requests is scheduled anywhere and evicted first; no limit lets one runaway task take a node.
# No CPU limit (throttling hurts latency, requests already share CPU fairly).
DEFAULT_RESOURCES: dict[str, dict[str, str]] = {
    "requests": {"cpu": "250m", "memory": "512Mi", "ephemeral-storage": "256Mi"},
    "limits": {"memory": "2Gi", "ephemeral-storage": "2Gi"},
}
TMP_SIZE_LIMIT = "1Gi"  # /tmp is writable (read-only root): bounded, so it cannot fill the node's disk


def deployment_name(tq_name: str) -> str:
    return f"{tq_name}-workers"


def labels_for(tq_name: str, spec: TaskQueueSpec) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "herder-worker",
        "app.kubernetes.io/instance": tq_name,
        # The chart's worker NetworkPolicy and PodMonitor select on component=worker.
        "app.kubernetes.io/component": "worker",
        "app.kubernetes.io/managed-by": "herder-operator",
        LABEL_TQ: tq_name,
        LABEL_QUEUE: spec.queue,
    }


def _redis_env(spec: TaskQueueSpec, url_in_secret: bool) -> list[dict[str, Any]]:
    """Redis settings for the worker. Credentials come only from the fixed keys of the Secret the
    spec names (admission checked that its owner labelled it for Herder)."""
    r = spec.redis
    env: list[dict[str, Any]] = []
    ref = r.secret_ref
    if ref is not None and url_in_secret:
        env.append(
            {
                "name": "HERDER_REDIS_URL",
                "valueFrom": {"secretKeyRef": {"name": ref.name, "key": URL_KEY}},
            }
        )
    elif r.url:
        env.append({"name": "HERDER_REDIS_URL", "value": r.url})
    if ref is not None:
        for var, key in (("HERDER_REDIS_USERNAME", USERNAME_KEY), ("HERDER_REDIS_PASSWORD", PASSWORD_KEY)):
            # optional: an ACL user may have no username key (default user) in the Secret.
            env.append(
                {"name": var, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": key, "optional": True}}}
            )
    tls = r.tls
    if tls is not None and tls.enabled:
        env.append({"name": "HERDER_REDIS_TLS", "value": "true"})
        env.append(
            {"name": "HERDER_REDIS_TLS_CHECK_HOSTNAME", "value": "true" if tls.check_hostname else "false"}
        )
        if tls.secret_name:
            env.append({"name": "HERDER_REDIS_TLS_CA_CERTS", "value": f"{TLS_MOUNT}/ca.crt"})
    if r.key_prefix:
        env.append({"name": "HERDER_KEY_PREFIX", "value": r.key_prefix})
    if r.cluster:
        env.append({"name": "HERDER_REDIS_CLUSTER", "value": "true"})
    return env


def _args(spec: TaskQueueSpec) -> list[str]:
    w = spec.worker
    args = [
        "worker",
        spec.queue,
        "--concurrency",
        str(w.concurrency),
        "--name",
        "$(POD_NAME)",  # the worker id is the pod name: the operator maps registry entries to pods
        "--drain-timeout",
        str(spec.drain_timeout_seconds),
        "--metrics-port",
        str(w.metrics_port),
    ]
    if w.app:
        args += ["--app", w.app]
    for cap in w.capabilities:
        args += ["--capability", cap]
    return args


OUR_VOLUMES = ("tmp", "claude-workspaces", "redis-tls")
CLAUDE_WORKSPACES = "/var/lib/herder/claude"  # ClaudeCodeSettings.workspace_root's default

RESTRICTED_CONTAINER: dict[str, Any] = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
RESTRICTED_POD: dict[str, Any] = {
    "runAsNonRoot": True,
    "runAsUser": WORKER_UID,
    "runAsGroup": WORKER_UID,
    "fsGroup": WORKER_UID,
    "seccompProfile": {"type": "RuntimeDefault"},
}


def _restricted(c: dict[str, Any]) -> dict[str, Any]:
    """Fill the restricted defaults a container leaves unset (explicit values stay, for admission)."""
    c = copy.deepcopy(c)
    sc = c.setdefault("securityContext", {})
    for k, v in RESTRICTED_CONTAINER.items():
        if k != "readOnlyRootFilesystem":  # not part of the standard; a sidecar may need to write
            sc.setdefault(k, copy.deepcopy(v))
    return c


def _worker_container(spec: TaskQueueSpec, base: dict[str, Any], url_in_secret: bool) -> dict[str, Any]:
    w = spec.worker
    c = copy.deepcopy(base)
    c.setdefault("name", "worker")
    if w.image:
        c["image"] = w.image
    if w.image_pull_policy:
        c["imagePullPolicy"] = w.image_pull_policy
    c.setdefault("command", ["herder"])
    c.setdefault("args", _args(spec))
    ours = [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        *_redis_env(spec, url_in_secret),
    ]
    ours += [e.dump() for e in w.env]
    names = {e["name"] for e in ours}
    c["env"] = ours + [e for e in c.get("env", []) if e.get("name") not in names]
    ports = [p for p in c.get("ports", []) if p.get("name") != "metrics"]
    c["ports"] = [*ports, {"name": "metrics", "containerPort": w.metrics_port, "protocol": "TCP"}]
    if w.resources is not None:
        c["resources"] = w.resources.dump()
    elif not c.get("resources"):
        c["resources"] = copy.deepcopy(DEFAULT_RESOURCES)
    # /readyz fails while the worker drains, so a drained pod is not Ready: the ReplicaSet ranks
    # readiness above pod-deletion-cost (docs/scaling.md, "Which pod the ReplicaSet deletes").
    c.setdefault(
        "readinessProbe",
        {"httpGet": {"path": "/readyz", "port": "metrics"}, "periodSeconds": 5, "failureThreshold": 1},
    )
    sc = c.setdefault("securityContext", {})
    for k, v in RESTRICTED_CONTAINER.items():
        sc.setdefault(k, copy.deepcopy(v))
    mounts = [m for m in c.get("volumeMounts", []) if m.get("name") not in OUR_VOLUMES]
    mounts.append({"name": "tmp", "mountPath": "/tmp"})  # the root filesystem is read-only
    # Claude Code workspaces: under a root-owned directory of the image, never under /tmp.
    mounts.append({"name": "claude-workspaces", "mountPath": CLAUDE_WORKSPACES})
    if spec.redis.tls is not None and spec.redis.tls.secret_name:
        mounts.append({"name": "redis-tls", "mountPath": TLS_MOUNT, "readOnly": True})
    c["volumeMounts"] = mounts
    return c


def build_deployment(
    spec: TaskQueueSpec,
    owner: dict[str, Any],
    *,
    namespace: str,
    replicas: int | None = None,
    url_in_secret: bool = False,
) -> dict[str, Any]:
    """The worker Deployment for a TaskQueue. `owner` is the TaskQueue (name, uid, apiVersion, kind).

    `replicas` None leaves it out, so an update never fights the autoscaler.
    """
    name = owner["metadata"]["name"] if "metadata" in owner else owner["name"]
    uid = owner["metadata"]["uid"] if "metadata" in owner else owner["uid"]
    labels = labels_for(name, spec)
    w = spec.worker
    template: dict[str, Any] = copy.deepcopy(w.pod_template) if w.pod_template else {}
    meta = template.setdefault("metadata", {})
    meta["labels"] = {**meta.get("labels", {}), **w.pod_labels, **labels}
    annotations = {**meta.get("annotations", {}), **w.pod_annotations}
    annotations.setdefault("prometheus.io/scrape", "true")
    annotations.setdefault("prometheus.io/port", str(w.metrics_port))
    meta["annotations"] = annotations
    pod = template.setdefault("spec", {})
    containers = pod.get("containers") or [{}]
    pod["containers"] = [
        _worker_container(spec, containers[0], url_in_secret),
        *(_restricted(c) for c in containers[1:]),
    ]
    if pod.get("initContainers"):
        pod["initContainers"] = [_restricted(c) for c in pod["initContainers"]]
    pod["terminationGracePeriodSeconds"] = spec.drain_timeout_seconds + GRACE_SLACK_SECONDS
    pod.setdefault("automountServiceAccountToken", False)  # workers never call the Kubernetes API
    if w.service_account_name:
        pod["serviceAccountName"] = w.service_account_name
    if w.node_selector:
        pod["nodeSelector"] = {**pod.get("nodeSelector", {}), **w.node_selector}
    if w.tolerations:
        pod["tolerations"] = [*pod.get("tolerations", []), *w.tolerations]
    psc = pod.setdefault("securityContext", {})
    for k, v in RESTRICTED_POD.items():
        psc.setdefault(k, copy.deepcopy(v))
    volumes = [v for v in pod.get("volumes", []) if v.get("name") not in OUR_VOLUMES]
    volumes.append({"name": "tmp", "emptyDir": {"sizeLimit": TMP_SIZE_LIMIT}})
    volumes.append({"name": "claude-workspaces", "emptyDir": {}})
    if spec.redis.tls is not None and spec.redis.tls.secret_name:
        volumes.append({"name": "redis-tls", "secret": {"secretName": spec.redis.tls.secret_name}})
    pod["volumes"] = volumes
    dep_spec: dict[str, Any] = {
        "selector": {"matchLabels": {LABEL_TQ: name}},
        # New pods first, old ones drain on SIGTERM: a rollout never leaves the queue unserved.
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}},
        "template": template,
    }
    if replicas is not None:
        dep_spec["replicas"] = replicas
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": deployment_name(name),
            "namespace": namespace,
            "labels": labels,
            "ownerReferences": [
                {
                    "apiVersion": owner.get("apiVersion", f"{GROUP}/v1alpha1"),
                    "kind": owner.get("kind", "TaskQueue"),
                    "name": name,
                    "uid": uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": dep_spec,
    }


class KubernetesPool:
    """The Pool protocol over a Deployment and its pods."""

    def __init__(self, api: Any, namespace: str, tq_name: str, spec: TaskQueueSpec) -> None:
        from kubernetes import client as k8s

        # Any: the client's generated annotations reject the plain dict bodies we send.
        self.apps: Any = k8s.AppsV1Api(api)
        self.core: Any = k8s.CoreV1Api(api)
        self.namespace = namespace
        self.tq_name = tq_name
        self.name = deployment_name(tq_name)
        self.spec = spec
        self.url_in_secret = False  # set by the handlers once they have read the Secret
        self._marked: set[str] = set()  # pods carrying DRAIN_COST, as of the last members()
        # Pods carrying REMOVE_COST (given by scale_to): mark() leaves them alone until they are
        # gone, as the ReplicaSet may act after our next step.
        self._removing: set[str] = set()

    async def ensure(self, owner: dict[str, Any]) -> bool:
        """Create the Deployment, or bring its template up to date. Returns True when created."""
        from kubernetes.client.exceptions import ApiException

        body = build_deployment(self.spec, owner, namespace=self.namespace, url_in_secret=self.url_in_secret)
        try:
            await asyncio.to_thread(self.apps.read_namespaced_deployment, self.name, self.namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
            body["spec"]["replicas"] = self.spec.min_replicas
            try:
                await asyncio.to_thread(self.apps.create_namespaced_deployment, self.namespace, body)
                return True
            except ApiException as exc:
                if exc.status != 409:
                    raise
                body["spec"].pop("replicas")  # created meanwhile (another handler): update it instead
        # Merge patch without replicas: the template follows the spec, the count stays ours.
        await asyncio.to_thread(
            self.apps.patch_namespaced_deployment, self.name, self.namespace, body, _content_type=MERGE_PATCH
        )
        return False

    async def replicas(self) -> int:
        dep = await asyncio.to_thread(self.apps.read_namespaced_deployment, self.name, self.namespace)
        return int(dep.spec.replicas or 0)

    async def _pods(self) -> list[Any]:
        pods = await asyncio.to_thread(
            self.core.list_namespaced_pod, self.namespace, label_selector=f"{LABEL_TQ}={self.tq_name}"
        )
        out = []
        for p in pods.items:
            meta = p.metadata
            if meta is None or (meta.labels or {}).get(LABEL_TQ) != self.tq_name:
                continue  # also checked here: not every API (or emulator) honours the selector
            if meta.deletion_timestamp is not None:
                continue  # already leaving: not a member (nor counted by the ReplicaSet)
            if p.status is not None and p.status.phase in ("Succeeded", "Failed"):
                continue
            out.append(p)
        return out

    async def members(self) -> list[str]:
        pods = await self._pods()
        costs = {str(p.metadata.name): (p.metadata.annotations or {}).get(DELETION_COST) for p in pods}
        self._marked = {n for n, c in costs.items() if c == str(DRAIN_COST)}
        self._removing = {n for n, c in costs.items() if c == str(REMOVE_COST)}
        return sorted(costs)

    async def _annotate(self, pod: str, value: str | None) -> None:
        from kubernetes.client.exceptions import ApiException

        patch = {"metadata": {"annotations": {DELETION_COST: value}}}
        try:
            await asyncio.to_thread(
                self.core.patch_namespaced_pod, pod, self.namespace, patch, _content_type=MERGE_PATCH
            )
        except ApiException as exc:
            if exc.status != 404:  # gone meanwhile: nothing to mark
                raise

    async def mark(self, draining: Sequence[str]) -> None:
        """Give exactly the draining pods the low deletion cost; take it off every other pod
        (an undrained or reused worker must not stay first in line)."""
        want = set(draining) - self._removing
        marked = self._marked - self._removing
        for pod in sorted(want - marked):
            await self._annotate(pod, str(DRAIN_COST))
        for pod in sorted(marked - want):
            await self._annotate(pod, None)  # merge patch: null deletes the key
        self._marked = set(want)

    async def removal_blocker(self, replicas: int, remove: Sequence[str]) -> str | None:
        """Why lowering replicas to `replicas` now could delete a pod not in `remove` (None: safe)."""
        # As the ReplicaSet will rank them: scale_to gives the removed pods REMOVE_COST first.
        ranks: list[PodRank] = at_removal([rank_of(p) for p in await self._pods()], remove)
        return removal_blocker(ranks, len(ranks) - replicas, remove)

    async def scale_to(self, replicas: int, remove: Sequence[str] = ()) -> None:
        # Costs first: the ReplicaSet reads them when replicas drop. Lower than DRAIN_COST, so the
        # removed pods lead the drainees still finishing their jobs rather than tie with them.
        for pod in remove:
            if pod not in self._removing:
                await self._annotate(pod, str(REMOVE_COST))
                self._removing.add(pod)
                self._marked.discard(pod)
        if not remove and self._removing:
            live = {str(p.metadata.name) for p in await self._pods()}
            if replicas >= len(live):  # a removal overtaken by a scale-up: those pods stay
                for pod in sorted(self._removing & live):
                    await self._annotate(pod, None)
                self._removing.clear()
        patch = {"spec": {"replicas": replicas}}
        await asyncio.to_thread(
            self.apps.patch_namespaced_deployment, self.name, self.namespace, patch, _content_type=MERGE_PATCH
        )
