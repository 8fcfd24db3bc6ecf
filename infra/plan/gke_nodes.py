"""What a GKE node can schedule: allocatable CPU and memory as GKE and its cluster autoscaler
compute them, less the DaemonSets GKE itself runs on that kind of node.

Every pod the stack schedules must request at most `schedulable(...)` of its node, or it is
never placed: the cluster autoscaler simulates scale-up against this same estimate and, when
the pod does not fit an empty node, never adds one ("pod didn't trigger scale-up"). Nothing
fails in `pulumi up`; the pod just stays Pending. So this model is deliberately conservative.

Sources, all read on FACTS_READ_ON:
- kube-reserved tiers and the hard-eviction threshold: GKE "Plan GKE Standard node sizes",
  https://cloud.google.com/kubernetes-engine/docs/concepts/plan-node-sizes#memory_and_cpu_reservations
  (read through its copies in cloudpilot-ai/karpenter-provider-gcp pkg/utils/utils.go @417f047b and
  hatemosphere/gke-node-allocatable-memory-calculator @1a166ddd, which agree; real nodes measured by
  2i2c-org/infrastructure node-capacity-info.json @9ad7cd0f match them within 1 MiB when the
  breakpoints are read as 1000 MiB: reading them as GiB, as here, reserves 40-160 MiB more).
- kernel memory (the node's memory capacity is below the VM's): kubernetes/autoscaler
  cluster-autoscaler/cloudprovider/gce/gce_reserved.go `CalculateKernelReserved` (tag
  cluster-autoscaler-1.36.1; `reserved.go` before 1.26), COS; `templates.go` `BuildCapacity` /
  `CalculateAllocatable` subtract it, then kube-reserved and the eviction threshold. Against
  real nodes the estimate is off by -17..+223 MiB, hence MEMORY_MARGIN_MIB.
- DaemonSet requests: `kubectl describe node` dumps of GKE nodes in public issues
  (cryptnono/cryptnono#34 GKE 1.29, kubernetes-sigs/dra-driver-nvidia-gpu#501,
  pangeo-data/pangeo-cloud-federation#425), GoogleCloudPlatform/container-engine-accelerators
  @992db812 manifests (device plugin, driver installer), and the largest figure seen for each;
  anetd's and dcgm-exporter's memory requests were not found and are allowances. The cluster
  autoscaler adds every matching DaemonSet's pod to a template node
  (simulator/node_info_utils.go `podsExpectedOnFreshNode`) plus a 100m kube-proxy pod even on
  Dataplane V2 (cloudprovider/utils.go `KubeProxyCpuRequestMillis`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from serve.tiers import MachineShape

FACTS_READ_ON: Final = "2026-11-26"

# (slice size, fraction reserved) applied in order to the machine's memory (GiB) and vCPUs.
KUBE_RESERVED_MEMORY_TIERS_GIB: Final = (
    (4.0, 0.25),
    (4.0, 0.20),
    (8.0, 0.10),
    (112.0, 0.06),
    (float("inf"), 0.02),
)
KUBE_RESERVED_CPU_TIERS_CORES: Final = ((1.0, 0.06), (1.0, 0.01), (2.0, 0.005), (float("inf"), 0.0025))
EVICTION_HARD_MEMORY_MIB: Final = 100

# gce_reserved.go constants (COS, x86).
KERNEL_RESERVED_RATIO: Final = 64
KERNEL_RESERVED_MIB: Final = 16
SWIOTLB_RESERVED_MIB: Final = 64
SWIOTLB_THRESHOLD_MIB: Final = 3 * 1024
LOW_MEMORY_OFFSET_MIB: Final = 8
LOW_MEMORY_THRESHOLD_MIB: Final = 8 * 1024
KERNEL_CORRECTION_RATIO: Final = 0.00175
KERNEL_CORRECTION_MAX_MIB: Final = 248

# What the estimate may miss (the autoscaler's kernel formula is up to 223 MiB optimistic on
# small machines; DaemonSet requests grow between GKE versions).
MEMORY_MARGIN_MIB: Final = 512
CPU_MARGIN_MILLIS: Final = 100


@dataclass(frozen=True)
class Resources:
    cpu_millis: int
    memory_mib: int

    def __add__(self, other: Resources) -> Resources:
        return Resources(self.cpu_millis + other.cpu_millis, self.memory_mib + other.memory_mib)

    def __sub__(self, other: Resources) -> Resources:
        return Resources(self.cpu_millis - other.cpu_millis, self.memory_mib - other.memory_mib)

    def fits_in(self, other: Resources) -> bool:
        return self.cpu_millis <= other.cpu_millis and self.memory_mib <= other.memory_mib


@dataclass(frozen=True)
class SystemPod:
    """A pod GKE runs on every node of a kind; requests per node."""

    name: str
    requests: Resources
    gpu_nodes_only: bool = False
    # None: on every dataplane; True: only with Dataplane V2; False: only without it.
    dataplane_v2: bool | None = None


GKE_NODE_PODS: Final = (
    # A static pod, not a DaemonSet, but it takes allocatable the same way; the cluster
    # autoscaler counts 100m for it on Dataplane V2 nodes too.
    SystemPod("kube-proxy", Resources(100, 0)),
    SystemPod("anetd (Dataplane V2; memory is an allowance)", Resources(205, 300), dataplane_v2=True),
    SystemPod("fluentbit-gke", Resources(105, 230)),
    SystemPod("gke-metrics-agent", Resources(21, 145)),
    SystemPod("gke-metadata-server (Workload Identity)", Resources(100, 100)),
    SystemPod("pdcsi-node", Resources(10, 20)),
    SystemPod("netd", Resources(8, 65)),
    SystemPod("ip-masq-agent", Resources(10, 16)),
    SystemPod("nvidia-gpu-device-plugin", Resources(150, 100), gpu_nodes_only=True),
    SystemPod("nvidia-driver-installer (init container)", Resources(150, 0), gpu_nodes_only=True),
    SystemPod("dcgm-exporter (memory is an allowance)", Resources(100, 256), gpu_nodes_only=True),
)
SAFETY_MARGIN: Final = Resources(CPU_MARGIN_MILLIS, MEMORY_MARGIN_MIB)
# Dataplane V2 (`ADVANCED_DATAPATH`) is what the cluster runs: NetworkPolicy is enforced by anetd.
DATAPLANE_V2: Final = True


def _tiered(total: float, tiers: tuple[tuple[float, float], ...]) -> float:
    reserved, remaining = 0.0, total
    for size, fraction in tiers:
        portion = min(remaining, size)
        reserved += portion * fraction
        remaining -= portion
        if remaining <= 0:
            break
    return reserved


def kube_reserved(machine: MachineShape) -> Resources:
    return Resources(
        cpu_millis=round(_tiered(machine.vcpus, KUBE_RESERVED_CPU_TIERS_CORES) * 1000),
        memory_mib=round(_tiered(machine.memory_gib, KUBE_RESERVED_MEMORY_TIERS_GIB) * 1024),
    )


def kernel_reserved_mib(memory_mib: float) -> int:
    """`CalculateKernelReserved` for COS on x86: memory the kernel keeps before Kubernetes counts it."""
    reserved = memory_mib / KERNEL_RESERVED_RATIO + KERNEL_RESERVED_MIB
    if memory_mib > SWIOTLB_THRESHOLD_MIB:
        reserved += SWIOTLB_RESERVED_MIB
    if memory_mib <= LOW_MEMORY_THRESHOLD_MIB:
        reserved += LOW_MEMORY_OFFSET_MIB
    reserved += min(KERNEL_CORRECTION_RATIO * memory_mib, KERNEL_CORRECTION_MAX_MIB)
    return int(reserved) + 1  # the Go code truncates each part; round up once to stay conservative


def allocatable(machine: MachineShape) -> Resources:
    """Node allocatable: capacity (memory less the kernel's share) less kube-reserved and eviction."""
    memory_mib = machine.memory_gib * 1024
    reserved = kube_reserved(machine)
    return Resources(
        cpu_millis=machine.vcpus * 1000 - reserved.cpu_millis,
        memory_mib=int(memory_mib)
        - kernel_reserved_mib(memory_mib)
        - reserved.memory_mib
        - EVICTION_HARD_MEMORY_MIB,
    )


def node_pods(*, gpu: bool, dataplane_v2: bool = DATAPLANE_V2) -> tuple[SystemPod, ...]:
    return tuple(
        pod
        for pod in GKE_NODE_PODS
        if (gpu or not pod.gpu_nodes_only) and pod.dataplane_v2 in (None, dataplane_v2)
    )


def node_pods_requests(*, gpu: bool, dataplane_v2: bool = DATAPLANE_V2) -> Resources:
    total = Resources(0, 0)
    for pod in node_pods(gpu=gpu, dataplane_v2=dataplane_v2):
        total += pod.requests
    return total


def schedulable(machine: MachineShape) -> Resources:
    """What the stack's own pods may request on one empty node of `machine`, with a safety margin."""
    return allocatable(machine) - node_pods_requests(gpu=machine.gpus > 0) - SAFETY_MARGIN
