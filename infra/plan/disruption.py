"""One PodDisruptionBudget per GPU worker group. Pure: no Pulumi.

**What a PDB does.** It limits *voluntary evictions*: requests to the Eviction API, which refuses
one that would leave fewer healthy (Ready) selected pods than the budget allows. Who evicts here:
GKE's node upgrades and auto-repair drains (GKE respects a PDB for up to an hour, then drains
anyway: https://wdenniss.com/minimizing-pod-disruption, by GKE's product manager; GKE's own
upgrade page was not in the stored corpus), the cluster autoscaler's scale-down drains, and a
ComputeClass's active migration back to preferred nodes.

**What it does not cover.**
- A spot reclaim is not an eviction: GKE's graceful node shutdown stops the pods within the
  notice whatever any PDB says (infra/plan/reclaim.py has the timeline).
- Ray's own scale-down: the autoscaler names the pods to remove (`workersToDelete`) and KubeRay
  deletes them (`raycluster_controller.go` `r.Delete`, v1.7.0 l.1132-1153), a DELETE that no PDB
  sees. A budget never holds up Ray's scale-down.
- KubeRay creates no PDB of its own (`git grep -i PodDisruptionBudget v1.7.0 -- ray-operator`).

**Which pods.** A group's workers by labels every Ray cluster of the RayService gives them:
`ray.io/node-type=worker` and `ray.io/group=<tier>` (KubeRay `common/pod.go` `labelPod`, which no
template can override) and the template's `app.kubernetes.io/component`. Not `ray.io/cluster`: it
changes with every NewCluster upgrade, and during one the budget then covers both clusters' workers.

**Why `minAvailable`, not `maxUnavailable: 1`.** The disruption controller resolves
`maxUnavailable` (and a percentage `minAvailable`) against the pods' controller's scale. Worker
pods are controlled by a RayCluster, which has no scale subresource (KubeRay v1.7.0 CRD
`ray.io_rayclusters.yaml`: `subresources: {status: {}}`), so the controller fails
(`getScaleController`: "does not implement the scale subresource") and its fail-safe sets
`disruptionsAllowed: 0` (kubernetes/kubernetes `pkg/controller/disruption/disruption.go`
`getExpectedScale`, `failSafe`, read 2026-11-27): every eviction of every worker refused. An
integer `minAvailable` is counted over the pods as they are (`getExpectedPodCount`). It is the
warm floor's nodes less one: with no traffic GKE may take one of the nodes the warm replicas
(minReplicas) hold at a time, and a group of one warm node (or none) is never held up. Above the
floor (scaled out for traffic) more than one may go at once: no fixed number says "all but one"
of a pod count that changes.

**Unhealthy pods: `AlwaysAllow`.** A worker is Ready while its raylet is alive
(infra/plan/worker_readiness.py), so a NotReady worker is one whose Ray node is not up (starting
or broken) and serves nothing. `IfHealthyBudget` would refuse to evict it unless the budget has
room, holding up a drain for a pod that protects nothing; Kubernetes recommends `AlwaysAllow` for
that reason ("Safely Drain a Node", https://kubernetes.io/docs/tasks/administer-cluster/safely-
drain-node/, and the `unhealthyPodEvictionPolicy` field, read 2026-11-27). Ready is not "model
loaded": a new worker is Ready minutes before its replica serves, so a second eviction can come
while the first replacement still loads. The budget limits concurrency; a second warm replica on
another node is what keeps a model up (infra/plan/spreading.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from infra.plan.node_pools import NodePoolSpec
from infra.plan.ray_service import worker_component
from serve.tiers import TierName

API_VERSION: Final = "policy/v1"
KIND: Final = "PodDisruptionBudget"
UNHEALTHY_POD_EVICTION_POLICY: Final = "AlwaysAllow"
# KubeRay v1.7.0 utils/constant.go: RayNodeTypeLabelKey, RayNodeGroupLabelKey; rayv1.WorkerNode.
NODE_TYPE_LABEL: Final = "ray.io/node-type"
GROUP_LABEL: Final = "ray.io/group"
WORKER_NODE_TYPE: Final = "worker"
COMPONENT_LABEL: Final = "app.kubernetes.io/component"


def budget_name(tier: TierName) -> str:
    return worker_component(tier)


def worker_selector(tier: TierName) -> dict[str, str]:
    """Labels every worker of the tier's group carries, on every Ray cluster of the RayService."""
    return {
        NODE_TYPE_LABEL: WORKER_NODE_TYPE,
        GROUP_LABEL: tier.value,
        COMPONENT_LABEL: worker_component(tier),
    }


def warm_nodes(pool: NodePoolSpec, warm_gpus: int) -> int:
    """Worker pods (one per node) the warm replicas hold: their GPUs in whole nodes."""
    return -(-warm_gpus // pool.accelerator_count)


def min_available(pool: NodePoolSpec, warm_gpus: int) -> int:
    return max(0, warm_nodes(pool, warm_gpus) - 1)


def disruption_budgets(
    gpu_pools: Sequence[NodePoolSpec], warm_gpus: Mapping[str, int]
) -> list[dict[str, Any]]:
    """PodDisruptionBudget documents (metadata.name and spec), one per worker group;
    `warm_gpus`: per pool name, the GPUs the warm replicas hold (the plan's packing)."""
    budgets = []
    for pool in gpu_pools:
        assert pool.tier is not None, "worker groups are for GPU pools"
        budgets.append(
            {
                "metadata": {"name": budget_name(pool.tier)},
                "spec": {
                    "minAvailable": min_available(pool, warm_gpus.get(pool.name, 0)),
                    "selector": {"matchLabels": worker_selector(pool.tier)},
                    "unhealthyPodEvictionPolicy": UNHEALTHY_POD_EVICTION_POLICY,
                },
            }
        )
    return budgets
