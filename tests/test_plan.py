"""The pure serving plan (infra/plan): what is served, placements, node pools, the capacity rule
between the catalog and the stack, and the cost estimate. The RayService it renders is
tests/test_ray_service.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from helpers.located_cases import TIERS, Case, E, S, check_case, ids, written
from helpers.settings_edits import with_tier
from helpers.stack_files import (
    STACKS,
    chain,
    copy_inputs,
    edit,
    enabled_tiers,
    find_line,
    keep,
    raw_catalog,
    raw_config,
    sub,
    tier_block,
)

from configcheck.problems import ConfigError
from infra.plan import ServingPlan, build_plan, build_plan_for_stack
from infra.plan.cost import idle_nodes
from infra.plan.node_pools import SPOT_TAINT_KEY, TIER_LABEL, NodePoolSpec
from infra.settings import TIERS_KEY, stack_file
from serve.paths import CATALOG_FILE_NAME, REPO_ROOT
from serve.tiers import SYSTEM_MACHINE, TierName
from serve.tiers import TIERS as TIER_FACTS

# --- what is served ---------------------------------------------------------------------


@pytest.mark.parametrize("stack", STACKS)
def test_serves_exactly_the_models_of_enabled_tiers(plans: dict[str, ServingPlan], stack: str) -> None:
    plan = plans[stack]
    enabled = enabled_tiers(stack)
    assert plan.served_model_ids == [m.id for m in plan.catalog.models if m.tier.value in enabled]
    assert [s.model_id for s in plan.skipped] == [
        m.id for m in plan.catalog.models if m.tier.value not in enabled
    ]
    assert [p.model_id for p in plan.placements] == plan.served_model_ids
    assert [c["model_loading_config"]["model_id"] for c in plan.llm_configs] == plan.served_model_ids


def test_dev_skips_the_a100_model_naming_the_disabled_tier(plans: dict[str, ServingPlan]) -> None:
    plan = plans["dev"]
    a100_models = [m.id for m in plan.catalog.models if m.tier is TierName.A100]
    assert a100_models
    assert [s.model_id for s in plan.skipped] == a100_models
    for skipped in plan.skipped:
        assert skipped.tier == "a100"
        assert skipped.reason == "tier a100 is disabled in stack dev"
    assert not any(p.tier == "a100" for p in plan.gpu_pools)


def test_prod_serves_every_model(plans: dict[str, ServingPlan]) -> None:
    plan = plans["prod"]
    assert plan.served_model_ids == [m.id for m in plan.catalog.models]
    assert plan.skipped == ()


PLACEMENTS = {
    # (model, tier, GPUs per replica, min replicas, max replicas), from the catalog and the stack
    # files; a packed replica's GPUs are its share of one card (tests/test_packing.py works them).
    "dev": [
        ("qwen2-5-1-5b-instruct", "t4", 0.5, 0, 2),
        ("llama-3-1-8b-instruct", "l4", 1, 0, 2),
        ("multilingual-e5-large", "t4", 0.2, 0, 2),
        ("bge-reranker-v2-m3", "t4", 0.2, 0, 2),
    ],
    "prod": [
        ("qwen2-5-1-5b-instruct", "t4", 0.5, 1, 4),
        ("llama-3-1-8b-instruct", "l4", 1, 1, 4),
        ("qwen2-5-32b-instruct", "a100", 2, 1, 4),
        ("multilingual-e5-large", "t4", 0.2, 1, 4),
        ("bge-reranker-v2-m3", "t4", 0.2, 1, 4),
    ],
}


@pytest.mark.parametrize("stack", STACKS)
def test_placements(plans: dict[str, ServingPlan], stack: str) -> None:
    plan = plans[stack]
    assert [
        (p.model_id, p.tier, p.gpu_fraction or p.gpus_per_replica, p.min_replicas, p.max_replicas)
        for p in plan.placements
    ] == PLACEMENTS[stack]
    for placement, model in zip(plan.placements, plan.served, strict=True):
        estimate = model.memory()
        assert placement.memory.required_gib == estimate.required_gib and placement.memory.fits
        if placement.gpu_fraction is None:
            assert placement.memory == estimate
        else:  # measured against its share of the card: bundle x 0.90 of the VRAM
            share = placement.gpu_fraction * 0.90 * model.gpu_tier.vram_gib
            assert placement.memory.budget_gib == pytest.approx(share)


# GPUs every tier needs with every model at minReplicas and at maxReplicas at once, packed and not.
# dev: the T4's three models take 0.5 + 0.2 + 0.2 of a card each, two replicas of each at max:
# 0.5+0.5 | 0.2 x 4 = 2 cards, against 6 whole ones. prod at max (4 each): 0.5+0.5 twice, then
# eight 0.2s, five to a card: 4 cards against 12; at min the three share one T4.
TIER_GPUS = {
    "dev": [("t4", 3, 3, 0, 0, 2, 6), ("l4", 1, 0, 0, 0, 2, 2)],
    "prod": [("t4", 3, 3, 1, 3, 4, 12), ("l4", 1, 0, 1, 1, 4, 4), ("a100", 1, 0, 2, 2, 8, 8)],
}


@pytest.mark.parametrize("stack", STACKS)
def test_gpus_with_and_without_packing(plans: dict[str, ServingPlan], stack: str) -> None:
    assert [
        (
            t.tier,
            t.models,
            t.packed_models,
            t.at_min_packed,
            t.at_min_whole,
            t.at_max_packed,
            t.at_max_whole,
        )
        for t in plans[stack].tier_gpus
    ] == TIER_GPUS[stack]


# --- node pools ------------------------------------------------------------------------


@pytest.mark.parametrize("stack", STACKS)
def test_one_spot_tainted_gpu_pool_per_enabled_tier(plans: dict[str, ServingPlan], stack: str) -> None:
    plan = plans[stack]
    assert sorted(p.tier.value for p in plan.gpu_pools if p.tier is not None) == sorted(enabled_tiers(stack))
    for pool in plan.gpu_pools:
        assert pool.tier is not None
        assert pool.spot, f"{pool.name} is not spot"
        taints = {(t.key, t.value, t.effect) for t in pool.taints}
        assert (TIER_LABEL, pool.tier.value, "NoSchedule") in taints
        assert (SPOT_TAINT_KEY, "true", "NoSchedule") in taints
        assert pool.gke_accelerator == TIER_FACTS[pool.tier].gke_accelerator
        assert pool.accelerator_count == pool.machine.gpus


@pytest.mark.parametrize("stack", STACKS)
def test_pools_follow_the_stack_file(plans: dict[str, ServingPlan], stack: str) -> None:
    tiers = raw_config(stack)[TIERS_KEY]
    for pool in plans[stack].gpu_pools:
        assert pool.tier is not None
        written = tiers[pool.tier.value]
        assert pool.accelerator_count == written["gpusPerNode"]
        assert (pool.min_nodes, pool.max_nodes) == (written["minNodes"], written["maxNodes"])
        assert list(pool.zones) == written["zones"]
        assert pool.machine == TIER_FACTS[pool.tier].machine_for(written["gpusPerNode"])


def test_dev_gpu_pools_scale_to_zero(plans: dict[str, ServingPlan]) -> None:
    assert plans["dev"].gpu_pools
    for pool in plans["dev"].gpu_pools:
        assert pool.min_nodes == 0, pool.name


@pytest.mark.parametrize("stack", STACKS)
def test_system_pool_is_on_demand_and_untainted(plans: dict[str, ServingPlan], stack: str) -> None:
    system = plans[stack].system_pool
    assert not system.spot
    assert system.taints == ()
    assert system.accelerator_count == 0 and system.gke_accelerator is None
    assert system.machine == SYSTEM_MACHINE


# --- the catalog against the stack ----------------------------------------------------------------

PLAN_CASES: list[Case] = [
    S(
        "stack-serves-no-model",
        chain(tier_block("t4", "enabled", "enabled: false"), tier_block("l4", "enabled", "enabled: false")),
        E(TIERS, "no catalog model is served", "enable a tier", at="llm-serving:tiers:"),
    ),
    S(
        "stack-with-every-tier-disabled",
        chain(*(tier_block(tier, "enabled", "enabled: false") for tier in ("t4", "l4", "a100"))),
        E(TIERS, "no catalog model is served", "a100, l4, t4", at="llm-serving:tiers:"),
        stack="prod",
        max_problems=1,
    ),
    S(
        "stack-serves-no-model-of-a100-only-catalog",
        keep,
        E(TIERS, "no catalog model is served", "a100", at="llm-serving:tiers:"),
        catalog=edit(lambda data: data.update(models=[data["models"][2]])),
    ),
    S(
        "stack-tp2-model-on-one-gpu-nodes",
        tier_block("a100", "gpusPerNode", "gpusPerNode: 1"),
        E(
            f"{TIERS}.a100.gpusPerNode",
            "qwen2-5-32b-instruct needs 2 GPUs on one node",
            "set gpusPerNode to at least 2",
            at="gpusPerNode: 1",
            nth=3,
        ),
        stack="prod",
        max_problems=1,
    ),
    S(
        "pool-too-small-for-one-model-at-max-replicas",
        # prod: maxReplicas 4 x tensor_parallel_size 2 = 8 A100s; 2 nodes x 2 GPUs hold only 4.
        tier_block("a100", "maxNodes", "maxNodes: 2"),
        E(
            f"{TIERS}.a100.maxNodes",
            "qwen2-5-32b-instruct at maxReplicas 4 x 2 GPUs need 8 GPUs",
            "maxNodes 2 x gpusPerNode 2 gives 4",
            "set maxNodes to at least 4",
            at="maxNodes: 2",
        ),
        stack="prod",
        max_problems=1,
    ),
    S(
        "pool-one-node-too-small-for-one-model-at-max-replicas",
        # prod: maxReplicas 4 of a one-GPU L4 model need 4 L4 nodes.
        tier_block("l4", "maxNodes", "maxNodes: 3"),
        E(f"{TIERS}.l4.maxNodes", "need 4 GPUs", "set maxNodes to at least 4", at="maxNodes: 3"),
        stack="prod",
        max_problems=1,
    ),
]


@pytest.mark.parametrize("case", PLAN_CASES, ids=ids(PLAN_CASES))
def test_catalog_and_stack_that_do_not_fit_are_refused_at_the_stack_line(
    case: Case, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    check_case(case, tmp_path, capsys)


def test_a_pool_exactly_big_enough_plans(tmp_path: Path) -> None:
    """One node less than the case above: 4 L4 nodes hold maxReplicas 4 of the L4 model."""
    path = stack_file("prod", copy_inputs(tmp_path))
    path.write_text(tier_block("l4", "maxNodes", "maxNodes: 4")(path.read_text()))
    plan = build_plan_for_stack("prod", tmp_path)
    assert {pool.name: pool.max_nodes for pool in plan.gpu_pools}["gpu-l4"] == 4


def _with_copies(tmp_path: Path, model_id: str, copies: int) -> None:
    copy_inputs(tmp_path)
    catalog = raw_catalog()
    original = next(model for model in catalog["models"] if model["id"] == model_id)
    catalog["models"] += [{**original, "id": f"{model_id}-copy-{n}"} for n in range(copies)]
    (tmp_path / CATALOG_FILE_NAME).write_text(yaml.safe_dump(catalog, sort_keys=False))


def test_a_pool_too_small_for_every_warm_replica_is_a_located_error(tmp_path: Path) -> None:
    # Seven L4 models at prod's minReplicas 1 need seven L4s at once (an 8B model takes a whole
    # card); prod's 6 L4 nodes cannot hold them, although each alone fits at maxReplicas 4.
    _with_copies(tmp_path, "llama-3-1-8b-instruct", 6)
    with pytest.raises(ConfigError) as raised:
        build_plan_for_stack("prod", tmp_path)
    (problem,) = raised.value.problems
    text = stack_file("prod", tmp_path).read_text()
    assert (problem.file, problem.line) == (str(stack_file("prod", tmp_path)), find_line(text, "maxNodes: 6"))
    assert problem.field == "config.llm-serving:tiers.l4.maxNodes"
    assert "7 l4 model(s) at minReplicas 1 need 7 GPUs" in problem.message
    assert "maxNodes to at least 7" in problem.message


def test_packed_replicas_count_their_share_of_a_card(tmp_path: Path) -> None:
    # Four copies of the T4 chat model (half a card each) beside the embedder and the reranker
    # (0.2 each): warm, 0.5 x 4 + 0.2 x 2 = 3 cards of prod's 4 T4s (whole GPUs would need 6); an
    # upgrade's second cluster needs 3 nodes of its own (its workers never share the first
    # cluster's nodes), 6 in all, which 4 T4s cannot hold.
    _with_copies(tmp_path, "qwen2-5-1-5b-instruct", 3)
    with pytest.raises(ConfigError) as raised:
        build_plan_for_stack("prod", tmp_path)
    (problem,) = raised.value.problems
    assert problem.field == "config.llm-serving:tiers.t4.maxNodes"
    assert "an upgrade's two Ray clusters, each with the 6 t4 model(s) at minReplicas 1, need 6 GPUs" in (
        problem.message
    )
    _with_copies(tmp_path, "qwen2-5-1-5b-instruct", 2)
    plan = build_plan_for_stack("prod", tmp_path)
    (t4,) = [tier for tier in plan.tier_gpus if tier.tier == "t4"]
    assert (t4.models, t4.at_min_packed, t4.at_min_whole) == (5, 2, 5)


def test_a_pool_without_room_for_an_upgrade_is_a_located_error(tmp_path: Path) -> None:
    # prod keeps one L4 replica warm; with maxReplicas 1 one L4 node would serve, but a NewCluster
    # upgrade starts the new cluster's warm replica beside the old one: a second node is needed.
    path = stack_file("prod", copy_inputs(tmp_path))
    text = tier_block("l4", "maxNodes", "maxNodes: 1")(path.read_text()).replace(
        "maxReplicas: 4", "maxReplicas: 1"
    )
    path.write_text(text)
    with pytest.raises(ConfigError) as raised:
        build_plan_for_stack("prod", tmp_path)
    (problem,) = raised.value.problems
    assert (problem.field, problem.line) == (
        "config.llm-serving:tiers.l4.maxNodes",
        find_line(text, "maxNodes: 1"),
    )
    assert "an upgrade's two Ray clusters, each with the 1 l4 model(s) at minReplicas 1" in problem.message
    assert "need 2 GPUs but maxNodes 1 x gpusPerNode 1 gives 1" in problem.message


def test_problems_in_both_files_are_reported_together(tmp_path: Path) -> None:
    """A plan over a broken catalog and a broken stack file lists both files' problems at once."""
    case = S("both", tier_block("t4", "maxNodes", "maxNodes: 0"), catalog=sub("tier: t4", "tier: h100"))
    path, _ = written(case, tmp_path)
    with pytest.raises(ConfigError) as raised:
        build_plan_for_stack("dev", root=tmp_path)
    files = {problem.file for problem in raised.value.problems}
    assert files == {str(path), str(tmp_path / CATALOG_FILE_NAME)}


