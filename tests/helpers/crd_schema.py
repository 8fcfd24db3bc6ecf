"""The CRDs of what the stack creates in the cluster, as JSON Schema: `crd_errors(kind, obj)`.

KubeRay v1.7.0's RayService and RayCluster, Google Cloud Managed Service for Prometheus'
PodMonitoring and GKE's ComputeClass (`CRDS` says where each is read from);
`validate_ray_service(obj)` for short.

A CRD's `openAPIV3Schema` is a Kubernetes *structural* schema, not plain JSON Schema. The
API server prunes every field a structural schema does not declare, so a misspelt field
(`workerGroupSpec` for `workerGroupSpecs`) is not an error on `kubectl apply`: it silently
disappears. `structural_to_json_schema` turns the structural schema into a JSON Schema
(Draft 7) that rejects such fields instead:

- an object with `properties` (or with neither `properties` nor `additionalProperties`) and
  without `x-kubernetes-preserve-unknown-fields: true` gets `additionalProperties: false`:
  exactly the fields the API server would prune are the ones rejected;
- an object with `additionalProperties: <schema>` is a map and keeps it;
- `x-kubernetes-preserve-unknown-fields: true` leaves unknown fields allowed;
- `x-kubernetes-int-or-string: true` becomes `anyOf: [integer, string]` (the string branch
  keeps the string constraints such as the quantity `pattern`), since the structural form
  carries no `type`;
- `nullable: true` adds `"null"` to the type;
- `format: int32/int64` become the integer ranges; other formats are not checked;
- annotations without validation meaning (`description`, `default`, `x-kubernetes-list-type`,
  `-list-map-keys`, `-map-type`) are dropped;
- `x-kubernetes-validations` (CEL rules) cannot be evaluated here: their paths are collected
  and the tests assert the plan sets none of those fields;
- any other keyword raises, so the converter never silently ignores a constraint.

OpenAPI v3.0 schema objects differ from Draft 7 only in keywords these CRDs do not use
(boolean `exclusiveMinimum`/`exclusiveMaximum`, which the converter refuses), so Draft 7
validation of the converted schema means what the API server means.

The root `metadata` is `type: object` with no properties in every CRD (the API server
validates ObjectMeta itself); it is replaced by a small ObjectMeta schema.

The CRDs are read from `../shared/` next to the repo: `kuberay-v1.7.0/crds/`
(`helpers.shared_files.kuberay_dir`) and `gmp-crds/` (`helpers.shared_files.gmp_crds_dir`), and
the ComputeClass CRD from `tests/fixtures/crds/` in the repo; if one is missing the calling test
fails (never skips).
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import jsonschema
import pytest
import yaml

from helpers.shared_files import gmp_crds_dir, kuberay_dir
from serve.paths import REPO_ROOT

# CRDs CI has no other copy of, committed with their source (README.md there).
VENDORED_CRDS_DIR: Final = REPO_ROOT / "tests" / "fixtures" / "crds"

_DROPPED: Final = frozenset(
    {
        "description",
        "default",
        "x-kubernetes-list-type",
        "x-kubernetes-list-map-keys",
        "x-kubernetes-map-type",
        "example",
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
        "minProperties",
        "maxProperties",
    }
)
_HANDLED: Final = frozenset(
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
        "x-kubernetes-validations",
    }
)
_STRING_KEYWORDS: Final = ("pattern", "minLength", "maxLength", "enum")
_INT_RANGES: Final = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}
_DNS_1123_SUBDOMAIN: Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
_NAME_AND_LABELS: Final = {
    "name": {"type": "string", "maxLength": 253, "pattern": _DNS_1123_SUBDOMAIN},
    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
    "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
}
OBJECT_META_SCHEMA: Final = {
    "type": "object",
    "properties": {
        **_NAME_AND_LABELS,
        "namespace": {"type": "string", "maxLength": 63, "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
    },
    "required": ["name", "namespace"],
}
# A cluster-scoped object (ComputeClass) has a name and no namespace.
CLUSTER_OBJECT_META_SCHEMA: Final = {
    "type": "object",
    "properties": _NAME_AND_LABELS,
    "required": ["name"],
    "not": {"required": ["namespace"]},
}


def structural_to_json_schema(
    node: dict[str, Any], path: str = "", cel: list[str] | None = None
) -> dict[str, Any]:
    """A Draft 7 JSON Schema that accepts what the structural schema keeps and rejects what it prunes.

    `cel` collects the paths that carry `x-kubernetes-validations` rules (not evaluated here).
    """
    unknown = set(node) - _DROPPED - _COPIED - _HANDLED
    if unknown:
        raise ValueError(f"{path or '(root)'}: unsupported schema keywords {sorted(unknown)}")
    if "x-kubernetes-validations" in node and cel is not None:
        cel.append(path or "(root)")

    if node.get("x-kubernetes-int-or-string"):
        string: dict[str, Any] = {"type": "string"}
        string.update({key: node[key] for key in _STRING_KEYWORDS if key in node})
        return {"anyOf": [{"type": "integer"}, string]}

    out: dict[str, Any] = {key: copy.deepcopy(node[key]) for key in _COPIED if key in node}
    if node.get("format") in _INT_RANGES and node.get("type") == "integer":
        out["minimum"], out["maximum"] = _INT_RANGES[node["format"]]
    for key in ("anyOf", "allOf", "oneOf"):
        if key in node:
            out[key] = [structural_to_json_schema(item, f"{path}<{key}>", cel) for item in node[key]]
    if "not" in node:
        out["not"] = structural_to_json_schema(node["not"], f"{path}<not>", cel)
    if "items" in node:
        out["items"] = structural_to_json_schema(node["items"], f"{path}[]", cel)

    if node.get("type") == "object" or "properties" in node:
        out["properties"] = {
            name: structural_to_json_schema(child, f"{path}.{name}", cel)
            for name, child in node.get("properties", {}).items()
        }
        extra = node.get("additionalProperties")
        if isinstance(extra, dict):
            out["additionalProperties"] = structural_to_json_schema(extra, f"{path}{{*}}", cel)
        elif isinstance(extra, bool):
            out["additionalProperties"] = extra
        elif not node.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False  # the API server would prune it: reject it instead

    if node.get("nullable"):
        if "type" in out:
            out["type"] = [out["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    return out


@dataclass(frozen=True)
class Crd:
    group: str
    plural: str
    directory: Callable[[], Path]
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/v1"

    def path(self) -> Path:
        return self.directory() / f"{self.group}_{self.plural}.yaml"


CRDS: Final = {
    "RayService": Crd("ray.io", "rayservices", lambda: kuberay_dir() / "crds"),
    "RayCluster": Crd("ray.io", "rayclusters", lambda: kuberay_dir() / "crds"),
    "PodMonitoring": Crd("monitoring.googleapis.com", "podmonitorings", gmp_crds_dir),
    # Not in ../shared: vendored in the repo (tests/fixtures/crds/README.md says from where).
    "ComputeClass": Crd("cloud.google.com", "computeclasses", lambda: VENDORED_CRDS_DIR, namespaced=False),
}


@functools.cache
def crd_json_schema(kind: str) -> tuple[dict[str, Any], tuple[str, ...]]:
    """JSON Schema of the served storage version (v1) of a CRD in `CRDS`, and its CEL-rule paths."""
    crd_file = CRDS[kind]
    path = crd_file.path()
    if not path.is_file():
        pytest.fail(f"{path} is missing: the {kind} CRD must be in ../shared or {VENDORED_CRDS_DIR}")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    crd = yaml.load(path.read_text(encoding="utf-8"), Loader=loader)
    assert crd["spec"]["names"]["kind"] == kind
    assert crd["spec"]["scope"] == ("Namespaced" if crd_file.namespaced else "Cluster")
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    assert version["served"] and version["storage"]
    structural = copy.deepcopy(version["schema"]["openAPIV3Schema"])
    assert structural["properties"]["metadata"] == {"type": "object"}
    structural["properties"]["metadata"] = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    cel: list[str] = []
    schema = structural_to_json_schema(structural, cel=cel)
    schema["properties"]["metadata"] = (
        OBJECT_META_SCHEMA if crd_file.namespaced else CLUSTER_OBJECT_META_SCHEMA
    )
    schema["properties"]["apiVersion"] = {"const": crd_file.api_version}
    schema["properties"]["kind"] = {"const": kind}
    schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind", "metadata", "spec"})
    schema["$schema"] = "http://json-schema.org/draft-07/schema#"
    jsonschema.Draft7Validator.check_schema(schema)
    return schema, tuple(cel)


@functools.cache
def _validator(kind: str) -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(crd_json_schema(kind)[0])


def crd_errors(kind: str, document: dict[str, Any]) -> list[str]:
    """One `path: message` string per way `document` breaks the `kind` CRD, sorted; [] if valid."""
    return sorted(
        f"{'.'.join(map(str, error.absolute_path)) or '(root)'}: {error.message}"
        for error in _validator(kind).iter_errors(document)
    )


def validate_ray_service(obj: dict[str, Any]) -> list[str]:
    """Every way a whole RayService (apiVersion, kind, metadata, spec) breaks the v1.7.0 CRD."""
    return crd_errors("RayService", obj)
