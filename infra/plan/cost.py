"""Hourly cost of a stack at idle and at max (every pool full).

Idle means no traffic: each pool runs its minNodes, or as many nodes as the models' warm
replicas (minReplicas) need plus the tier's spare nodes (`spareNodes`, held by placeholder pods,
infra/plan/spare_capacity.py), whichever is more. A stack whose models keep a warm replica, or
whose tier keeps a spare node, pays for that GPU node around the clock, and the estimate says so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

from pydantic import BaseModel, ConfigDict

from infra.plan.node_pools import NodePoolSpec
from serve.tiers import GKE_CLUSTER_FEE_USD_PER_HOUR, PRICES_READ_ON, PRICES_REGION

# Cloud NAT, Public NAT (https://cloud.google.com/nat/pricing, read 2026-11-26): per VM using
# the gateway up to 32 VMs (then a flat $0.044), per external IP the gateway holds (AUTO_ONLY
# allocates one to start), and $0.045 per GiB processed either way. The per-GiB part is not
# hourly: every image pull from Docker Hub and weight download from Hugging Face pays it
# (README, "Stack settings and cost").
NAT_USD_PER_VM_HOUR: Final = 0.0014
NAT_MAX_BILLED_VMS: Final = 32
NAT_USD_PER_IP_HOUR: Final = 0.005
NAT_USD_PER_GIB: Final = 0.045


class CostLine(BaseModel):
    model_config = ConfigDict(frozen=True)

    item: str
    usd_per_unit_hour: float
    units_idle: int
    units_max: int

    @property
    def idle_usd_per_hour(self) -> float:
        return self.usd_per_unit_hour * self.units_idle

    @property
    def max_usd_per_hour(self) -> float:
        return self.usd_per_unit_hour * self.units_max


class CostEstimate(BaseModel):
    model_config = ConfigDict(frozen=True)

    lines: tuple[CostLine, ...]
    prices_read_on: str = PRICES_READ_ON
    prices_region: str = PRICES_REGION

    @property
    def idle_usd_per_hour(self) -> float:
        return round(sum(line.idle_usd_per_hour for line in self.lines), 4)

    @property
    def max_usd_per_hour(self) -> float:
        return round(sum(line.max_usd_per_hour for line in self.lines), 4)


def idle_nodes(pool: NodePoolSpec, warm_gpus: int, spare_nodes: int = 0) -> int:
    """Nodes a pool runs with no traffic: its minimum, or what `warm_gpus` GPUs need plus the
    spare nodes beside them (a placeholder takes a whole node, never one a warm replica uses)."""
    per_node = max(pool.accelerator_count, 1)
    return min(pool.max_nodes, max(pool.min_nodes, -(-warm_gpus // per_node) + spare_nodes))


def estimate_cost(
    pools: Sequence[NodePoolSpec],
    warm_gpus: Mapping[str, int] | None = None,
    spare_nodes: Mapping[str, int] | None = None,
) -> CostEstimate:
    """`warm_gpus`: per pool name, the GPUs the warm replicas (minReplicas) hold at idle;
    `spare_nodes`: per pool name, the nodes its placeholders keep free (`spareNodes`).

    At max nothing changes: the placeholders only sit on nodes of the pool, whose maxNodes still
    bounds it, and a full pool has evicted them (workers preempt them), never grown past it."""
    warm, spare = warm_gpus or {}, spare_nodes or {}
    lines = [
        CostLine(
            item="GKE cluster fee", usd_per_unit_hour=GKE_CLUSTER_FEE_USD_PER_HOUR, units_idle=1, units_max=1
        )
    ]
    for pool in pools:
        pricing = "spot" if pool.spot else "on-demand"
        if spare.get(pool.name, 0):
            pricing += f", {spare[pool.name]} spare node(s) kept free"
        if pool.fallback_for:
            # Idle 0 like every pool at minNodes 0; at max full, as if spot ran out everywhere.
            pricing += f" fallback: nodes only while {pool.fallback_for} cannot scale up"
        lines.append(
            CostLine(
                item=f"{pool.name}: {pool.machine.machine_type} ({pricing})",
                usd_per_unit_hour=pool.usd_per_node_hour,
                units_idle=idle_nodes(pool, warm.get(pool.name, 0), spare.get(pool.name, 0)),
                units_max=pool.max_nodes,
            )
        )
    nodes_idle = sum(line.units_idle for line in lines[1:])
    nodes_max = sum(line.units_max for line in lines[1:])
    lines += [
        CostLine(
            item="Cloud NAT: per node (private nodes reach the internet through it)",
            usd_per_unit_hour=NAT_USD_PER_VM_HOUR,
            units_idle=min(nodes_idle, NAT_MAX_BILLED_VMS),
            units_max=min(nodes_max, NAT_MAX_BILLED_VMS),
        ),
        CostLine(
            item="Cloud NAT: external IP", usd_per_unit_hour=NAT_USD_PER_IP_HOUR, units_idle=1, units_max=1
        ),
    ]
    return CostEstimate(lines=tuple(lines))
