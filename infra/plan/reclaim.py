"""What happens to a GPU worker's replicas when its pod is stopped, second by second. Pure.

Two ways a worker pod is stopped, both by SIGTERM to `ray start` (PID 1 of the Ray container):

- **spot reclaim**: Compute Engine's preemption notice; GKE's graceful node shutdown gives
  ordinary pods SPOT_POD_SHUTDOWN_SECONDS, whatever their terminationGracePeriodSeconds ("Spot VMs",
  https://cloud.google.com/kubernetes-engine/docs/concepts/spot-vms, read 2026-11-26). No PDB
  applies (infra/plan/disruption.py).
- **eviction**: a node upgrade, auto-repair, autoscaler scale-down or ComputeClass migration drains
  the node through the Eviction API, one budget at a time; the pod gets its full
  terminationGracePeriodSeconds (WORKER_GRACE_SECONDS).

Then, in order (seconds after SIGTERM):

1. Ray drains the node with reason PREEMPTION and a deadline WORKER_DRAIN_TIMEOUT_SECONDS away
   (ray/_private/node.py `_drain_node_before_shutdown`, env RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S).
2. Serve marks the node's RUNNING replicas PENDING_MIGRATION and starts a replacement for each on
   another node: "migrate them safely by starting a replacement replica first" (Ray 2.60
   serve/_private/deployment_state.py `migrate_replicas_on_draining_nodes`). With no free GPU
   elsewhere the replacement needs a new node: a whole cold start (infra/plan/cold_start.py).
3. The old replica keeps serving until either its replacement is RUNNING (then it is surplus
   and stopped) or `now >= deadline - graceful_shutdown_timeout_s` (`_partition_groups_to_stop`),
   i.e. drain timeout - REPLICA_GRACEFUL_SHUTDOWN_SECONDS after SIGTERM; it then gets
   REPLICA_GRACEFUL_SHUTDOWN_SECONDS to finish its requests.
4. At the drain deadline Ray kills what is left; the pod's grace ends RAY_TEARDOWN_SECONDS later.

So the replacement is up before the old replica stops only if its cold start fits in step 3's
window. For GPU models it never does, on spot or on eviction alike: the window is seconds and a
cold start is minutes. An eviction cannot be given a longer drain alone: the drain timeout is one
environment variable for both ways, and on spot a drain longer than the pod lives leaves the old
replica taking requests until it is killed, with no graceful stop at all. The budget (PDB)
limits how many of a group's warm nodes GKE drains at once (infra/plan/disruption.py); what keeps
a model answering through either is a second warm replica on another node
(infra/plan/spreading.py says which models can have one).

**A longer spot window (not built).** GKE can give ordinary pods of a spot Standard pool up to
120 s from control plane 1.35.0-gke.1171000 on, set in the pool's node system config (the
"Spot VMs" page, zh-cn copy, read 2026-11-26); pulumi-gcp 10.2.0 has the fields
(`NodePoolNodeConfigKubeletConfigArgs.shutdown_grace_period_seconds` and
`shutdown_grace_period_critical_pods_seconds`, spot and preemptible pools only). The cluster
follows the REGULAR channel with no minimum version (infra/components/cluster.py), so no version
is guaranteed, and an older control plane would reject the pool. To build it: pin
`min_master_version` at or above that version, set both kubelet fields on spot pools, raise
SPOT_POD_SHUTDOWN_SECONDS to the non-critical share (everything below derives from it), and expect
one NewCluster upgrade (the worker grace is in the pod template). Even 120 s is shorter than any
GPU model's modelled cold start.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from infra.plan import ServingPlan
from infra.plan.cold_start import model_cold_start
from infra.plan.ray_service import (
    RAY_TEARDOWN_SECONDS,
    SPOT_POD_SHUTDOWN_SECONDS,
    WORKER_DRAIN_TIMEOUT_SECONDS,
    WORKER_GRACE_SECONDS,
)
from infra.plan.spreading import spread_table
from serve.serve_config import REPLICA_GRACEFUL_SHUTDOWN_SECONDS


class Disruption(StrEnum):
    SPOT_RECLAIM = "spot reclaim"
    EVICTION = "eviction (node upgrade, repair, scale-down, migration)"


class Timeline(BaseModel):
    """Seconds after the worker's SIGTERM."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    disruption: Disruption
    pod_killed: int
    drain_deadline: int
    old_replica_stops: int
    requests_cut: int