# --- cost ----------------------------------------------------------------------------------

# Worked by hand from the stack files, serve/tiers.py's us-central1 prices and Cloud NAT's price
# list: the GKE fee, the on-demand e2-standard-8 system node (one, two while an upgrade runs two
# heads), each GPU pool's spot machine, and Cloud NAT per node and per NAT IP. At idle a pool runs
# its minNodes (0 in both stacks) or the nodes its warm replicas hold: dev has minReplicas 0;
# prod keeps one replica per model warm, i.e. 1 T4, 1 L4 and 2 A100s (tensor parallel 2), one
# node of each tier. At max every pool runs maxNodes. NAT counts every node of those lines.
COST_LINES = {
    # (item, $ per unit-hour, units at idle, units at max)
    "dev": [
        ("GKE cluster fee", 0.10, 1, 1),
        ("system: e2-standard-8 (on-demand)", 0.2681, 1, 2),
        ("gpu-t4: n1-standard-8 (spot)", 0.2363, 0, 2),
        ("gpu-l4: g2-standard-8 (spot)", 0.3406, 0, 2),
        ("Cloud NAT: per node (private nodes reach the internet through it)", 0.0014, 1, 6),
        ("Cloud NAT: external IP", 0.005, 1, 1),
    ],
    "prod": [
        ("GKE cluster fee", 0.10, 1, 1),
        ("system: e2-standard-8 (on-demand)", 0.2681, 1, 2),
        ("gpu-t4: n1-standard-8 (spot)", 0.2363, 1, 4),
        # One node holds the 8B model's warm replica, one more is l4's spare node (spareNodes: 1).
        ("gpu-l4: g2-standard-8 (spot, 1 spare node(s) kept free)", 0.3406, 2, 6),
        ("gpu-a100: a2-ultragpu-2g (spot)", 4.0550, 1, 4),
        # l4's onDemandFallback: the same machine at the on-demand price, no node at idle (no warm
        # replica is placed there while spot has capacity), all 6 at max as if spot ran out.
        (
            "gpu-l4-ondemand: g2-standard-8 (on-demand fallback: nodes only while gpu-l4 cannot scale up)",
            0.8536,
            0,
            6,
        ),
        ("Cloud NAT: per node (private nodes reach the internet through it)", 0.0014, 5, 22),
        ("Cloud NAT: external IP", 0.005, 1, 1),
    ],
}


