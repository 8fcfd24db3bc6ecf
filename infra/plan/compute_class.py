"""One GKE custom compute class per enabled GPU tier: the order in which GKE's cluster autoscaler
scales the tier's pools up. The spot pool first; with `onDemandFallback`, its on-demand pool next.

Why a class even without a fallback: the tier's workers select the class (node_pools.py
`worker_node_selector`), so turning the fallback on or off changes only this object and one
node pool, never the RayService's pod template.

Schema: GoogleCloudPlatform/compute-class-api `cloud.google.com_computeclasses.yaml`, vendored in
tests/fixtures/crds (read 2026-11-27); custom compute classes need GKE 1.30.3-gke.1451000 or later
on Standard clusters ("About custom compute classes",
https://cloud.google.com/kubernetes-engine/docs/concepts/about-custom-compute-classes, read
2026-11-27). The cluster follows the REGULAR release channel with no pinned version, whose
versions are well past that; only a real cluster shows its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from infra.plan.node_pools import NodePoolSpec, compute_class_name
from serve.tiers import TierName

API_VERSION: Final = "cloud.google.com/v1"
KIND: Final = "ComputeClass"
# Pods that select the class stay pending rather than land on nodes outside its priorities (the
# CRD's default, written out: `whenUnsatisfiable` is in the schema's `required`, and only the API
# server fills defaults).
WHEN_UNSATISFIABLE: Final = "DoNotScaleUp"
# Off: with it on, GKE moves workers from on-demand nodes back to spot ones once spot capacity
# returns, and every such move is a GPU cold start of that replica (minutes of weight loading)
# while prod keeps one warm replica per model, so the model would be down for the move. Left
# off, a replica on an on-demand node stays there until Ray scales it down; the next scale-up
# tries spot first again. The price: on-demand hours while traffic lasts.
OPTIMIZE_RULE_PRIORITY: Final = False


def compute_class(tier: TierName, pools: Sequence[NodePoolSpec]) -> dict[str, Any]:
    """The tier's ComputeClass: one `nodepools` priority per pool, in the order given.

    Each priority names a single manually created pool and nothing else: the CRD's CEL rule
    "Nodepool field cannot be set along with other nodepool configuration fields" forbids
    machine, spot or GPU fields beside `nodepools`, so spot vs on-demand belongs to the pool.
    """
    assert pools and all(pool.tier == tier for pool in pools), "a class orders its own tier's pools"
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": compute_class_name(tier)},
        "spec": {
            "priorities": [{"nodepools": [pool.name]} for pool in pools],
            "whenUnsatisfiable": WHEN_UNSATISFIABLE,
            # Our pools only: GKE must never create a pool of its own for these workers.
            "nodePoolAutoCreation": {"enabled": False},
            "activeMigration": {"optimizeRulePriority": OPTIMIZE_RULE_PRIORITY},
        },
    }
