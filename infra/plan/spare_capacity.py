"""Spare GPU nodes (`spareNodes`): placeholder pods that keep nodes of a tier's pool up and empty,
so a new Ray worker starts on one without waiting for a node or its GPU driver.

GKE's documented pattern for spare capacity ("Provision extra compute capacity for rapid Pod
scaling", https://cloud.google.com/kubernetes-engine/docs/how-to/capacity-provisioning, read
2026-11-27): a low-priority PriorityClass and placeholder Pods in a Deployment that request the
capacity to keep. GKE adds nodes for them; when production Pods need the room, the scheduler
evicts the placeholders and schedules the production Pods in their place, and the evicted
placeholder, pending again, makes GKE add a node for it.

Two rules of the cluster autoscaler decide the priority:
- pods with a priority below `--expendable-pods-priority-cutoff` (default -10) are expendable:
  they "don't cause scale up" (kubernetes/autoscaler cluster-autoscaler/main.go, the flag's help
  text; GKE's "About GKE cluster autoscaling",
  https://cloud.google.com/kubernetes-engine/docs/concepts/cluster-autoscaler, limitations: "Nodes
  won't scale up if Pods have a PriorityClass value below -10"). A placeholder below it would
  never get its spare node;
- the FAQ's "How can I configure overprovisioning with Cluster Autoscaler?"
  (kubernetes/autoscaler cluster-autoscaler/FAQ.md, read 2026-11-27): "Priority -10 will be
  reserved for overprovisioning pods as it is the lowest priority that triggers scaling clusters.
  Other pods need to use priority 0 or higher in order to be able to preempt overprovisioning
  pods." Ray's pods set no priority class (priority 0, may preempt lower), so they preempt these.

Each placeholder is one Ray worker pod's shape: the worker's requests and limits (all a node of
the pool can schedule, so one placeholder takes a node and its eviction frees room for exactly
one worker), its tolerations, its node selector narrowed to the tier's own pool (never the
on-demand fallback: a spare node there would cost the on-demand price around the clock), and its
image, which starts the image's pull (streamed: `sleep` reads a few files; vLLM's start still reads
most of it, so the cold-start model keeps the image phase).

Pure: no Pulumi (tests/test_plan.py imports every module of infra.plan).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any, Final

from infra.node_labels import POOL_LABEL
from infra.plan.node_pools import NodePoolSpec
from infra.resource_types import SKIP_AWAIT_ANNOTATION
from serve.tiers import TierName

# kubernetes/autoscaler cluster-autoscaler/main.go: `expendable-pods-priority-cutoff`, default -10
# ("Pods with priority below cutoff will be expendable. They can be killed without any
# consideration during scale down and they don't cause scale up."), read 2026-11-27.
AUTOSCALER_EXPENDABLE_PRIORITY_CUTOFF: Final = -10
# The lowest priority that still makes the autoscaler add a node: the cutoff itself (FAQ above).
SPARE_PRIORITY: Final = AUTOSCALER_EXPENDABLE_PRIORITY_CUTOFF
SPARE_PRIORITY_CLASS: Final = "llm-serving-spare-gpu"
# The placeholder does nothing; the image's own `sleep` keeps it running without a second image.
SPARE_COMMAND: Final = ("sleep", "infinity")
SPARE_CONTAINER: Final = "placeholder"
# Not awaited (SKIP_AWAIT_ANNOTATION): pulumi-kubernetes waits for a Deployment's pods to be ready
# (10 min by default). A spare node is best effort: a spot stockout or a reclaim leaves the
# placeholder pending, and that must not fail `pulumi up` (the worker it would have sped up starts
# the slow way).


def spare_name(tier: TierName) -> str:
    """The Deployment's name and its pods' `app.kubernetes.io/component` label."""
    return f"spare-{tier.value}"


def spare_priority_class() -> dict[str, Any]:
    """The cluster-scoped PriorityClass the placeholders run at."""
    return {
        "apiVersion": "scheduling.k8s.io/v1",
        "kind": "PriorityClass",
        "metadata": {"name": SPARE_PRIORITY_CLASS},
        "value": SPARE_PRIORITY,
        # A placeholder never evicts anything to make room for itself: it waits for a node.
        "preemptionPolicy": "Never",
        "globalDefault": False,
        "description": (
            "llm-serving spare GPU nodes: placeholder pods any Ray worker preempts; at the cluster "
            "autoscaler's expendable cutoff, so they still make it add a node"
        ),
    }


def _worker_pod(cluster_config: Mapping[str, Any], tier: TierName) -> Mapping[str, Any]:
    group = next(g for g in cluster_config["workerGroupSpecs"] if g["groupName"] == tier.value)
    pod: Mapping[str, Any] = group["template"]["spec"]
    return pod


def spare_deployment(
    pool: NodePoolSpec, replicas: int, cluster_config: Mapping[str, Any], namespace: str
) -> dict[str, Any]:
    """The placeholder Deployment of one GPU pool: `replicas` pods, each the shape of the pool's
    Ray worker as the RayService spec renders it."""
    assert pool.tier is not None, "spare nodes are GPU nodes"
    worker = _worker_pod(cluster_config, pool.tier)
    # One container: the pod's requests are that container's, which the placeholder copies.
    (container,) = worker["containers"]
    labels = {"app.kubernetes.io/component": spare_name(pool.tier)}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": spare_name(pool.tier),
            "namespace": namespace,
            "labels": dict(labels),
            "annotations": {SKIP_AWAIT_ANNOTATION: "true"},
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": dict(labels)},
            # Not the default RollingUpdate: its surge pod (25% rounded up, at least one) would be one
            # more pending placeholder, and the autoscaler would add a node for it during a rollout.
            "strategy": {"type": "Recreate"},
            "template": {
                "metadata": {"labels": dict(labels)},
                "spec": {
                    "priorityClassName": SPARE_PRIORITY_CLASS,
                    # Evicted at once: the worker that preempts it waits for nothing.
                    "terminationGracePeriodSeconds": 0,
                    "automountServiceAccountToken": False,
                    # The worker's selector (its compute class) narrowed to the tier's own pool: every
                    # node a placeholder holds is one a worker can take, and none is a fallback node.
                    "nodeSelector": {**worker["nodeSelector"], POOL_LABEL: pool.labels[POOL_LABEL]},
                    "tolerations": copy.deepcopy(worker["tolerations"]),
                    "containers": [
                        {
                            "name": SPARE_CONTAINER,
                            "image": container["image"],
                            "command": list(SPARE_COMMAND),
                            "resources": copy.deepcopy(container["resources"]),
                        }
                    ],
                },
            },
        },
    }


def spare_deployments(
    gpu_pools: Sequence[NodePoolSpec],
    spare_nodes: Mapping[TierName, int],
    cluster_config: Mapping[str, Any],
    namespace: str,
) -> list[dict[str, Any]]:
    """One placeholder Deployment per GPU pool whose tier keeps spare nodes, in the pools' order."""
    return [
        spare_deployment(pool, spare_nodes[pool.tier], cluster_config, namespace)
        for pool in gpu_pools
        if pool.tier is not None and spare_nodes.get(pool.tier, 0) > 0
    ]
