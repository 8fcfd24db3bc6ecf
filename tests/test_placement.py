"""Where Ray puts each part of the serving app: the ingress and the HTTP proxies on the head, model
replicas on their tier's GPU nodes, and nothing else on a GPU node.

Ray's own code decides, run offline: the node types are what KubeRay's autoscaler derives from the
rendered RayCluster (`_derive_autoscaling_config_from_ray_cr`); the ingress's options are built the
way `build_openai_app` builds them (Ray's ingress defaults deep-merged with the app's
`ingress_deployment_config`, ray/llm/_internal/serve/core/ingress/builder.py); a replica's bundles
come from its `LLMConfig`'s engine config.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest
import yaml

from infra.plan import ServingPlan, build_plan_for_stack
from serve.openai_app import split_args
from serve.serve_config import (
    HEAD_NODE_RESOURCE,
    document_llm_configs,
    model_applications,
    model_deployment_config,
    router_applications,
)

STACKS = ("dev", "prod")
HEAD = "headgroup"


@pytest.fixture(scope="module", params=STACKS)
def plan(request: pytest.FixtureRequest) -> ServingPlan:
    return build_plan_for_stack(request.param)


def node_types(plan: ServingPlan) -> dict[str, dict[str, float]]:
    from ray.autoscaler._private.kuberay.autoscaling_config import _derive_autoscaling_config_from_ray_cr

    cr = {
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": {"name": "llm-raycluster", "namespace": "llm-serving"},
        "spec": copy.deepcopy(plan.ray_cluster_config),
    }
    types = _derive_autoscaling_config_from_ray_cr(cr)["available_node_types"]
    return {name: dict(node["resources"]) for name, node in types.items()}


def placeable_on(types: dict[str, dict[str, float]], demand: dict[str, float]) -> set[str]:
    return {
        name
        for name, offered in types.items()
        if all(offered.get(key, 0) >= amount for key, amount in demand.items() if amount > 0)
    }


def ingress_options(plan: ServingPlan) -> dict[str, Any]:
    """The ingress deployment's options, merged as build_openai_app merges them: Ray's ingress
    defaults for the served models' configs under the router's `ingress_deployment_config`."""
    from ray.llm._internal.common.dict_utils import maybe_apply_llm_deployment_config_defaults
    from ray.llm._internal.serve.core.ingress.ingress import OpenAiIngress
    from ray.serve.llm import LLMConfig

    document = yaml.safe_load(plan.ray_service_spec["serveConfigV2"])
    (router,) = router_applications(document)
    configs = [LLMConfig(**copy.deepcopy(llm)) for llm in document_llm_configs(document)]
    merged: dict[str, Any] = maybe_apply_llm_deployment_config_defaults(
        OpenAiIngress.get_deployment_options(configs), split_args(router["args"])[0]
    )
    return merged


def ingress_demand(plan: ServingPlan) -> dict[str, float]:
    """The ingress replica's resources."""
    actor = ingress_options(plan)["ray_actor_options"]
    return {"CPU": actor.get("num_cpus", 1), **actor.get("resources", {})}


def replica_demand(llm: dict[str, Any]) -> dict[str, float]:
    """Everything one replica's placement group asks for, summed (it must fit one node type)."""
    from ray.serve.llm import LLMConfig

    total: dict[str, float] = {}
    for bundle in LLMConfig(**copy.deepcopy(llm)).get_engine_config().placement_bundles:
        for key, amount in bundle.items():
            total[key] = total.get(key, 0) + amount
    return total


def test_only_the_head_offers_the_head_resource(plan: ServingPlan) -> None:
    types = node_types(plan)
    assert types[HEAD].get(HEAD_NODE_RESOURCE) == 1
    assert not [name for name, offered in types.items() if name != HEAD and HEAD_NODE_RESOURCE in offered]


def test_the_ingress_can_only_run_on_the_head(plan: ServingPlan) -> None:
    demand = ingress_demand(plan)
    assert HEAD_NODE_RESOURCE in demand
    assert placeable_on(node_types(plan), demand) == {HEAD}


def test_the_head_holds_the_router_and_its_replacement_during_a_rollout(plan: ServingPlan) -> None:
    """A change of the router's args (a model added or removed) starts the new router replica
    before the old one stops (Serve's surge): the head must hold both at once."""
    options = ingress_options(plan)
    replicas = options["autoscaling_config"]["max_replicas"]
    surge = math.ceil(options["max_surge_percent"] * replicas / 100)
    assert surge >= 1
    head, demand = node_types(plan)[HEAD], ingress_demand(plan)
    for resource, amount in demand.items():
        assert head.get(resource, 0) >= amount * (replicas + surge), resource


def test_ingress_stays_up_when_every_model_scales_to_zero() -> None:
    # dev scales every model to zero; Ray would then scale the ingress to zero too.
    from ray.llm._internal.serve.core.ingress.ingress import OpenAiIngress
    from ray.serve.llm import LLMConfig

    dev = build_plan_for_stack("dev")
    # Ray derives the ingress's default from the models' autoscaling, which Serve applies as each
    # model application's override.
    configs = [
        LLMConfig(
            **{**copy.deepcopy(app["args"]["llm_config"]), "deployment_config": model_deployment_config(app)}
        )
        for app in model_applications(dev.serve_config)
    ]
    defaults = OpenAiIngress.get_deployment_options(configs)
    assert defaults["autoscaling_config"]["min_replicas"] == 0, "Ray's default changed"
    assert ingress_options(dev)["autoscaling_config"]["min_replicas"] == 1


def test_model_replicas_run_only_on_their_tiers_gpu_nodes(plan: ServingPlan) -> None:
    types = node_types(plan)
    for llm, model in zip(plan.llm_configs, plan.served, strict=True):
        demand = replica_demand(llm)
        assert demand.get("GPU", 0) > 0  # a whole GPU, or a packed replica's share of one
        assert placeable_on(types, demand) == {model.tier.value}, model.id


def test_gpu_nodes_carry_only_model_replicas(plan: ServingPlan) -> None:
    # Every deployment of the app and where it can go: only model replicas on GPU worker types;
    # Serve's proxies run on the head only and its controller is pinned there by Serve itself.
    types = node_types(plan)
    gpu_types = {name for name, offered in types.items() if offered.get("GPU", 0) > 0}
    assert HEAD not in gpu_types and gpu_types == {pool.tier.value for pool in plan.gpu_pools if pool.tier}
    assert not placeable_on(types, ingress_demand(plan)) & gpu_types
    assert yaml.safe_load(plan.ray_service_spec["serveConfigV2"])["proxy_location"] == "HeadOnly"
