"""GPU tier facts: the one table every placement, node pool, worker group and cost uses.

Tiers are `t4`, `l4` and `a100` (A100 80GB). A100 40GB is deliberately not a tier: the
80GB part is what GKE's reference platform uses for serving and one A100 tier keeps the
catalog's placement unambiguous.

Sources (read on PRICES_READ_ON, region PRICES_REGION):
- machine shapes and GPU counts: Compute Engine "GPU machine types" (N1 + T4, G2 = L4
  attached, A2 Ultra = A100 80GB attached);
- compute capability: NVIDIA CUDA GPUs table (T4 7.5, L4 8.9, A100 8.0); bf16 needs
  compute capability >= 8.0, fp8 weights need >= 8.9 (Ada/Hopper) in vLLM;
- VRAM: what the driver reports as usable (`nvidia-smi` total), in GiB;
- prices: list prices in USD per hour for the whole node (machine + its attached GPUs),
  on-demand and spot, from the Compute Engine VM and GPU pricing pages cross-checked with
  SkyPilot's GCP catalog (a dump of the Cloud Billing Catalog API). Spot prices move weekly;
  treat them as the order of magnitude the cost estimate is built on, not a quote. The
  A100 80GB (a2-ultragpu) spot figures are the least certain: the catalog lists a2-ultragpu
  VM-only prices, so they are derived at the same spot/on-demand ratio (0.40) as the VM.
- what a node of each shape can schedule is GKE's business, not the tier's:
  infra/plan/gke_nodes.py.
"""

from __future__ import annotations

from enum import StrEnum
from types import MappingProxyType
from typing import Final

from pydantic import BaseModel, ConfigDict


class TierName(StrEnum):
    T4 = "t4"
    L4 = "l4"
    A100 = "a100"


PRICES_READ_ON: Final = "2026-11-01"
PRICES_REGION: Final = "us-central1"
GKE_CLUSTER_FEE_USD_PER_HOUR: Final = 0.10

# Ray resource names are "accelerator_type:<type>"; the autoscaler matches on them.
RAY_ACCELERATOR_RESOURCE_PREFIX: Final = "accelerator_type:"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class MachineShape(_Frozen):
    machine_type: str
    gpus: int
    vcpus: int
    memory_gib: float
    on_demand_usd_per_hour: float
    spot_usd_per_hour: float

    def usd_per_hour(self, *, spot: bool) -> float:
        return self.spot_usd_per_hour if spot else self.on_demand_usd_per_hour


class GpuTier(_Frozen):
    name: TierName
    gpu_model: str
    gke_accelerator: str
    # What Ray Serve LLM's `accelerator_type` is set to for models on this tier.
    ray_accelerator_type: str
    # Every accelerator_type a node of this tier reports or must declare; a running A100
    # reports plain "A100", so the group declares both to match what replicas ask for.
    ray_node_accelerator_types: tuple[str, ...]
    vram_gib: float
    compute_capability: tuple[int, int]
    supports_bf16: bool
    supports_fp8: bool
    boot_disk_gib: int
    machines: tuple[MachineShape, ...]
    # Zones of PRICES_REGION that offered this GPU when the table was read.
    zones_in_price_region: tuple[str, ...]

    @property
    def gpu_counts_per_node(self) -> tuple[int, ...]:
        return tuple(m.gpus for m in self.machines)

    @property
    def max_gpus_per_node(self) -> int:
        return max(self.gpu_counts_per_node)

    def machine_for(self, gpus_per_node: int) -> MachineShape:
        for machine in self.machines:
            if machine.gpus == gpus_per_node:
                return machine
        raise KeyError(
            f"{self.name} has no machine with {gpus_per_node} GPUs; valid: {self.gpu_counts_per_node}"
        )

    @property
    def ray_resources(self) -> dict[str, int]:
        return {f"{RAY_ACCELERATOR_RESOURCE_PREFIX}{t}": 1 for t in self.ray_node_accelerator_types}