@pytest.mark.parametrize("stack", STACKS)
def test_cost_lines_are_the_worked_example(plans: dict[str, ServingPlan], stack: str) -> None:
    lines = [
        (line.item, line.usd_per_unit_hour, line.units_idle, line.units_max)
        for line in plans[stack].cost.lines
    ]
    assert lines == COST_LINES[stack]


def test_cost_in_dollars(plans: dict[str, ServingPlan]) -> None:
    # dev idle: $0.10 fee + $0.2681 e2-standard-8 + NAT $0.0014 x 1 node + $0.005 IP = 0.3745;
    # at max 2 x $0.2681 + 2 x $0.2363 (n1-standard-8 + T4, spot) + 2 x $0.3406 (g2-standard-8,
    # spot) + NAT 6 x $0.0014 + $0.005 = 1.8034. prod idle: one node of each GPU tier holds the
    # warm replicas, and l4 keeps one spare node besides (spareNodes: 1):
    # 0.10 + 0.2681 + 0.2363 + 2 x 0.3406 + 4.0550 + 5 x 0.0014 + 0.005 = 5.3526;
    # at max 2 system, 4 T4, 6 L4 and 4 a2-ultragpu-2g nodes (19.8724 with NAT for 16) plus the
    # L4 fallback's 6 on-demand g2-standard-8 at $0.8536 and their NAT: 25.0024.
    dev, prod = plans["dev"].cost, plans["prod"].cost
    assert (dev.idle_usd_per_hour, dev.max_usd_per_hour) == (0.3745, 1.8034)
    assert (prod.idle_usd_per_hour, prod.max_usd_per_hour) == (5.3526, 25.0024)
    assert (dev.prices_read_on, dev.prices_region) == ("2026-11-01", "us-central1")


