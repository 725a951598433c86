"""The TaskQueue resource as pydantic models: the single source of the CRD schema (see crd.py).

Conventions follow the Kubernetes API: camelCase field names, integers for counts, percentages
and seconds (no floats in a spec), optional fields omitted rather than null.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator
from pydantic.alias_generators import to_camel

GROUP = "herder.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "TaskQueue"
PLURAL = "taskqueues"
SINGULAR = "taskqueue"
SHORT_NAMES = ["tq"]

# Same rule as herder.keys.QUEUE_RE, repeated so the CRD carries it (the drift test checks both agree).
QUEUE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
REDIS_URL_PATTERN = r"^(redis|rediss|unix)://"
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
ENV_NAME_PATTERN = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"
CAPABILITY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, extra="forbid", validate_by_name=True)

    def dump(self) -> dict[str, Any]:
        """The Kubernetes form: camelCase keys, unset optionals left out."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class SecretRef(_Model):
    """Redis credentials: a Secret in the TaskQueue's namespace that follows Herder's contract.

    The Secret must carry the label `herder.dev/credentials: "true"` (its owner's consent to hand it
    to TaskQueues) and holds fixed keys: `password`, optionally `username` (ACL user) and `url`.
    A `url` in the Secret binds the credentials to that server: spec.redis.url must then be unset
    or equal. Keys are not selectable, so a TaskQueue cannot point at another key of another Secret.
    """

    name: str = Field(
        min_length=1,
        max_length=253,
        pattern=DNS_SUBDOMAIN_PATTERN,
        description="Name of the Secret (labelled herder.dev/credentials=true).",
    )


class RedisTLS(_Model):
    """TLS to Redis. `rediss://` URLs turn it on as well."""

    enabled: bool = Field(default=False, description="Connect to Redis over TLS.")
    secret_name: str | None = Field(
        default=None,
        max_length=253,
        pattern=DNS_SUBDOMAIN_PATTERN,
        description="Secret with ca.crt (and tls.crt/tls.key for client certificates), mounted into "
        "workers; labelled herder.dev/credentials=true like every Secret workers use.",
    )
    check_hostname: bool = Field(default=True, description="Verify the server certificate's host name.")


class RedisSpec(_Model):
    """How workers and the operator reach Redis."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.url) || has(self.secretRef)",
                    "message": "set redis.url or redis.secretRef (a Secret with a url key)",
                }
            ]
        }
    )

    url: str | None = Field(
        default=None,
        max_length=2048,
        pattern=REDIS_URL_PATTERN,
        description="redis://, rediss:// or unix:// URL (without a password: use secretRef).",
    )
    secret_ref: SecretRef | None = Field(default=None, description="Secret with the Redis credentials.")
    tls: RedisTLS | None = Field(default=None, description="TLS settings.")
    key_prefix: str | None = Field(
        default=None,
        max_length=64,
        pattern=r"^[^{}\s]+$",
        description="Prefix of every key of this queue (to share one Redis between installations).",
    )
    cluster: bool = Field(
        default=False,
        description="Redis Cluster: the url names any node (best a name that resolves to several); "
        "workers and the operator use the cluster client (HERDER_REDIS_CLUSTER).",
    )

    @model_validator(mode="after")
    def _has_url(self) -> RedisSpec:
        if self.url is None and self.secret_ref is None:
            raise ValueError("set redis.url or redis.secretRef (a Secret with a url key)")
        return self


class EnvVar(_Model):
    """An environment variable of the worker container."""

    name: str = Field(min_length=1, max_length=253, pattern=ENV_NAME_PATTERN, description="Variable name.")
    value: str | None = Field(default=None, description="Literal value.")
    value_from: dict[str, Any] | None = Field(default=None, description="As in a container's env.")


class Resources(_Model):
    """Compute resources of the worker container, as in a container's resources."""

    requests: dict[str, int | str] = Field(default_factory=dict, description="e.g. cpu: 500m, memory: 1Gi.")
    limits: dict[str, int | str] = Field(default_factory=dict, description="e.g. memory: 2Gi.")


