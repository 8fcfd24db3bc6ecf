"""Scale from zero: the autoscaler can start a GPU node for every served model's replica.

The design.md failure mode: KubeRay's autoscaler knows a worker group only by the Ray
resources it derives from the group spec; Ray Serve LLM asks for `accelerator_type:<T>` in
every replica bundle; a group at zero that does not declare that resource is never scaled up.

Everything below is Ray's own code, run offline:
- the node types come from `_derive_autoscaling_config_from_ray_cr`, the function the
  KubeRay autoscaler runs on the RayCluster CR;
- the replica bundles come from `LLMConfig.get_engine_config().placement_bundles` merged with
  the replica actor's own resources by `_merge_replica_actor_and_child_actor_bundles`, exactly
  as `LLMServer.get_deployment_options` does. That method itself cannot be called here: after
  computing the bundles it reads `ray.get_runtime_context().runtime_env`, which starts a local
  Ray instance. `test_bundle_computation_still_matches_ray` fails if Ray changes that code;
- scheduling uses autoscaler v2's `ResourceDemandScheduler` (the cluster runs autoscaler v2),
  with each replica's placement group as a gang request, from a cluster with no worker nodes.
"""

from __future__ import annotations

import copy
import inspect
import json
from collections import Counter
from typing import Any

import pytest
import ray
from conftest import STACKS
from ray.autoscaler._private.kuberay.autoscaling_config import _derive_autoscaling_config_from_ray_cr
from ray.autoscaler.v2.instance_manager.config import AutoscalingConfig
from ray.autoscaler.v2.scheduler import ResourceDemandScheduler, SchedulingRequest
from ray.core.generated.autoscaler_pb2 import GangResourceRequest, ResourceRequest
from ray.llm._internal.serve.core.server.llm_server import (
    LLMServer,
    _merge_replica_actor_and_child_actor_bundles,
)
from ray.serve.llm import LLMConfig

from infra.plan import ServingPlan
from infra.plan.ray_service import NAMESPACE, RAY_SERVICE_NAME
from serve.catalog import ModelEntry
from serve.tiers import RAY_ACCELERATOR_RESOURCE_PREFIX, TIERS

HEAD = "headgroup"
Bundle = dict[str, float]


@pytest.fixture(autouse=True, scope="module")
def _ray_never_started() -> Any:
    yield
    assert not ray.is_initialized(), "a scale-from-zero check started Ray; these checks must stay offline"


def ray_cluster_cr(cluster_spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": {"name": f"{RAY_SERVICE_NAME}-raycluster", "namespace": NAMESPACE},
        "spec": copy.deepcopy(cluster_spec),
    }


