"""GPU tier facts (serve/tiers.py): machine tables, Ray accelerator names, prices."""

from __future__ import annotations

import importlib
import itertools
from types import ModuleType

import pytest

from serve.tiers import (
    RAY_ACCELERATOR_RESOURCE_PREFIX,
    SYSTEM_MACHINE,
    TIERS,
    MachineShape,
    TierName,
)

ALL_MACHINES = [SYSTEM_MACHINE, *(m for t in TIERS.values() for m in t.machines)]


def _machine(machine_type: str, vcpus: int, memory_gib: float) -> MachineShape:
    return MachineShape(
        machine_type=machine_type,
        gpus=0,
        vcpus=vcpus,
        memory_gib=memory_gib,
        on_demand_usd_per_hour=1.0,
        spot_usd_per_hour=0.5,
    )


def test_every_tier_is_in_the_table() -> None:
    assert set(TIERS) == set(TierName)
    for name in TierName:
        assert TIERS[name].name is name


@pytest.mark.parametrize("name", list(TierName))
def test_machine_gpu_counts_are_unique_and_sorted(name: TierName) -> None:
    counts = list(TIERS[name].gpu_counts_per_node)
    assert counts == sorted(set(counts))
    assert counts[0] >= 1
    assert TIERS[name].max_gpus_per_node == counts[-1]
    for machine in TIERS[name].machines:
        assert TIERS[name].machine_for(machine.gpus) is machine
    with pytest.raises(KeyError):
        TIERS[name].machine_for(counts[-1] + 1)


# --- Ray's accelerator names (Ray is imported by these tests only, not when the module loads) ---


@pytest.fixture(scope="module")
def ray_accelerators() -> ModuleType:
    """Ray's accelerator type constants: what LLMConfig.accelerator_type accepts (ray.llm's
    AcceleratorType enum is built from this same module)."""
    return importlib.import_module("ray.util.accelerators.accelerators")


@pytest.mark.parametrize("name", list(TierName))
def test_ray_accelerator_types_are_rays_own(ray_accelerators: ModuleType, name: TierName) -> None:
    rays = {
        value for key, value in vars(ray_accelerators).items() if key.isupper() and isinstance(value, str)
    }
    facts = TIERS[name]
    assert facts.ray_accelerator_type in rays
    for declared in facts.ray_node_accelerator_types:
        assert declared in rays
    # A node of the tier declares what the tier's replicas ask for.
    assert facts.ray_accelerator_type in facts.ray_node_accelerator_types
    assert facts.ray_resources == {
        f"{RAY_ACCELERATOR_RESOURCE_PREFIX}{declared}": 1 for declared in facts.ray_node_accelerator_types
    }


def test_a100_nodes_declare_what_a_running_a100_reports(ray_accelerators: ModuleType) -> None:
    # Ray's GPU detection reports plain "A100" for every A100; the 80G name exists only where declared.
    assert ray_accelerators.NVIDIA_A100 in TIERS[TierName.A100].ray_node_accelerator_types
    assert TIERS[TierName.A100].ray_accelerator_type == ray_accelerators.NVIDIA_A100_80G


@pytest.mark.parametrize("machine", ALL_MACHINES, ids=[m.machine_type for m in ALL_MACHINES])
def test_prices_are_positive_and_spot_is_cheaper(machine: MachineShape) -> None:
    assert machine.on_demand_usd_per_hour > 0
    assert machine.spot_usd_per_hour > 0
    assert machine.spot_usd_per_hour < machine.on_demand_usd_per_hour
    assert machine.usd_per_hour(spot=True) == machine.spot_usd_per_hour
    assert machine.usd_per_hour(spot=False) == machine.on_demand_usd_per_hour


@pytest.mark.parametrize("name", list(TierName))
def test_price_grows_with_gpus(name: TierName) -> None:
    machines = TIERS[name].machines
    for smaller, bigger in itertools.pairwise(machines):
        assert smaller.on_demand_usd_per_hour < bigger.on_demand_usd_per_hour
        assert smaller.spot_usd_per_hour < bigger.spot_usd_per_hour


# NVIDIA's published compute capabilities; bf16 needs 8.0 (Ampere), fp8 needs 8.9 (Ada) or later.
DTYPE_SUPPORT = {
    TierName.T4: ((7, 5), False, False),
    TierName.L4: ((8, 9), True, True),
    TierName.A100: ((8, 0), True, False),
}


@pytest.mark.parametrize("name", list(TierName))
def test_dtype_support_follows_compute_capability(name: TierName) -> None:
    facts = TIERS[name]
    assert (facts.compute_capability, facts.supports_bf16, facts.supports_fp8) == DTYPE_SUPPORT[name]
    assert facts.supports_bf16 == (facts.compute_capability >= (8, 0))
    assert facts.supports_fp8 == (facts.compute_capability >= (8, 9))
