"""Every selector the chart ships matches the pods it is meant for, and only those: the chart
rendered by real helm, the worker pods as the operator builds them (build_deployment)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from herder_operator.pools.kubernetes import build_deployment
from herder_operator.spec import TaskQueueSpec
from test_chart import ALL_ON, NAMESPACE, helm, one, render

__all__ = ["helm"]  # the module-scoped fixture, reused


def matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """A Kubernetes LabelSelector (matchLabels and matchExpressions) against a label set."""
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in selector.get("matchExpressions") or []:
        key, op, values = e["key"], e["operator"], e.get("values") or []
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


def port_names(pod: Mapping[str, Any]) -> set[str]:
    return {p["name"] for c in pod["spec"]["containers"] for p in c.get("ports", []) if "name" in p}


def worker_pod(namespace: str) -> dict[str, Any]:
    spec = TaskQueueSpec.model_validate(
        {"queue": "jobs", "redis": {"url": "redis://redis:6379/0"}, "worker": {"image": "herder:1"}}
    )
    owner = {"metadata": {"name": "jobs", "uid": "u-1"}}
    template: dict[str, Any] = build_deployment(spec, owner, namespace=namespace)["spec"]["template"]
    return template


def test_every_selector_matches_its_pods(helm: list[str]) -> None:
    docs = render(helm, *ALL_ON)
    op_dep = one(docs, "Deployment")
    operator = op_dep["spec"]["template"]
    op_labels = operator["metadata"]["labels"]
    workers = {ns: worker_pod(ns) for ns in ("team-a", "team-b")}
    w_labels = workers["team-a"]["metadata"]["labels"]
    assert matches(op_dep["spec"]["selector"], op_labels)

    # Service -> operator pods; ServiceMonitor -> Service, by port name.
    svc = one(docs, "Service")
    assert matches({"matchLabels": svc["spec"]["selector"]}, op_labels)
    assert not matches({"matchLabels": svc["spec"]["selector"]}, w_labels)
    assert {p["targetPort"] for p in svc["spec"]["ports"]} <= port_names(operator)
    sm = one(docs, "ServiceMonitor")
    assert matches(sm["spec"]["selector"], svc["metadata"]["labels"])
    assert NAMESPACE in sm["spec"]["namespaceSelector"]["matchNames"]
    assert {e["port"] for e in sm["spec"]["endpoints"]} <= {p["name"] for p in svc["spec"]["ports"]}

    # PodMonitor -> worker pods in any TaskQueue namespace, never the operator.
    pm = one(docs, "PodMonitor")
    assert pm["spec"]["namespaceSelector"] == {"any": True}
    for pod in workers.values():
        assert matches(pm["spec"]["selector"], pod["metadata"]["labels"])
        assert {e["port"] for e in pm["spec"]["podMetricsEndpoints"]} <= port_names(pod)
    assert not matches(pm["spec"]["selector"], op_labels)

    # NetworkPolicies: the operator's selects the operator; each worker policy its namespace's workers.
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    op_np = next(p for p in policies if p["metadata"]["name"].endswith("-operator"))
    assert op_np["metadata"]["namespace"] == NAMESPACE
    assert matches(op_np["spec"]["podSelector"], op_labels)
    assert not matches(op_np["spec"]["podSelector"], w_labels)
    worker_nps = {
        p["metadata"]["namespace"]: p for p in policies if p["metadata"]["name"].endswith("-workers")
    }
    assert set(worker_nps) == set(workers)
    for ns, np in worker_nps.items():
        assert matches(np["spec"]["podSelector"], workers[ns]["metadata"]["labels"]), ns
        assert not matches(np["spec"]["podSelector"], op_labels)
        for rule in np["spec"]["ingress"]:
            for p in rule["ports"]:
                assert p["port"] in port_names(workers[ns]) or isinstance(p["port"], int)
