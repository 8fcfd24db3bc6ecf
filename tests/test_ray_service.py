"""The RayService the plan renders (infra/plan/ray_service.py): worker groups that match their
node pools, the head on the system pool, the token only from the Secret, and a rayClusterConfig
that no model change touches. The same spec against KubeRay's CRDs is tests/test_kuberay_crd.py."""

from __future__ import annotations

import json
import re
from types import ModuleType
from typing import Any

import pytest
from helpers.documents import ray_containers
from helpers.stack_files import STACKS

from infra.plan import ServingPlan, build_plan
from infra.plan.gke_nodes import schedulable
from infra.plan.node_pools import COMPUTE_CLASS_KEY, TIER_LABEL, NodePoolSpec, compute_class_name
from infra.plan.ray_service import HF_SECRET_KEY, HF_SECRET_NAME, ray_resources_param
from infra.settings import MAX_NODES_PER_TIER
from serve.catalog import Catalog, ModelEntry
from serve.serve_config import HF_TOKEN_ENV
from serve.tiers import TierName

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
def test_worker_node_selector_is_the_tiers_compute_class(plans: dict[str, ServingPlan], stack: str) -> None:
    """Workers select the tier's compute class, which the spot pool and its fallback both carry."""
    for group, pool in worker_groups(plans[stack]):
        selector = group["template"]["spec"]["nodeSelector"]
        assert selector == {COMPUTE_CLASS_KEY: compute_class_name(TierName(group["groupName"]))}
        for tier_pool in plans[stack].tier_pools(pool):
            assert selector.items() <= tier_pool.labels.items(), tier_pool.name
            assert tier_pool.labels[TIER_LABEL] == group["groupName"]


@pytest.mark.parametrize("stack", STACKS)
def test_worker_bounds_never_bind_below_the_pool(plans: dict[str, ServingPlan], stack: str) -> None:
    # Fixed 0..32: KubeRay never applies an edited bound to a running cluster, so the pool's
    # maxNodes (applied by GKE) is what limits the workers Ray gets (test_kuberay_rollout).
    for group, pool in worker_groups(plans[stack]):
        assert (group["replicas"], group["minReplicas"], group["maxReplicas"]) == (0, 0, MAX_NODES_PER_TIER)
        assert pool.max_nodes <= group["maxReplicas"]


@pytest.mark.parametrize("stack", STACKS)
def test_workers_stop_within_a_spot_reclaim(plans: dict[str, ServingPlan], stack: str) -> None:
    # GKE gives a reclaimed spot pod 15 s; Ray drains the node for less, and Serve stops each
    # replica within the drain, so the teardown ends before the kubelet kills the pod.
    llm = plans[stack].llm_configs[0]["deployment_config"]
    for group, _pool in worker_groups(plans[stack]):
        spec = group["template"]["spec"]
        (container,) = spec["containers"]
        env = {item["name"]: item.get("value") for item in container["env"]}
        drain = float(env["RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S"])
        assert llm["graceful_shutdown_timeout_s"] < drain < spec["terminationGracePeriodSeconds"] <= 15


@pytest.mark.parametrize("stack", STACKS)
def test_worker_gpu_limit_is_the_pool_accelerator_count(plans: dict[str, ServingPlan], stack: str) -> None:
    for group, pool in worker_groups(plans[stack]):
        (container,) = group["template"]["spec"]["containers"]
        assert int(container["resources"]["limits"][GPU]) == pool.accelerator_count
        assert int(container["resources"]["requests"][GPU]) == pool.accelerator_count


@pytest.mark.parametrize("stack", STACKS)
def test_worker_pod_fits_the_node_beside_gkes_node_pods(plans: dict[str, ServingPlan], stack: str) -> None:
    for group, pool in worker_groups(plans[stack]):
        (container,) = group["template"]["spec"]["containers"]
        requests, limits = container["resources"]["requests"], container["resources"]["limits"]
        assert requests == limits, "Guaranteed QoS: requests equal limits"
        node = schedulable(pool.machine)
        cpu, memory = cpu_millis(requests["cpu"]), memory_mib(requests["memory"])
        assert cpu <= node.cpu_millis, (pool.name, cpu, node)
        assert memory <= node.memory_mib, (pool.name, memory, node)
        # ... and uses the node: less than one CPU / one GiB left unrequested.
        assert node.cpu_millis - cpu < 1000
        assert node.memory_mib - memory < 1024
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
    node = schedulable(plan.system_pool.machine)
    assert cpu_millis(container["resources"]["requests"]["cpu"]) <= node.cpu_millis
    assert memory_mib(container["resources"]["requests"]["memory"]) <= node.memory_mib


