"""The worker groups' PodDisruptionBudgets: the pure plan, and what the program registers."""

from __future__ import annotations

import re
from typing import Any

import pulumi_kubernetes as k8s
import pytest
import yaml
from helpers.settings_edits import with_scaling, with_tier
from helpers.shared_files import kuberay_dir
from helpers.stack_files import STACKS

from infra import resource_types
from infra.plan import ServingPlan, build_plan
from infra.plan.disruption import UNHEALTHY_POD_EVICTION_POLICY, disruption_budgets, worker_selector
from infra.plan.ray_service import NAMESPACE
from infra.report.mock_engine import ProgramRun
from serve.tiers import TierName


def _sdk_fields(args_class: type) -> set[str]:
    """The Kubernetes field names pulumi-kubernetes' input type declares (its schema of the kind)."""
    return {
        value.fget._pulumi_name
        for value in vars(args_class).values()
        if isinstance(value, property) and hasattr(value.fget, "_pulumi_name")
    }


def _eviction_policies() -> set[str]:
    doc = k8s.policy.v1.PodDisruptionBudgetSpecArgs.unhealthy_pod_eviction_policy.__doc__ or ""
    found = re.search(r"Valid policies are (\w+) and (\w+)\.", doc)
    assert found, "pulumi-kubernetes no longer documents the policies this test reads"
    return set(found.groups())


def structure_problems(budget: dict[str, Any]) -> list[str]:
    """policy/v1 PodDisruptionBudget structure, by pulumi-kubernetes' declared fields."""
    problems = []
    spec = budget["spec"]
    if extra := set(budget["metadata"]) - _sdk_fields(k8s.meta.v1.ObjectMetaArgs):
        problems.append(f"unknown metadata fields {sorted(extra)}")
    if extra := set(spec) - _sdk_fields(k8s.policy.v1.PodDisruptionBudgetSpecArgs):
        problems.append(f"unknown spec fields {sorted(extra)}")
    if extra := set(spec.get("selector", {})) - _sdk_fields(k8s.meta.v1.LabelSelectorArgs):
        problems.append(f"unknown selector fields {sorted(extra)}")
    if ("minAvailable" in spec) == ("maxUnavailable" in spec):
        problems.append("exactly one of minAvailable and maxUnavailable")
    if spec.get("unhealthyPodEvictionPolicy") not in _eviction_policies():
        problems.append(f"unhealthyPodEvictionPolicy {spec.get('unhealthyPodEvictionPolicy')!r}")
    return problems


