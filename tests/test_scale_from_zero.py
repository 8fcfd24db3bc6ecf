"""Scale from zero: the autoscaler can start a GPU node for every served model's replica, and the
worker pod it asks for can land on every pool of its tier (the spot pool and its fallback).

The failure mode: KubeRay's autoscaler knows a worker group only by the Ray resources it
derives from the group spec; Ray Serve LLM asks for `accelerator_type:<T>` in every replica
bundle; a group at zero that does not declare that resource is never scaled up.

Everything below is Ray's own code, run offline (`helpers.ray_oracles`):
- the node types come from `_derive_autoscaling_config_from_ray_cr`, the function the
  KubeRay autoscaler runs on the RayCluster CR;
- the replica bundles come from Ray Serve LLM's `LLMServer.get_deployment_options`, the options
  `build_openai_app` deploys each model's replicas with;
- scheduling uses autoscaler v2's `ResourceDemandScheduler` (the cluster runs autoscaler v2),
  with each replica's placement group as a gang request, from a cluster with no worker nodes.
"""

from __future__ import annotations

import copy
import json
from collections import Counter
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest
from helpers.generated_catalog import mixed_small_catalog, scaling_to_zero
from helpers.settings_edits import with_scaling, with_tier
from helpers.stack_files import STACKS

from infra.plan import ServingPlan, build_plan, packed_tier_gpus
from infra.plan.node_fit import placement_problems
from infra.plan.node_pools import COMPUTE_CLASS_KEY, Taint
from serve.catalog import ModelEntry
from serve.serve_config import model_applications, model_deployment_config
from serve.tiers import RAY_ACCELERATOR_RESOURCE_PREFIX, TIERS, TierName

HEAD = "headgroup"


@pytest.fixture(autouse=True, scope="module")
def _ray_never_started(ray_oracles: ModuleType) -> Iterator[None]:
    yield
    assert not ray_oracles.ray.is_initialized(), "a scale-from-zero check started Ray; they must stay offline"


def _served(plan: ServingPlan) -> list[tuple[ModelEntry, dict[str, Any]]]:
    assert len(plan.served) == len(plan.llm_configs) > 0
    return list(zip(plan.served, plan.llm_configs, strict=True))


def _cluster(plan: ServingPlan) -> dict[str, Any]:
    cluster: dict[str, Any] = plan.ray_service_spec["rayClusterConfig"]
    return cluster


# --- what each replica asks for ------------------------------------------------------------

# Worked out for the shipped catalog: one GPU per tensor-parallel rank, each bundle asking for a
# sliver of the tier's accelerator_type resource; the replica actor's one CPU rides in the first
# bundle. A tensor-parallel replica is STRICT_PACK: all of its bundles on one node. The small T4
# chat model is packed: half a GPU (serve/gpu_share.py), so two replicas share one T4.
PROD_REPLICA_BUNDLES = {
    "qwen2-5-1-5b-instruct": ([{"CPU": 1, "GPU": 0.5, "accelerator_type:T4": 0.001}], "PACK"),
    "llama-3-1-8b-instruct": ([{"CPU": 1, "GPU": 1, "accelerator_type:L4": 0.001}], "PACK"),
    "qwen2-5-32b-instruct": (
        [
            {"CPU": 1, "GPU": 1, "accelerator_type:A100-80G": 0.001},
            {"GPU": 1, "accelerator_type:A100-80G": 0.001},
        ],
        "STRICT_PACK",
    ),
    "multilingual-e5-large": ([{"CPU": 1, "GPU": 0.2, "accelerator_type:T4": 0.001}], "PACK"),
    "bge-reranker-v2-m3": ([{"CPU": 1, "GPU": 0.2, "accelerator_type:T4": 0.001}], "PACK"),
}


def test_replica_bundles_of_the_shipped_catalog(
    plans: dict[str, ServingPlan], ray_oracles: ModuleType
) -> None:
    found = {model.id: ray_oracles.replica_bundles(raw) for model, raw in _served(plans["prod"])}
    assert found == PROD_REPLICA_BUNDLES


