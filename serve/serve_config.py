"""Render Ray Serve LLM configs and the Serve deploy document (serveConfigV2) from the catalog.

One OpenAI-compatible application at route `/` serves every model; Ray Serve LLM's router
dispatches on the request's `model` field, which is the catalog id.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from serve.autoscaling import ReplicaAutoscaling
from serve.catalog import ModelEntry
from serve.versions import OPENAI_APP_IMPORT_PATH

APP_NAME: Final = "llm"
ROUTE_PREFIX: Final = "/"
SERVE_HTTP_PORT: Final = 8000
# Env var the Ray pods carry (from the Kubernetes Secret); vLLM and huggingface_hub read it.
HF_TOKEN_ENV: Final = "HF_TOKEN"


def llm_config(model: ModelEntry, autoscaling: ReplicaAutoscaling) -> dict[str, Any]:
    """The `ray.serve.llm.LLMConfig` document for one catalog model, as plain data."""
    engine_kwargs: dict[str, Any] = {
        "tensor_parallel_size": model.tensor_parallel_size,
        "dtype": model.dtype,
        "max_model_len": model.max_model_len,
        "revision": model.revision,
        "tokenizer_revision": model.revision,
        **model.engine.as_engine_kwargs(),
    }
    if model.quantization is not None:
        engine_kwargs["quantization"] = model.quantization
    config: dict[str, Any] = {
        "model_loading_config": {"model_id": model.id, "model_source": model.source},
        "accelerator_type": model.gpu_tier.ray_accelerator_type,
        "engine_kwargs": engine_kwargs,
        "deployment_config": autoscaling.serve_deployment_config(),
    }
    if model.tensor_parallel_size > 1:
        # Tensor-parallel ranks exchange activations on every layer: keep them on one node.
        # Ray's default, PACK, would split a replica across two nodes that each have a free GPU.
        # Ray adds the accelerator_type hint to each bundle itself.
        config["placement_group_config"] = {
            "bundles": [{"GPU": 1} for _ in range(model.tensor_parallel_size)],
            "strategy": "STRICT_PACK",
        }
    return config


def serve_config(models: Sequence[ModelEntry], autoscaling: ReplicaAutoscaling) -> dict[str, Any]:
    """The Serve deploy document: what KubeRay submits and what `serve run` reads locally."""
    return {
        "applications": [
            {
                "name": APP_NAME,
                "route_prefix": ROUTE_PREFIX,
                "import_path": OPENAI_APP_IMPORT_PATH,
                "args": {"llm_configs": [llm_config(model, autoscaling) for model in models]},
            }
        ]
    }
