"""The chart's optional HTTP API (api.enabled): Deployment, Service, token Secret, probes, with
the real helm binary and every manifest validated offline by kubernetes-validate."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import kubernetes_validate
import pytest

from test_chart import CHART, K8S_VERSIONS, NAMESPACE, RELEASE, helm, one, render, run

__all__ = ["helm"]  # the fixture, shared with test_chart

ON = ["api.enabled=true", "api.redis.secretName=redis-producer"]
RECORD = {"id": "0123456789ab", "sha256": "f" * 64, "queues": ["default"], "verbs": ["submit", "read"]}


def api_objects(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if d["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "api"]


def test_off_by_default(helm: list[str]) -> None:
    assert api_objects(render(helm)) == []


def test_lint_with_the_api_on(helm: list[str]) -> None:
    run([*helm, "lint", "--strict", str(CHART), *[a for s in ON for a in ("--set", s)]])


@pytest.mark.parametrize("k8s", K8S_VERSIONS)
def test_api_manifests_validate(helm: list[str], k8s: str) -> None:
    docs = api_objects(
        render(helm, *ON, "api.tokens.store=secret", f"api.tokens.records[0].id={RECORD['id']}")
    )
    assert sorted(d["kind"] for d in docs) == ["Deployment", "Secret", "Service"]
    for doc in docs:
        kubernetes_validate.validate(doc, k8s, strict=True)


def test_deployment_probes_security_and_redis_secret(helm: list[str]) -> None:
    docs = render(helm, *ON)
    dep = one(docs, "Deployment", f"{RELEASE}-herder-api")
    pod = dep["spec"]["template"]
    spec = pod["spec"]
    (c,) = spec["containers"]
    assert c["command"] == ["herder"] and c["args"][0] == "api" and "--host=0.0.0.0" in c["args"]
    assert "--allowed-host=*" in c["args"] and not any(a.startswith("--tokens-file") for a in c["args"])
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert spec["automountServiceAccountToken"] is False
    env = {e["name"]: e for e in c["env"]}
    assert env["HERDER_REDIS_URL"]["valueFrom"]["secretKeyRef"] == {"name": "redis-producer", "key": "url"}
    assert env["HERDER_REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]["optional"] is True
    svc = one(docs, "Service", f"{RELEASE}-herder-api")
    labels = pod["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in svc["spec"]["selector"].items())
    assert dep["spec"]["selector"]["matchLabels"] == svc["spec"]["selector"]
    assert svc["spec"]["ports"][0]["targetPort"] == "http"
    # the operator's Service must not pick up API pods, nor the API's the operator's
    op = one(docs, "Deployment", f"{RELEASE}-herder-operator")
    op_labels = op["spec"]["template"]["metadata"]["labels"]
    assert not all(op_labels.get(k) == v for k, v in svc["spec"]["selector"].items())


def test_token_secret_holds_only_hashed_records(helm: list[str]) -> None:
    sets = [*ON, "api.tokens.store=secret"]
    for k, v in RECORD.items():
        if isinstance(v, list):
            sets += [f"api.tokens.records[0].{k}[{i}]={x}" for i, x in enumerate(v)]
        else:
            sets.append(f"api.tokens.records[0].{k}={v}")
    docs = render(helm, *sets)
    secret = one(docs, "Secret", f"{RELEASE}-herder-api-tokens")
    assert json.loads(secret["stringData"]["tokens.json"]) == [RECORD]
    (c,) = one(docs, "Deployment", f"{RELEASE}-herder-api")["spec"]["template"]["spec"]["containers"]
    assert "--tokens-file=/etc/herder/api-tokens/tokens.json" in c["args"]
    mount = next(m for m in c["volumeMounts"] if m["name"] == "api-tokens")
    assert mount["readOnly"] is True
    # an existing Secret is used as it is, not created
    docs = render(helm, *ON, "api.tokens.store=secret", "api.tokens.existingSecret=my-tokens")
    assert [d for d in docs if d["kind"] == "Secret"] == []
    dep = one(docs, "Deployment", f"{RELEASE}-herder-api")
    vol = next(v for v in dep["spec"]["template"]["spec"]["volumes"] if v["name"] == "api-tokens")
    assert vol["secret"]["secretName"] == "my-tokens"


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["api.enabled=true"], "api.redis.secretName"),
        ([*ON, "api.tokens.store=vault"], "must be redis or secret"),
    ],
)
def test_bad_values_fail_with_a_clear_message(helm: list[str], sets: list[str], message: str) -> None:
    cmd = [*helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE]
    for s in sets:
        cmd += ["--set", s]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert p.returncode != 0 and message in p.stderr
