"""Every pod the stack schedules fits the node it must run on (`infra.plan.node_fit`)."""

from __future__ import annotations

import pytest
import yaml
from helpers.settings_edits import with_tier
from helpers.shared_files import kuberay_dir

from configcheck.problems import ConfigError
from infra.plan import ServingPlan, build_plan, build_plan_for_stack
from infra.plan.gke_nodes import Resources, schedulable
from infra.plan.node_fit import (
    KUBERAY_OPERATOR_REQUESTS,
    PodRequest,
    PoolFit,
    cpu_millis,
    fit_problems,
    memory_mib,
    pack,
    pool_fits,
)
from infra.plan.node_pools import SYSTEM_POOL_MAX_NODES, SYSTEM_POOL_MIN_NODES, gpu_pool
from infra.plan.ray_service import ray_cluster_config
from infra.settings import stack_file
from serve.tiers import TIERS, MachineShape, TierName

STACKS = ("dev", "prod")


@pytest.fixture(scope="module")
def prod() -> ServingPlan:
    return build_plan_for_stack("prod")


@pytest.mark.parametrize(("quantity", "millis"), [("4", 4000), ("500m", 500), ("0.5", 500), ("22", 22000)])
def test_cpu_quantities(quantity: str, millis: int) -> None:
    assert cpu_millis(quantity) == millis


@pytest.mark.parametrize(
    ("quantity", "mib"), [("16Gi", 16384), ("512Mi", 512), ("1G", 954), ("1048576", 1), ("2Ti", 2 * 1024**2)]
)
def test_memory_quantities(quantity: str, mib: int) -> None:
    assert memory_mib(quantity) == mib


SHAPES = [(tier, machine.gpus) for tier, facts in TIERS.items() for machine in facts.machines]


@pytest.mark.parametrize(("tier", "gpus"), SHAPES, ids=[f"{t}-{g}gpu" for t, g in SHAPES])
def test_the_worker_fits_every_machine_every_tier_can_choose(
    prod: ServingPlan, tier: TierName, gpus: int
) -> None:
    settings = with_tier(tier, enabled=True, gpus_per_node=gpus)(prod.settings)
    pool = gpu_pool(tier, settings)
    fits = pool_fits(ray_cluster_config(prod.system_pool, [pool]), prod.system_pool, [pool])
    (worker,) = fits[1].pods
    assert worker.requests.fits_in(schedulable(pool.machine)), pool.machine.machine_type
    assert fits[1].nodes_needed == 1
    assert not fit_problems(settings, fits)


@pytest.mark.parametrize("stack", STACKS)
def test_the_system_pool_idles_at_one_node_and_holds_two_heads_in_an_upgrade(stack: str) -> None:
    plan = build_plan_for_stack(stack)
    system = plan.node_fits[0]
    assert system.pool.name == "system"
    assert system.nodes_needed == SYSTEM_POOL_MIN_NODES == 1
    # One node cannot hold a second head beside the first: without room to grow, an upgrade
    # would wait forever for its new head.
    assert system.nodes_needed_during_upgrade == 2 <= SYSTEM_POOL_MAX_NODES
    assert (system.pool.min_nodes, system.pool.max_nodes) == (1, 2)


def test_packing_is_first_fit_largest_first() -> None:
    node = schedulable(TIERS[TierName.T4].machine_for(1))
    half = node.cpu_millis // 2 + 1
    pods = [PodRequest(f"p{i}", type(node)(half, 1)) for i in range(3)]
    assert len(pack(pods, node)) == 3  # two halves plus one millicore never share a node


def test_a_pod_bigger_than_its_node_is_refused_at_the_gpus_per_node_line(prod: ServingPlan) -> None:
    small = MachineShape(
        machine_type="n1-standard-4",
        gpus=1,
        vcpus=4,
        memory_gib=15,
        on_demand_usd_per_hour=0,
        spot_usd_per_hour=0,
    )
    real = gpu_pool(TierName.T4, prod.settings)
    worker = next(fit for fit in prod.node_fits if fit.pool.tier == TierName.T4).pods[0]
    tiny_pool = real.model_copy(update={"machine": small})
    problems = fit_problems(prod.settings, [PoolFit(pool=tiny_pool, node=schedulable(small), pods=(worker,))])
    (problem,) = problems
    lines = stack_file("prod").read_text().splitlines()
    t4_line = next(n for n, line in enumerate(lines, 1) if line.strip() == "t4:")
    gpus_line = next(n for n, line in enumerate(lines, 1) if n > t4_line and "gpusPerNode" in line)
    assert (problem.line, problem.field) == (gpus_line, "config.llm-serving:tiers.t4.gpusPerNode")
    assert "ray-worker-t4 requests" in problem.message and "n1-standard-4" in problem.message


def test_a_system_pool_that_cannot_grow_for_the_upgrade_is_refused(prod: ServingPlan) -> None:
    system = prod.node_fits[0]
    fixed = PoolFit(
        pool=system.pool.model_copy(update={"max_nodes": 1}),
        node=system.node,
        pods=system.pods,
        upgrade_pods=system.upgrade_pods,
    )
    (problem,) = fit_problems(prod.settings, [fixed])
    assert "needs 2 e2-standard-8 nodes while an upgrade runs two Ray heads" in problem.message


def test_plans_refuse_pods_that_do_not_fit(prod: ServingPlan, monkeypatch: pytest.MonkeyPatch) -> None:
    # The whole path: a node that schedules less than the worker asks for fails build_plan.
    import infra.plan.node_fit as node_fit

    monkeypatch.setattr(
        node_fit, "schedulable", lambda machine: schedulable(machine) - type(schedulable(machine))(0, 4096)
    )
    with pytest.raises(ConfigError, match="gpusPerNode: ray-worker-"):
        build_plan(prod.catalog, prod.settings)


@pytest.mark.parametrize("stack", STACKS)
def test_every_pool_has_a_margin(stack: str) -> None:
    plan = build_plan_for_stack(stack)
    # Every pool is checked, the on-demand fallbacks too: they get the same worker as their tier.
    assert [fit.pool.name for fit in plan.node_fits] == [pool.name for pool in plan.node_pools]
    for fit in plan.node_fits:
        assert not fit.too_big
        assert fit.tightest_margin.cpu_millis >= 0 and fit.tightest_margin.memory_mib >= 0


def test_the_operator_requests_what_its_chart_asks_for() -> None:
    values = yaml.safe_load((kuberay_dir() / "operator-values.yaml").read_text())
    # The chart sets only limits; Kubernetes then requests the limits.
    requests = values["resources"].get("requests") or values["resources"]["limits"]
    assert Resources(cpu_millis(requests["cpu"]), memory_mib(requests["memory"])) == KUBERAY_OPERATOR_REQUESTS
