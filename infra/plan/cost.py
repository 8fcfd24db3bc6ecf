"""Hourly cost of a stack at idle (GPU pools at their minimum) and at max (every pool full)."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict

from infra.plan.node_pools import NodePoolSpec
from serve.tiers import GKE_CLUSTER_FEE_USD_PER_HOUR, PRICES_READ_ON, PRICES_REGION


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


def estimate_cost(pools: Sequence[NodePoolSpec]) -> CostEstimate:
    lines = [
        CostLine(
            item="GKE cluster fee", usd_per_unit_hour=GKE_CLUSTER_FEE_USD_PER_HOUR, units_idle=1, units_max=1
        )
    ]
    for pool in pools:
        pricing = "spot" if pool.spot else "on-demand"
        lines.append(
            CostLine(
                item=f"{pool.name}: {pool.machine.machine_type} ({pricing})",
                usd_per_unit_hour=pool.usd_per_node_hour,
                units_idle=pool.min_nodes,
                units_max=pool.max_nodes,
            )
        )
    return CostEstimate(lines=tuple(lines))
