"""Spare GPU nodes (infra/plan/spare_capacity.py): the placeholders' priority against the cluster
autoscaler's expendable cutoff, their shape against the Ray worker's, where they may run, and
that only the stacks that keep spare nodes get any."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from helpers.crd_schema import crd_errors
from helpers.settings_edits import with_tier

from infra.node_labels import POOL_LABEL
from infra.plan import ServingPlan, build_plan
from infra.plan.gke_nodes import schedulable
from infra.plan.ray_service import NAMESPACE
from infra.plan.spare_capacity import (
    AUTOSCALER_EXPENDABLE_PRIORITY_CUTOFF,
    SPARE_PRIORITY_CLASS,
    spare_deployment,
    spare_name,
    spare_priority_class,
)
from infra.resource_types import SKIP_AWAIT_ANNOTATION
from serve.tiers import TierName


def _worker_group(plan: ServingPlan, tier: TierName) -> dict[str, Any]:
    group: dict[str, Any] = next(
        g for g in plan.ray_cluster_config["workerGroupSpecs"] if g["groupName"] == tier.value
    )
    return group


def _placeholder_pod(plan: ServingPlan, tier: TierName) -> dict[str, Any]:
    (deployment,) = [d for d in plan.spare_deployments if d["metadata"]["name"] == spare_name(tier)]
    pod: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return pod


def _tolerates(tolerations: list[dict[str, str]], key: str, value: str, effect: str) -> bool:
    return any(
        t["key"] == key and t["operator"] == "Equal" and t["value"] == value and t["effect"] == effect
        for t in tolerations
    )


# --- the priority -------------------------------------------------------------------------------


def test_the_placeholders_priority_still_makes_the_autoscaler_add_a_node() -> None:
    """Below the cutoff a pending placeholder is expendable: the autoscaler would never create the
    spare node for it. At the cutoff it does, and any pod at priority 0 (Ray's) preempts it."""
    priority_class = spare_priority_class()
    # The autoscaler's default cutoff, as its flag's help text gives it (cited in the module).
    assert AUTOSCALER_EXPENDABLE_PRIORITY_CUTOFF == -10
    assert priority_class["value"] >= AUTOSCALER_EXPENDABLE_PRIORITY_CUTOFF
    # The lowest such priority: every other pod of the cluster outranks the placeholders.
    assert priority_class["value"] == AUTOSCALER_EXPENDABLE_PRIORITY_CUTOFF < 0
    assert priority_class["metadata"]["name"] == SPARE_PRIORITY_CLASS


def test_placeholders_never_preempt_and_are_never_the_default() -> None:
    priority_class = spare_priority_class()
    assert priority_class["preemptionPolicy"] == "Never"
    assert priority_class["globalDefault"] is False
    assert priority_class["description"].strip()
    assert (priority_class["apiVersion"], priority_class["kind"]) == ("scheduling.k8s.io/v1", "PriorityClass")


# --- which stacks keep spare nodes --------------------------------------------------------------


def test_only_prods_l4_keeps_a_spare_node(plans: dict[str, ServingPlan]) -> None:
    assert plans["dev"].spare_deployments == [] and plans["dev"].spare_priority_class is None
    assert all(count == 0 for count in plans["dev"].spare_nodes.values())
    prod = plans["prod"]
    assert [d["metadata"]["name"] for d in prod.spare_deployments] == ["spare-l4"]
    assert prod.spare_deployments[0]["spec"]["replicas"] == prod.settings.tiers[TierName.L4].spare_nodes == 1
    assert prod.spare_deployments[0]["metadata"]["namespace"] == NAMESPACE
    assert prod.spare_priority_class == spare_priority_class()


def test_the_replicas_follow_spare_nodes_and_zero_means_no_deployment(plans: dict[str, ServingPlan]) -> None:
    prod = plans["prod"]
    three = build_plan(prod.catalog, with_tier(TierName.T4, spare_nodes=3)(prod.settings))
    assert {d["metadata"]["name"]: d["spec"]["replicas"] for d in three.spare_deployments} == {
        "spare-t4": 3,
        "spare-l4": 1,
    }
    none = build_plan(prod.catalog, with_tier(TierName.L4, spare_nodes=0)(prod.settings))
    assert none.spare_deployments == [] and none.spare_priority_class is None


def test_a_disabled_tier_keeps_no_spare_node(plans: dict[str, ServingPlan]) -> None:
    dev = plans["dev"]
    assert not dev.settings.tiers[TierName.A100].enabled
    edited = build_plan(dev.catalog, with_tier(TierName.A100, spare_nodes=1)(dev.settings))
    assert edited.spare_deployments == [] and edited.spare_priority_class is None


# --- the placeholder is one worker's room --------------------------------------------------------


def test_the_placeholder_requests_exactly_what_the_worker_does(plans: dict[str, ServingPlan]) -> None:
    plan = plans["prod"]
    (worker,) = _worker_group(plan, TierName.L4)["template"]["spec"]["containers"]
    (placeholder,) = _placeholder_pod(plan, TierName.L4)["containers"]
    assert placeholder["resources"] == worker["resources"]
    assert placeholder["resources"]["requests"] == placeholder["resources"]["limits"]
    assert (
        placeholder["resources"]["requests"]["nvidia.com/gpu"]
        == worker["resources"]["requests"]["nvidia.com/gpu"]
    )


def test_a_change_to_the_workers_memory_reaches_the_placeholder(plans: dict[str, ServingPlan]) -> None:
    plan = plans["prod"]
    pool = next(p for p in plan.gpu_pools if p.tier is TierName.L4)
    config = copy.deepcopy(plan.ray_cluster_config)
    (worker,) = next(g for g in config["workerGroupSpecs"] if g["groupName"] == "l4")["template"]["spec"][
        "containers"
    ]
    worker["resources"]["requests"]["memory"] = worker["resources"]["limits"]["memory"] = "20Gi"
    (placeholder,) = spare_deployment(pool, 1, config, NAMESPACE)["spec"]["template"]["spec"]["containers"]
    assert placeholder["resources"]["requests"]["memory"] == "20Gi"
    assert placeholder["resources"]["limits"]["memory"] == "20Gi"


def test_one_placeholder_fills_a_node_so_its_eviction_frees_one_workers_room(
    plans: dict[str, ServingPlan],
) -> None:
    plan = plans["prod"]
    pool = next(p for p in plan.gpu_pools if p.tier is TierName.L4)
    node = schedulable(pool.machine)
    requests = _placeholder_pod(plan, TierName.L4)["containers"][0]["resources"]["requests"]
    cpus, memory_gib = int(requests["cpu"]), int(requests["memory"].removesuffix("Gi"))
    assert cpus * 1000 <= node.cpu_millis < 2 * cpus * 1000
    assert memory_gib * 1024 <= node.memory_mib < 2 * memory_gib * 1024
    assert int(requests["nvidia.com/gpu"]) == pool.accelerator_count


def test_the_placeholder_runs_only_on_the_tiers_spot_pool(plans: dict[str, ServingPlan]) -> None:
    plan = plans["prod"]
    spot = next(p for p in plan.gpu_pools if p.tier is TierName.L4)
    (fallback,) = [p for p in plan.fallback_pools if p.tier is TierName.L4]
    assert spot.spot and not fallback.spot
    pod = _placeholder_pod(plan, TierName.L4)
    selector = pod["nodeSelector"]
    assert selector.items() <= spot.labels.items(), "a node of the spot pool must match"
    assert not selector.items() <= fallback.labels.items(), "no node of the on-demand fallback may match"
    assert selector[POOL_LABEL] == spot.name
    # Every node it may hold is one the tier's worker may use: the worker's selector, narrowed.
    worker_selector = _worker_group(plan, TierName.L4)["template"]["spec"]["nodeSelector"]
    assert worker_selector.items() <= selector.items()
    for taint in spot.taints:
        assert _tolerates(pod["tolerations"], taint.key, taint.value, taint.effect), taint
    assert pod["tolerations"] == _worker_group(plan, TierName.L4)["template"]["spec"]["tolerations"]


def test_the_placeholder_pulls_the_workers_image_and_only_sleeps(plans: dict[str, ServingPlan]) -> None:
    plan = plans["prod"]
    pod = _placeholder_pod(plan, TierName.L4)
    (placeholder,) = pod["containers"]
    (worker,) = _worker_group(plan, TierName.L4)["template"]["spec"]["containers"]
    assert placeholder["image"] == worker["image"] == plan.image
    assert ".pkg.dev/" in placeholder["image"], "through the stack's Artifact Registry, like the workers"
    assert placeholder["command"] == ["sleep", "infinity"]
    assert "env" not in placeholder and "envFrom" not in placeholder and "volumeMounts" not in placeholder
    assert pod["automountServiceAccountToken"] is False and "serviceAccountName" not in pod
    assert pod["terminationGracePeriodSeconds"] == 0
    assert pod["priorityClassName"] == SPARE_PRIORITY_CLASS


def test_a_rollout_never_surges_a_second_placeholder(plans: dict[str, ServingPlan]) -> None:
    (deployment,) = plans["prod"].spare_deployments
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"] == labels
    assert labels["app.kubernetes.io/component"] == "spare-l4"
    # A pending placeholder (spot stockout) must not fail or hold up `pulumi up`.
    assert deployment["metadata"]["annotations"] == {SKIP_AWAIT_ANNOTATION: "true"}


def test_the_placeholders_pod_template_is_a_valid_kubernetes_pod_template(
    plans: dict[str, ServingPlan],
) -> None:
    """KubeRay's RayCluster CRD embeds Kubernetes' PodTemplateSpec schema: a worker group with the
    placeholder's template validates every field name and type of it."""
    plan = plans["prod"]
    (deployment,) = plan.spare_deployments
    config = copy.deepcopy(plan.ray_cluster_config)
    config["workerGroupSpecs"][0]["template"] = copy.deepcopy(deployment["spec"]["template"])
    document = {
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": {"name": "x", "namespace": NAMESPACE},
        "spec": config,
    }
    assert crd_errors("RayCluster", document) == []
    broken = copy.deepcopy(document)
    broken["spec"]["workerGroupSpecs"][0]["template"]["spec"]["automountServiceAcountToken"] = False
    assert crd_errors("RayCluster", broken) != []


@pytest.mark.parametrize("tier", [TierName.T4, TierName.A100])
def test_every_tier_gets_its_own_workers_shape(plans: dict[str, ServingPlan], tier: TierName) -> None:
    prod = plans["prod"]
    plan = build_plan(prod.catalog, with_tier(tier, spare_nodes=1)(prod.settings))
    (worker,) = _worker_group(plan, tier)["template"]["spec"]["containers"]
    pod = _placeholder_pod(plan, tier)
    assert pod["containers"][0]["resources"] == worker["resources"]
    assert pod["nodeSelector"][POOL_LABEL] == next(p.name for p in plan.gpu_pools if p.tier is tier)