@pytest.mark.parametrize(
    ("min_nodes", "warm_gpus", "nodes"),
    [(0, 0, 0), (0, 1, 1), (0, 2, 1), (0, 3, 2), (0, 20, 4), (3, 2, 3), (3, 7, 4)],
)
def test_idle_nodes_hold_the_warm_replicas(
    plans: dict[str, ServingPlan], min_nodes: int, warm_gpus: int, nodes: int
) -> None:
    """A pool of 2-GPU nodes, 0..4 nodes: warm GPUs round up to whole nodes, within minNodes..maxNodes."""
    (a100,) = [pool for pool in plans["prod"].gpu_pools if pool.tier is TierName.A100]
    pool: NodePoolSpec = a100.model_copy(update={"min_nodes": min_nodes})
    assert (pool.accelerator_count, pool.max_nodes) == (2, 4)
    assert idle_nodes(pool, warm_gpus) == nodes


@pytest.mark.parametrize(
    ("min_nodes", "warm_gpus", "spare", "nodes"),
    [(0, 0, 1, 1), (0, 2, 1, 2), (0, 3, 1, 3), (0, 7, 1, 4), (3, 2, 1, 3), (3, 4, 2, 4), (0, 0, 4, 4)],
)
def test_spare_nodes_run_beside_the_warm_ones_within_the_pool(
    plans: dict[str, ServingPlan], min_nodes: int, warm_gpus: int, spare: int, nodes: int
) -> None:
    """A placeholder takes a whole node of its own: spare nodes add to the warm replicas' nodes, and
    minNodes' empty nodes hold them first; never more than maxNodes."""
    (a100,) = [pool for pool in plans["prod"].gpu_pools if pool.tier is TierName.A100]
    pool: NodePoolSpec = a100.model_copy(update={"min_nodes": min_nodes})
    assert idle_nodes(pool, warm_gpus, spare) == nodes


