"""The rendered RayService validated against KubeRay v1.7.0's own CRDs, and the CRD check itself.

The conversion of the CRDs' structural schemas to JSON Schema, and why it refuses fields the
API server would prune, is in `helpers.crd_schema`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Final

import jsonschema
import pytest
from helpers.crd_schema import crd_errors, crd_json_schema, structural_to_json_schema
from helpers.documents import ray_cluster_document, ray_service_document
from helpers.stack_files import STACKS

from infra.plan import ServingPlan

UPGRADE_STRATEGIES: Final = ("NewCluster", "NewClusterWithIncrementalUpgrade", "None")
DEPRECATED_RAYSERVICE_FIELDS: Final = (
    "serviceUnhealthySecondThreshold",
    "deploymentUnhealthySecondThreshold",
)


def ray_service(plan: ServingPlan) -> dict[str, Any]:
    return ray_service_document(plan.ray_service_spec)


def ray_cluster(plan: ServingPlan) -> dict[str, Any]:
    return ray_cluster_document(plan.ray_service_spec["rayClusterConfig"])


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

Document = dict[str, Any]


def _cluster(document: Document) -> Document:
    cluster: Document = document["spec"]["rayClusterConfig"]
    return cluster


def _worker(document: Document) -> Document:
    worker: Document = _cluster(document)["workerGroupSpecs"][0]
    return worker


def _worker_container(document: Document) -> Document:
    container: Document = _worker(document)["template"]["spec"]["containers"][0]
    return container


def _rename(mapping: Document, old: str, new: str) -> None:
    mapping[new] = mapping.pop(old)


WORKER = "spec.rayClusterConfig.workerGroupSpecs.0"
# Each mistake made in the prod RayService, and (part of) a `path: message` error it must produce.
MISTAKES: dict[str, tuple[Callable[[Document], None], str]] = {
    "misspelt-field": (
        lambda d: _rename(_cluster(d), "workerGroupSpecs", "workerGroupSpec"),
        "spec.rayClusterConfig: Additional properties are not allowed ('workerGroupSpec' was unexpected)",
    ),
    "misspelt-field-deep-in-a-pod-template": (
        lambda d: _rename(_worker_container(d), "resources", "resource"),
        f"{WORKER}.template.spec.containers.0: Additional properties are not allowed "
        "('resource' was unexpected)",
    ),
    "misspelt-worker-group-field": (
        lambda d: _worker(d).update(maxReplica=3),
        f"{WORKER}: Additional properties are not allowed ('maxReplica' was unexpected)",
    ),
    "misspelt-deprecated-field": (
        lambda d: d["spec"].update(serviceUnhealthySecondsThreshold=900),
        "spec: Additional properties are not allowed ('serviceUnhealthySecondsThreshold' was unexpected)",
    ),
    "string-for-integer": (
        lambda d: _worker(d).update(maxReplicas="4"),
        f"{WORKER}.maxReplicas: '4' is not of type 'integer'",
    ),
    "word-for-integer": (
        lambda d: _worker(d).update(replicas="one"),
        f"{WORKER}.replicas: 'one' is not of type 'integer'",
    ),
    "string-for-integer-in-spec": (
        lambda d: d["spec"].update(rayClusterDeletionDelaySeconds="60"),
        "spec.rayClusterDeletionDelaySeconds: '60' is not of type 'integer'",
    ),
    "string-for-boolean": (
        lambda d: _cluster(d).update(enableInTreeAutoscaling="yes"),
        "spec.rayClusterConfig.enableInTreeAutoscaling: 'yes' is not of type 'boolean'",
    ),
    "value-outside-enum": (
        lambda d: _cluster(d)["autoscalerOptions"].update(upscalingMode="Fast"),
        "spec.rayClusterConfig.autoscalerOptions.upscalingMode: 'Fast' is not one of",
    ),
    "missing-group-name": (
        lambda d: _worker(d).pop("groupName"),
        f"{WORKER}: 'groupName' is a required property",
    ),
    "missing-container-name": (
        lambda d: _cluster(d)["headGroupSpec"]["template"]["spec"]["containers"][0].pop("name"),
        "spec.rayClusterConfig.headGroupSpec.template.spec.containers.0: 'name' is a required property",
    ),
    "name-not-a-dns-subdomain": (
        lambda d: d["metadata"].update(name="LLM"),
        "metadata.name: 'LLM' does not match",
    ),
}


@pytest.mark.parametrize("mistake", sorted(MISTAKES))
def test_each_mistake_is_rejected_at_its_path(plans: dict[str, ServingPlan], mistake: str) -> None:
    document = ray_service(plans["prod"])
    make, expected = MISTAKES[mistake]
    make(document)
    errors = crd_errors("RayService", document)
    assert any(error.startswith(expected) for error in errors), errors


def test_int_or_string_quantities(plans: dict[str, ServingPlan]) -> None:
    document = ray_service(plans["prod"])
    limits = _worker_container(document)["resources"]["limits"]
    limits["cpu"] = 7  # an integer is a valid quantity
    limits["memory"] = "24Gi"
    assert crd_errors("RayService", document) == []
    limits["memory"] = "24 GiB"  # not a Kubernetes quantity
    assert crd_errors("RayService", document)
    limits["memory"] = 1.5  # neither integer nor string
    assert crd_errors("RayService", document)


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
