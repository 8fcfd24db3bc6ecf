"""Which models can have two replicas on one node, by the plan's nodes and packing."""

from __future__ import annotations

from types import ModuleType

import pytest
from helpers.settings_edits import with_scaling, with_tier
from helpers.stack_files import STACKS

from infra.plan import ServingPlan, build_plan
from infra.plan.spreading import may_share_a_node, spread_table
from serve.gpu_share import gpu_share
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
    """Tensor parallel 2 on a 4-GPU node: two replicas fit one node."""
    prod = plans["prod"]
    wide = build_plan(prod.catalog, with_tier(TierName.A100, gpus_per_node=4)(prod.settings))
    assert "qwen2-5-32b-instruct" in may_share_a_node(wide)


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
