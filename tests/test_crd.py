"""The CRD is generated from the pydantic spec model: drift fails here, and both reject bad specs."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from herder.keys import QUEUE_RE
from herder_operator import crd
from herder_operator.spec import QUEUE_PATTERN, TaskQueueSpec, load_taskqueue

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "taskqueue.yaml"

VALID: dict[str, Any] = {
    "queue": "default",
    "redis": {"url": "redis://redis:6379/0"},
    "worker": {"image": "herder:dev", "concurrency": 5},
    "minReplicas": 0,
    "maxReplicas": 4,
}


def test_committed_crd_matches_the_model() -> None:
    committed = (ROOT / "crds" / "taskqueue.yaml").read_text()
    assert committed == crd.render(), "crds/taskqueue.yaml drifted: run python -m herder_operator.crd"
    chart = ROOT / "charts" / "herder" / "crds" / "taskqueue.yaml"
    if chart.exists():
        assert chart.read_text() == committed, f"{chart} drifted: run python -m herder_operator.crd"


def test_check_mode_reports_drift(tmp_path: Path) -> None:
    out = tmp_path / "crd.yaml"
    out.write_text("stale\n")
    assert crd.main(["--check", "-o", str(out)]) == 1
    assert crd.main(["-o", str(out)]) == 0
    assert crd.main(["--check", "-o", str(out)]) == 0


def test_queue_pattern_matches_the_core() -> None:
    assert QUEUE_PATTERN == QUEUE_RE.pattern


def _walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        out.append((path, node))
        for k, v in node.get("properties", {}).items():
            out += _walk(v, f"{path}.{k}")
        if isinstance(node.get("items"), dict):
            out += _walk(node["items"], f"{path}[]")
        if isinstance(node.get("additionalProperties"), dict):
            out += _walk(node["additionalProperties"], f"{path}{{}}")
    return out


def test_schema_is_structural() -> None:
    doc = crd.build_crd()
    version = doc["spec"]["versions"][0]
    schema = version["schema"]["openAPIV3Schema"]
    for path, node in _walk(schema):
        assert not {"$ref", "anyOf", "oneOf", "allOf", "title", "$defs"} & node.keys(), path
        assert node.get("type") != "null", path
        assert "type" in node or node.get("x-kubernetes-int-or-string"), f"{path} has no type"
        assert not ("properties" in node and "additionalProperties" in node), path
        assert node.get("default", 0) is not None, path
    assert version["subresources"] == {"status": {}}
    assert doc["spec"]["names"]["shortNames"] == ["tq"]
    cols = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert cols["Queue"] == ".spec.queue" and cols["Phase"] == ".status.phase"
    rules = [r["rule"] for r in schema["properties"]["spec"]["x-kubernetes-validations"]]
    assert "self.minReplicas <= self.maxReplicas" in rules


def test_shared_field_names_exist() -> None:
    spec = crd.build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    props = spec["properties"]
    for top in (
        "queue",
        "minReplicas",
        "maxReplicas",
        "targetUtilization",
        "pollIntervalSeconds",
        "drainTimeoutSeconds",
        "paused",
    ):
        assert top in props, top
    assert {"url", "secretRef"} <= props["redis"]["properties"].keys()
    assert {"image", "app", "concurrency", "podTemplate"} <= props["worker"]["properties"].keys()
    assert "stabilizationSeconds" in props["scaleUp"]["properties"]
    assert {"stabilizationSeconds", "cooldownSeconds"} <= props["scaleDown"]["properties"].keys()


def test_example_is_valid() -> None:
    tq = load_taskqueue(EXAMPLE)
    assert tq.spec.queue == "default" and tq.spec.worker.concurrency == 5
    assert (tq.spec.min_replicas, tq.spec.max_replicas) == (0, 4)


def _with(path: str, value: Any) -> dict[str, Any]:
    spec = copy.deepcopy(VALID)
    node = spec
    *parents, last = path.split(".")
    for p in parents:
        node = node.setdefault(p, {})
    if value is _DELETE:
        node.pop(last, None)
    else:
        node[last] = value
    return spec


_DELETE = object()

INVALID = [
    ("minReplicas", 5, "minReplicas"),
    ("maxReplicas", 0, "maxReplicas"),
    ("minReplicas", -1, "minReplicas"),
    ("queue", "bad queue!", "queue"),
    ("queue", _DELETE, "queue"),
    ("redis.url", "http://x", "redis.url"),
    ("redis.url", _DELETE, "redis.url or redis.secretRef"),
    ("worker.image", _DELETE, "worker.image or worker.podTemplate"),
    ("worker.concurrency", 0, "worker.concurrency"),
    ("targetUtilization", 0, "targetUtilization"),
    ("targetUtilization", 101, "targetUtilization"),
    ("scaleDown.cooldownSeconds", -1, "scaleDown.cooldownSeconds"),
    ("pollIntervalSeconds", 0, "pollIntervalSeconds"),
    ("worker.capabilities", ["bad cap"], "worker.capabilities"),
    ("unknownField", 1, "unknownField"),
]


@pytest.mark.parametrize(("path", "value", "mentions"), INVALID, ids=[f"{p}={v!r}" for p, v, _ in INVALID])
def test_invalid_specs_are_rejected_by_the_model(path: str, value: Any, mentions: str) -> None:
    from herder_operator.spec import spec_errors

    with pytest.raises(ValidationError) as info:
        TaskQueueSpec.model_validate(_with(path, value))
    assert mentions in spec_errors(info.value)


def _schema_validator() -> Any:
    jsonschema = pytest.importorskip("jsonschema")
    schema = crd.build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    return jsonschema.Draft4Validator(schema)


def test_crd_schema_accepts_the_example_and_rejects_bad_fields() -> None:
    """What the schema (not CEL) can say, checked offline with a JSON-Schema validator."""
    v = _schema_validator()
    example = yaml.safe_load(EXAMPLE.read_text())["spec"]
    assert not list(v.iter_errors(example))
    for path, value, _ in INVALID:
        if value is _DELETE or (path, value) == ("minReplicas", 5) or path == "unknownField":
            continue  # CEL rules and pruning: enforced by the API server, not the OpenAPI part
        assert list(v.iter_errors(_with(path, value))), (path, value)


def test_model_round_trips_to_camel_case() -> None:
    spec = TaskQueueSpec.model_validate(VALID)
    dumped = spec.dump()
    assert dumped["minReplicas"] == 0 and dumped["scaleDown"]["cooldownSeconds"] == 120
    assert TaskQueueSpec.model_validate(dumped) == spec


def test_every_field_has_a_description() -> None:
    """`kubectl explain taskqueue.spec...` shows a description for every field, never "<no description>"."""
    from herder_operator.crd import build_crd

    schema = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    missing: list[str] = []

    def walk(node: dict[str, Any], path: str) -> None:
        for key, sub in (node.get("properties") or {}).items():
            if not sub.get("description"):
                missing.append(f"{path}.{key}")
            walk(sub, f"{path}.{key}")
            if isinstance(sub.get("items"), dict):
                walk(sub["items"], f"{path}.{key}[]")

    walk(schema, "")
    assert not missing, missing