def timeline(
    disruption: Disruption,
    *,
    grace: int = WORKER_GRACE_SECONDS,
    spot_window: int = SPOT_POD_SHUTDOWN_SECONDS,
    drain_timeout: int = WORKER_DRAIN_TIMEOUT_SECONDS,
    replica_graceful: int = REPLICA_GRACEFUL_SHUTDOWN_SECONDS,
) -> Timeline:
    pod_killed = min(grace, spot_window) if disruption is Disruption.SPOT_RECLAIM else grace
    stops = max(0, drain_timeout - replica_graceful)
    return Timeline(
        disruption=disruption,
        pod_killed=pod_killed,
        drain_deadline=drain_timeout,
        old_replica_stops=min(stops, pod_killed),
        # Requests still running when the process dies, whichever comes first.
        requests_cut=min(stops + replica_graceful, drain_timeout, pod_killed),
    )


def timing_problems(
    *,
    grace: int = WORKER_GRACE_SECONDS,
    spot_window: int = SPOT_POD_SHUTDOWN_SECONDS,
    drain_timeout: int = WORKER_DRAIN_TIMEOUT_SECONDS,
    replica_graceful: int = REPLICA_GRACEFUL_SHUTDOWN_SECONDS,
) -> list[str]:
    """Where the knobs disagree: empty when Ray drains and Serve stops replicas inside the pod's life."""
    problems = []
    window = min(grace, spot_window)
    if drain_timeout + RAY_TEARDOWN_SECONDS > window:
        problems.append(
            f"the drain timeout {drain_timeout} s plus {RAY_TEARDOWN_SECONDS} s of teardown outlasts "
            f"the {window} s a reclaimed pod lives: Ray is killed mid-drain"
        )
    if replica_graceful >= drain_timeout:
        problems.append(
            f"replicas' graceful shutdown {replica_graceful} s is not shorter than the drain timeout "
            f"{drain_timeout} s: Serve stops them at SIGTERM and they serve nothing while draining"
        )
    return problems


class ReclaimRow(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    model_id: str
    cold_start_seconds: float
    disruption: Disruption
    old_replica_stops: int
    replacement_first: bool


def replacement_first(cold_start_seconds: float, line: Timeline) -> bool:
    """Whether a replacement started at the drain is RUNNING before the old replica must stop."""
    return cold_start_seconds <= line.old_replica_stops


def reclaim_table(
    plan: ServingPlan, disruptions: Sequence[Disruption] = tuple(Disruption)
) -> list[ReclaimRow]:
    """For every served model and disruption: can Serve bring the replacement up first?"""
    rows = []
    for model in plan.served:
        cold = model_cold_start(plan, model).design_seconds
        for disruption in disruptions:
            line = timeline(disruption)
            rows.append(
                ReclaimRow(
                    model_id=model.id,
                    cold_start_seconds=cold,
                    disruption=disruption,
                    old_replica_stops=line.old_replica_stops,
                    replacement_first=replacement_first(cold, line),
                )
            )
    return rows


def markdown_timeline() -> str:
    """The timeline of both disruptions as a Markdown table (the README holds it)."""
    lines = [
        "| seconds after SIGTERM | " + " | ".join(d.value for d in Disruption) + " |",
        "|---|" + "---:|" * len(Disruption),
    ]
    rows = {
        "Serve starts a replacement elsewhere; the old replica still serves": lambda t: 0,
        "the old replica stops taking requests": lambda t: t.old_replica_stops,
        "its requests are cut (drain deadline or pod killed)": lambda t: t.requests_cut,
        "Ray's drain deadline": lambda t: t.drain_deadline,
        "the pod is killed, at the latest": lambda t: t.pod_killed,
    }
    for what, at in rows.items():
        lines.append(f"| {what} | " + " | ".join(str(at(timeline(d))) for d in Disruption) + " |")
    return "\n".join(lines) + "\n"


def markdown_models(plan: ServingPlan) -> str:
    """Per served model: its modelled cold start (a replacement needs one on a new node), whether
    it comes up before the old replica stops, and whether two of its replicas can share a node."""
    spread = {row.model_id: row for row in spread_table(plan)}
    lines = [
        "| model | tier | cold start (min) | replacement up before the old replica stops | "
        "two replicas can share a node |",
        "|---|---|---:|---|---|",
    ]
    table = reclaim_table(plan)
    for model in plan.served:
        rows = [row for row in table if row.model_id == model.id]
        first = "yes" if all(row.replacement_first for row in rows) else "no"
        share = spread[model.id]
        lines.append(
            f"| {model.id} | {model.tier.value} | {rows[0].cold_start_seconds / 60:.1f} | {first} | "
            f"{'yes' if share.may_share_a_node else 'no'} |"
        )
    return "\n".join(lines) + "\n"
