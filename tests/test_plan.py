"""The pure serving plan for both stacks: placements, node pools, worker groups, cost, cross-checks."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import REPO_ROOT, STACKS

from configcheck.problems import ConfigError
from infra.plan import ServingPlan, build_plan, build_plan_for_stack
from infra.plan.node_pools import SPOT_TAINT_KEY, TIER_LABEL, NodePoolSpec
from infra.plan.ray_service import DAEMONSET_CPU_MILLIS, DAEMONSET_MEMORY_MIB, HF_SECRET_KEY, HF_SECRET_NAME
from serve.catalog import Catalog, ModelEntry
from serve.serve_config import HF_TOKEN_ENV
from serve.tiers import GKE_CLUSTER_FEE_USD_PER_HOUR, SYSTEM_MACHINE, TIERS, TierName, allocatable

GPU = "nvidia.com/gpu"


def stack_yaml(stack: str) -> dict[str, Any]:
    """The stack file as written, read without the project's own settings code."""
    config: dict[str, Any] = yaml.safe_load((REPO_ROOT / f"Pulumi.{stack}.yaml").read_text())["config"]
    return config


def enabled_tiers(stack: str) -> set[str]:
    return {name for name, tier in stack_yaml(stack)["llm-serving:tiers"].items() if tier["enabled"]}


def cluster(plan: ServingPlan) -> dict[str, Any]:
    spec: dict[str, Any] = plan.ray_service_spec["rayClusterConfig"]
    return spec


def worker_groups(plan: ServingPlan) -> list[tuple[dict[str, Any], NodePoolSpec]]:
    """Each worker group with the GPU pool of the same tier."""
    pools = {pool.tier.value: pool for pool in plan.gpu_pools if pool.tier is not None}
    groups = cluster(plan)["workerGroupSpecs"]
    assert sorted(g["groupName"] for g in groups) == sorted(pools)
    return [(group, pools[group["groupName"]]) for group in groups]


def all_containers(plan: ServingPlan) -> list[dict[str, Any]]:
    templates = [cluster(plan)["headGroupSpec"]["template"]]
    templates += [group["template"] for group in cluster(plan)["workerGroupSpecs"]]
    return [c for t in templates for c in t["spec"]["containers"] + t["spec"].get("initContainers", [])]


def cpu_millis(quantity: str) -> int:
    match = re.fullmatch(r"(\d+)(m?)", quantity)
    assert match, f"unexpected CPU quantity {quantity!r}"
    return int(match.group(1)) * (1 if match.group(2) else 1000)


def memory_mib(quantity: str) -> int:
    match = re.fullmatch(r"(\d+)(Mi|Gi)", quantity)
    assert match, f"unexpected memory quantity {quantity!r}"
    return int(match.group(1)) * (1024 if match.group(2) == "Gi" else 1)


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
        assert "a100" in skipped.reason and "disabled" in skipped.reason and "dev" in skipped.reason
    assert not any(p.tier == "a100" for p in plan.gpu_pools)


def test_prod_serves_every_model(plans: dict[str, ServingPlan]) -> None:
    plan = plans["prod"]
    assert plan.served_model_ids == [m.id for m in plan.catalog.models]
    assert plan.skipped == ()


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
        assert pool.gke_accelerator == TIERS[pool.tier].gke_accelerator
        assert pool.accelerator_count == pool.machine.gpus


@pytest.mark.parametrize("stack", STACKS)
def test_pools_follow_the_stack_file(plans: dict[str, ServingPlan], stack: str) -> None:
    tiers = stack_yaml(stack)["llm-serving:tiers"]
    for pool in plans[stack].gpu_pools:
        assert pool.tier is not None
        written = tiers[pool.tier.value]
        assert pool.accelerator_count == written["gpusPerNode"]
        assert (pool.min_nodes, pool.max_nodes) == (written["minNodes"], written["maxNodes"])
        assert list(pool.zones) == written["zones"]
        assert pool.machine == TIERS[pool.tier].machine_for(written["gpusPerNode"])


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


