"""The Helm chart (charts/herder): `helm lint` and `helm template` with the real helm binary, every
rendered manifest validated offline with kubernetes-validate (the Prometheus Operator's and kopf's
kinds, which it cannot know, are checked structurally here), and the properties that matter:
the operator's security context, least-privilege RBAC, the alert rules being the promtool-tested
file, the CRD copy being the generated one.

helm is found through $HERDER_HELM, PATH, or .tools/bin/ (scripts/install-tools.sh). Without it
the helm tests skip, unless $CI is set: CI must have it.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from toolbins import find_binary

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "herder"
NAMESPACE = "herder-system"
RELEASE = "hq"
# The chart's kubeVersion floor and the newest schema kubernetes-validate ships.
K8S_VERSIONS = ("1.25.0", kubernetes_validate.latest_version())
# Kinds kubernetes-validate has no schema for (CRDs of other projects): checked structurally below.
FOREIGN_KINDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PodMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
    ("kopf.dev/v1", "ClusterKopfPeering"),
    ("kopf.dev/v1", "KopfPeering"),
}
ALL_ON = [
    "metrics.serviceMonitor.enabled=true",
    "metrics.podMonitor.enabled=true",
    "prometheusRule.enabled=true",
    "grafanaDashboard.enabled=true",
    "networkPolicy.enabled=true",
    "networkPolicy.workers.namespaces={team-a,team-b}",
    "image.digest=sha256:" + "0" * 64,
    "imagePullSecrets[0].name=regcred",
    "operator.priorityClassName=system-cluster-critical",
    "operator.nodeSelector.kubernetes\\.io/os=linux",
    "operator.tolerations[0].key=dedicated",
    "operator.tolerations[0].operator=Exists",
    "operator.podAnnotations.example\\.com/a=b",
    "serviceAccount.annotations.example\\.com/role=herder",
    "metrics.serviceMonitor.labels.release=kube-prometheus-stack",
    "metrics.podMonitor.labels.release=kube-prometheus-stack",
    "prometheusRule.labels.release=kube-prometheus-stack",
]
DEFAULT_KINDS = {
    "CustomResourceDefinition",
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",  # secrets get in the release namespace
    "RoleBinding",
    "Deployment",
    "Service",
    "ConfigMap",
    "ClusterKopfPeering",
}
OPTIONAL_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule", "NetworkPolicy"}


def require_binary(name: str, env: str) -> str:
    path = find_binary(name, env)
    if path is None:
        reason = f"{name} not found (set ${env}, put it on PATH, or run scripts/install-tools.sh)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI must have it")
        pytest.skip(reason)
    return path


@pytest.fixture(scope="module")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    binary = require_binary("helm", "HERDER_HELM")
    home = tmp_path_factory.mktemp("helm-home")
    # Keep helm's cache/config out of the user's home.
    saved = {k: os.environ.get(k) for k in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME")}
    for k in saved:
        os.environ[k] = str(home / k.lower())
    try:
        yield [binary]
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run(cmd: list[str]) -> str:
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert p.returncode == 0, f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}"
    return p.stdout


def render(helm: list[str], *sets: str) -> list[dict[str, Any]]:
    cmd = [*helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--include-crds"]
    for s in sets:
        cmd += ["--set", s]
    return [d for d in yaml.safe_load_all(run(cmd)) if d]


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


@pytest.fixture(scope="module")
def default_docs(helm: list[str]) -> list[dict[str, Any]]:
    return render(helm)


@pytest.fixture(scope="module")
def all_on_docs(helm: list[str]) -> list[dict[str, Any]]:
    return render(helm, *ALL_ON)


# ---- helm lint / template ---------------------------------------------------------------------


def test_lint(helm: list[str]) -> None:
    run([*helm, "lint", "--strict", str(CHART)])
    run([*helm, "lint", "--strict", str(CHART), *[a for s in ALL_ON for a in ("--set", s)]])


def test_default_render_kinds(default_docs: list[dict[str, Any]]) -> None:
    kinds = {d["kind"] for d in default_docs}
    assert kinds == DEFAULT_KINDS
    crds = {d["metadata"]["name"] for d in default_docs if d["kind"] == "CustomResourceDefinition"}
    assert crds == {"taskqueues.herder.dev", "clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"}


def test_all_on_render_kinds(all_on_docs: list[dict[str, Any]]) -> None:
    kinds = {d["kind"] for d in all_on_docs}
    assert kinds == DEFAULT_KINDS | OPTIONAL_KINDS
    policies = {
        (d["metadata"]["namespace"], d["metadata"]["name"])
        for d in all_on_docs
        if d["kind"] == "NetworkPolicy"
    }
    assert policies == {
        (NAMESPACE, f"{RELEASE}-herder-operator"),
        ("team-a", f"{RELEASE}-herder-workers"),
        ("team-b", f"{RELEASE}-herder-workers"),
    }


@pytest.mark.parametrize("variant", ["default", "all_on"])
@pytest.mark.parametrize("k8s", K8S_VERSIONS)
def test_manifests_validate(variant: str, k8s: str, request: pytest.FixtureRequest) -> None:
    docs: list[dict[str, Any]] = request.getfixturevalue(f"{variant}_docs")
    checked = 0
    for doc in docs:
        assert set(doc) >= {"apiVersion", "kind", "metadata"}, doc
        if (doc["apiVersion"], doc["kind"]) in FOREIGN_KINDS:
            check_foreign(doc)
            continue
        try:
            kubernetes_validate.validate(doc, k8s, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = "/".join(str(p) for p in exc.path)
            pytest.fail(f"{doc['kind']} {doc['metadata']['name']}: {path}: {exc.message}")
        checked += 1
    assert checked >= 7


def _labels_ok(labels: Any) -> None:
    assert isinstance(labels, dict) and all(isinstance(v, str) for v in labels.values()), labels


def check_foreign(doc: dict[str, Any]) -> None:
    """Structural checks of the kinds kubernetes-validate has no schema for."""
    kind, meta = doc["kind"], doc["metadata"]
    assert isinstance(meta["name"], str) and meta["name"]
    _labels_ok(meta.get("labels", {}))
    if kind == "ClusterKopfPeering":
        assert "namespace" not in meta and set(doc) == {"apiVersion", "kind", "metadata"}
        return
    assert meta["namespace"] == NAMESPACE
    spec = doc["spec"]
    if kind == "ServiceMonitor":
        assert set(spec) <= {"selector", "namespaceSelector", "endpoints", "jobLabel"}
        _labels_ok(spec["selector"]["matchLabels"])
        assert spec["namespaceSelector"]["matchNames"] == [NAMESPACE]
        for ep in spec["endpoints"]:
            assert set(ep) <= {"port", "path", "interval", "scrapeTimeout"}
            assert ep["port"] == "metrics" and ep["path"] == "/metrics"
            assert ep["interval"].endswith("s") and ep["scrapeTimeout"].endswith("s")
    elif kind == "PodMonitor":
        assert set(spec) <= {"selector", "namespaceSelector", "podMetricsEndpoints", "jobLabel"}
        _labels_ok(spec["selector"]["matchLabels"])
        assert spec["namespaceSelector"] == {"any": True}
        for ep in spec["podMetricsEndpoints"]:
            assert set(ep) <= {"port", "path", "interval", "scrapeTimeout"}
            assert ep["port"] == "metrics" and ep["path"] == "/metrics"
    elif kind == "PrometheusRule":
        assert set(spec) == {"groups"}
        for group in spec["groups"]:
            assert set(group) <= {"name", "interval", "rules"} and group["rules"]
            for rule in group["rules"]:
                assert set(rule) <= {"alert", "record", "expr", "for", "labels", "annotations"}
                assert isinstance(rule["expr"], str)
                _labels_ok(rule.get("labels", {}))
                _labels_ok(rule.get("annotations", {}))
    else:  # pragma: no cover
        raise AssertionError(f"no structural check for {kind}")


# ---- CRDs -------------------------------------------------------------------------------------


def test_crd_copy_equals_source() -> None:
    source = ROOT / "crds" / "taskqueue.yaml"
    copy = CHART / "crds" / "taskqueue.yaml"
    assert copy.read_bytes() == source.read_bytes(), (
        "charts/herder/crds/taskqueue.yaml differs from crds/taskqueue.yaml: "
        "cp crds/taskqueue.yaml charts/herder/crds/taskqueue.yaml"
    )


def test_kopf_peering_crds() -> None:
    docs = [d for d in yaml.safe_load_all((CHART / "crds" / "kopf-peering.yaml").read_text()) if d]
    by_kind = {d["spec"]["names"]["kind"]: d for d in docs}
    assert set(by_kind) == {"ClusterKopfPeering", "KopfPeering"}
    assert by_kind["ClusterKopfPeering"]["spec"]["scope"] == "Cluster"
    assert by_kind["KopfPeering"]["spec"]["scope"] == "Namespaced"
    for d in docs:
        assert d["spec"]["group"] == "kopf.dev"
        (version,) = d["spec"]["versions"]
        assert version["name"] == "v1" and version["served"] and version["storage"]
        status = version["schema"]["openAPIV3Schema"]["properties"]["status"]
        assert status["x-kubernetes-preserve-unknown-fields"] is True
        kubernetes_validate.validate(d, K8S_VERSIONS[-1], strict=True)


# ---- the operator Deployment ------------------------------------------------------------------


def operator_container(docs: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    dep = one(docs, "Deployment", f"{RELEASE}-herder-operator")
    pod = dep["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    return pod, container


@pytest.mark.parametrize("variant", ["default", "all_on"])
def test_operator_security_context(variant: str, request: pytest.FixtureRequest) -> None:
    pod, c = operator_container(request.getfixturevalue(f"{variant}_docs"))
    psc, sc = pod["securityContext"], c["securityContext"]
    assert psc["runAsNonRoot"] is True and psc["runAsUser"] != 0
    assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert sc["runAsNonRoot"] is True
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "privileged" not in sc or sc["privileged"] is False
    assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
    for key in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(c["resources"][key]), key
    # A read-only root needs a writable /tmp.
    assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
    assert any(v["name"] == "tmp" and "emptyDir" in v for v in pod["volumes"])


def test_operator_command(default_docs: list[dict[str, Any]]) -> None:
    pod, c = operator_container(default_docs)
    assert c["command"] == ["kopf"]
    peering = one(default_docs, "ClusterKopfPeering")["metadata"]["name"]
    assert c["args"] == [
        "run",
        "-m",
        "herder_operator.handlers",
        "--all-namespaces",
        "--liveness=http://0.0.0.0:8080/healthz",
        f"--peering={peering}",
    ]
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"health": 8080, "metrics": 9100}
    env = {e["name"]: e for e in c["env"]}
    assert env["POD_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["HERDER_METRICS_PORT"]["value"] == "9100"
    assert c["image"] == "herder:0.1.0"
    assert pod["serviceAccountName"] == one(default_docs, "ServiceAccount")["metadata"]["name"]


def test_standalone_without_peering(helm: list[str]) -> None:
    docs = render(helm, "operator.peering.enabled=false")
    _, c = operator_container(docs)
    assert "--standalone" in c["args"] and not any(a.startswith("--peering") for a in c["args"])
    assert not [d for d in docs if d["kind"] == "ClusterKopfPeering"]


def test_image_digest_wins(all_on_docs: list[dict[str, Any]]) -> None:
    _, c = operator_container(all_on_docs)
    assert c["image"] == "herder@sha256:" + "0" * 64


# ---- RBAC -------------------------------------------------------------------------------------

EXPECTED_RULES = {
    ("herder.dev", "taskqueues"): {"get", "list", "watch", "patch"},
    ("herder.dev", "taskqueues/status"): {"get", "patch", "update"},
    ("apps", "deployments"): {"get", "list", "watch", "create", "patch", "update", "delete"},
    ("", "pods"): {"get", "list", "watch", "patch"},
    ("", "events"): {"create", "patch"},
    ("kopf.dev", "clusterkopfpeerings"): {"get", "list", "watch", "patch"},
    ("apiextensions.k8s.io", "customresourcedefinitions"): {"get", "list", "watch"},
}


def rules_of(
    docs: list[dict[str, Any]], role: dict[str, Any] | None = None
) -> dict[tuple[str, str], set[str]]:
    role = role or one(docs, "ClusterRole")
    out: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        assert set(rule) <= {"apiGroups", "resources", "verbs"}, "no resourceNames/nonResourceURLs expected"
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[field], f"wildcard in {field}: {rule}"
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                out.setdefault((group, resource), set()).update(rule["verbs"])
    return out


def test_rbac_least_privilege(default_docs: list[dict[str, Any]]) -> None:
    assert rules_of(default_docs) == EXPECTED_RULES
    binding = one(default_docs, "ClusterRoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": one(default_docs, "ClusterRole")["metadata"]["name"],
    }
    sa = one(default_docs, "ServiceAccount")["metadata"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa["name"], "namespace": NAMESPACE}]
    # Secrets: `get` by a Role in the release namespace only, never cluster-wide.
    (role,) = [d for d in default_docs if d["kind"] == "Role"]
    assert role["metadata"]["namespace"] == NAMESPACE
    assert rules_of(default_docs, role) == {("", "secrets"): {"get"}}
    (rb,) = [d for d in default_docs if d["kind"] == "RoleBinding"]
    assert rb["metadata"]["namespace"] == NAMESPACE and rb["roleRef"]["name"] == role["metadata"]["name"]


def test_rbac_without_secrets(helm: list[str]) -> None:
    docs = render(helm, "rbac.readSecrets=false")
    assert rules_of(docs) == EXPECTED_RULES
    assert not [d for d in docs if d["kind"] in ("Role", "RoleBinding")]


def test_rbac_secret_namespaces(helm: list[str]) -> None:
    docs = render(helm, "rbac.secretNamespaces={team-a,team-b}")
    roles = [d for d in docs if d["kind"] == "Role"]
    assert {r["metadata"]["namespace"] for r in roles} == {"team-a", "team-b"}
    assert all(rules_of(docs, r) == {("", "secrets"): {"get"}} for r in roles)


def test_watching_given_namespaces_is_namespaced(helm: list[str]) -> None:
    docs = render(helm, "operator.watchNamespaces={team-a,team-b}")
    # Cluster-wide: only reading CRDs.
    assert rules_of(docs) == {("apiextensions.k8s.io", "customresourcedefinitions"): {"get", "list", "watch"}}
    roles = [d for d in docs if d["kind"] == "Role"]
    by_ns: dict[str, dict[tuple[str, str], set[str]]] = {}
    for r in roles:
        for k, v in rules_of(docs, r).items():
            by_ns.setdefault(r["metadata"]["namespace"], {}).setdefault(k, set()).update(v)
    expected = {k: v for k, v in EXPECTED_RULES.items() if k[0] not in ("apiextensions.k8s.io", "kopf.dev")}
    expected |= {("kopf.dev", "kopfpeerings"): {"get", "list", "watch", "patch"}, ("", "secrets"): {"get"}}
    assert by_ns == {"team-a": expected, "team-b": expected}
    bindings = [d for d in docs if d["kind"] == "RoleBinding"]
    assert len(bindings) == len(roles)
    _, c = operator_container(docs)
    assert "--namespace=team-a" in c["args"] and "--namespace=team-b" in c["args"]
    assert "--all-namespaces" not in c["args"]
    peerings = [d for d in docs if d["kind"] == "KopfPeering"]
    assert {p["metadata"]["namespace"] for p in peerings} == {"team-a", "team-b"}
    assert not [d for d in docs if d["kind"] == "ClusterKopfPeering"]


def test_rbac_and_serviceaccount_can_be_left_out(helm: list[str]) -> None:
    docs = render(helm, "rbac.create=false", "serviceAccount.create=false", "serviceAccount.name=existing")
    kinds = {d["kind"] for d in docs}
    assert not kinds & {"ClusterRole", "ClusterRoleBinding", "ServiceAccount"}
    pod, _ = operator_container(docs)
    assert pod["serviceAccountName"] == "existing"


# ---- monitoring -------------------------------------------------------------------------------


def test_prometheus_rule_equals_promtool_tested_file(all_on_docs: list[dict[str, Any]]) -> None:
    rule = one(all_on_docs, "PrometheusRule")
    tested = yaml.safe_load((CHART / "files" / "alerts.yaml").read_text())
    assert rule["spec"]["groups"] == tested["groups"]
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    alerts = {r["alert"] for g in tested["groups"] for r in g["rules"]}
    assert alerts == {
        "HerderQueueBacklogNoWorkers",
        "HerderQueueBacklogGrowing",
        "HerderDeadLetterGrowing",
        "HerderLeaseExpiries",
        "HerderRedisDown",
        "HerderEventLoopBlocked",
        "HerderQueuePaused",
        "HerderTaskQueueAtMaxReplicas",
    }
    for g in tested["groups"]:
        for r in g["rules"]:
            assert r["labels"]["severity"] in {"critical", "warning", "info"}, r["alert"]
            assert {"summary", "description", "runbook"} <= set(r["annotations"]), r["alert"]


def test_service_and_monitors_select_the_right_pods(all_on_docs: list[dict[str, Any]]) -> None:
    dep = one(all_on_docs, "Deployment")
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    svc = one(all_on_docs, "Service")
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    assert dep["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert svc["spec"]["ports"] == [
        {"name": "metrics", "port": 9100, "targetPort": "metrics", "protocol": "TCP"}
    ]
    sm = one(all_on_docs, "ServiceMonitor")
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    pm = one(all_on_docs, "PodMonitor")
    assert pm["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "worker"
    assert pm["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    # The PodMonitor must not pick up the operator itself.
    assert not pm["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def test_grafana_dashboard(default_docs: list[dict[str, Any]]) -> None:
    cm = one(default_docs, "ConfigMap")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    dash = json.loads(cm["data"]["herder.json"])
    assert dash == json.loads((CHART / "files" / "dashboard.json").read_text())
    titles = {p["title"] for p in dash["panels"]}
    assert titles >= {
        "Queue depth by state",
        "Throughput by outcome",
        "Workers and capacity",
        "In flight",
        "Dead-letter queue",
        "Lease expiries and hand-backs",
        "Job duration p95",
        "Event loop blocked",
    }
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for p in dash["panels"]:
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert "herder_" in t["expr"], (p["title"], t["expr"])
            assert t["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    assert {v["name"] for v in dash["templating"]["list"]} == {"datasource", "queue"}


def test_grafana_dashboard_off(helm: list[str]) -> None:
    docs = render(helm, "grafanaDashboard.enabled=false")
    assert not [d for d in docs if d["kind"] == "ConfigMap"]


# ---- NetworkPolicy ----------------------------------------------------------------------------


def _ports(rule: dict[str, Any]) -> set[tuple[Any, str]]:
    return {(p["port"], p["protocol"]) for p in rule["ports"]}


def test_network_policies(all_on_docs: list[dict[str, Any]]) -> None:
    policies = [d for d in all_on_docs if d["kind"] == "NetworkPolicy"]
    op = next(p for p in policies if p["metadata"]["name"].endswith("-operator"))
    dep = one(all_on_docs, "Deployment")
    assert (
        op["spec"]["podSelector"]["matchLabels"].items()
        <= dep["spec"]["template"]["metadata"]["labels"].items()
    )
    assert op["spec"]["policyTypes"] == ["Ingress", "Egress"]
    (ingress,) = op["spec"]["ingress"]
    assert _ports(ingress) == {("metrics", "TCP")}
    monitoring = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    assert ingress["from"] == monitoring
    egress_ports = [_ports(r) for r in op["spec"]["egress"]]
    assert egress_ports == [
        {(443, "TCP"), (6443, "TCP")},  # API server
        {(6379, "TCP"), (26379, "TCP")},  # Redis, Sentinel
        {(53, "UDP"), (53, "TCP")},  # DNS
    ]
    for worker in (p for p in policies if p["metadata"]["name"].endswith("-workers")):
        spec = worker["spec"]
        assert spec["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "worker"
        assert spec["policyTypes"] == ["Ingress", "Egress"]
        (ingress,) = spec["ingress"]
        assert _ports(ingress) == {("metrics", "TCP")} and ingress["from"] == monitoring
        egress = spec["egress"]
        assert [_ports(r) for r in egress] == [
            {(6379, "TCP"), (26379, "TCP")},
            {(53, "UDP"), (53, "TCP")},
            {(443, "TCP")},
        ]
        https = egress[2]["to"][0]["ipBlock"]
        assert https["cidr"] == "0.0.0.0/0" and "169.254.0.0/16" in https["except"]


# ---- values.schema.json -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "says"),
    [
        ("operator.replicas=two", "operator.replicas: Invalid type"),
        ("operatr.replicas=2", "Additional property operatr is not allowed"),
        ("image.pullPolicy=Sometimes", "image.pullPolicy"),
        ("operator.logFormat=xml", "operator.logFormat"),
        ("metrics.service.port=70000", "metrics.service.port"),
        ("operator.watchNamespaces={Team_A}", "operator.watchNamespaces.0"),
        ("operator.tenancy.allowPrivilegedPods=yes", "operator.tenancy.allowPrivilegedPods"),
    ],
)
def test_values_schema_refuses_bad_values(helm: list[str], setting: str, says: str) -> None:
    p = subprocess.run(
        [*helm, "lint", str(CHART), "--set", setting],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert p.returncode != 0, p.stdout
    assert says in p.stdout + p.stderr, p.stdout + p.stderr


def test_values_schema_accepts_the_defaults_and_all_on(helm: list[str]) -> None:
    assert (CHART / "values.schema.json").is_file()
    run([*helm, "lint", str(CHART), "--strict"])
    run([*helm, "lint", str(CHART), *[a for s in ALL_ON for a in ("--set", s)]])