# --- the Hugging Face token -------------------------------------------------------------------


@pytest.mark.parametrize("stack", STACKS)
def test_only_the_mirror_jobs_carry_the_hf_token(plans: dict[str, ServingPlan], stack: str) -> None:
    """The Ray pods read weights from the bucket: no token, and the Hub is off (HF_HUB_OFFLINE)."""
    containers = ray_containers(plans[stack].ray_service_spec)
    assert len(containers) == 1 + len(plans[stack].gpu_pools)
    for container in containers:
        names = {env["name"] for env in container.get("env", [])}
        assert HF_TOKEN_ENV not in names, container["name"]
        assert {"name": "HF_HUB_OFFLINE", "value": "1"} in container["env"], container["name"]
        assert container.get("envFrom") == [{"configMapRef": {"name": plans[stack].env_config_map_name}}]
    assert "hf_" not in json.dumps(plans[stack].ray_service_spec)
    assert HF_SECRET_NAME not in json.dumps(plans[stack].ray_service_spec)
    jobs = plans[stack].mirror_jobs
    assert len(jobs) == len({(m.source, m.revision) for m in plans[stack].served}) > 0
    for job in jobs:
        (container,) = job["spec"]["template"]["spec"]["containers"]
        tokens = [env for env in container["env"] if env["name"] == HF_TOKEN_ENV]
        assert tokens == [
            {
                "name": HF_TOKEN_ENV,
                "valueFrom": {"secretKeyRef": {"name": HF_SECRET_NAME, "key": HF_SECRET_KEY}},
            }
        ]


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
        _replace_model(plan.catalog, index, CHANGES[change](plan.catalog.models[index])),
        plan.settings,
        project=plan.project,
    )
    assert changed.ray_service_spec["serveConfigV2"] != plan.ray_service_spec["serveConfigV2"]
    before, after = cluster(plan), cluster(changed)
    assert json.dumps(after) == json.dumps(before)  # byte-for-byte, key order included
    assert changed.gpu_pools == plan.gpu_pools and changed.system_pool == plan.system_pool
    assert changed.env_config_map_name == plan.env_config_map_name


def _kuberay_resources_map(param: str) -> dict[str, float]:
    """KubeRay v1.7.0 common/pod.go `getResourcesMap`: trim quotes, backticks and spaces, then
    unmarshal JSON. KubeRay adds `num-gpus` from the GPU limit only when this parses."""
    resources: dict[str, float] = json.loads(param.strip("'\"` "))
    return resources


@pytest.mark.parametrize("stack", STACKS)
def test_kuberay_and_rays_autoscaler_read_the_same_custom_resources(
    plans: dict[str, ServingPlan], ray_oracles: ModuleType, stack: str
) -> None:
    cluster = plans[stack].ray_cluster_config
    types = ray_oracles.autoscaler_node_types(cluster)
    groups = {"headgroup": cluster["headGroupSpec"]} | {
        g["groupName"]: g for g in cluster["workerGroupSpecs"]
    }
    for name, group in groups.items():
        read_by_kuberay = _kuberay_resources_map(group["rayStartParams"]["resources"])
        offered = types[name]["resources"]
        assert read_by_kuberay and all(offered[key] == value for key, value in read_by_kuberay.items()), name


def test_escaped_quotes_are_what_kuberay_could_not_read() -> None:
    """The first form (a double-quoted string with escaped quotes inside) still reached `ray
    start`, but KubeRay's parse failed on it: no `num-gpus`, an error logged per pod."""
    with pytest.raises(json.JSONDecodeError):
        _kuberay_resources_map('"{\\"accelerator_type:L4\\": 1}"')
    assert _kuberay_resources_map(ray_resources_param({"accelerator_type:L4": 1})) == {
        "accelerator_type:L4": 1
    }
