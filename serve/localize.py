"""The stack's Serve deploy document, adapted to run on this machine's CPU with a local model.

Pure functions of the document: no processes, no Ray import. The input is the serveConfigV2 the
RayService carries; `localize_serve_config` keeps every model's id and Serve settings and changes
only what a CPU and a local model directory need. `serve.supervisor` runs the result.
"""

from __future__ import annotations

import copy
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from serve.openai_app import API_KEYS_DIR_ARG, task_of
from serve.tiny_model import MAX_POSITION_EMBEDDINGS
from serve.versions import OPENAI_APP_IMPORT_PATH

# vLLM's CPU backend sizes its KV cache from this env var (GiB) instead of gpu_memory_utilization.
KV_CACHE_ENV: Final = "VLLM_CPU_KVCACHE_SPACE"
DEFAULT_KV_CACHE_GIB: Final = 1
# float32: the tiny model is stored in float32, and this machine's CPU (AVX2, no AVX-512/AMX)
# has no native bf16 matmul, so bf16 would be emulated and slower.
CPU_DTYPE: Final = "float32"
# One replica is three processes (Serve replica, vLLM engine core, vLLM worker), about 3 GiB RSS
# with the tiny model and a 1 GiB KV cache: on a small machine a second replica per model only
# costs memory and competes for the same cores, so local autoscaling stops at one.
LOCAL_MAX_REPLICAS: Final = 1
# torch.compile warm-up takes about 50 s per engine on 2 cores and buys nothing for a tiny model;
# eager mode halves the time to a ready service (measured: 114 s instead of 207 s for two models).
CPU_ENFORCE_EAGER: Final = True
# Engine arguments that only mean something for GPUs, for the real checkpoint, or for
# multi-device runs; the CPU run with the tiny model drops them.
DROPPED_ENGINE_KWARGS: Final = frozenset(
    {
        "revision",
        "tokenizer_revision",
        "code_revision",
        "quantization",
        "gpu_memory_utilization",
        "kv_cache_memory_bytes",
        "kv_cache_dtype",
        "cpu_offload_gb",
        "pipeline_parallel_size",
        "data_parallel_size",
        "distributed_executor_backend",
        "tokenizer",
        "hf_overrides",
        "speculative_config",
    }
)


def llm_configs(serve_config: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every LLM config of the document's Ray Serve LLM applications, in document order."""
    return [
        llm
        for app in serve_config.get("applications", [])
        if app.get("import_path") == OPENAI_APP_IMPORT_PATH
        for llm in app.get("args", {}).get("llm_configs", [])
    ]


def served_model_ids(serve_config: Mapping[str, Any]) -> list[str]:
    """The OpenAI model ids a Serve deploy document serves, in document order."""
    return [llm["model_loading_config"]["model_id"] for llm in llm_configs(serve_config)]


def models_not_on_cpu(serve_config: Mapping[str, Any]) -> list[str]:
    """Ids of the models that are not configured for the CPU backend (not localized)."""
    return [
        llm["model_loading_config"]["model_id"]
        for llm in llm_configs(serve_config)
        if (llm.get("accelerator_config") or {}).get("kind") != "cpu"
    ]


def custom_resources(serve_config: Mapping[str, Any]) -> set[str]:
    """Custom Ray resources the document's deployments ask for in `ray_actor_options.resources`.

    On the cluster a node group declares each (e.g. the one that keeps the OpenAI ingress on the
    head node); the local cluster is one head node, so it has to declare them all itself.
    """
    found: set[str] = set()
    pending: list[Any] = [serve_config]
    while pending:
        node = pending.pop()
        if isinstance(node, Mapping):
            options = node.get("ray_actor_options")
            if isinstance(options, Mapping):
                found |= set(options.get("resources") or {})
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)
    return found


