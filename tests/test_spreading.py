"""Which models can have two replicas on one node, by the plan's nodes and packing."""

from __future__ import annotations

from types import ModuleType

import pytest
from helpers.settings_edits import with_scaling, with_tier
from helpers.stack_files import STACKS

from configcheck.problems import ConfigError
from infra.plan import ServingPlan, build_plan
from infra.plan.spreading import may_share_a_node, spread_table
from serve.gpu_share import SPREAD_RESOURCE, gpu_share
from serve.tiers import TierName


@pytest.mark.parametrize("stack", STACKS)
def test_packed_models_may_share_and_whole_node_replicas_may_not(
    plans: dict[str, ServingPlan], stack: str
) -> None:
    plan = plans[stack]
    for row in spread_table(plan):
        model = next(m for m in plan.served if m.id == row.model_id)
        packed = gpu_share(model, row.gpus_per_node) is not None
        # On the shipped nodes a whole-GPU replica takes every GPU of its node.
        assert row.two_fit_one_node == packed, row


def test_shipped_prod_names_the_models_that_can_share(plans: dict[str, ServingPlan]) -> None:
    prod = plans["prod"]
    assert may_share_a_node(prod) == ["qwen2-5-1-5b-instruct", "multilingual-e5-large", "bge-reranker-v2-m3"]
    # The L4 and A100 models: one replica per node whatever the traffic.
    assert {"llama-3-1-8b-instruct", "qwen2-5-32b-instruct"}.isdisjoint(may_share_a_node(prod))


def test_spare_gpus_on_a_node_let_whole_gpu_replicas_share(plans: dict[str, ServingPlan]) -> None:
    """Tensor parallel 2 on a 4-GPU node with one warm replica: two replicas fit one node."""
    prod = plans["prod"]
    wide = build_plan(prod.catalog, with_tier(TierName.A100, gpus_per_node=4)(prod.settings))
    assert "qwen2-5-32b-instruct" in may_share_a_node(wide)


def test_two_warm_replicas_keep_a_many_gpu_node_each(
    plans: dict[str, ServingPlan], ray_oracles: ModuleType
) -> None:
    """Two warm on 2-GPU T4 nodes and 4-GPU A100 nodes: every replica that leaves GPUs free asks
    for its node's one spread unit, so by Ray's own bundles and node types no two such replicas,
    of one model or of two, fit one node; and the plan counts each as its whole node."""
    prod = plans["prod"]
    settings = with_scaling(min_replicas=2)(prod.settings)
    settings = with_tier(TierName.T4, gpus_per_node=2, max_nodes=12)(settings)
    settings = with_tier(TierName.A100, gpus_per_node=4)(settings)
    plan = build_plan(prod.catalog, settings)
    assert _twice_on_one_node(plan, ray_oracles) == may_share_a_node(plan) == []
    types = ray_oracles.autoscaler_node_types(plan.ray_cluster_config)
    assert types["t4"]["resources"][SPREAD_RESOURCE] == types["a100"]["resources"][SPREAD_RESOURCE] == 1
    t4_bundles = [
        ray_oracles.replica_bundles(llm)[0]
        for llm, model in zip(plan.llm_configs, plan.served, strict=True)
        if model.tier is TierName.T4
    ]
    assert len(t4_bundles) == 3
    first, second = t4_bundles[:2]
    assert not ray_oracles.fits(types["t4"]["resources"], ray_oracles.total(first + second))
    gpus = {row.tier: row for row in plan.tier_gpus}
    assert gpus["t4"].at_min_packed == gpus["t4"].at_min_whole == 3 * 2 * 2
    assert gpus["a100"].at_min_packed == gpus["a100"].at_min_whole == 1 * 2 * 4


def test_one_gpu_groups_declare_no_spread_unit(
    plans: dict[str, ServingPlan], ray_oracles: ModuleType
) -> None:
    """Unpacking already spreads on one-GPU nodes; the unit exists only where GPUs are left free."""
    types = ray_oracles.autoscaler_node_types(plans["prod"].ray_cluster_config)
    assert {name for name, node in types.items() if SPREAD_RESOURCE in node["resources"]} == {"a100"}


def test_one_replica_at_most_never_shares(plans: dict[str, ServingPlan]) -> None:
    prod = plans["prod"]
    single = build_plan(prod.catalog, with_scaling(min_replicas=1, max_replicas=1)(prod.settings))
    assert may_share_a_node(single) == []


def test_serve_cannot_be_told_to_spread_llm_replicas(
    plans: dict[str, ServingPlan], ray_oracles: ModuleType
) -> None:
    """Every LLM replica has placement-group bundles (Ray's own LLMServer options), and Serve refuses
    max_replicas_per_node beside bundles (Ray's own ReplicaConfig)."""
    from ray.serve._private.config import ReplicaConfig

    for llm in plans["prod"].llm_configs:
        bundles, strategy = ray_oracles.replica_bundles(llm)
        assert bundles
        with pytest.raises(ValueError, match="max_replicas_per_node is not allowed"):
            ReplicaConfig.create(
                "module:Class",
                placement_group_bundles=bundles,
                placement_group_strategy=strategy,
                max_replicas_per_node=1,
            )


def _two_warm(prod: ServingPlan) -> ServingPlan:
    """Prod keeping two replicas of every model warm, with the nodes that takes (the plan refuses
    the shipped maxNodes at preview: 3 T4 models x 2 whole GPUs, twice for an upgrade)."""
    settings = with_scaling(min_replicas=2, max_replicas=4)(prod.settings)
    return build_plan(prod.catalog, with_tier(TierName.T4, max_nodes=12)(settings))


def _twice_on_one_node(plan: ServingPlan, ray_oracles: ModuleType) -> list[str]:
    """Models two of whose replicas fit one node of their tier, by Ray's own bundles for the
    model (LLMServer) and Ray's own autoscaler view of the worker group."""
    types = ray_oracles.autoscaler_node_types(plan.ray_cluster_config)
    found = []
    for llm, model in zip(plan.llm_configs, plan.served, strict=True):
        bundles, _ = ray_oracles.replica_bundles(llm)
        if ray_oracles.fits(types[model.tier.value]["resources"], ray_oracles.total(bundles * 2)):
            found.append(model.id)
    return found


def test_two_warm_replicas_of_a_model_never_share_a_one_gpu_node(
    plans: dict[str, ServingPlan], ray_oracles: ModuleType
) -> None:
    """With one warm replica, the packed T4 models fit twice on a node (what a reclaim would take
    together); keeping two warm stops packing, and by Ray's own resources no node then holds two
    replicas of one model."""
    prod = plans["prod"]
    assert _twice_on_one_node(prod, ray_oracles) == may_share_a_node(prod) != []
    spread = _two_warm(prod)
    assert all(gpu_share(m, 1, spread.settings.autoscaling.min_replicas) is None for m in spread.served)
    assert _twice_on_one_node(spread, ray_oracles) == may_share_a_node(spread) == []


def test_keeping_two_warm_costs_whole_gpus_and_says_so_at_preview(plans: dict[str, ServingPlan]) -> None:
    prod = plans["prod"]
    spread = _two_warm(prod)
    t4 = {row.tier: row for row in spread.tier_gpus}["t4"]
    assert t4.packed_models == 0 and t4.at_min_packed == t4.at_min_whole == 6
    with pytest.raises(
        ConfigError, match=r"tiers\.t4\.maxNodes: the 3 t4 model\(s\) at minReplicas 2 need 6 GPUs"
    ):
        build_plan(prod.catalog, with_scaling(min_replicas=2, max_replicas=4)(prod.settings))
