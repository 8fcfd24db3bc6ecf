"""Do the stack's pods fit the nodes they must run on? Read from the rendered RayService spec,
against what an empty node can schedule (`gke_nodes.schedulable`).

- GPU pools: one Ray worker pod per node.
- The system pool: the Ray head with KubeRay's autoscaler sidecar, the KubeRay operator and the
  kube-system Deployments GKE schedules on the only untainted pool; during a NewCluster upgrade
  KubeRay runs a second head (and sidecar) beside the first, so the pool must hold both at
  max_nodes while idling at min_nodes.

A pod bigger than its node is never placed and the cluster autoscaler never adds a node for
it, so a stack whose pods do not fit is refused before anything is created.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from configcheck.problems import Problem
from infra.plan.gke_nodes import Resources, schedulable
from infra.plan.node_pools import NodePoolSpec
from infra.settings import TIERS_KEY, StackSettings

# KubeRay operator chart 1.7.0 values.yaml `resources` (../shared/kuberay-v1.7.0/operator-values.yaml):
# only limits are set, so Kubernetes requests the same.
KUBERAY_OPERATOR_REQUESTS: Final = Resources(100, 512)
# GKE's own Deployments in kube-system (kube-dns and its autoscaler, konnectivity-agent and its
# autoscaler, metrics-server, event-exporter, l7-default-backend) land on the only untainted
# pool. Their requests change between GKE versions; this allowance is the sum of the largest
# figures found (see README, "What is verified where").
KUBE_SYSTEM_REQUESTS: Final = Resources(1000, 1536)

_QUANTITY: Final = re.compile(r"^(?P<number>[0-9.]+)(?P<unit>m|Ki|Mi|Gi|Ti|k|M|G)?$")
_MEMORY_UNITS_MIB: Final = {
    None: 1 / 2**20,
    "Ki": 1 / 1024,
    "Mi": 1,
    "Gi": 1024,
    "Ti": 1024**2,
    "k": 1000 / 2**20,
    "M": 10**6 / 2**20,
    "G": 10**9 / 2**20,
}


def cpu_millis(quantity: str) -> int:
    match = _QUANTITY.match(str(quantity))
    if match is None or match["unit"] not in (None, "m"):
        raise ValueError(f"not a CPU quantity: {quantity!r}")
    number = float(match["number"])
    return round(number if match["unit"] == "m" else number * 1000)


def memory_mib(quantity: str) -> int:
    match = _QUANTITY.match(str(quantity))
    if match is None or match["unit"] == "m":
        raise ValueError(f"not a memory quantity: {quantity!r}")
    return int(-(-float(match["number"]) * _MEMORY_UNITS_MIB[match["unit"]] // 1))


def requests_of(resources: Mapping[str, Any]) -> Resources:
    """A container's `resources.requests` (the scheduler places by requests)."""
    requests = resources.get("requests") or resources.get("limits") or {}
    return Resources(cpu_millis(requests.get("cpu", "0")), memory_mib(requests.get("memory", "0")))


def pod_requests(pod_spec: Mapping[str, Any], sidecars: Iterable[Resources] = ()) -> Resources:
    total = Resources(0, 0)
    for container in pod_spec.get("containers", []):
        total += requests_of(container.get("resources") or {})
    for sidecar in sidecars:
        total += sidecar
    return total


@dataclass(frozen=True)
class PodRequest:
    name: str
    requests: Resources


@dataclass(frozen=True)
class PoolFit:
    """How a pool's pods pack onto its nodes: first-fit, biggest pod first."""

    pool: NodePoolSpec
    node: Resources
    # Pods on the pool in normal operation, and the extra ones during a NewCluster upgrade.
    pods: tuple[PodRequest, ...]
    upgrade_pods: tuple[PodRequest, ...] = ()

    @property
    def too_big(self) -> tuple[PodRequest, ...]:
        return tuple(pod for pod in (*self.pods, *self.upgrade_pods) if not pod.requests.fits_in(self.node))

    @property
    def nodes_needed(self) -> int:
        return len(pack(self.pods, self.node))

    @property
    def nodes_needed_during_upgrade(self) -> int:
        return len(pack((*self.pods, *self.upgrade_pods), self.node))

    @property
    def tightest_margin(self) -> Resources:
        """What is left on the fullest node, per resource, in normal operation."""
        loads = pack(self.pods, self.node) or [Resources(0, 0)]
        return Resources(
            min(self.node.cpu_millis - load.cpu_millis for load in loads),
            min(self.node.memory_mib - load.memory_mib for load in loads),
        )


def pack(pods: Sequence[PodRequest], node: Resources) -> list[Resources]:
    """The load of each node when `pods` are placed first-fit, largest first (pods that fit no
    empty node are left out: `PoolFit.too_big` reports them)."""
    loads: list[Resources] = []
    for pod in sorted(pods, key=lambda p: (p.requests.memory_mib, p.requests.cpu_millis), reverse=True):
        if not pod.requests.fits_in(node):
            continue
        for index, load in enumerate(loads):
            if (load + pod.requests).fits_in(node):
                loads[index] = load + pod.requests
                break
        else:
            loads.append(pod.requests)
    return loads


def autoscaler_sidecar(cluster_config: Mapping[str, Any]) -> Resources:
    return requests_of((cluster_config.get("autoscalerOptions") or {}).get("resources") or {})


