"""Node pool specs: one on-demand CPU system pool, one tainted GPU pool per enabled tier, and
for tiers with `onDemandFallback` an on-demand pool behind the spot one."""

from __future__ import annotations

from typing import Final, Literal

from pydantic import BaseModel, ConfigDict

from infra.node_labels import COMPUTE_CLASS_KEY as COMPUTE_CLASS_KEY
from infra.node_labels import FALLBACK_FOR_LABEL as FALLBACK_FOR_LABEL
from infra.node_labels import POOL_LABEL as POOL_LABEL
from infra.node_labels import TIER_LABEL as TIER_LABEL
from infra.settings import StackSettings
from serve.tiers import SYSTEM_BOOT_DISK_GIB, SYSTEM_MACHINE, TIERS, MachineShape, TierName

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

    @property
    def fallback_for(self) -> str | None:
        """The pool this one backs when it has no capacity (None: not a fallback pool)."""
        return self.labels.get(FALLBACK_FOR_LABEL)


def gpu_pool_name(tier: TierName) -> str:
    return f"gpu-{tier.value}"


def fallback_pool_name(tier: TierName) -> str:
    return f"{gpu_pool_name(tier)}-ondemand"


def compute_class_name(tier: TierName) -> str:
    """The tier's GKE compute class, which orders its pools (infra/plan/compute_class.py)."""
    return f"gpu-{tier.value}"


def tier_taint(tier: TierName) -> Taint:
    return Taint(key=TIER_LABEL, value=tier.value)


def compute_class_taint(tier: TierName) -> Taint:
    return Taint(key=COMPUTE_CLASS_KEY, value=compute_class_name(tier))


SPOT_TAINT: Final = Taint(key=SPOT_TAINT_KEY, value="true")


def worker_node_selector(tier: TierName) -> dict[str, str]:
    """The node label a tier's workers select: its compute class, which every pool of the tier
    carries, spot or fallback. It never changes with `onDemandFallback`: KubeRay v1.7.0 hashes the
    worker template's nodeSelector (ray-operator/controllers/ray/utils/util.go
    `GenerateHashWithoutReplicasAndWorkersToDelete`, l.645-668, which drops only replicas, the
    bounds, workersToDelete, tolerations, schedulingGates and upgradeStrategy; read 2026-11-27),
    so a selector that followed the setting would start a NewCluster upgrade on every toggle."""
    return {COMPUTE_CLASS_KEY: compute_class_name(tier)}


def worker_tolerations(tier: TierName) -> list[dict[str, str]]:
    """What a tier's Ray workers tolerate: its own taint, its compute class's, and the spot taint
    whether or not the stack's pool is spot today. KubeRay v1.7.0 leaves tolerations out of the
    hash it compares (utils/util.go `GenerateHashWithoutReplicasAndWorkersToDelete`), so a
    toleration added when a stack switches to spot would never reach the running workers, which
    could then no longer be placed on the new, spot-tainted pool. Tolerating a taint a node lacks
    costs nothing; the nodeSelector still pins workers to their tier's pools. GKE would add the
    compute-class toleration itself to a pod that selects the class; listing it does not depend
    on that."""
    return [tier_taint(tier).toleration(), compute_class_taint(tier).toleration(), SPOT_TAINT.toleration()]


def _tier_pool(
    tier: TierName, settings: StackSettings, *, name: str, spot: bool, min_nodes: int
) -> NodePoolSpec:
    facts, tier_settings = TIERS[tier], settings.tiers[tier]
    taints = [tier_taint(tier), compute_class_taint(tier)]
    if spot:
        taints.append(SPOT_TAINT)
    labels = {POOL_LABEL: name, TIER_LABEL: tier.value, **worker_node_selector(tier)}
    if name != gpu_pool_name(tier):
        labels[FALLBACK_FOR_LABEL] = gpu_pool_name(tier)
    return NodePoolSpec(
        name=name,
        tier=tier,
        machine=facts.machine_for(tier_settings.gpus_per_node),
        gke_accelerator=facts.gke_accelerator,
        accelerator_count=tier_settings.gpus_per_node,
        spot=spot,
        taints=tuple(taints),
        labels=labels,
        min_nodes=min_nodes,
        max_nodes=tier_settings.max_nodes,
        # GPU pools start empty; the autoscalers follow Ray's demand.
        initial_nodes=0,
        zones=tuple(tier_settings.zones),
        boot_disk_gib=facts.boot_disk_gib,
    )


def gpu_pool(tier: TierName, settings: StackSettings) -> NodePoolSpec:
    """The tier's pool: the compute class's first priority."""
    tier_settings = settings.tiers[tier]
    return _tier_pool(
        tier, settings, name=gpu_pool_name(tier), spot=tier_settings.spot, min_nodes=tier_settings.min_nodes
    )


def fallback_pool(tier: TierName, settings: StackSettings) -> NodePoolSpec | None:
    """The on-demand pool behind a spot pool (`onDemandFallback`), or None. The same machine, GPUs,
    zones and maxNodes; minNodes 0 always: it holds nodes only while the spot pool cannot."""
    if not settings.tiers[tier].on_demand_fallback:
        return None
    return _tier_pool(tier, settings, name=fallback_pool_name(tier), spot=False, min_nodes=0)


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
