"""Node pool specs: one on-demand CPU system pool, one tainted GPU pool per enabled tier."""

from __future__ import annotations

from typing import Final, Literal

from pydantic import BaseModel, ConfigDict

from infra.settings import StackSettings
from serve.tiers import SYSTEM_BOOT_DISK_GIB, SYSTEM_MACHINE, TIERS, MachineShape, TierName

TIER_LABEL: Final = "llm-serving/tier"
POOL_LABEL: Final = "llm-serving/pool"
SYSTEM_POOL: Final = "system"
SYSTEM_POOL_NODES: Final = 1
# GKE's own spot label/taint key; tainting spot pools keeps pods that cannot take a
# 30-second reclaim notice (the Ray head, the operator) off them.
SPOT_TAINT_KEY: Final = "cloud.google.com/gke-spot"
# GKE managed driver install: LATEST is the newest driver GKE ships for the node version.
GPU_DRIVER_VERSION: Final = "LATEST"

_GKE_EFFECTS: Final = {
    "NoSchedule": "NO_SCHEDULE",
    "PreferNoSchedule": "PREFER_NO_SCHEDULE",
    "NoExecute": "NO_EXECUTE",
}


class Taint(BaseModel):
    model_config = ConfigDict(frozen=True)

    key: str
    value: str
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] = "NoSchedule"

    @property
    def gke_effect(self) -> str:
        return _GKE_EFFECTS[self.effect]

    def toleration(self) -> dict[str, str]:
        return {"key": self.key, "operator": "Equal", "value": self.value, "effect": self.effect}


class NodePoolSpec(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    tier: TierName | None
    machine: MachineShape
    gke_accelerator: str | None
    accelerator_count: int
    spot: bool
    taints: tuple[Taint, ...]
    labels: dict[str, str]
    min_nodes: int
    max_nodes: int
    zones: tuple[str, ...]
    boot_disk_gib: int

    @property
    def usd_per_node_hour(self) -> float:
        return self.machine.usd_per_hour(spot=self.spot)


def gpu_pool_name(tier: TierName) -> str:
    return f"gpu-{tier.value}"


def gpu_pool(tier: TierName, settings: StackSettings) -> NodePoolSpec:
    facts, tier_settings = TIERS[tier], settings.tiers[tier]
    taints = [Taint(key=TIER_LABEL, value=tier.value)]
    if tier_settings.spot:
        taints.append(Taint(key=SPOT_TAINT_KEY, value="true"))
    return NodePoolSpec(
        name=gpu_pool_name(tier),
        tier=tier,
        machine=facts.machine_for(tier_settings.gpus_per_node),
        gke_accelerator=facts.gke_accelerator,
        accelerator_count=tier_settings.gpus_per_node,
        spot=tier_settings.spot,
        taints=tuple(taints),
        labels={POOL_LABEL: gpu_pool_name(tier), TIER_LABEL: tier.value},
        min_nodes=tier_settings.min_nodes,
        max_nodes=tier_settings.max_nodes,
        zones=tuple(tier_settings.zones),
        boot_disk_gib=facts.boot_disk_gib,
    )


def system_pool(settings: StackSettings) -> NodePoolSpec:
    """The CPU pool for the Ray head and the operator, in the first zone of the first enabled tier.

    Next to the GPUs, because every request crosses from the head's Serve proxy to a GPU replica.
    """
    first_tier = settings.tiers[settings.enabled_tiers()[0]]
    return NodePoolSpec(
        name=SYSTEM_POOL,
        tier=None,
        machine=SYSTEM_MACHINE,
        gke_accelerator=None,
        accelerator_count=0,
        spot=False,
        taints=(),
        labels={POOL_LABEL: SYSTEM_POOL},
        min_nodes=SYSTEM_POOL_NODES,
        max_nodes=SYSTEM_POOL_NODES,
        zones=(first_tier.zones[0],),
        boot_disk_gib=SYSTEM_BOOT_DISK_GIB,
    )
