"""GKE node allocatable and node pods (`infra.plan.gke_nodes`), against measured GKE nodes."""

from __future__ import annotations

import pytest

from infra.plan.gke_nodes import (
    MEMORY_MARGIN_MIB,
    Resources,
    allocatable,
    kernel_reserved_mib,
    kube_reserved,
    node_pods_requests,
    schedulable,
)
from serve.tiers import SYSTEM_MACHINE, TIERS, MachineShape, TierName

# Real GKE nodes (COS, containerd) measured by 2i2c: machine memory, then the node's reported
# capacity and allocatable memory in MiB (2i2c-org/infrastructure @9ad7cd0f,
# src/deployer/dev/commands/generate/resource_allocation/node-capacity-info.json, read 2026-11-26).
MEASURED_NODES = [
    # machine type, vCPUs, memory GiB, capacity MiB, allocatable MiB, allocatable CPU millis
    ("n1-standard-2", 2, 7.5, 7447, 7447 - 1836, 1930),
    ("n1-standard-8", 8, 30, 30089, 30089 - 3583, 7910),
    ("n1-standard-16", 16, 60, 60279, 60279 - 5426, 15890),
    ("n1-standard-32", 32, 120, 120755, 120755 - 9112, 31850),
    ("n1-standard-64", 64, 240, 241610, 241610 - 11775, 63770),
    ("n2-highmem-4", 4, 32, 32105, 32105 - 3706, 3920),
    ("n2-highmem-16", 16, 128, 128823, 128823 - 9481, 15890),
    ("n2-highmem-32", 32, 256, 257943, 257943 - 12102, 31850),
]
ALL_MACHINES = [SYSTEM_MACHINE, *(machine for tier in TIERS.values() for machine in tier.machines)]


def machine(name: str, vcpus: int, memory_gib: float, gpus: int = 0) -> MachineShape:
    return MachineShape(
        machine_type=name,
        gpus=gpus,
        vcpus=vcpus,
        memory_gib=memory_gib,
        on_demand_usd_per_hour=0,
        spot_usd_per_hour=0,
    )


@pytest.mark.parametrize(("name", "vcpus", "gib", "capacity", "measured", "cpu"), MEASURED_NODES)
def test_allocatable_never_promises_more_than_a_real_node(
    name: str, vcpus: int, gib: float, capacity: int, measured: int, cpu: int
) -> None:
    estimate = allocatable(machine(name, vcpus, gib))
    assert estimate.cpu_millis == cpu
    # Within what the margin covers (the kernel estimate is up to ~20 MiB optimistic on small
    # machines), and never wastefully low (the GiB reading of the tiers reserves a little more).
    assert measured - 400 <= estimate.memory_mib <= measured + MEMORY_MARGIN_MIB // 8


@pytest.mark.parametrize(("name", "vcpus", "gib", "capacity", "measured", "cpu"), MEASURED_NODES)
def test_the_kernel_keeps_what_the_autoscaler_estimates(
    name: str, vcpus: int, gib: float, capacity: int, measured: int, cpu: int
) -> None:
    # The autoscaler's estimate is within -17..+223 MiB of the gap measured on real nodes.
    gap = gib * 1024 - capacity
    assert gap - 20 <= kernel_reserved_mib(gib * 1024) <= gap + 230


# GKE "Node allocatable" reservations, by hand:
#   CPU:    6% of the 1st core, 1% of the 2nd, 0.5% of cores 3-4, 0.25% of every core above 4.
#   Memory: 25% of the first 4 GiB, 20% of the next 4, 10% of the next 8, 6% of the next 112,
#           2% above 128 GiB.
KUBE_RESERVED_BY_HAND = [
    # n1-standard-8: 0.06 + 0.01 + 2x0.005 + 4x0.0025 = 0.09 cores; 1 + 0.8 + 0.8 + 14x0.06 = 3.44 GiB.
    (machine("n1-standard-8", 8, 30), Resources(90, round(3.44 * 1024))),
    # a2-ultragpu-1g: 0.06 + 0.01 + 0.01 + 8x0.0025 = 0.10 cores; 1 + 0.8 + 0.8 + 6.72 + 42x0.02 = 10.16 GiB.
    (machine("a2-ultragpu-1g", 12, 170), Resources(100, round(10.16 * 1024))),
    # n1-standard-1: only the first slice of each table: 0.06 cores; 3.75 x 0.25 = 0.9375 GiB.
    (machine("n1-standard-1", 1, 3.75), Resources(60, 960)),
]


@pytest.mark.parametrize(
    ("shape", "expected"), KUBE_RESERVED_BY_HAND, ids=[m.machine_type for m, _ in KUBE_RESERVED_BY_HAND]
)
def test_kube_reserved_worked_by_hand(shape: MachineShape, expected: Resources) -> None:
    assert kube_reserved(shape) == expected


def test_kube_reserved_follows_gkes_tiers() -> None:
    # 8 vCPU: 60 + 10 + 2 x 5 + 4 x 2.5 = 90m. 32 GiB: 4x.25 + 4x.2 + 8x.1 + 16x.06 = 3.56 GiB.
    assert kube_reserved(machine("e2-standard-8", 8, 32)) == Resources(90, round(3.56 * 1024))
    # Above 128 GiB only 2% more is reserved.
    big = kube_reserved(machine("a2-ultragpu-2g", 24, 340)).memory_mib
    assert big == round((1 + 0.8 + 0.8 + 112 * 0.06 + (340 - 128) * 0.02) * 1024)


def test_gpu_nodes_run_more_node_pods() -> None:
    cpu_only, gpu = node_pods_requests(gpu=False), node_pods_requests(gpu=True)
    assert gpu.cpu_millis - cpu_only.cpu_millis >= 400  # device plugin, driver installer, DCGM
    assert gpu.memory_mib > cpu_only.memory_mib


def test_the_a100_worker_of_the_first_version_would_not_fit() -> None:
    # prod's A100 worker asked for 324Gi on a2-ultragpu-2g: more than the node can schedule.
    a2_ultragpu_2g = TIERS[TierName.A100].machine_for(2)
    assert schedulable(a2_ultragpu_2g).memory_mib < 324 * 1024


@pytest.mark.parametrize("shape", ALL_MACHINES, ids=lambda m: m.machine_type)
def test_every_machine_leaves_room_for_a_pod(shape: MachineShape) -> None:
    room = schedulable(shape)
    assert room.fits_in(allocatable(shape))
    assert room.cpu_millis >= 0.8 * shape.vcpus * 1000
    assert room.memory_mib >= 0.8 * shape.memory_gib * 1024
