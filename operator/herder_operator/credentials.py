"""Admission with I/O: read the Secrets a TaskQueue names (only if labelled for Herder), check the
worker pod and the Redis host, and build the operator's own Redis settings.

Nothing here sends a credential anywhere: the caller connects only after `admit` returned.
"""

from __future__ import annotations

import asyncio
import base64
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import SecretStr, ValidationError

from herder.settings import HerderSettings
from herder_operator.admission import (
    CREDENTIALS_LABEL,
    PASSWORD_KEY,
    URL_KEY,
    USERNAME_KEY,
    host_allowed,
    labelled_for_herder,
    pod_violations,
    secret_names,
    service_account_problems,
)
from herder_operator.config import OperatorConfig
from herder_operator.pools.kubernetes import build_deployment
from herder_operator.spec import TaskQueueSpec


class Refused(Exception):
    """The TaskQueue asks for something its author may not have; the message says what."""


@dataclass
class Admitted:
    settings: HerderSettings
    url_in_secret: bool
    tmpdir: tempfile.TemporaryDirectory[str] | None = None


class SecretReader:
    """Reads Secrets by name in one namespace, remembering each for one admission."""

    def __init__(self, core: Any, namespace: str) -> None:
        self.core = core
        self.namespace = namespace
        self._cache: dict[str, Any] = {}

    async def labelled(self, name: str, why: str) -> dict[str, str]:
        """The Secret's data, or Refused when it is missing or its owner did not label it."""
        from kubernetes.client.exceptions import ApiException

        if name not in self._cache:
            try:
                self._cache[name] = await asyncio.to_thread(
                    self.core.read_namespaced_secret, name, self.namespace
                )
            except ApiException as exc:
                if exc.status == 404:
                    raise Refused(f"Secret {name} ({why}) not found") from None
                if exc.status == 403:
                    raise Refused(
                        f"the operator may not read Secret {name} ({why}) in {self.namespace}: add the "
                        "namespace to the chart's rbac.secretNamespaces"
                    ) from None
                raise
        secret = self._cache[name]
        if not labelled_for_herder(getattr(secret.metadata, "labels", None)):
            raise Refused(
                f"Secret {name} ({why}) is not labelled {CREDENTIALS_LABEL}=true; only Secrets their "
                "owner labelled for Herder can be used by a TaskQueue"
            )
        return {k: base64.b64decode(v).decode("utf-8", "replace") for k, v in (secret.data or {}).items()}


async def admit(
    spec: TaskQueueSpec, namespace: str, name: str, core: Any, config: OperatorConfig
) -> Admitted:
    """Everything a TaskQueue asks for, checked before the operator acts on it (raises Refused)."""
    r = spec.redis
    reader = SecretReader(core, namespace)
    values: dict[str, Any] = {"redis_url": r.url, "redis_connect_timeout": 2.0}
    url_in_secret = False
    if r.secret_ref is not None:
        data = await reader.labelled(r.secret_ref.name, "spec.redis.secretRef")
        if URL_KEY in data:
            # Credentials go only to the server their owner wrote down next to them.
            if r.url is not None and r.url != data[URL_KEY]:
                raise Refused(
                    f"spec.redis.url differs from the url in Secret {r.secret_ref.name}; its "
                    "credentials are only sent to that url (leave spec.redis.url unset)"
                )
            values["redis_url"], url_in_secret = data[URL_KEY], True
        if USERNAME_KEY in data:
            values["redis_username"] = data[USERNAME_KEY]
        if PASSWORD_KEY in data:
            values["redis_password"] = SecretStr(data[PASSWORD_KEY])
    if not values["redis_url"]:
        raise Refused(f"no Redis url: set spec.redis.url or a {URL_KEY} key in the Secret")
    if not host_allowed(values["redis_url"], config.redis_allowed_hosts):
        raise Refused(
            "spec.redis: host is not in the operator's allowed Redis hosts "
            f"({', '.join(config.redis_allowed_hosts)})"
        )
    owner = {"metadata": {"name": name, "uid": "admission"}}
    dep = build_deployment(spec, owner, namespace=namespace, url_in_secret=url_in_secret)
    template = dep["spec"]["template"]
    pod = template["spec"]
    problems = service_account_problems(pod, config.allowed_service_accounts)
    if not config.allow_privileged_pods:
        problems += pod_violations(pod, template["metadata"].get("annotations"))
    if problems:
        raise Refused(
            "worker pod breaks the restricted Pod Security Standard or the operator's policy: "
            + "; ".join(problems)
        )
    for secret in sorted(secret_names(pod)):
        await reader.labelled(secret, "used by the worker pod")
    tmp: tempfile.TemporaryDirectory[str] | None = None
    if r.tls is not None and r.tls.enabled:
        values["redis_tls"] = True
        values["redis_tls_check_hostname"] = r.tls.check_hostname
        if r.tls.secret_name:
            tls_data = await reader.labelled(r.tls.secret_name, "spec.redis.tls.secretName")
            if "ca.crt" in tls_data:
                tmp = tempfile.TemporaryDirectory(prefix="herder-tls-")
                (Path(tmp.name) / "ca.crt").write_text(tls_data["ca.crt"])
                values["redis_tls_ca_certs"] = str(Path(tmp.name) / "ca.crt")
    if r.key_prefix:
        values["key_prefix"] = r.key_prefix
    if r.cluster:
        values["redis_cluster"] = True
    try:
        settings = HerderSettings(**values)
    except ValidationError as exc:  # e.g. cluster with a unix:// url or a database other than 0
        reasons = "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())
        raise Refused(f"spec.redis: {reasons}") from None
    return Admitted(settings, url_in_secret, tmp)