@pytest.mark.parametrize("stack", STACKS)
def test_bundles_ask_for_the_tiers_accelerator(
    plans: dict[str, ServingPlan], ray_oracles: ModuleType, stack: str
) -> None:
    fractions = {p.model_id: p.gpu_fraction for p in plans[stack].placements}
    for model, raw in _served(plans[stack]):
        bundles, strategy = ray_oracles.replica_bundles(raw)
        resource = f"{RAY_ACCELERATOR_RESOURCE_PREFIX}{model.gpu_tier.ray_accelerator_type}"
        gpus = fractions[model.id] or 1
        assert len(bundles) == model.tensor_parallel_size
        assert all(bundle.get("GPU") == gpus and bundle.get(resource, 0) > 0 for bundle in bundles), bundles
        assert strategy in ("PACK", "STRICT_PACK")


# --- the node types the autoscaler sees ---------------------------------------------------


@pytest.mark.parametrize("stack", STACKS)
def test_each_tier_group_declares_its_accelerator_types(
    plans: dict[str, ServingPlan], ray_oracles: ModuleType, stack: str
) -> None:
    types = ray_oracles.autoscaler_node_types(_cluster(plans[stack]))
    assert types[HEAD]["resources"].get("GPU", 0) == 0
    for pool in plans[stack].gpu_pools:
        assert pool.tier is not None
        resources = types[pool.tier.value]["resources"]
        assert resources["GPU"] == pool.accelerator_count
        for accelerator in TIERS[pool.tier].ray_node_accelerator_types:
            assert resources.get(f"{RAY_ACCELERATOR_RESOURCE_PREFIX}{accelerator}", 0) >= 1


@pytest.mark.parametrize("stack", STACKS)
def test_every_replica_fits_one_node_of_its_tier_and_no_other(
    plans: dict[str, ServingPlan], ray_oracles: ModuleType, stack: str
) -> None:
    fits, total = ray_oracles.fits, ray_oracles.total
    types = ray_oracles.autoscaler_node_types(_cluster(plans[stack]))
    for model, raw in _served(plans[stack]):
        bundles, _ = ray_oracles.replica_bundles(raw)
        own = types.get(model.tier.value)
        assert own is not None, f"no worker group named {model.tier.value} for {model.id}"
        assert own["max_workers"] >= 1, f"{model.id}: group {model.tier.value} can never have a node"
        for bundle in bundles:
            missing = {k: v for k, v in bundle.items() if own["resources"].get(k, 0) < v}
            assert not missing, f"{model.id}: group {model.tier.value} lacks {missing} ({own['resources']})"
        # Tensor parallelism must not span nodes: the whole replica fits one node.
        assert fits(own["resources"], total(bundles)), (model.id, total(bundles), own["resources"])
        for name, other in types.items():
            if name != model.tier.value:
                assert not any(fits(other["resources"], b) for b in bundles), (
                    f"{model.id} could land on {name}"
                )


@pytest.mark.parametrize("stack", STACKS)
def test_autoscaler_starts_one_tier_node_per_first_replica(
    plans: dict[str, ServingPlan], ray_oracles: ModuleType, stack: str
) -> None:
    plan = plans[stack]
    for model, raw in _served(plan):
        gang = ray_oracles.gang(*ray_oracles.replica_bundles(raw))
        launched, infeasible = ray_oracles.schedule_from_zero(_cluster(plan), [gang])
        assert infeasible == 0, f"{model.id}: the autoscaler finds no node type for its replica"
        assert launched == Counter({model.tier.value: 1}), (model.id, launched)


@pytest.mark.parametrize("stack", STACKS)
def test_min_replicas_of_every_model_fit_together(
    plans: dict[str, ServingPlan], ray_oracles: ModuleType, stack: str
) -> None:
    """Every model's minimum (at least one replica, the first request after scale-to-zero) at once."""
    plan = plans[stack]
    gangs = []
    for app in model_applications(plan.serve_config):
        raw = app["args"]["llm_config"]
        replicas = max(1, model_deployment_config(app)["autoscaling_config"]["min_replicas"])
        gangs += [ray_oracles.gang(*ray_oracles.replica_bundles(raw)) for _ in range(replicas)]
    launched, infeasible = ray_oracles.schedule_from_zero(_cluster(plan), gangs)
    assert infeasible == 0, launched
    pools = {pool.tier.value: pool for pool in plan.gpu_pools if pool.tier is not None}
    for tier, count in launched.items():
        assert count <= pools[tier].max_nodes


