"""The rendered RayService validated against KubeRay v1.7.0's own CRDs (issue 2, item 6).

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
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterator
from typing import Any, Final

import jsonschema
import pytest
import yaml
from conftest import STACKS, kuberay_dir

from infra.plan import ServingPlan
from infra.plan.ray_service import NAMESPACE, RAY_SERVICE_NAME

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
OBJECT_META_SCHEMA: Final = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 253, "pattern": _DNS_1123_SUBDOMAIN},
        "namespace": {"type": "string", "maxLength": 63, "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
    "required": ["name", "namespace"],
}
UPGRADE_STRATEGIES: Final = ("NewCluster", "NewClusterWithIncrementalUpgrade", "None")
DEPRECATED_RAYSERVICE_FIELDS: Final = (
    "serviceUnhealthySecondThreshold",
    "deploymentUnhealthySecondThreshold",
)


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


@functools.cache
def crd_json_schema(kind: str) -> tuple[dict[str, Any], tuple[str, ...]]:
    """JSON Schema of the served storage version (v1) of a KubeRay CRD, and its CEL-rule paths."""
    plural = {"RayService": "rayservices", "RayCluster": "rayclusters"}[kind]
    path = kuberay_dir() / "crds" / f"ray.io_{plural}.yaml"
    if not path.is_file():
        pytest.fail(f"{path} is missing: the KubeRay v1.7.0 CRDs must be in ../shared")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    crd = yaml.load(path.read_text(encoding="utf-8"), Loader=loader)
    assert crd["spec"]["names"]["kind"] == kind
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    assert version["served"] and version["storage"]
    structural = copy.deepcopy(version["schema"]["openAPIV3Schema"])
    assert structural["properties"]["metadata"] == {"type": "object"}
    structural["properties"]["metadata"] = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    cel: list[str] = []
    schema = structural_to_json_schema(structural, cel=cel)
    schema["properties"]["metadata"] = OBJECT_META_SCHEMA
    schema["properties"]["apiVersion"] = {"const": "ray.io/v1"}
    schema["properties"]["kind"] = {"const": kind}
    schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind", "metadata", "spec"})
    schema["$schema"] = "http://json-schema.org/draft-07/schema#"
    jsonschema.Draft7Validator.check_schema(schema)
    return schema, tuple(cel)


def crd_errors(kind: str, document: dict[str, Any]) -> list[str]:
    schema, _ = crd_json_schema(kind)
    validator = jsonschema.Draft7Validator(schema)
    return sorted(
        f"{'.'.join(map(str, error.absolute_path)) or '(root)'}: {error.message}"
        for error in validator.iter_errors(document)
    )


def ray_service(plan: ServingPlan) -> dict[str, Any]:
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": RAY_SERVICE_NAME, "namespace": NAMESPACE},
        "spec": copy.deepcopy(plan.ray_service_spec),
    }


def ray_cluster(plan: ServingPlan) -> dict[str, Any]:
    """The RayCluster KubeRay creates from the RayService's rayClusterConfig."""
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": {"name": f"{RAY_SERVICE_NAME}-raycluster", "namespace": NAMESPACE},
        "spec": copy.deepcopy(plan.ray_service_spec["rayClusterConfig"]),
    }


def _paths(value: Any, path: str = "") -> Iterator[str]:
    """Every field path in a document, in the converter's notation (lists as `[]`)."""
    if isinstance(value, dict):
        for key, item in value.items():
            child = f"{path}.{key}"
            yield child
            yield from _paths(item, child)
    elif isinstance(value, list):
        for item in value:
            yield from _paths(item, f"{path}[]")


# --- the plan against the CRDs ------------------------------------------------------------


@pytest.mark.parametrize("stack", STACKS)
def test_rayservice_validates_against_the_crd(plans: dict[str, ServingPlan], stack: str) -> None:
    assert crd_errors("RayService", ray_service(plans[stack])) == []


@pytest.mark.parametrize("stack", STACKS)
def test_raycluster_config_validates_against_the_raycluster_crd(
    plans: dict[str, ServingPlan], stack: str
) -> None:
    assert crd_errors("RayCluster", ray_cluster(plans[stack])) == []


@pytest.mark.parametrize("stack", STACKS)
def test_no_deprecated_fields(plans: dict[str, ServingPlan], stack: str) -> None:
    spec = plans[stack].ray_service_spec
    for field in DEPRECATED_RAYSERVICE_FIELDS:
        assert field not in spec
    # Still in the v1.7.0 CRD, so the schema alone would let them through.
    schema, _ = crd_json_schema("RayService")
    assert set(DEPRECATED_RAYSERVICE_FIELDS) <= set(schema["properties"]["spec"]["properties"])