def test_a_spare_node_costs_its_pools_price_at_idle_and_nothing_at_max(plans: dict[str, ServingPlan]) -> None:
    prod = plans["prod"]
    without = build_plan(prod.catalog, with_tier(TierName.L4, spare_nodes=0)(prod.settings))
    l4 = next(pool for pool in prod.gpu_pools if pool.tier is TierName.L4)
    assert l4.spot
    nat = next(line for line in prod.cost.lines if line.item.startswith("Cloud NAT: per node"))
    assert prod.cost.idle_usd_per_hour - without.cost.idle_usd_per_hour == pytest.approx(
        l4.usd_per_node_hour + nat.usd_per_unit_hour
    )
    # At max the pool's maxNodes bounds it either way: workers have preempted every placeholder.
    assert prod.cost.max_usd_per_hour == without.cost.max_usd_per_hour


# --- determinism -----------------------------------------------------------------------------


@pytest.mark.parametrize("stack", STACKS)
def test_plan_is_deterministic(plans: dict[str, ServingPlan], stack: str) -> None:
    again = build_plan_for_stack(stack, REPO_ROOT, project=plans[stack].project)
    assert again == plans[stack]
    assert json.dumps(again.ray_service_spec) == json.dumps(plans[stack].ray_service_spec)
    assert again.cost == plans[stack].cost