# --- worker groups and the head -------------------------------------------------------


@pytest.mark.parametrize("stack", STACKS)
def test_worker_tolerations_are_exactly_the_pool_taints(plans: dict[str, ServingPlan], stack: str) -> None:
    for group, pool in worker_groups(plans[stack]):
        expected = [
            {"key": t.key, "operator": "Equal", "value": t.value, "effect": t.effect} for t in pool.taints
        ]
        tolerations = group["template"]["spec"]["tolerations"]
        assert sorted(tolerations, key=json.dumps) == sorted(expected, key=json.dumps)
        assert len(tolerations) == len(expected)


@pytest.mark.parametrize("stack", STACKS)
def test_worker_node_selector_is_the_pool_labels(plans: dict[str, ServingPlan], stack: str) -> None:
    for group, pool in worker_groups(plans[stack]):
        assert group["template"]["spec"]["nodeSelector"] == pool.labels
        assert pool.labels[TIER_LABEL] == group["groupName"]


@pytest.mark.parametrize("stack", STACKS)
def test_worker_replicas_follow_the_pool(plans: dict[str, ServingPlan], stack: str) -> None:
    for group, pool in worker_groups(plans[stack]):
        assert group["minReplicas"] == pool.min_nodes
        assert group["maxReplicas"] == pool.max_nodes
        assert group["replicas"] == pool.min_nodes


@pytest.mark.parametrize("stack", STACKS)
def test_worker_gpu_limit_is_the_pool_accelerator_count(plans: dict[str, ServingPlan], stack: str) -> None:
    for group, pool in worker_groups(plans[stack]):
        (container,) = group["template"]["spec"]["containers"]
        assert int(container["resources"]["limits"][GPU]) == pool.accelerator_count
        assert int(container["resources"]["requests"][GPU]) == pool.accelerator_count


@pytest.mark.parametrize("stack", STACKS)
def test_worker_pod_fits_the_node_beside_daemonsets(plans: dict[str, ServingPlan], stack: str) -> None:
    for group, pool in worker_groups(plans[stack]):
        (container,) = group["template"]["spec"]["containers"]
        requests, limits = container["resources"]["requests"], container["resources"]["limits"]
        assert requests == limits, "Guaranteed QoS: requests equal limits"
        node = allocatable(pool.machine)
        cpu, memory = cpu_millis(requests["cpu"]), memory_mib(requests["memory"])
        assert cpu + DAEMONSET_CPU_MILLIS <= node.cpu_millis, (pool.name, cpu, node)
        assert memory + DAEMONSET_MEMORY_MIB <= node.memory_mib, (pool.name, memory, node)
        # ... and uses the node: less than one CPU / one GiB left unrequested beyond the headroom.
        assert node.cpu_millis - DAEMONSET_CPU_MILLIS - cpu < 1000
        assert node.memory_mib - DAEMONSET_MEMORY_MIB - memory < 1024
        assert int(group["rayStartParams"]["num-cpus"]) * 1000 == cpu


@pytest.mark.parametrize("stack", STACKS)
def test_head_runs_on_the_system_pool_without_gpus(plans: dict[str, ServingPlan], stack: str) -> None:
    plan = plans[stack]
    head = cluster(plan)["headGroupSpec"]
    assert head["template"]["spec"]["nodeSelector"] == plan.system_pool.labels
    assert head["rayStartParams"]["num-gpus"] == "0"
    assert GPU not in json.dumps(head)
    gpu_taint_keys = {t.key for pool in plan.gpu_pools for t in pool.taints}
    tolerated = {t.get("key") for t in head["template"]["spec"].get("tolerations", [])}
    assert not tolerated & (gpu_taint_keys | {None}), "the head must not tolerate the GPU pools' taints"
    (container,) = head["template"]["spec"]["containers"]
    node = allocatable(plan.system_pool.machine)
    assert cpu_millis(container["resources"]["requests"]["cpu"]) <= node.cpu_millis
    assert memory_mib(container["resources"]["requests"]["memory"]) <= node.memory_mib


