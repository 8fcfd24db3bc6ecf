"""What KubeRay v1.7.0 does with each change a stack file may make (`infra.plan.kuberay_rollout`).

The stack files exist to change tiers and autoscaling; each such change must take effect on the
cluster that serves, never sit in the RayService spec while the running RayCluster keeps its
old one (KubeRay compares a hash that leaves replicas, min/max and tolerations out).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
from helpers.settings_edits import Edit, with_scaling, with_tier

from infra.plan import ServingPlan, build_plan, build_plan_for_stack
from infra.plan.kuberay_rollout import (
    IGNORED_POD_SPEC_FIELDS,
    IGNORED_WORKER_GROUP_FIELDS,
    ClusterAction,
    cluster_hash,
    rollout,
)
from serve.tiers import TierName


@pytest.fixture(scope="module")
def plans() -> dict[str, ServingPlan]:
    return {stack: build_plan_for_stack(stack) for stack in ("dev", "prod")}


# --- the model itself, on hand-made specs ----------------------------------------------------


def _spec() -> dict[str, Any]:
    worker = {
        "groupName": "l4",
        "replicas": 0,
        "minReplicas": 0,
        "maxReplicas": 2,
        "rayStartParams": {},
        "template": {"spec": {"tolerations": [{"key": "a"}], "containers": [{"image": "ray:1"}]}},
    }
    return {
        "upgradeStrategy": {"type": "NewCluster"},
        "serveConfigV2": "applications: []\n",
        "rayClusterConfig": {
            "headGroupSpec": {"template": {"spec": {"containers": [{"image": "ray:1"}]}}},
            "workerGroupSpecs": [worker],
        },
    }


def _changed(change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    spec = _spec()
    change(spec)
    return spec


def _group(spec: dict[str, Any]) -> dict[str, Any]:
    group: dict[str, Any] = spec["rayClusterConfig"]["workerGroupSpecs"][0]
    return group


@pytest.mark.parametrize("field", IGNORED_WORKER_GROUP_FIELDS)
def test_replica_bounds_alone_never_reach_the_running_cluster(field: str) -> None:
    after = _changed(lambda spec: _group(spec).__setitem__(field, 7))
    result = rollout(_spec(), after)
    assert result.action is ClusterAction.NOTHING
    assert result.unapplied == (f"workerGroupSpecs[0].{field}",)
    assert not result.reaches_ray


@pytest.mark.parametrize("field", IGNORED_POD_SPEC_FIELDS)
def test_tolerations_and_scheduling_gates_alone_never_reach_it(field: str) -> None:
    after = _changed(lambda spec: _group(spec)["template"]["spec"].__setitem__(field, [{"key": "b"}]))
    assert not rollout(_spec(), after).reaches_ray


def test_a_pod_template_change_builds_a_new_cluster() -> None:
    after = _changed(
        lambda spec: _group(spec)["template"]["spec"]["containers"][0].__setitem__("image", "ray:2")
    )
    assert rollout(_spec(), after).action is ClusterAction.NEW_CLUSTER


def test_without_a_zero_downtime_strategy_a_cluster_change_is_ignored() -> None:
    def change(spec: dict[str, Any]) -> None:
        spec["upgradeStrategy"] = {"type": "None"}
        _group(spec)["rayStartParams"] = {"num-cpus": "3"}

    result = rollout(_spec(), _changed(change))
    assert result.action is ClusterAction.IGNORED and not result.reaches_ray


def test_appended_worker_groups_update_the_running_cluster() -> None:
    def append(spec: dict[str, Any]) -> None:
        extra = copy.deepcopy(_group(spec))
        extra["groupName"] = "a100"
        spec["rayClusterConfig"]["workerGroupSpecs"].append(extra)

    assert rollout(_spec(), _changed(append)).action is ClusterAction.UPDATE_CLUSTER_IN_PLACE


def test_a_group_inserted_before_others_builds_a_new_cluster() -> None:
    def insert(spec: dict[str, Any]) -> None:
        extra = copy.deepcopy(_group(spec))
        extra["groupName"] = "t4"
        spec["rayClusterConfig"]["workerGroupSpecs"].insert(0, extra)

    assert rollout(_spec(), _changed(insert)).action is ClusterAction.NEW_CLUSTER


def test_serve_config_alone_updates_the_applications_in_place() -> None:
    after = _changed(lambda spec: spec.__setitem__("serveConfigV2", "applications: [x]\n"))
    assert rollout(_spec(), after).action is ClusterAction.UPDATE_SERVE_APPS


def test_the_hash_ignores_exactly_the_blanked_fields() -> None:
    before = _spec()["rayClusterConfig"]
    after = _changed(lambda spec: _group(spec).__setitem__("idleTimeoutSeconds", 60))["rayClusterConfig"]
    assert cluster_hash(before) != cluster_hash(after)


# --- every setting a stack file may change --------------------------------------------------

# (stack, description, edit, what KubeRay does). The README's "you change X" table says the same.
SETTING_CHANGES: list[tuple[str, str, Edit, ClusterAction]] = [
    ("prod", "l4 maxNodes 6 -> 8", with_tier(TierName.L4, max_nodes=8), ClusterAction.NOTHING),
    ("prod", "a100 maxNodes 4 -> 6", with_tier(TierName.A100, max_nodes=6), ClusterAction.NOTHING),
    ("prod", "t4 minNodes 0 -> 1", with_tier(TierName.T4, min_nodes=1), ClusterAction.NOTHING),
    # An on-demand pool needs no fallback (settings refuse the pair), so the fallback goes too.
    (
        "prod",
        "l4 spot true -> false",
        with_tier(TierName.L4, spot=False, on_demand_fallback=False),
        ClusterAction.NOTHING,
    ),
    # Workers select the tier's compute class, never a pool: the fallback is GKE's business only.
    (
        "prod",
        "l4 onDemandFallback true -> false",
        with_tier(TierName.L4, on_demand_fallback=False),
        ClusterAction.NOTHING,
    ),
    (
        "dev",
        "t4 onDemandFallback false -> true",
        with_tier(TierName.T4, on_demand_fallback=True),
        ClusterAction.NOTHING,
    ),
    # Spare nodes are placeholder pods beside the RayService, never in it.
    ("prod", "l4 spareNodes 1 -> 0", with_tier(TierName.L4, spare_nodes=0), ClusterAction.NOTHING),
    ("dev", "t4 spareNodes 0 -> 2", with_tier(TierName.T4, spare_nodes=2), ClusterAction.NOTHING),
    ("prod", "l4 zones 3 -> 1", with_tier(TierName.L4, zones=["us-central1-a"]), ClusterAction.NOTHING),
    ("prod", "l4 gpusPerNode 1 -> 2", with_tier(TierName.L4, gpus_per_node=2), ClusterAction.NEW_CLUSTER),
    ("prod", "disable a100", with_tier(TierName.A100, enabled=False), ClusterAction.NEW_CLUSTER),
    (
        "dev",
        "enable a100 (the last tier)",
        with_tier(TierName.A100, enabled=True, max_nodes=2),
        ClusterAction.UPDATE_CLUSTER_IN_PLACE,
    ),
    ("dev", "disable t4 (the first tier)", with_tier(TierName.T4, enabled=False), ClusterAction.NEW_CLUSTER),
    ("prod", "minReplicas 1 -> 0", with_scaling(min_replicas=0), ClusterAction.UPDATE_SERVE_APPS),
    # Two warm stops packing and asks for the spread unit, which every many-GPU worker declares
    # already (serve/gpu_share.py): only the models' Serve applications change. T4 then needs a
    # node per replica, so its maxNodes grows (a maxNodes change alone does nothing, above).
    (
        "prod",
        "minReplicas 1 -> 2 (t4 maxNodes 4 -> 12)",
        lambda settings: with_tier(TierName.T4, max_nodes=12)(with_scaling(min_replicas=2)(settings)),
        ClusterAction.UPDATE_SERVE_APPS,
    ),
    ("prod", "maxReplicas 4 -> 3", with_scaling(max_replicas=3), ClusterAction.UPDATE_SERVE_APPS),
    (
        "prod",
        "targetOngoingRequests 16 -> 8",
        with_scaling(target_ongoing_requests=8.0),
        ClusterAction.UPDATE_SERVE_APPS,
    ),
    (
        "prod",
        "maxOngoingRequests 64 -> 32",
        with_scaling(max_ongoing_requests=32),
        ClusterAction.UPDATE_SERVE_APPS,
    ),
    (
        "prod",
        "upscaleDelaySeconds 15 -> 5",
        with_scaling(upscale_delay_seconds=5.0),
        ClusterAction.UPDATE_SERVE_APPS,
    ),
    (
        "prod",
        "downscaleDelaySeconds 900 -> 60",
        with_scaling(downscale_delay_seconds=60.0),
        ClusterAction.UPDATE_SERVE_APPS,
    ),
]


@pytest.mark.parametrize(
    ("stack", "change", "edit", "action"), SETTING_CHANGES, ids=[case[1] for case in SETTING_CHANGES]
)
def test_every_stack_setting_takes_effect(
    plans: dict[str, ServingPlan], stack: str, change: str, edit: Edit, action: ClusterAction
) -> None:
    before = plans[stack]
    after = build_plan(before.catalog, edit(before.settings))
    result = rollout(before.ray_service_spec, after.ray_service_spec)
    assert result.action is action, change
    assert result.reaches_ray, f"{change}: KubeRay would never apply {result.unapplied}"


@pytest.mark.parametrize("max_nodes", [2, 5, 32])
def test_a_max_nodes_change_bounds_what_ray_can_scale_to(
    plans: dict[str, ServingPlan], max_nodes: int
) -> None:
    # Ray's bound on the group never binds below the pool's: the GKE pool's maxNodes (applied by
    # GKE on `pulumi up`) is the number of workers Ray can actually get.
    plan = build_plan(
        plans["dev"].catalog, with_tier(TierName.L4, max_nodes=max_nodes)(plans["dev"].settings)
    )
    (pool,) = [pool for pool in plan.gpu_pools if pool.tier == TierName.L4]
    (group,) = [g for g in plan.ray_cluster_config["workerGroupSpecs"] if g["groupName"] == "l4"]
    assert min(group["maxReplicas"], pool.max_nodes) == max_nodes
    assert group["minReplicas"] == 0
