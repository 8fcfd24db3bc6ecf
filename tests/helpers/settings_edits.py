"""Validated stack settings with one field changed, for tests that plan many variants in memory."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from infra.settings import StackSettings
from serve.tiers import TierName

Edit = Callable[[StackSettings], StackSettings]


def with_tier(tier: TierName, **changes: Any) -> Edit:
    """An edit of one tier's settings (Python field names: max_nodes, gpus_per_node, ...)."""

    def edit(settings: StackSettings) -> StackSettings:
        tiers = dict(settings.tiers)
        tiers[tier] = tiers[tier].model_copy(update=changes)
        return settings.model_copy(update={"tiers": tiers})

    return edit


def with_scaling(**changes: Any) -> Edit:
    """An edit of the autoscaling settings (min_replicas, max_replicas, ...)."""

    def edit(settings: StackSettings) -> StackSettings:
        return settings.model_copy(update={"autoscaling": settings.autoscaling.model_copy(update=changes)})

    return edit