@pytest.mark.parametrize("stack", STACKS)
def test_hf_token_comes_only_from_the_secret(plans: dict[str, ServingPlan], stack: str) -> None:
    containers = all_containers(plans[stack])
    assert len(containers) == 1 + len(plans[stack].gpu_pools)
    for container in containers:
        tokens = [env for env in container.get("env", []) if env["name"] == HF_TOKEN_ENV]
        assert len(tokens) == 1, container["name"]
        (token,) = tokens
        assert "value" not in token
        assert token["valueFrom"] == {"secretKeyRef": {"name": HF_SECRET_NAME, "key": HF_SECRET_KEY}}
    assert "hf_" not in json.dumps(plans[stack].ray_service_spec)


# --- a model change never touches the cluster -----------------------------------------------


def _replace_model(catalog: Catalog, index: int, model: ModelEntry | None) -> Catalog:
    models = list(catalog.models)
    if model is None:
        del models[index]
    else:
        models[index] = model
    return catalog.model_copy(update={"models": tuple(models)})


def _engine_change(model: ModelEntry, **engine: Any) -> ModelEntry:
    return model.model_copy(update={"engine": model.engine.model_copy(update=engine)})


CHANGES = {
    "max_num_seqs": lambda m: _engine_change(m, max_num_seqs=(m.engine.max_num_seqs or 8) + 1),
    "enable_prefix_caching": lambda m: _engine_change(
        m, enable_prefix_caching=not m.engine.enable_prefix_caching
    ),
    "max_model_len": lambda m: m.model_copy(update={"max_model_len": m.max_model_len // 2}),
    "removed": lambda m: None,
}


@pytest.mark.parametrize("change", sorted(CHANGES))
@pytest.mark.parametrize("stack", STACKS)
def test_model_change_touches_only_serve_config(
    plans: dict[str, ServingPlan], stack: str, change: str
) -> None:
    plan = plans[stack]
    index = next(i for i, m in enumerate(plan.catalog.models) if m.id == plan.served_model_ids[0])
    changed = build_plan(
        _replace_model(plan.catalog, index, CHANGES[change](plan.catalog.models[index])), plan.settings
    )
    assert changed.ray_service_spec["serveConfigV2"] != plan.ray_service_spec["serveConfigV2"]
    before, after = cluster(plan), cluster(changed)
    assert json.dumps(after) == json.dumps(before)  # byte-for-byte, key order included
    assert changed.gpu_pools == plan.gpu_pools and changed.system_pool == plan.system_pool
    assert changed.env_config_map_name == plan.env_config_map_name


# --- cost ----------------------------------------------------------------------------------


def _hand_cost(stack: str) -> tuple[float, float]:
    """From the stack file, the catalog and serve.tiers' price table: fee + on-demand system node +
    GPU nodes; at idle a pool runs minNodes or the nodes its models' warm replicas need."""
    config = stack_yaml(stack)
    min_replicas = config["llm-serving:autoscaling"]["minReplicas"]
    catalog = yaml.safe_load((REPO_ROOT / "model_catalog.yaml").read_text())["models"]
    idle = maximum = GKE_CLUSTER_FEE_USD_PER_HOUR + SYSTEM_MACHINE.on_demand_usd_per_hour
    for name, tier in config["llm-serving:tiers"].items():
        if tier["enabled"]:
            machine = TIERS[TierName(name)].machine_for(tier["gpusPerNode"])
            price = machine.spot_usd_per_hour if tier["spot"] else machine.on_demand_usd_per_hour
            warm_gpus = sum(
                min_replicas * model.get("tensor_parallel_size", 1)
                for model in catalog
                if model["tier"] == name
            )
            idle += price * max(tier["minNodes"], math.ceil(warm_gpus / tier["gpusPerNode"]))
            maximum += price * tier["maxNodes"]
    return idle, maximum


@pytest.mark.parametrize("stack", STACKS)
def test_cost_matches_a_hand_computation(plans: dict[str, ServingPlan], stack: str) -> None:
    idle, maximum = _hand_cost(stack)
    assert plans[stack].cost.idle_usd_per_hour == pytest.approx(idle, abs=1e-4)
    assert plans[stack].cost.max_usd_per_hour == pytest.approx(maximum, abs=1e-4)


def test_cost_in_dollars() -> None:
    # dev: $0.10 fee + $0.2681 e2-standard-8; at max 2 x $0.2363 (n1-standard-8 + T4, spot)
    # + 2 x $0.3406 (g2-standard-8, spot). prod: 4 x T4, 6 x L4 and 4 x $4.0550 (a2-ultragpu-2g).
    plans = {stack: build_plan_for_stack(stack, REPO_ROOT) for stack in STACKS}
    assert plans["dev"].cost.idle_usd_per_hour == pytest.approx(0.3681)
    assert plans["dev"].cost.max_usd_per_hour == pytest.approx(0.3681 + 2 * 0.2363 + 2 * 0.3406)
    # prod keeps one warm replica per model: one node of each GPU tier runs at idle.
    assert plans["prod"].cost.idle_usd_per_hour == pytest.approx(0.3681 + 0.2363 + 0.3406 + 4.0550)
    assert plans["prod"].cost.max_usd_per_hour == pytest.approx(0.3681 + 4 * 0.2363 + 6 * 0.3406 + 4 * 4.0550)


@pytest.mark.parametrize("stack", STACKS)
def test_cost_lines_cover_fee_and_every_pool(plans: dict[str, ServingPlan], stack: str) -> None:
    plan = plans[stack]
    lines = plan.cost.lines
    assert len(lines) == 1 + len(plan.node_pools)
    for line, pool in zip(lines[1:], plan.node_pools, strict=True):
        warm_gpus = sum(
            plan.settings.autoscaling.min_replicas * model.tensor_parallel_size
            for model in plan.served
            if pool.tier is not None and model.tier == pool.tier
        )
        nodes_for_warm_replicas = -(-warm_gpus // max(pool.accelerator_count, 1))
        assert line.units_idle == max(pool.min_nodes, nodes_for_warm_replicas)
        assert line.units_max == pool.max_nodes
        assert line.usd_per_unit_hour == pool.machine.usd_per_hour(spot=pool.spot)


# --- determinism -----------------------------------------------------------------------------


@pytest.mark.parametrize("stack", STACKS)
def test_plan_is_deterministic(stack: str) -> None:
    first, second = build_plan_for_stack(stack, REPO_ROOT), build_plan_for_stack(stack, REPO_ROOT)
    assert first == second
    assert json.dumps(first.ray_service_spec) == json.dumps(second.ray_service_spec)
    assert first.cost == second.cost


# --- cross-checks between the catalog and the stack --------------------------------------------


def _stack_copy(tmp_path: Path, stack: str, edit: Any) -> tuple[Path, int]:
    """Catalog and an edited stack file under tmp_path; `edit(lines)` returns the 1-based line it changed."""
    shutil.copy(REPO_ROOT / "model_catalog.yaml", tmp_path / "model_catalog.yaml")
    lines = (REPO_ROOT / f"Pulumi.{stack}.yaml").read_text().splitlines()
    line = edit(lines)
    (tmp_path / f"Pulumi.{stack}.yaml").write_text("\n".join(lines) + "\n")
    return tmp_path / f"Pulumi.{stack}.yaml", line


def _a100_one_gpu(lines: list[str]) -> int:
    start = next(i for i, text in enumerate(lines) if text.strip() == "a100:")
    index = next(i for i in range(start, len(lines)) if lines[i].strip().startswith("gpusPerNode:"))
    lines[index] = re.sub(r"gpusPerNode: \d+", "gpusPerNode: 1", lines[index])
    return index + 1


def _all_disabled(lines: list[str]) -> int:
    for i, text in enumerate(lines):
        lines[i] = text.replace("enabled: true", "enabled: false")
    return 0


def test_tensor_parallel_model_on_too_small_nodes_is_a_located_error(tmp_path: Path) -> None:
    tp2 = [m for m in build_plan_for_stack("prod", REPO_ROOT).served if m.tensor_parallel_size == 2]
    assert tp2 and tp2[0].tier is TierName.A100
    stack_file, line = _stack_copy(tmp_path, "prod", _a100_one_gpu)
    with pytest.raises(ConfigError) as raised:
        build_plan_for_stack("prod", tmp_path)
    (problem,) = raised.value.problems
    assert (problem.file, problem.line) == (str(stack_file), line)
    assert problem.field.endswith("a100.gpusPerNode")
    assert tp2[0].id in problem.message
    assert f"{stack_file}:{line}:" in str(raised.value) and "gpusPerNode" in str(raised.value)


def _set_tier_key(tier: str, key: str, value: int) -> Any:
    def edit(lines: list[str]) -> int:
        start = next(i for i, text in enumerate(lines) if text.strip() == f"{tier}:")
        index = next(i for i in range(start, len(lines)) if lines[i].strip().startswith(f"{key}:"))
        lines[index] = re.sub(rf"{key}: \d+", f"{key}: {value}", lines[index])
        return index + 1

    return edit


def test_a_pool_too_small_for_one_model_at_max_replicas_is_a_located_error(tmp_path: Path) -> None:
    # prod: maxReplicas 4 x tensor_parallel_size 2 = 8 A100s; 2 nodes x 2 GPUs hold only 4.
    stack_file, line = _stack_copy(tmp_path, "prod", _set_tier_key("a100", "maxNodes", 2))
    with pytest.raises(ConfigError) as raised:
        build_plan_for_stack("prod", tmp_path)
    (problem,) = raised.value.problems
    assert (problem.file, problem.line) == (str(stack_file), line)
    assert problem.field == "config.llm-serving:tiers.a100.maxNodes"
    assert "need 8 GPUs" in problem.message and "maxNodes to at least 4" in problem.message


def test_a_pool_too_small_for_every_warm_replica_is_a_located_error(tmp_path: Path) -> None:
    # Five T4 models at prod's minReplicas 1 need five T4s at once; prod's 4 T4 nodes cannot hold
    # them, although each alone fits at maxReplicas 4.
    _stack_copy(tmp_path, "prod", lambda lines: 0)
    catalog = yaml.safe_load((REPO_ROOT / "model_catalog.yaml").read_text())
    t4 = next(model for model in catalog["models"] if model["tier"] == "t4")
    catalog["models"] += [{**t4, "id": f"{t4['id']}-copy-{n}"} for n in range(4)]
    (tmp_path / "model_catalog.yaml").write_text(yaml.safe_dump(catalog, sort_keys=False))
    with pytest.raises(ConfigError) as raised:
        build_plan_for_stack("prod", tmp_path)
    (problem,) = raised.value.problems
    assert problem.field == "config.llm-serving:tiers.t4.maxNodes"
    assert "5 t4 model(s) at minReplicas 1 need 5 GPUs" in problem.message
    assert "maxNodes to at least 5" in problem.message


def test_pools_just_big_enough_plan(tmp_path: Path) -> None:
    _stack_copy(tmp_path, "prod", _set_tier_key("t4", "maxNodes", 4))
    assert build_plan_for_stack("prod", tmp_path).served_model_ids


def test_stack_with_every_tier_disabled_is_an_error(tmp_path: Path) -> None:
    _stack_copy(tmp_path, "prod", _all_disabled)
    with pytest.raises(ConfigError, match="no catalog model is served"):
        build_plan_for_stack("prod", tmp_path)
