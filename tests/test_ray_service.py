"""The RayService the plan renders (infra/plan/ray_service.py): worker groups that match their
node pools, the head on the system pool, the token only from the Secret, and a rayClusterConfig
that no model change touches. The same spec against KubeRay's CRDs is tests/test_kuberay_crd.py."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from helpers.documents import ray_containers
from helpers.stack_files import STACKS

from infra.plan import ServingPlan, build_plan
from infra.plan.node_pools import TIER_LABEL, NodePoolSpec
from infra.plan.ray_service import DAEMONSET_CPU_MILLIS, DAEMONSET_MEMORY_MIB, HF_SECRET_KEY, HF_SECRET_NAME
from serve.catalog import Catalog, ModelEntry
from serve.serve_config import HF_TOKEN_ENV
from serve.tiers import allocatable

GPU = "nvidia.com/gpu"


def cluster(plan: ServingPlan) -> dict[str, Any]:
    spec: dict[str, Any] = plan.ray_service_spec["rayClusterConfig"]
    return spec


def worker_groups(plan: ServingPlan) -> list[tuple[dict[str, Any], NodePoolSpec]]:
    """Each worker group with the GPU pool of the same tier."""
    pools = {pool.tier.value: pool for pool in plan.gpu_pools if pool.tier is not None}
    groups = cluster(plan)["workerGroupSpecs"]
    assert sorted(g["groupName"] for g in groups) == sorted(pools)
    return [(group, pools[group["groupName"]]) for group in groups]


def cpu_millis(quantity: str) -> int:
    match = re.fullmatch(r"(\d+)(m?)", quantity)
    assert match, f"unexpected CPU quantity {quantity!r}"
    return int(match.group(1)) * (1 if match.group(2) else 1000)


def memory_mib(quantity: str) -> int:
    match = re.fullmatch(r"(\d+)(Mi|Gi)", quantity)
    assert match, f"unexpected memory quantity {quantity!r}"
    return int(match.group(1)) * (1024 if match.group(2) == "Gi" else 1)


# --- worker groups ------------------------------------------------------------------------


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


# --- the head ---------------------------------------------------------------------------------


@pytest.mark.parametrize("stack", STACKS)
def test_head_runs_on_the_system_pool_without_gpus(plans: dict[str, ServingPlan], stack: str) -> None:
    plan = plans[stack]
    head = cluster(plan)["headGroupSpec"]
    assert head["template"]["spec"]["nodeSelector"] == plan.system_pool.labels
    assert head["rayStartParams"]["num-gpus"] == "0"
    assert GPU not in json.dumps(head)
    assert "tolerations" not in head["template"]["spec"], "the head must not tolerate the GPU pools' taints"
    (container,) = head["template"]["spec"]["containers"]
    node = allocatable(plan.system_pool.machine)
    assert cpu_millis(container["resources"]["requests"]["cpu"]) <= node.cpu_millis
    assert memory_mib(container["resources"]["requests"]["memory"]) <= node.memory_mib


# --- the Hugging Face token -------------------------------------------------------------------


@pytest.mark.parametrize("stack", STACKS)
def test_hf_token_comes_only_from_the_secret(plans: dict[str, ServingPlan], stack: str) -> None:
    containers = ray_containers(plans[stack].ray_service_spec)
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
