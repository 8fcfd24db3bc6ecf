"""A RayService checked against KubeRay v1.7.0's own CRD: `validate_ray_service(obj) -> list[str]`.

The CRD's `openAPIV3Schema` is a Kubernetes structural schema. The API server *prunes*
fields it does not declare instead of refusing them, so a misspelt field would vanish
silently on `kubectl apply`. The conversion to JSON Schema (Draft 7) below refuses them:

- `properties` listed and no `x-kubernetes-preserve-unknown-fields: true` ->
  `additionalProperties: false`;
- `additionalProperties: <schema>` (a map) is kept; `x-kubernetes-preserve-unknown-fields`
  leaves the object open;
- `x-kubernetes-int-or-string: true` -> `anyOf: [integer, string]` (the string branch keeps
  `pattern`/length constraints);
- `nullable: true` adds `null`; `format: int32/int64` become integer ranges;
- annotations (`description`, `default`, list/map types) are dropped and CEL rules
  (`x-kubernetes-validations`) cannot be evaluated here; any other keyword raises, so a
  constraint is never ignored silently.

The root `metadata` is a bare `type: object` in the CRD (the API server checks ObjectMeta
itself); it is replaced by a small ObjectMeta schema (name and namespace required, DNS names).

The CRD is read from `../shared/kuberay-v1.7.0/crds/ray.io_rayservices.yaml` next to the repo;
if it is missing the calling test fails (never skips).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Final

import jsonschema
import pytest
import yaml

CRD_PATH: Final = (
    Path(__file__).resolve().parents[1].parent
    / "shared"
    / "kuberay-v1.7.0"
    / "crds"
    / "ray.io_rayservices.yaml"
)
_ANNOTATIONS: Final = frozenset(
    {
        "description",
        "default",
        "example",
        "x-kubernetes-list-type",
        "x-kubernetes-list-map-keys",
        "x-kubernetes-map-type",
        "x-kubernetes-validations",
        "x-kubernetes-embedded-resource",
    }
)
_COPIED: Final = frozenset(
    {
        "type",
        "required",
        "enum",
        "pattern",
        "minLength",
        "maxLength",
        "minimum",
        "maximum",
        "minItems",
        "maxItems",
    }
)
_STRUCTURE: Final = frozenset(
    {
        "properties",
        "additionalProperties",
        "items",
        "anyOf",
        "allOf",
        "oneOf",
        "not",
        "nullable",
        "format",
        "x-kubernetes-int-or-string",
        "x-kubernetes-preserve-unknown-fields",
    }
)
_STRING_CONSTRAINTS: Final = ("pattern", "minLength", "maxLength", "enum")
_INT_RANGES: Final = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}
_DNS_LABEL: Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_DNS_SUBDOMAIN: Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
OBJECT_META: Final = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 253, "pattern": _DNS_SUBDOMAIN},
        "namespace": {"type": "string", "maxLength": 63, "pattern": _DNS_LABEL},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
    "required": ["name", "namespace"],
}


def structural_to_json_schema(node: dict[str, Any], path: str = "") -> dict[str, Any]:
    """Draft 7 JSON Schema accepting what the structural schema keeps and refusing what it prunes."""
    unknown = set(node) - _ANNOTATIONS - _COPIED - _STRUCTURE
    if unknown:
        raise ValueError(f"{path or '(root)'}: unsupported schema keywords {sorted(unknown)}")
    if node.get("x-kubernetes-int-or-string"):
        string: dict[str, Any] = {"type": "string"}
        string.update({key: node[key] for key in _STRING_CONSTRAINTS if key in node})
        return {"anyOf": [{"type": "integer"}, string]}

    out: dict[str, Any] = {key: node[key] for key in _COPIED if key in node}
    if node.get("type") == "integer" and node.get("format") in _INT_RANGES:
        low, high = _INT_RANGES[node["format"]]
        out.setdefault("minimum", low)
        out.setdefault("maximum", high)
    for key in ("anyOf", "allOf", "oneOf"):
        if key in node:
            out[key] = [structural_to_json_schema(item, f"{path}<{key}>") for item in node[key]]
    if "not" in node:
        out["not"] = structural_to_json_schema(node["not"], f"{path}<not>")
    if "items" in node:
        out["items"] = structural_to_json_schema(node["items"], f"{path}[]")
    if "properties" in node:
        out["properties"] = {
            name: structural_to_json_schema(child, f"{path}.{name}")
            for name, child in node["properties"].items()
        }
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):
        out["additionalProperties"] = structural_to_json_schema(extra, f"{path}{{*}}")
    elif isinstance(extra, bool):
        out["additionalProperties"] = extra
    elif "properties" in node and not node.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False  # the API server would prune it: refuse it instead
    if node.get("nullable"):
        if "type" in out:
            out["type"] = [out["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    return out


@functools.cache
def ray_service_json_schema() -> dict[str, Any]:
    """JSON Schema of the RayService CRD's served storage version (v1)."""
    if not CRD_PATH.is_file():
        pytest.fail(f"{CRD_PATH} is missing: the KubeRay v1.7.0 CRDs must be in ../shared next to the repo")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    crd = yaml.load(CRD_PATH.read_text(encoding="utf-8"), Loader=loader)
    assert crd["spec"]["names"]["kind"] == "RayService"
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    assert version["served"] and version["storage"]
    schema = structural_to_json_schema(version["schema"]["openAPIV3Schema"])
    schema["properties"]["metadata"] = OBJECT_META
    schema["properties"]["apiVersion"] = {"const": "ray.io/v1"}
    schema["properties"]["kind"] = {"const": "RayService"}
    schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind", "metadata", "spec"})
    schema["$schema"] = "http://json-schema.org/draft-07/schema#"
    jsonschema.Draft7Validator.check_schema(schema)
    return schema


@functools.cache
def _validator() -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(ray_service_json_schema())


def validate_ray_service(obj: dict[str, Any]) -> list[str]:
    """Every way `obj` (a whole RayService: apiVersion, kind, metadata, spec) breaks the v1.7.0 CRD.

    One `path: message` string per error, sorted; an empty list means valid.
    """
    return sorted(
        f"{'.'.join(map(str, error.absolute_path)) or '(root)'}: {error.message}"
        for error in _validator().iter_errors(obj)
    )
