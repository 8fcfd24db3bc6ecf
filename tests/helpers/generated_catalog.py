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


MIXED_SMALL_MODELS: Final = 20


def mixed_small_models(count: int = MIXED_SMALL_MODELS) -> list[dict[str, Any]]:
    """`count` small models of every task on T4 and L4, the kind a platform catalog collects: chat
    models of 0.5-1.5B parameters, encoder embedding models and rerankers (BERT/XLM-R sized, no KV
    cache), decoder-based embedding models (which keep a KV cache) and Whisper-small-sized speech
    models."""
    models = []
    for index in range(count):
        tier = (TierName.T4, TierName.L4)[index % 2]
        dtype = "float16" if tier is TierName.T4 else "bfloat16"
        task = ("generate", "embed", "rerank", "embed", "transcribe")[index % 5]
        encoder = task == "rerank" or (task == "embed" and index % 8 == 1)
        common = {
            "id": f"small-{task}-{index:02d}",
            "source": f"example/small-{index:02d}",
            "revision": f"{index + 1000:040x}",
            "tier": tier.value,
            "dtype": dtype,
        }
        if task != "generate":
            common["task"] = task
        if task == "transcribe":
            # Whisper-small's shape: 12 decoder layers of 12 heads, d_model 768, 1500 encoder positions.
            models.append(
                {
                    **common,
                    "max_model_len": 448,
                    "concurrency": 2 + index % 3,
                    "architecture": {
                        "parameters_billion": 0.242,
                        "num_layers": 12,
                        "num_attention_heads": 12,
                        "num_kv_heads": 12,
                        "head_dim": 64,
                        "max_position_embeddings": 448,
                        "encoder_positions": 1500,
                    },
                    "engine": {"gpu_memory_utilization": 0.9},
                }
            )
        elif encoder:
            models.append(
                {
                    **common,
                    "max_model_len": 512 * (1 + index % 4),
                    "architecture": {
                        "parameters_billion": (0.11, 0.33, 0.57)[index % 3],
                        "num_layers": (12, 24, 24)[index % 3],
                        "num_attention_heads": 16,
                        "num_kv_heads": 16,
                        "head_dim": 64,
                        "max_position_embeddings": 8194,
                        "encoder_only": True,
                    },
                    "engine": {"gpu_memory_utilization": 0.9},
                }
            )
        else:
            models.append(
                {
                    **common,
                    "max_model_len": 4096 if task == "generate" else 8192,
                    "concurrency": 2 + index % 3,
                    "architecture": {
                        "parameters_billion": round(0.5 + (index % 5) * 0.25, 2),
                        "num_layers": 24 + 4 * (index % 2),
                        "num_attention_heads": 16,
                        "num_kv_heads": 2,
                        "head_dim": 64,
                        "max_position_embeddings": 32768,
                    },
                    "engine": {"gpu_memory_utilization": 0.9, "enable_prefix_caching": task == "generate"},
                }
            )
    return models


def mixed_small_catalog(count: int = MIXED_SMALL_MODELS) -> Catalog:
    return parse_catalog({"models": mixed_small_models(count)}, "generated-small", LineMap())