def pool_fits(
    cluster_config: Mapping[str, Any], system: NodePoolSpec, gpu_pools: Sequence[NodePoolSpec]
) -> tuple[PoolFit, ...]:
    head = PodRequest(
        "ray-head (+ autoscaler sidecar)",
        pod_requests(
            cluster_config["headGroupSpec"]["template"]["spec"], [autoscaler_sidecar(cluster_config)]
        ),
    )
    fits = [
        PoolFit(
            pool=system,
            node=schedulable(system.machine),
            pods=(
                head,
                PodRequest("kuberay-operator", KUBERAY_OPERATOR_REQUESTS),
                PodRequest("kube-system Deployments (allowance)", KUBE_SYSTEM_REQUESTS),
            ),
            upgrade_pods=(PodRequest("second ray-head during a NewCluster upgrade", head.requests),),
        )
    ]
    groups = {group["groupName"]: group for group in cluster_config.get("workerGroupSpecs", [])}
    for pool in gpu_pools:
        assert pool.tier is not None
        worker = groups[pool.tier.value]["template"]["spec"]
        fits.append(
            PoolFit(
                pool=pool,
                node=schedulable(pool.machine),
                pods=(PodRequest(f"ray-worker-{pool.tier.value}", pod_requests(worker)),),
            )
        )
    return tuple(fits)


def _describe(resources: Resources) -> str:
    return f"{resources.cpu_millis}m CPU / {resources.memory_mib} MiB"


def fit_problems(settings: StackSettings, fits: Sequence[PoolFit]) -> list[Problem]:
    """Located problems for pods that no node of their pool can hold, and for a system pool too
    small for an upgrade. GPU pools are located at the tier's gpusPerNode (it picks the machine)."""
    problems: list[Problem] = []
    for fit in fits:
        where = (TIERS_KEY, fit.pool.tier.value, "gpusPerNode") if fit.pool.tier is not None else (TIERS_KEY,)
        for pod in fit.too_big:
            problems.append(
                settings.problem(
                    where,
                    f"{pod.name} requests {_describe(pod.requests)} but a {fit.pool.machine.machine_type} "
                    f"node can schedule {_describe(fit.node)} after GKE's reservations and node pods; "
                    "choose a gpusPerNode with a bigger machine",
                )
            )
        if not fit.too_big and fit.nodes_needed_during_upgrade > fit.pool.max_nodes:
            problems.append(
                settings.problem(
                    where,
                    f"pool {fit.pool.name} needs {fit.nodes_needed_during_upgrade} "
                    f"{fit.pool.machine.machine_type} nodes while an upgrade runs two Ray heads but may "
                    f"grow to {fit.pool.max_nodes}",
                )
            )
    return problems


# --- can a tier's worker pod be placed on a node of each of its pools? -------------------------

# Taint effects that keep a pod off a node unless it tolerates them (Kubernetes scheduler's
# TaintToleration filter); PreferNoSchedule only scores.
_REPELLING_EFFECTS: Final = frozenset({"NoSchedule", "NoExecute"})


def _tolerates(toleration: Mapping[str, Any], key: str, value: str, effect: str) -> bool:
    """Kubernetes' toleration match (core/v1 Toleration.ToleratesTaint): an empty key with Exists
    tolerates everything; otherwise the key, the effect (empty = any) and, for Equal, the value."""
    if toleration.get("effect") not in (None, "", effect):
        return False
    operator = toleration.get("operator") or "Equal"
    if operator == "Exists":
        return toleration.get("key") in (None, "", key)
    return bool(toleration.get("key") == key and toleration.get("value") == value)


def placement_problems(pod_spec: Mapping[str, Any], pool: NodePoolSpec) -> list[str]:
    """Why the scheduler would not place `pod_spec` on an empty node of `pool`, from what the
    program writes on the pool (its labels and taints) and what the node can schedule. GKE adds
    more to real nodes (the `nvidia.com/gpu` taint on GPU nodes, which pods requesting GPUs
    tolerate through its ExtendedResourceToleration admission; its own labels): only a real
    cluster shows those."""
    problems = [
        f"nodeSelector {key}={value} but {pool.name} nodes have {key}={pool.labels.get(key)}"
        for key, value in (pod_spec.get("nodeSelector") or {}).items()
        if pool.labels.get(key) != value
    ]
    tolerations = pod_spec.get("tolerations") or []
    problems += [
        f"{pool.name} nodes are tainted {taint.key}={taint.value}:{taint.effect}, "
        "which the pod does not tolerate"
        for taint in pool.taints
        if taint.effect in _REPELLING_EFFECTS
        and not any(_tolerates(t, taint.key, taint.value, taint.effect) for t in tolerations)
    ]
    requests = pod_requests(pod_spec)
    node = schedulable(pool.machine)
    if not requests.fits_in(node):
        problems.append(
            f"requests {_describe(requests)} but a {pool.name} node can schedule {_describe(node)}"
        )
    gpus = sum(
        int((c.get("resources") or {}).get("requests", {}).get("nvidia.com/gpu", 0))
        for c in pod_spec.get("containers", [])
    )
    if gpus > pool.accelerator_count:
        problems.append(f"requests {gpus} GPUs but a {pool.name} node has {pool.accelerator_count}")
    return problems
