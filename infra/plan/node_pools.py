"""Node pool specs: one on-demand CPU system pool, one tainted GPU pool per enabled tier."""

from __future__ import annotations

from typing import Final, Literal

from pydantic import BaseModel, ConfigDict

from infra.settings import StackSettings
from serve.tiers import SYSTEM_BOOT_DISK_GIB, SYSTEM_MACHINE, TIERS, MachineShape, TierName

TIER_LABEL: Final = "llm-serving/tier"
POOL_LABEL: Final = "llm-serving/pool"
SYSTEM_POOL: Final = "system"
# One node at idle; a second while a NewCluster upgrade runs two Ray heads at once (the
# node-fit check proves one node cannot hold both, and two can).
SYSTEM_POOL_MIN_NODES: Final = 1
SYSTEM_POOL_MAX_NODES: Final = 2
# GKE's own spot label/taint key; tainting spot pools keeps pods that cannot take a
# 30-second reclaim notice (the Ray head, the operator) off them.
SPOT_TAINT_KEY: Final = "cloud.google.com/gke-spot"
# GKE-managed driver install. On COS, GKE 1.31-1.33 installs the R535 branch for DEFAULT and
# R580 for LATEST ("Install NVIDIA GPU drivers automatically",
# https://cloud.google.com/kubernetes-engine/docs/how-to/gpus, read 2026-11-26 through a
# transcription of the page; rapidsai/deployment#656 saw DEFAULT install 535.274.02 and
# CUDA 13 fail). The image's CUDA 13 needs R580 (serve.versions.MIN_DRIVER_FOR_CUDA).
GKE_DRIVER_BRANCH: Final = {"DEFAULT": 535, "LATEST": 580}
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
    # Nodes GKE creates with the pool; never changes for a pool (a change would replace it).
    initial_nodes: int
    zones: tuple[str, ...]
    boot_disk_gib: int

    @property
    def usd_per_node_hour(self) -> float:
        return self.machine.usd_per_hour(spot=self.spot)


def gpu_pool_name(tier: TierName) -> str:
    return f"gpu-{tier.value}"


def tier_taint(tier: TierName) -> Taint:
    return Taint(key=TIER_LABEL, value=tier.value)


SPOT_TAINT: Final = Taint(key=SPOT_TAINT_KEY, value="true")


def worker_tolerations(tier: TierName) -> list[dict[str, str]]:
    """What a tier's Ray workers tolerate: its own taint, and the spot taint whether or not the
    stack's pool is spot today. KubeRay v1.7.0 leaves tolerations out of the hash it compares
    (utils/util.go `GenerateHashWithoutReplicasAndWorkersToDelete`), so a toleration added when
    a stack switches to spot would never reach the running workers, which could then no longer
    be placed on the new, spot-tainted pool. Tolerating a taint a node lacks costs nothing; the
    nodeSelector still pins workers to their tier's pool."""
    return [tier_taint(tier).toleration(), SPOT_TAINT.toleration()]


def gpu_pool(tier: TierName, settings: StackSettings) -> NodePoolSpec:
    facts, tier_settings = TIERS[tier], settings.tiers[tier]
    taints = [tier_taint(tier)]
    if tier_settings.spot:
        taints.append(SPOT_TAINT)
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
        # GPU pools start empty; the autoscalers follow Ray's demand.
        initial_nodes=0,
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
        min_nodes=SYSTEM_POOL_MIN_NODES,
        max_nodes=SYSTEM_POOL_MAX_NODES,
        initial_nodes=SYSTEM_POOL_MIN_NODES,
        zones=(first_tier.zones[0],),
        boot_disk_gib=SYSTEM_BOOT_DISK_GIB,
    )
