"""A large valid catalog, generated: 200 models spread over a stack's enabled tiers.

The benchmarks plan it, and the report test prints it; docs/plan-report.md describes it.
"""

from __future__ import annotations

from typing import Any, Final

from configcheck.problems import LineMap
from infra.settings import StackSettings
from serve.catalog import Catalog, parse_catalog
from serve.tiers import TierName

GENERATED_MODELS: Final = 200
# Per tier: (dtype, smallest and largest parameter count in billions). Ranges keep every
# model well inside one GPU's budget with the KV cache below, so all of them validate.
_SIZES: Final[dict[TierName, tuple[str, float, float]]] = {
    TierName.T4: ("float16", 0.5, 3.0),
    TierName.L4: ("bfloat16", 1.0, 6.0),
    TierName.A100: ("bfloat16", 7.0, 30.0),
}


def generated_models(tiers: list[TierName], count: int = GENERATED_MODELS) -> list[dict[str, Any]]:
    """`count` valid catalog entries with distinct ids, spread over `tiers`, sizes that fit."""
    models = []
    for index in range(count):
        tier = tiers[index % len(tiers)]
        dtype, smallest, largest = _SIZES[tier]
        step = (index // len(tiers)) % 10
        parameters = round(smallest + (largest - smallest) * step / 9, 2)
        models.append(
            {
                "id": f"gen-{tier.value}-{index:03d}",
                "source": f"example/generated-{index:03d}",
                "revision": f"{index:040x}",
                "tier": tier.value,
                "dtype": dtype,
                "max_model_len": 2048 * (1 + index % 2),
                "concurrency": 1 + index % 2,
                "architecture": {
                    "parameters_billion": parameters,
                    "num_layers": 24 + 4 * (index % 3),
                    "num_attention_heads": 32,
                    "num_kv_heads": 8,
                    "head_dim": 128,
                    "max_position_embeddings": 32768,
                },
                "engine": {"gpu_memory_utilization": 0.9, "max_num_seqs": 16 + index % 48},
            }
        )
    return models


def scaling_to_zero(settings: StackSettings) -> StackSettings:
    """The stack with minReplicas 0: 200 models cannot all keep a warm replica on a stack's
    pools (the plan's capacity rule refuses that), but they can share the pools on demand."""
    autoscaling = settings.autoscaling.model_copy(update={"min_replicas": 0})
    return settings.model_copy(update={"autoscaling": autoscaling})


def generated_catalog(settings: StackSettings, count: int = GENERATED_MODELS) -> Catalog:
    """A validated catalog (the same checks as model_catalog.yaml) for the stack's enabled tiers."""
    return parse_catalog(
        {"models": generated_models(settings.enabled_tiers(), count)}, "generated", LineMap()
    )