class WorkerSpec(_Model):
    """The worker pods: the essentials, or a full podTemplate whose first container runs the worker."""

    image: str | None = Field(
        default=None, min_length=1, max_length=1024, description="Worker image (with herder installed)."
    )
    image_pull_policy: str | None = Field(
        default=None, pattern=r"^(Always|IfNotPresent|Never)$", description="Always, IfNotPresent or Never."
    )
    app: str | None = Field(
        default=None, min_length=1, max_length=512, description="Task module (module or module:attr)."
    )
    concurrency: int = Field(default=10, ge=1, le=10_000, description="Tasks one worker runs at once.")
    env: list[EnvVar] = Field(
        default_factory=list, max_length=256, description="Extra environment variables."
    )
    resources: Resources | None = Field(default=None, description="Requests and limits of the worker.")
    node_selector: dict[str, str] = Field(default_factory=dict, description="Node labels the pods require.")
    tolerations: list[dict[str, Any]] = Field(
        default_factory=list, max_length=64, description="Pod tolerations, as in a pod spec."
    )
    service_account_name: str | None = Field(
        default=None, max_length=253, description="Service account of the worker pods."
    )
    capabilities: list[Annotated[str, StringConstraints(pattern=CAPABILITY_PATTERN)]] = Field(
        default_factory=list,
        max_length=32,
        description="Capabilities the workers offer (jobs may require them).",
    )
    metrics_port: int = Field(
        default=9100, ge=1024, le=65535, description="Port of /metrics and the /readyz readiness probe."
    )
    pod_annotations: dict[str, str] = Field(default_factory=dict, description="Extra pod annotations.")
    pod_labels: dict[str, str] = Field(default_factory=dict, description="Extra pod labels.")
    pod_template: dict[str, Any] | None = Field(
        default=None,
        description="A full PodTemplateSpec; the operator fills the worker command, env and labels.",
    )


class ScaleUp(_Model):
    """How fast to add workers."""

    stabilization_seconds: int = Field(
        default=0, ge=0, le=3600, description="Scale up to the lowest recommendation of this window."
    )
    max_step: int | None = Field(default=None, ge=1, le=1000, description="Most replicas added per step.")
    cooldown_seconds: int = Field(default=0, ge=0, le=3600, description="Minimum time between scale-ups.")


class ScaleDown(_Model):
    """How cautiously to remove workers (removed workers drain first)."""

    stabilization_seconds: int = Field(
        default=60, ge=0, le=3600, description="Scale down to the highest recommendation of this window."
    )
    max_step: int | None = Field(default=None, ge=1, le=1000, description="Most replicas removed per step.")
    cooldown_seconds: int = Field(
        default=120,
        ge=0,
        le=86_400,
        description="No scale-down sooner than this after any scaling; "
        "scale to zero only after the queue was idle this long.",
    )


class TaskQueueSpec(_Model):
    """A Herder queue and the workers that serve it, autoscaled by queue depth."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self.minReplicas <= self.maxReplicas",
                    "message": "minReplicas must be <= maxReplicas",
                },
                {
                    "rule": "has(self.worker.image) || has(self.worker.podTemplate)",
                    "message": "set worker.image or worker.podTemplate",
                },
                {"rule": "self.queue == oldSelf.queue", "message": "queue is immutable"},
            ]
        }
    )

    queue: str = Field(pattern=QUEUE_PATTERN, description="The Herder queue name.")
    redis: RedisSpec
    worker: WorkerSpec
    min_replicas: int = Field(
        default=0, ge=0, le=1000, description="Fewest worker pods; 0 allows scale to zero."
    )
    max_replicas: int = Field(default=10, ge=1, le=1000, description="Most worker pods.")
    target_utilization: int = Field(
        default=80, ge=1, le=100, description="Percent of worker capacity to aim for."
    )
    scale_up: ScaleUp = Field(default_factory=ScaleUp)
    scale_down: ScaleDown = Field(default_factory=ScaleDown)
    poll_interval_seconds: int = Field(
        default=5, ge=1, le=300, description="Seconds between reads of the queue (one scaling step each)."
    )
    drain_timeout_seconds: int = Field(
        default=600, ge=0, le=86_400, description="Time a removed worker gets to finish its tasks."
    )
    paused: bool = Field(default=False, description="Stop scaling; replicas stay as they are.")

    @model_validator(mode="after")
    def _bounds(self) -> TaskQueueSpec:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"minReplicas ({self.min_replicas}) must be <= maxReplicas ({self.max_replicas})"
            )
        if self.worker.image is None and self.worker.pod_template is None:
            raise ValueError("set worker.image or worker.podTemplate")
        return self


# ---- status --------------------------------------------------------------------------------


class ConditionType(StrEnum):
    ready = "Ready"
    redis_reachable = "RedisReachable"
    scaling = "Scaling"
    degraded = "Degraded"


class Phase(StrEnum):
    pending = "Pending"
    ready = "Ready"
    scaling = "Scaling"
    paused = "Paused"
    degraded = "Degraded"
    invalid = "Invalid"


class Condition(_Model):
    """A Kubernetes-style condition."""

    type: str = Field(description="Ready, RedisReachable, Scaling or Degraded.")
    status: str = Field(pattern=r"^(True|False|Unknown)$", description="True, False or Unknown.")
    reason: str = Field(max_length=1024, description="CamelCase cause, e.g. ScaleDownHeld.")
    message: str = Field(default="", max_length=32_768, description="What happened, with numbers.")
    last_transition_time: str | None = Field(default=None, description="When status last changed.")
    observed_generation: int | None = Field(default=None, description="Spec generation it describes.")


class WorkerCounts(_Model):
    """Workers of this TaskQueue in the queue's registry."""

    ready: int = Field(default=0, description="Registered and serving.")
    draining: int = Field(default=0, description="Finishing their jobs before removal.")


