"""The rendered RayService validated against KubeRay v1.7.0's own CRDs (issue 2, item 6).

The conversion of the CRDs' structural schemas to JSON Schema, and why it refuses fields the
API server would prune, is in `kuberay_schema`.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any, Final

import jsonschema
import pytest
from conftest import STACKS
from helpers.kuberay_schema import crd_errors, crd_json_schema, structural_to_json_schema

from infra.plan import ServingPlan
from infra.plan.ray_service import NAMESPACE, RAY_SERVICE_NAME

UPGRADE_STRATEGIES: Final = ("NewCluster", "NewClusterWithIncrementalUpgrade", "None")
DEPRECATED_RAYSERVICE_FIELDS: Final = (
    "serviceUnhealthySecondThreshold",
    "deploymentUnhealthySecondThreshold",
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