@pytest.mark.parametrize("stack", STACKS)
def test_one_budget_per_worker_group_selecting_its_workers(plans: dict[str, ServingPlan], stack: str) -> None:
    plan = plans[stack]
    budgets = plan.disruption_budgets
    groups = plan.ray_cluster_config["workerGroupSpecs"]
    assert len(budgets) == len(groups) == len(plan.gpu_pools)
    for budget, group in zip(budgets, groups, strict=True):
        assert structure_problems(budget) == []
        selector = budget["spec"]["selector"]["matchLabels"]
        # The labels KubeRay puts on every worker of the group (labelPod), and the template's own.
        template_labels = group["template"]["metadata"]["labels"]
        assert selector == {
            "ray.io/node-type": "worker",
            "ray.io/group": group["groupName"],
            **template_labels,
        }
        # Nothing that changes with a NewCluster upgrade.
        assert "ray.io/cluster" not in selector
        assert budget["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"


@pytest.mark.parametrize("stack", STACKS)
def test_budgets_use_an_integer_min_available(plans: dict[str, ServingPlan], stack: str) -> None:
    """maxUnavailable (or a percentage) needs the pods' controller's scale, which a RayCluster lacks:
    the disruption controller then allows no eviction at all."""
    for budget in plans[stack].disruption_budgets:
        assert "maxUnavailable" not in budget["spec"]
        assert isinstance(budget["spec"]["minAvailable"], int)


def test_a_raycluster_has_no_scale_subresource() -> None:
    """Why not maxUnavailable: the disruption controller finds a pod's expected count through its
    controller's scale, and KubeRay v1.7.0's RayCluster CRD declares none."""
    crd = yaml.safe_load((kuberay_dir() / "crds" / "ray.io_rayclusters.yaml").read_text(encoding="utf-8"))
    assert crd["spec"]["names"]["kind"] == "RayCluster"
    for version in crd["spec"]["versions"]:
        assert "scale" not in (version.get("subresources") or {}), version["name"]


def test_structure_check_has_teeth() -> None:
    good = {
        "metadata": {"name": "x"},
        "spec": {
            "minAvailable": 1,
            "selector": {"matchLabels": {}},
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }
    assert structure_problems(good) == []
    for bad in (
        {**good, "spec": {**good["spec"], "maxUnavailable": 1}},
        {**good, "spec": {**good["spec"], "unhealthyPodEvictionPolicy": "Always"}},
        {**good, "spec": {**good["spec"], "minAvailble": 1}},
        {**good, "spec": {**good["spec"], "selector": {"matchLabel": {}}}},
    ):
        assert structure_problems(bad) != []


def test_shipped_stacks_keep_one_warm_node_per_group_so_no_drain_waits(plans: dict[str, ServingPlan]) -> None:
    # Every shipped tier's warm replicas fit one node (prod) or none (dev): GKE may drain any one.
    for plan in plans.values():
        assert [b["spec"]["minAvailable"] for b in plan.disruption_budgets] == [0] * len(plan.gpu_pools)


def test_two_warm_nodes_keep_one(plans: dict[str, ServingPlan]) -> None:
    """Two warm replicas of the L4 model on 1-GPU nodes: GKE may drain only one of the two nodes."""
    prod = plans["prod"]
    # Two warm replicas pack nothing (serve/gpu_share.py): the T4 tier needs a node per replica.
    settings = with_tier(TierName.T4, max_nodes=12)(with_scaling(min_replicas=2)(prod.settings))
    plan = build_plan(prod.catalog, settings)
    by_tier = {b["spec"]["selector"]["matchLabels"]["ray.io/group"]: b for b in plan.disruption_budgets}
    assert by_tier["l4"]["spec"]["minAvailable"] == 1
    # The A100 model takes both GPUs of a 2-GPU node per replica: two replicas, two nodes.
    assert by_tier["a100"]["spec"]["minAvailable"] == 1
    # Six small T4 replicas (three models, two each), each on its own 1-GPU node: one at a time.
    assert by_tier["t4"]["spec"]["minAvailable"] == 5
    # With 4-GPU A100 nodes both replicas would fit one node, but two warm replicas each keep a
    # node to themselves (serve/gpu_share.py SPREAD_RESOURCE): two nodes, one kept.
    wide = build_plan(prod.catalog, with_tier(TierName.A100, gpus_per_node=4)(plan.settings))
    wide_a100 = next(b for b in wide.disruption_budgets if b["metadata"]["name"] == "ray-worker-a100")
    assert wide_a100["spec"]["minAvailable"] == 1


def test_missing_warm_gpus_mean_no_floor(plans: dict[str, ServingPlan]) -> None:
    budgets = disruption_budgets(plans["prod"].gpu_pools, {})
    assert {b["spec"]["minAvailable"] for b in budgets} == {0}
    assert budgets[0]["spec"]["selector"]["matchLabels"] == worker_selector(plans["prod"].gpu_pools[0].tier)  # type: ignore[arg-type]
    assert UNHEALTHY_POD_EVICTION_POLICY == "AlwaysAllow"


# --- the program ---------------------------------------------------------------------------


@pytest.mark.parametrize("stack", STACKS)
def test_program_registers_the_planned_budgets_in_the_namespace(
    program_runs: dict[str, ProgramRun], plans: dict[str, ServingPlan], stack: str
) -> None:
    run, plan = program_runs[stack], plans[stack]
    registered = run.of_type(resource_types.POD_DISRUPTION_BUDGET)
    by_name = {r.inputs["metadata"]["name"]: r for r in registered}
    assert len(by_name) == len(registered) == len(plan.gpu_pools)
    namespace = run.one(resource_types.NAMESPACE)
    for budget in plan.disruption_budgets:
        resource = by_name[budget["metadata"]["name"]]
        assert resource.inputs["apiVersion"] == "policy/v1"
        assert resource.inputs["kind"] == "PodDisruptionBudget"
        assert resource.inputs["metadata"]["namespace"] == NAMESPACE
        assert resource.inputs["spec"] == budget["spec"]
        # Created in the namespace after it, deleted before it.
        assert namespace.urn in resource.dependencies