class Recommendation(_Model):
    at: int = Field(description="When (Unix time in milliseconds).")
    replicas: int = Field(description="The policy's raw recommendation at that time.")


class DrainRecord(_Model):
    worker: str = Field(description="Worker id (the pod name).")
    deadline: int = Field(description="Removed at this time even if still busy (Unix ms).")
    reason: str = Field(default="", max_length=1024, description="The decision that chose it.")


class PolicyMemory(_Model):
    """What the scaling policy remembers between steps, kept here so that a restarted operator
    decides exactly as an uninterrupted one would."""

    since: int | None = Field(default=None, description="Start of this memory (Unix ms).")
    recommendations: list[Recommendation] = Field(
        default_factory=list, description="Recommendations still inside a stabilization window."
    )
    last_scale_up: int | None = Field(default=None, description="Last scale-up decision (Unix ms).")
    last_scale_down: int | None = Field(default=None, description="Last scale-down decision (Unix ms).")
    idle_since: int | None = Field(default=None, description="Start of the current idle streak (Unix ms).")
    draining: list[DrainRecord] = Field(default_factory=list, description="Workers being drained.")
    last_scale_at: int | None = Field(default=None, description="Last replica change (Unix ms).")


class TaskQueueStatus(_Model):
    """What the operator last saw and did."""

    observed_generation: int | None = Field(default=None, description="Spec generation last acted on.")
    phase: Phase | None = Field(
        default=None, description="Pending, Ready, Scaling, Paused, Degraded or Invalid (see conditions)."
    )
    ready: int | None = Field(default=None, description="Jobs due now.")
    scheduled: int | None = Field(default=None, description="Jobs due later.")
    waiting: int | None = Field(default=None, description="Jobs waiting for dependencies.")
    active: int | None = Field(default=None, description="Jobs running.")
    dead: int | None = Field(default=None, description="Jobs in the dead-letter queue.")
    workers: WorkerCounts | None = None
    replicas: int | None = Field(default=None, description="Current replicas (including draining).")
    desired_replicas: int | None = Field(default=None, description="Serving workers the policy wants.")
    last_scale_time: str | None = Field(default=None, description="When replicas last changed.")
    last_scale_reason: str | None = Field(default=None, description="The decision behind that change.")
    conditions: list[Condition] = Field(
        default_factory=list, description="Ready, RedisReachable, Scaling, Degraded."
    )
    memory: PolicyMemory | None = Field(
        default=None, description="The scaling policy's memory, read back when the operator restarts."
    )


class TaskQueue(_Model):
    """A whole TaskQueue document (for `herder up` and tests)."""

    model_config = ConfigDict(extra="ignore")

    api_version: str = Field(default=API_VERSION, pattern=f"^{API_VERSION}$")
    kind: str = Field(default=KIND, pattern=f"^{KIND}$")
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: TaskQueueSpec
    status: TaskQueueStatus | None = None

    @property
    def name(self) -> str:
        return str(self.metadata.get("name") or self.spec.queue)


def spec_errors(exc: ValidationError) -> str:
    """A one-line message naming each bad field by its spec path, for conditions and Events."""
    parts = []
    for e in exc.errors():
        loc = ".".join(str(p) for p in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        # Errors of a whole document (TaskQueue) already start at "spec" or "metadata".
        whole = bool(e["loc"]) and e["loc"][0] in ("spec", "metadata", "apiVersion", "kind", "status")
        path = loc if whole else f"spec.{loc}"
        parts.append(f"{path}: {msg}" if loc else msg)
    return "; ".join(parts)


def parse_spec(raw: dict[str, Any]) -> TaskQueueSpec:
    return TaskQueueSpec.model_validate(raw)


def load_taskqueue(path: str | Path) -> TaskQueue:
    """Read the first TaskQueue document of a YAML file."""
    for doc in yaml.safe_load_all(Path(path).read_text()):
        if isinstance(doc, dict) and doc.get("kind") == KIND:
            return TaskQueue.model_validate(doc)
    raise ValueError(f"{path}: no document of kind {KIND}")