def autoscaling_config(cluster_spec: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = _derive_autoscaling_config_from_ray_cr(ray_cluster_cr(cluster_spec))
    return config


def node_types(cluster_spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    types: dict[str, dict[str, Any]] = autoscaling_config(cluster_spec)["available_node_types"]
    return types


def replica_bundles(raw: dict[str, Any]) -> tuple[list[Bundle], str]:
    """A replica's placement-group bundles and strategy, as `LLMServer.get_deployment_options` makes them."""
    config = LLMConfig(**copy.deepcopy(raw))
    engine = config.get_engine_config()
    assert not engine.accelerator.requires_deferred_placement_group
    actor_options = config.deployment_config.get("ray_actor_options", {})
    replica_actor: Bundle = {
        "CPU": actor_options.get("num_cpus", 1),
        "GPU": actor_options.get("num_gpus", 0),
        **actor_options.get("resources", {}),
    }
    if "memory" in actor_options:
        replica_actor["memory"] = actor_options["memory"]
    bundles: list[Bundle] = _merge_replica_actor_and_child_actor_bundles(
        engine.placement_bundles, replica_actor
    )
    return bundles, engine.placement_strategy


def fits(node: dict[str, float], demand: Bundle) -> bool:
    return all(node.get(key, 0) >= amount for key, amount in demand.items() if amount > 0)


def total(bundles: list[Bundle]) -> Bundle:
    summed: Counter[str] = Counter()
    for bundle in bundles:
        summed.update(bundle)
    return dict(summed)


def gang(bundles: list[Bundle], strategy: str) -> GangResourceRequest:
    """A replica's placement group as the GCS reports it to autoscaler v2."""
    if strategy == "STRICT_PACK":  # one node: the scheduler combines affinity bundles into one request
        bundles = [total(bundles)]
    return GangResourceRequest(
        requests=[ResourceRequest(resources_bundle=bundle) for bundle in bundles], details=strategy
    )


def schedule_from_zero(
    cluster_spec: dict[str, Any], gangs: list[GangResourceRequest]
) -> tuple[Counter[str], int]:
    """Nodes autoscaler v2 launches for `gangs` with no worker node running, and the infeasible gang count."""
    config = AutoscalingConfig(autoscaling_config(cluster_spec), skip_content_hash=True)
    reply = ResourceDemandScheduler().schedule(
        SchedulingRequest(
            disable_launch_config_check=True,
            node_type_configs=config.get_node_type_configs(),
            max_num_nodes=config.get_max_num_nodes(),
            gang_resource_requests=gangs,
        )
    )
    launched: Counter[str] = Counter()
    for launch in reply.to_launch:
        launched[launch.instance_type] += launch.count
    return launched, len(reply.infeasible_gang_resource_requests)


def _served(plan: ServingPlan) -> list[tuple[ModelEntry, dict[str, Any]]]:
    assert len(plan.served) == len(plan.llm_configs) > 0
    return list(zip(plan.served, plan.llm_configs, strict=True))


def _cluster(plan: ServingPlan) -> dict[str, Any]:
    cluster: dict[str, Any] = plan.ray_service_spec["rayClusterConfig"]
    return cluster


# --- Ray's own code is what these checks reproduce --------------------------------------


def test_bundle_computation_still_matches_ray() -> None:
    source = inspect.getsource(LLMServer.get_deployment_options)
    for fragment in (
        "engine_config = llm_config.get_engine_config()",
        "if not engine_config.accelerator.requires_deferred_placement_group:",
        '"CPU": ray_actor_options.get("num_cpus", 1)',
        '"GPU": ray_actor_options.get("num_gpus", 0)',
        "_merge_replica_actor_and_child_actor_bundles(",
        "engine_config.placement_bundles, replica_actor_resources",
        '"placement_group_strategy": engine_config.placement_strategy',
    ):
        assert fragment in source, (
            f"LLMServer.get_deployment_options changed: update replica_bundles ({fragment})"
        )


@pytest.mark.parametrize("stack", STACKS)
def test_bundles_ask_for_the_tiers_accelerator(plans: dict[str, ServingPlan], stack: str) -> None:
    for model, raw in _served(plans[stack]):
        bundles, strategy = replica_bundles(raw)
        resource = f"{RAY_ACCELERATOR_RESOURCE_PREFIX}{model.gpu_tier.ray_accelerator_type}"
        assert len(bundles) == model.tensor_parallel_size
        assert all(bundle.get("GPU") == 1 and bundle.get(resource, 0) > 0 for bundle in bundles), bundles
        assert strategy in ("PACK", "STRICT_PACK")


# --- the node types the autoscaler sees ---------------------------------------------------


@pytest.mark.parametrize("stack", STACKS)
def test_each_tier_group_declares_its_accelerator_types(plans: dict[str, ServingPlan], stack: str) -> None:
    types = node_types(_cluster(plans[stack]))
    assert types[HEAD]["resources"].get("GPU", 0) == 0
    for pool in plans[stack].gpu_pools:
        assert pool.tier is not None
        resources = types[pool.tier.value]["resources"]
        assert resources["GPU"] == pool.accelerator_count
        for accelerator in TIERS[pool.tier].ray_node_accelerator_types:
            assert resources.get(f"{RAY_ACCELERATOR_RESOURCE_PREFIX}{accelerator}", 0) >= 1


@pytest.mark.parametrize("stack", STACKS)
def test_every_replica_fits_one_node_of_its_tier_and_no_other(
    plans: dict[str, ServingPlan], stack: str
) -> None:
    types = node_types(_cluster(plans[stack]))
    for model, raw in _served(plans[stack]):
        bundles, _ = replica_bundles(raw)
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
def test_autoscaler_starts_one_tier_node_per_first_replica(plans: dict[str, ServingPlan], stack: str) -> None:
    plan = plans[stack]
    for model, raw in _served(plan):
        launched, infeasible = schedule_from_zero(_cluster(plan), [gang(*replica_bundles(raw))])
        assert infeasible == 0, f"{model.id}: the autoscaler finds no node type for its replica"
        assert launched == Counter({model.tier.value: 1}), (model.id, launched)


@pytest.mark.parametrize("stack", STACKS)
def test_min_replicas_of_every_model_fit_together(plans: dict[str, ServingPlan], stack: str) -> None:
    """Every model's minimum (at least one replica, the first request after scale-to-zero) at once."""
    plan = plans[stack]
    gangs = []
    for _, raw in _served(plan):
        replicas = max(1, raw["deployment_config"]["autoscaling_config"]["min_replicas"])
        gangs += [gang(*replica_bundles(raw)) for _ in range(replicas)]
    launched, infeasible = schedule_from_zero(_cluster(plan), gangs)
    assert infeasible == 0, launched
    pools = {pool.tier.value: pool for pool in plan.gpu_pools if pool.tier is not None}
    for tier, count in launched.items():
        assert count <= pools[tier].max_nodes


# --- the check can fail: the design.md failure mode -----------------------------------------


def _without_accelerator_resources(cluster: dict[str, Any], group_name: str) -> dict[str, Any]:
    broken = copy.deepcopy(cluster)
    (group,) = [g for g in broken["workerGroupSpecs"] if g["groupName"] == group_name]
    del group["rayStartParams"]["resources"]
    return broken


@pytest.mark.parametrize("stack", STACKS)
def test_group_without_resources_param_is_never_scaled_up(plans: dict[str, ServingPlan], stack: str) -> None:
    plan = plans[stack]
    for model, raw in _served(plan):
        broken = _without_accelerator_resources(_cluster(plan), model.tier.value)
        group = node_types(broken)[model.tier.value]
        bundles, strategy = replica_bundles(raw)
        assert group["resources"]["GPU"] >= 1  # the GPUs are still there ...
        accelerator = f"{RAY_ACCELERATOR_RESOURCE_PREFIX}{model.gpu_tier.ray_accelerator_type}"
        assert accelerator not in group["resources"]  # ... but Ray infers no accelerator type for GPUs
        assert not any(fits(group["resources"], bundle) for bundle in bundles)
        launched, infeasible = schedule_from_zero(broken, [gang(bundles, strategy)])
        assert (launched, infeasible) == (Counter(), 1), json.dumps(group["resources"])