TIERS: Final = MappingProxyType(
    {
        TierName.T4: GpuTier(
            name=TierName.T4,
            gpu_model="NVIDIA T4 16GB",
            gke_accelerator="nvidia-tesla-t4",
            ray_accelerator_type="T4",
            ray_node_accelerator_types=("T4",),
            vram_gib=15.0,
            compute_capability=(7, 5),
            supports_bf16=False,
            supports_fp8=False,
            boot_disk_gib=100,
            machines=(
                MachineShape(
                    machine_type="n1-standard-8",
                    gpus=1,
                    vcpus=8,
                    memory_gib=30,
                    on_demand_usd_per_hour=0.7300,
                    spot_usd_per_hour=0.2363,
                ),
                MachineShape(
                    machine_type="n1-standard-16",
                    gpus=2,
                    vcpus=16,
                    memory_gib=60,
                    on_demand_usd_per_hour=1.4600,
                    spot_usd_per_hour=0.4726,
                ),
                MachineShape(
                    machine_type="n1-standard-32",
                    gpus=4,
                    vcpus=32,
                    memory_gib=120,
                    on_demand_usd_per_hour=2.9200,
                    spot_usd_per_hour=0.9452,
                ),
            ),
            zones_in_price_region=("us-central1-a", "us-central1-b", "us-central1-c", "us-central1-f"),
        ),
        TierName.L4: GpuTier(
            name=TierName.L4,
            gpu_model="NVIDIA L4 24GB",
            gke_accelerator="nvidia-l4",
            ray_accelerator_type="L4",
            ray_node_accelerator_types=("L4",),
            vram_gib=22.5,
            compute_capability=(8, 9),
            supports_bf16=True,
            supports_fp8=True,
            boot_disk_gib=200,
            machines=(
                MachineShape(
                    machine_type="g2-standard-8",
                    gpus=1,
                    vcpus=8,
                    memory_gib=32,
                    on_demand_usd_per_hour=0.8536,
                    spot_usd_per_hour=0.3406,
                ),
                MachineShape(
                    machine_type="g2-standard-24",
                    gpus=2,
                    vcpus=24,
                    memory_gib=96,
                    on_demand_usd_per_hour=1.9980,
                    spot_usd_per_hour=0.7986,
                ),
                MachineShape(
                    machine_type="g2-standard-48",
                    gpus=4,
                    vcpus=48,
                    memory_gib=192,
                    on_demand_usd_per_hour=3.9960,
                    spot_usd_per_hour=1.5972,
                ),
                MachineShape(
                    machine_type="g2-standard-96",
                    gpus=8,
                    vcpus=96,
                    memory_gib=384,
                    on_demand_usd_per_hour=7.9920,
                    spot_usd_per_hour=3.1945,
                ),
            ),
            zones_in_price_region=("us-central1-a", "us-central1-b", "us-central1-c"),
        ),
        TierName.A100: GpuTier(
            name=TierName.A100,
            gpu_model="NVIDIA A100 80GB",
            gke_accelerator="nvidia-a100-80gb",
            ray_accelerator_type="A100-80G",
            ray_node_accelerator_types=("A100", "A100-80G"),
            vram_gib=80.0,
            compute_capability=(8, 0),
            supports_bf16=True,
            supports_fp8=False,
            boot_disk_gib=300,
            machines=(
                MachineShape(
                    machine_type="a2-ultragpu-1g",
                    gpus=1,
                    vcpus=12,
                    memory_gib=170,
                    on_demand_usd_per_hour=5.0688,
                    spot_usd_per_hour=2.0275,
                ),
                MachineShape(
                    machine_type="a2-ultragpu-2g",
                    gpus=2,
                    vcpus=24,
                    memory_gib=340,
                    on_demand_usd_per_hour=10.1376,
                    spot_usd_per_hour=4.0550,
                ),
                MachineShape(
                    machine_type="a2-ultragpu-4g",
                    gpus=4,
                    vcpus=48,
                    memory_gib=680,
                    on_demand_usd_per_hour=20.2752,
                    spot_usd_per_hour=8.1101,
                ),
                MachineShape(
                    machine_type="a2-ultragpu-8g",
                    gpus=8,
                    vcpus=96,
                    memory_gib=1360,
                    on_demand_usd_per_hour=40.5504,
                    spot_usd_per_hour=16.2202,
                ),
            ),
            zones_in_price_region=("us-central1-a", "us-central1-c"),
        ),
    }
)

# The CPU pool for the Ray head, the KubeRay operator and system pods. On-demand: losing
# the head to a spot reclaim takes every model down at once.
SYSTEM_MACHINE: Final = MachineShape(
    machine_type="e2-standard-8",
    gpus=0,
    vcpus=8,
    memory_gib=32,
    on_demand_usd_per_hour=0.2681,
    spot_usd_per_hour=0.1072,
)
SYSTEM_BOOT_DISK_GIB: Final = 100