# --- packed replicas: Ray's autoscaler with fractional GPU demands -------------------------------


def _gangs_at(plan: ServingPlan, ray_oracles: ModuleType, replicas: int) -> list[Any]:
    gangs = []
    for _, raw in _served(plan):
        gangs += [ray_oracles.gang(*ray_oracles.replica_bundles(raw)) for _ in range(replicas)]
    return gangs


def _packed_nodes(plan: ServingPlan, replicas: int) -> Counter[str]:
    pools = {pool.tier.value: pool for pool in plan.gpu_pools if pool.tier is not None}
    nodes: Counter[str] = Counter()
    for tier in pool_tiers(plan):
        on_tier = [model for model in plan.served if model.tier.value == tier]
        gpus = packed_tier_gpus(on_tier, replicas, plan.settings, TierName(tier))
        nodes[tier] = -(-gpus // pools[tier].accelerator_count)
    return +nodes


def pool_tiers(plan: ServingPlan) -> list[str]:
    return sorted({model.tier.value for model in plan.served})


@pytest.mark.parametrize("stack", STACKS)
def test_the_autoscaler_starts_the_nodes_the_packing_counts(
    plans: dict[str, ServingPlan], ray_oracles: ModuleType, stack: str
) -> None:
    """Every model at maxReplicas from zero: Ray's scheduler, bin-packing the fractional bundles
    itself, launches exactly the nodes the plan's packing counts, and none more."""
    plan = plans[stack]
    replicas = plan.settings.autoscaling.max_replicas
    launched, infeasible = ray_oracles.schedule_from_zero(
        _cluster(plan), _gangs_at(plan, ray_oracles, replicas)
    )
    assert infeasible == 0
    assert launched == _packed_nodes(plan, replicas)


def test_two_warm_replicas_start_a_node_each_from_zero(
    plans: dict[str, ServingPlan], ray_oracles: ModuleType
) -> None:
    """Two warm on 2-GPU T4 and 4-GPU A100 nodes: the spread unit makes Ray's own scheduler start
    one node per replica of every model that leaves GPUs free, as the plan counts them."""
    prod = plans["prod"]
    settings = with_scaling(min_replicas=2)(prod.settings)
    settings = with_tier(TierName.T4, gpus_per_node=2, max_nodes=12)(settings)
    plan = build_plan(prod.catalog, with_tier(TierName.A100, gpus_per_node=4)(settings))
    launched, infeasible = ray_oracles.schedule_from_zero(_cluster(plan), _gangs_at(plan, ray_oracles, 2))
    assert infeasible == 0
    assert launched == _packed_nodes(plan, 2) == Counter({"t4": 6, "a100": 2, "l4": 2})


@pytest.mark.parametrize("replicas", [1, 2, 4])
def test_twenty_small_models_scale_from_zero_onto_packed_nodes(
    plans: dict[str, ServingPlan], ray_oracles: ModuleType, replicas: int
) -> None:
    """The generated catalog of 20 small models of every task (T4 and L4), as many replicas of each
    at once: Ray's autoscaler needs no more nodes than the packing, and far fewer than one each."""
    settings = scaling_to_zero(plans["dev"].settings)
    plan = build_plan(mixed_small_catalog(), settings)
    assert all(p.gpu_fraction is not None for p in plan.placements)
    launched, infeasible = ray_oracles.schedule_from_zero(
        _cluster(plan), _gangs_at(plan, ray_oracles, replicas)
    )
    assert infeasible == 0
    packed = _packed_nodes(plan, replicas)
    for tier, nodes in launched.items():
        assert nodes <= packed[tier], (tier, launched, packed)
    assert 2 * sum(launched.values()) <= len(plan.served) * replicas


def test_whole_gpu_bundles_would_need_a_node_per_replica(
    plans: dict[str, ServingPlan], ray_oracles: ModuleType
) -> None:
    """The check can fail: the same 20 models asking for whole GPUs start one node per replica."""
    settings = scaling_to_zero(plans["dev"].settings)
    plan = build_plan(mixed_small_catalog(), settings)
    gangs = []
    for _, raw in _served(plan):
        whole = {key: value for key, value in raw.items() if key != "placement_group_config"}
        gangs.append(ray_oracles.gang(*ray_oracles.replica_bundles(whole)))
    launched, infeasible = ray_oracles.schedule_from_zero(_cluster(plan), gangs)
    assert (sum(launched.values()), infeasible) == (len(plan.served), 0)


# --- the check can fail: a group that does not declare its accelerator ------------------------


def _without_accelerator_resources(cluster: dict[str, Any], group_name: str) -> dict[str, Any]:
    broken = copy.deepcopy(cluster)
    (group,) = [g for g in broken["workerGroupSpecs"] if g["groupName"] == group_name]
    del group["rayStartParams"]["resources"]
    return broken


@pytest.mark.parametrize("stack", STACKS)
def test_group_without_resources_param_is_never_scaled_up(
    plans: dict[str, ServingPlan], ray_oracles: ModuleType, stack: str
) -> None:
    plan = plans[stack]
    for model, raw in _served(plan):
        broken = _without_accelerator_resources(_cluster(plan), model.tier.value)
        group = ray_oracles.autoscaler_node_types(broken)[model.tier.value]
        bundles, strategy = ray_oracles.replica_bundles(raw)
        assert group["resources"]["GPU"] >= 1  # the GPUs are still there ...
        accelerator = f"{RAY_ACCELERATOR_RESOURCE_PREFIX}{model.gpu_tier.ray_accelerator_type}"
        assert accelerator not in group["resources"]  # ... but Ray infers no accelerator type for GPUs
        assert not any(ray_oracles.fits(group["resources"], bundle) for bundle in bundles)
        launched, infeasible = ray_oracles.schedule_from_zero(broken, [ray_oracles.gang(bundles, strategy)])
        assert (launched, infeasible) == (Counter(), 1), json.dumps(group["resources"])


# --- the GKE side: a tier's worker pod lands on every pool of its tier, spot or fallback ---------------


def _worker_pod(plan: ServingPlan, tier: str) -> dict[str, Any]:
    (group,) = [g for g in _cluster(plan)["workerGroupSpecs"] if g["groupName"] == tier]
    pod: dict[str, Any] = group["template"]["spec"]
    return pod


@pytest.mark.parametrize("stack", STACKS)
def test_a_worker_fits_the_spot_pool_and_the_fallback_of_its_tier_and_no_other(
    plans: dict[str, ServingPlan], stack: str
) -> None:
    """When the spot pool cannot scale up, GKE starts a fallback node for the same pending worker:
    the pod must pass the scheduler's filters (nodeSelector, taints, resources) on both."""
    plan = plans[stack]
    pools = (*plan.gpu_pools, *plan.fallback_pools)
    assert len(plan.fallback_pools) == {"dev": 0, "prod": 1}[stack]
    for pool in pools:
        assert pool.tier is not None
        assert placement_problems(_worker_pod(plan, pool.tier.value), pool) == [], pool.name
        for other in pools:
            if other.tier != pool.tier:
                assert placement_problems(_worker_pod(plan, pool.tier.value), other), (pool.name, other.name)


def test_a_fallback_pool_outside_the_class_or_with_an_untolerated_taint_is_caught(
    plans: dict[str, ServingPlan],
) -> None:
    plan = plans["prod"]
    (fallback,) = plan.fallback_pools
    assert fallback.tier is not None
    pod = _worker_pod(plan, fallback.tier.value)
    assert placement_problems(pod, fallback) == []
    # Without the class label, the worker's nodeSelector never matches a fallback node.
    unlabelled = fallback.model_copy(
        update={"labels": {k: v for k, v in fallback.labels.items() if k != COMPUTE_CLASS_KEY}}
    )
    assert any("nodeSelector" in p for p in placement_problems(pod, unlabelled))
    # A worker that does not tolerate the class taint fits neither pool of the tier.
    untolerant = {
        **pod,
        "tolerations": [t for t in pod["tolerations"] if t["key"] != COMPUTE_CLASS_KEY],
    }
    for pool in plan.tier_pools(next(p for p in plan.gpu_pools if p.tier == fallback.tier)):
        assert any(COMPUTE_CLASS_KEY in p for p in placement_problems(untolerant, pool)), pool.name
    # A taint only the fallback carries, and nothing tolerates.
    tainted = fallback.model_copy(
        update={"taints": (*fallback.taints, Taint(key="example.com/x", value="y"))}
    )
    assert any("example.com/x" in p for p in placement_problems(pod, tainted))