@pytest.mark.parametrize("stack", STACKS)
def test_upgrade_strategy_is_one_kuberay_knows(plans: dict[str, ServingPlan], stack: str) -> None:
    # The CRD types upgradeStrategy.type as a free string; the operator only knows these.
    assert plans[stack].ray_service_spec["upgradeStrategy"]["type"] in UPGRADE_STRATEGIES


@pytest.mark.parametrize("stack", STACKS)
def test_plan_sets_no_field_guarded_by_unchecked_cel_rules(plans: dict[str, ServingPlan], stack: str) -> None:
    _, cel = crd_json_schema("RayService")
    assert cel, "the v1.7.0 RayService CRD has CEL rules (managedBy, gcsFaultToleranceOptions.backend)"
    document = ray_service(plans[stack])
    used = set(_paths(document))
    assert not used & set(cel), "set fields guarded by CEL rules: check those rules by hand"


# --- the check can fail --------------------------------------------------------------------


def _prod(plans: dict[str, ServingPlan]) -> dict[str, Any]:
    return ray_service(plans["prod"])


def test_misspelled_field_is_rejected(plans: dict[str, ServingPlan]) -> None:
    document = _prod(plans)
    cluster = document["spec"]["rayClusterConfig"]
    cluster["workerGroupSpec"] = cluster.pop("workerGroupSpecs")
    errors = crd_errors("RayService", document)
    assert any("workerGroupSpec" in error and "Additional properties" in error for error in errors), errors


def test_misspelled_field_deep_in_a_pod_template_is_rejected(plans: dict[str, ServingPlan]) -> None:
    document = _prod(plans)
    container = document["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][
        0
    ]
    container["resource"] = container.pop("resources")
    errors = crd_errors("RayService", document)
    assert any("'resource' was unexpected" in error for error in errors), errors


def test_deprecated_field_name_misspelt_in_spec_is_rejected(plans: dict[str, ServingPlan]) -> None:
    document = _prod(plans)
    document["spec"]["serviceUnhealthySecondsThreshold"] = 900
    assert crd_errors("RayService", document)


def test_wrong_type_is_rejected(plans: dict[str, ServingPlan]) -> None:
    document = _prod(plans)
    document["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["maxReplicas"] = "4"
    errors = crd_errors("RayService", document)
    assert any("maxReplicas: '4' is not of type 'integer'" in error for error in errors), errors


def test_enum_is_enforced(plans: dict[str, ServingPlan]) -> None:
    document = _prod(plans)
    document["spec"]["rayClusterConfig"]["autoscalerOptions"]["upscalingMode"] = "Fast"
    assert crd_errors("RayService", document)


def test_int_or_string_quantities(plans: dict[str, ServingPlan]) -> None:
    document = _prod(plans)
    limits = document["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0][
        "resources"
    ]["limits"]
    limits["cpu"] = 7  # an integer is a valid quantity
    limits["memory"] = "24Gi"
    assert crd_errors("RayService", document) == []
    limits["memory"] = "24 GiB"  # not a Kubernetes quantity
    assert crd_errors("RayService", document)
    limits["memory"] = 1.5  # neither integer nor string
    assert crd_errors("RayService", document)


def test_missing_required_field_is_rejected(plans: dict[str, ServingPlan]) -> None:
    document = _prod(plans)
    del document["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["groupName"]
    errors = crd_errors("RayService", document)
    assert any("'groupName' is a required property" in error for error in errors), errors


# --- the converter itself ------------------------------------------------------------------


def test_converter_keeps_preserve_unknown_fields_open_and_closes_the_rest() -> None:
    structural = {
        "type": "object",
        "properties": {
            "open": {
                "type": "object",
                "x-kubernetes-preserve-unknown-fields": True,
                "properties": {"a": {"type": "string"}},
            },
            "closed": {"type": "object", "properties": {"a": {"type": "string"}}},
            "empty": {"type": "object"},
            "map": {"type": "object", "additionalProperties": {"type": "integer"}},
            "port": {"x-kubernetes-int-or-string": True, "anyOf": [{"type": "integer"}, {"type": "string"}]},
            "maybe": {"type": "string", "nullable": True},
        },
    }
    validator = jsonschema.Draft7Validator(structural_to_json_schema(structural))
    assert validator.is_valid({"open": {"a": "x", "b": 1}, "map": {"k": 1}, "port": "http", "maybe": None})
    assert validator.is_valid({"port": 8080, "empty": {}})
    assert not validator.is_valid({"closed": {"a": "x", "b": 1}})
    assert not validator.is_valid({"empty": {"b": 1}})
    assert not validator.is_valid({"map": {"k": "1"}})
    assert not validator.is_valid({"port": 1.5})
    assert not validator.is_valid({"open": {"a": 1}})
    assert not validator.is_valid({"unknown": 1})


def test_converter_refuses_keywords_it_does_not_understand() -> None:
    with pytest.raises(ValueError, match="exclusiveMinimum"):
        structural_to_json_schema({"type": "integer", "minimum": 0, "exclusiveMinimum": True})
