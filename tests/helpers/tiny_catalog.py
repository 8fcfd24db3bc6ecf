"""Catalog entries for the tiny local models (serve/tiny_model.py), for tests that serve them for real."""

from __future__ import annotations

from typing import Any, Final

from serve.autoscaling import ReplicaAutoscaling

# One replica per model, up from the start: what the local end-to-end tests serve.
WARM: Final = ReplicaAutoscaling(
    min_replicas=1,
    max_replicas=1,
    target_ongoing_requests=4,
    max_ongoing_requests=16,
    upscale_delay_seconds=30,
    downscale_delay_seconds=600,
)


def tiny_entry(model_id: str, task: str) -> dict[str, Any]:
    return {
        "id": model_id,
        "source": "example/tiny",
        "revision": "0" * 40,
        "tier": "t4",
        "task": task,
        "dtype": "float16",
        "max_model_len": 512,
        "architecture": {
            "parameters_billion": 0.001,
            "num_layers": 2,
            "num_attention_heads": 2,
            "num_kv_heads": 1,
            "head_dim": 64,
            "max_position_embeddings": 2048,
        },
    }
