"""Generate the TaskQueue CRD from the pydantic models (the models are the single source).

    python -m herder_operator.crd            # writes crds/taskqueue.yaml and the Helm chart's copy
    python -m herder_operator.crd --check    # exits 1 when either committed file has drifted

pydantic emits JSON Schema (2020-12); Kubernetes wants a *structural* OpenAPI v3 subset:
no $ref, no null types, no `additionalProperties` beside `properties`, int-or-string as an
extension. `to_structural` does that translation.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from herder_operator.spec import (
    GROUP,
    KIND,
    PLURAL,
    SHORT_NAMES,
    SINGULAR,
    VERSION,
    TaskQueueSpec,
    TaskQueueStatus,
)

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_PATH = ROOT / "crds" / "taskqueue.yaml"
CHART_PATH = ROOT / "charts" / "herder" / "crds" / "taskqueue.yaml"  # Helm installs CRDs from here

_DROP = {"title", "$defs"}

PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Queue", "type": "string", "jsonPath": ".spec.queue"},
    {"name": "Ready", "type": "integer", "jsonPath": ".status.ready", "description": "Jobs due now"},
    {"name": "Active", "type": "integer", "jsonPath": ".status.active"},
    {"name": "Workers", "type": "integer", "jsonPath": ".status.workers.ready"},
    {"name": "Desired", "type": "integer", "jsonPath": ".status.desiredReplicas"},
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def to_structural(node: Any, defs: dict[str, Any]) -> Any:
    """Translate one pydantic JSON-Schema node into a Kubernetes structural schema node."""
    if isinstance(node, list):
        return [to_structural(n, defs) for n in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[1]]
        extra = {k: v for k, v in node.items() if k != "$ref"}
        return to_structural({**target, **extra}, defs)
    if "anyOf" in node:
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        rest = {k: v for k, v in node.items() if k != "anyOf"}
        if rest.get("default", 0) is None:
            del rest["default"]
        types = {o.get("type") for o in options}
        if types == {"integer", "string"}:
            return {**{k: v for k, v in rest.items() if k not in _DROP}, "x-kubernetes-int-or-string": True}
        if len(options) == 1:
            return to_structural({**options[0], **rest}, defs)
        raise ValueError(f"cannot express anyOf {options} in a structural schema")
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP:
            continue
        if key == "properties":
            out[key] = {k: to_structural(v, defs) for k, v in value.items()}
        elif key == "additionalProperties":
            # `false` is implied by pruning; `true`/`{}` (Any) means free-form.
            if value is True or value == {}:
                out["x-kubernetes-preserve-unknown-fields"] = True
            elif isinstance(value, dict):
                out[key] = to_structural(value, defs)
        elif key == "items":
            items = to_structural(value, defs)
            out[key] = items
        elif key == "exclusiveMinimum" and not isinstance(value, bool):
            out["minimum"], out["exclusiveMinimum"] = value, True
        elif key == "exclusiveMaximum" and not isinstance(value, bool):
            out["maximum"], out["exclusiveMaximum"] = value, True
        else:
            out[key] = value
    if out.get("type") == "object" and "properties" not in out and "additionalProperties" not in out:
        out["x-kubernetes-preserve-unknown-fields"] = True
    if out.get("type") == "array" and out.get("items") == {}:
        out["items"] = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    if "default" in out and out["default"] is None:
        del out["default"]
    return out


def model_schema(model: type[Any]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    result: dict[str, Any] = to_structural(raw, raw.get("$defs", {}))
    return result


def status_schema() -> dict[str, Any]:
    schema = model_schema(TaskQueueStatus)
    # Conditions are a map keyed by type so server-side apply merges them per type.
    conds = schema["properties"]["conditions"]
    conds["x-kubernetes-list-type"] = "map"
    conds["x-kubernetes-list-map-keys"] = ["type"]
    return schema


def build_crd() -> dict[str, Any]:
    spec = model_schema(TaskQueueSpec)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {"kind": KIND, "plural": PLURAL, "singular": SINGULAR, "shortNames": SHORT_NAMES},
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "A Herder task queue and its autoscaled workers.",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string", "description": "herder.dev/v1alpha1"},
                                "kind": {"type": "string", "description": "TaskQueue"},
                                "metadata": {"type": "object", "description": "Standard object metadata."},
                                "spec": spec,
                                "status": status_schema(),
                            },
                        }
                    },
                }
            ],
        },
    }


def render() -> str:
    header = "# Generated by `python -m herder_operator.crd` from herder_operator/spec.py. Do not edit.\n"
    return header + yaml.safe_dump(build_crd(), sort_keys=False, width=100)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument(
        "--output",
        "-o",
        type=Path,
        action="append",
        help="file to write (default: crds/ and the chart's copy)",
    )
    parser.add_argument("--check", action="store_true", help="fail when a file differs")
    args = parser.parse_args(argv)
    outputs: list[Path] = args.output or [DEFAULT_PATH, *([CHART_PATH] if CHART_PATH.parent.is_dir() else [])]
    text = render()
    stale = [p for p in outputs if not p.exists() or p.read_text() != text]
    if args.check:
        for p in stale:
            print(f"{p} is out of date: run python -m herder_operator.crd", file=sys.stderr)
        return 1 if stale else 0
    for p in outputs:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