def test_an_upgrade_needs_nodes_of_its_own_even_for_packed_replicas(tmp_path: Path) -> None:
    # prod's embedder and reranker alone on the T4 tier (0.2 + 0.2 of a card, warm): one T4 node
    # holds them. An upgrade's new cluster starts its own worker pod, which takes a whole node:
    # two nodes, although the four replicas' shares (0.8) would fit one card.
    copy_inputs(tmp_path)
    catalog = raw_catalog()
    catalog["models"] = [m for m in catalog["models"] if m["id"] != "qwen2-5-1-5b-instruct"]
    (tmp_path / CATALOG_FILE_NAME).write_text(yaml.safe_dump(catalog, sort_keys=False))
    path = stack_file("prod", tmp_path)
    path.write_text(
        tier_block("t4", "maxNodes", "maxNodes: 1")(path.read_text()).replace(
            "maxReplicas: 4", "maxReplicas: 1"
        )
    )
    with pytest.raises(ConfigError) as raised:
        build_plan_for_stack("prod", tmp_path)
    (problem,) = raised.value.problems
    assert problem.field == "config.llm-serving:tiers.t4.maxNodes"
    assert "an upgrade's two Ray clusters, each with the 2 t4 model(s) at minReplicas 1, need 2 GPUs" in (
        problem.message
    )


@pytest.mark.parametrize("stack", STACKS)
def test_the_readmes_stack_table_has_the_cost_models_figures(
    plans: dict[str, ServingPlan], stack: str
) -> None:
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    (row,) = [line for line in readme.splitlines() if line.startswith(f"| {stack} | ")]
    idle, max_ = (float(cell) for cell in row.strip(" |").split(" | ")[-2:])
    assert (idle, max_) == (plans[stack].cost.idle_usd_per_hour, plans[stack].cost.max_usd_per_hour)