def _localize_llm_config(llm: Mapping[str, Any], model_dir: Path, kv_cache_gib: int) -> dict[str, Any]:
    out = copy.deepcopy(dict(llm))
    loading = out["model_loading_config"]
    loading["model_source"] = str(Path(model_dir).resolve())
    if "tokenizer_source" in loading:
        loading["tokenizer_source"] = loading["model_source"]
    out.pop("accelerator_type", None)
    out.pop("placement_group_config", None)  # GPU bundles; the CPU backend's default is {"CPU": 1}
    out["accelerator_config"] = {"kind": "cpu"}
    out["engine_kwargs"] = _cpu_engine_kwargs(out.get("engine_kwargs", {}))
    out["runtime_env"] = _with_kv_cache_env(out.get("runtime_env") or {}, kv_cache_gib)
    out["deployment_config"] = _capped_replicas(out.get("deployment_config") or {})
    return out


def _cpu_engine_kwargs(engine_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    engine = {k: v for k, v in engine_kwargs.items() if k not in DROPPED_ENGINE_KWARGS}
    engine["tensor_parallel_size"] = 1
    engine["dtype"] = CPU_DTYPE
    engine["enforce_eager"] = CPU_ENFORCE_EAGER
    engine["max_model_len"] = min(
        int(engine.get("max_model_len", MAX_POSITION_EMBEDDINGS)), MAX_POSITION_EMBEDDINGS
    )
    # Without chunked prefill a whole prompt must fit in one batch.
    if "max_num_batched_tokens" in engine and not engine.get("enable_chunked_prefill", True):
        engine["max_num_batched_tokens"] = max(int(engine["max_num_batched_tokens"]), engine["max_model_len"])
    return engine


def _with_kv_cache_env(runtime_env: Mapping[str, Any], kv_cache_gib: int) -> dict[str, Any]:
    out = dict(runtime_env)
    out["env_vars"] = {**dict(out.get("env_vars") or {}), KV_CACHE_ENV: str(kv_cache_gib)}
    return out


def _capped_replicas(deployment_config: Mapping[str, Any]) -> dict[str, Any]:
    deployment = dict(deployment_config)
    autoscaling = deployment.get("autoscaling_config")
    if isinstance(autoscaling, Mapping):
        autoscaling = dict(autoscaling)
        autoscaling["max_replicas"] = min(int(autoscaling.get("max_replicas", 1)), LOCAL_MAX_REPLICAS)
        for key in ("min_replicas", "initial_replicas"):
            if autoscaling.get(key) is not None:
                autoscaling[key] = min(int(autoscaling[key]), autoscaling["max_replicas"])
        deployment["autoscaling_config"] = autoscaling
    if isinstance(deployment.get("num_replicas"), int):
        deployment["num_replicas"] = min(deployment["num_replicas"], LOCAL_MAX_REPLICAS)
    return deployment


def _selected_models(serve_config: Mapping[str, Any], models: Sequence[str] | None) -> list[str]:
    valid = served_model_ids(serve_config)
    if not valid:
        raise ValueError(f"the serve config has no {OPENAI_APP_IMPORT_PATH} application with llm_configs")
    if len(set(valid)) != len(valid):
        raise ValueError(f"the serve config serves a model id twice: {valid}")
    if models is None:
        return valid
    selected = list(dict.fromkeys(models))
    unknown = [m for m in selected if m not in valid]
    if unknown:
        raise ValueError(
            f"unknown model id(s) {', '.join(map(repr, unknown))}; this stack serves: {', '.join(valid)}"
        )
    if not selected:
        raise ValueError(f"no model selected; this stack serves: {', '.join(valid)}")
    return selected


def needs_reranker(serve_config: Mapping[str, Any], models: Sequence[str] | None = None) -> bool:
    """Whether a selected model is a `task: rerank` model (so a local cross-encoder is needed)."""
    selected = set(_selected_models(serve_config, models))
    return any(
        task_of(llm.get("engine_kwargs")) == "rerank"
        for llm in llm_configs(serve_config)
        if llm["model_loading_config"]["model_id"] in selected
    )


def _local_weights(llm: Mapping[str, Any], model_dir: Path, reranker_dir: Path | None) -> Path:
    if task_of(llm.get("engine_kwargs")) != "rerank":
        return model_dir
    if reranker_dir is None:
        model_id = llm["model_loading_config"]["model_id"]
        raise ValueError(
            f"{model_id} is a rerank model and needs a cross-encoder checkpoint: pass reranker_dir "
            "(serve.tiny_model.ensure_tiny_reranker())"
        )
    return reranker_dir


def localize_serve_config(
    serve_config: Mapping[str, Any],
    model_dir: Path,
    models: Sequence[str] | None = None,
    *,
    kv_cache_gib: int = DEFAULT_KV_CACHE_GIB,
    reranker_dir: Path | None = None,
) -> dict[str, Any]:
    """A copy of `serve_config` that runs on this machine's CPU with the local model in `model_dir`
    (a cross-encoder from `reranker_dir` for `task: rerank` models: a chat checkpoint has no
    classification head; `embed` models use `model_dir`, which vLLM's pooling runner converts).

    Every selected model (all when `models` is None) keeps its model id and its Serve settings;
    its weights come from `model_dir`, it runs on the CPU backend (`accelerator_config: cpu`, no
    `accelerator_type`) in float32 and eager mode with one tensor-parallel rank, a KV cache of
    `kv_cache_gib` GiB (vLLM's `VLLM_CPU_KVCACHE_SPACE`, set in the replica's runtime_env) and a
    context capped at the tiny model's limit; revision, quantization and GPU-only engine arguments
    are dropped. Autoscaling keeps min_replicas (0 still scales to zero) but is capped at one
    replica per model (see LOCAL_MAX_REPLICAS). Models not selected are left out.
    Raises ValueError for an unknown or empty selection, listing the ids the config serves.
    """
    selected = _selected_models(serve_config, models)
    if kv_cache_gib < 1:
        raise ValueError(f"kv_cache_gib must be at least 1 (vLLM reads {KV_CACHE_ENV} in whole GiB)")
    out = copy.deepcopy(dict(serve_config))
    applications = []
    for app in out.get("applications", []):
        if app.get("import_path") == OPENAI_APP_IMPORT_PATH:
            localized = [
                _localize_llm_config(llm, _local_weights(llm, model_dir, reranker_dir), kv_cache_gib)
                for llm in app.get("args", {}).get("llm_configs", [])
                if llm["model_loading_config"]["model_id"] in selected
            ]
            if not localized:
                continue
            app["args"]["llm_configs"] = localized
        applications.append(app)
    out["applications"] = applications
    return out


API_KEY_ENV: Final = "LLM_SERVING_API_KEY"
LOCAL_KEY_PREFIX: Final = "sk-local-"


def new_api_key() -> str:
    """A key for one local run when LLM_SERVING_API_KEY is not set: 32 random bytes, URL-safe."""
    return LOCAL_KEY_PREFIX + secrets.token_urlsafe(32)


def with_api_keys_dir(serve_config: Mapping[str, Any], keys_dir: Path) -> dict[str, Any]:
    """The document with every keyed OpenAI app reading its keys from `keys_dir` (the run's own
    directory instead of the cluster's Secret mount)."""
    out = copy.deepcopy(dict(serve_config))
    for app in out.get("applications", []):
        if app.get("import_path") == OPENAI_APP_IMPORT_PATH:
            app.setdefault("args", {})[API_KEYS_DIR_ARG] = str(keys_dir)
    return out


def warmup_request(model: str, task: str) -> tuple[str, dict[str, Any]]:
    """The smallest request a model of `task` answers: (path under /v1, JSON body)."""
    if task == "embed":
        return "/embeddings", {"model": model, "input": "ping"}
    if task == "rerank":
        return "/score", {"model": model, "text_1": "ping", "text_2": ["pong"]}
    return "/chat/completions", {
        "model": model,
        "messages": [{"role": "user", "content": "ping"}],
        "max_tokens": 1,
    }
