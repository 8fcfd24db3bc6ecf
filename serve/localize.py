"""The stack's Serve deploy document, adapted to run on this machine's CPU with a local model.

Pure functions of the document: no processes, no Ray import. The input is the serveConfigV2 the
RayService carries; `localize_serve_config` keeps every model's id and Serve settings and changes
only what a CPU and a local model directory need. `serve.supervisor` runs the result.
"""

from __future__ import annotations

import copy
import io
import math
import secrets
import wave
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from serve.gpu_share import PER_WORKER_GPUS_ENV
from serve.openai_app import (
    API_KEYS_DIR_ARG,
    INGRESS_DEPLOYMENT_CONFIG_ARG,
    LLM_CONFIG_ARG,
    MODEL_APP_IMPORT_PATH,
    MODELS_ARG,
    router_entry,
)
from serve.serve_config import (
    document_llm_configs,
    document_tasks,
    model_applications,
    model_deployment_config,
    router_applications,
)
from serve.tiny_model import MAX_POSITION_EMBEDDINGS
from serve.tiny_model import MAX_TARGET_POSITIONS as WHISPER_MAX_TARGET_POSITIONS

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


# A packed replica's GPU fraction (serve/gpu_share.py): no GPU here.
DROPPED_ENV_VARS: Final = frozenset({PER_WORKER_GPUS_ENV})


def served_model_ids(serve_config: Mapping[str, Any]) -> list[str]:
    """The OpenAI model ids a Serve deploy document serves, in document order."""
    return [llm["model_loading_config"]["model_id"] for llm in document_llm_configs(serve_config)]


def models_not_on_cpu(serve_config: Mapping[str, Any]) -> list[str]:
    """Ids of the models that are not configured for the CPU backend (not localized)."""
    return [
        llm["model_loading_config"]["model_id"]
        for llm in document_llm_configs(serve_config)
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


def _localize_llm_config(
    llm: Mapping[str, Any],
    model_dir: Path,
    kv_cache_gib: int,
    task: str = "generate",
    keep_model_source: bool = False,
) -> dict[str, Any]:
    out = copy.deepcopy(dict(llm))
    loading = out["model_loading_config"]
    if not keep_model_source:
        loading["model_source"] = str(Path(model_dir).resolve())
        if "tokenizer_source" in loading:
            loading["tokenizer_source"] = loading["model_source"]
    out.pop("accelerator_type", None)
    out.pop("placement_group_config", None)  # GPU bundles; the CPU backend's default is {"CPU": 1}
    out["accelerator_config"] = {"kind": "cpu"}
    limit = WHISPER_MAX_TARGET_POSITIONS if task == "transcribe" else MAX_POSITION_EMBEDDINGS
    out["engine_kwargs"] = _cpu_engine_kwargs(out.get("engine_kwargs", {}), limit)
    out["runtime_env"] = _with_kv_cache_env(out.get("runtime_env") or {}, kv_cache_gib)
    out["deployment_config"] = _capped_replicas(out.get("deployment_config") or {})
    return out


def _cpu_engine_kwargs(
    engine_kwargs: Mapping[str, Any], limit: int = MAX_POSITION_EMBEDDINGS
) -> dict[str, Any]:
    engine = {k: v for k, v in engine_kwargs.items() if k not in DROPPED_ENGINE_KWARGS}
    engine["tensor_parallel_size"] = 1
    engine["dtype"] = CPU_DTYPE
    engine["enforce_eager"] = CPU_ENFORCE_EAGER
    engine["max_model_len"] = min(int(engine.get("max_model_len", limit)), limit)
    # Without chunked prefill a whole prompt must fit in one batch.
    if "max_num_batched_tokens" in engine and not engine.get("enable_chunked_prefill", True):
        engine["max_num_batched_tokens"] = max(int(engine["max_num_batched_tokens"]), engine["max_model_len"])
    return engine


def _with_kv_cache_env(runtime_env: Mapping[str, Any], kv_cache_gib: int) -> dict[str, Any]:
    out = dict(runtime_env)
    env = {k: v for k, v in dict(out.get("env_vars") or {}).items() if k not in DROPPED_ENV_VARS}
    out["env_vars"] = {**env, KV_CACHE_ENV: str(kv_cache_gib)}
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
        raise ValueError(f"the serve config has no {MODEL_APP_IMPORT_PATH} application")
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
    return _needs(serve_config, models, "rerank")


def needs_transcriber(serve_config: Mapping[str, Any], models: Sequence[str] | None = None) -> bool:
    """Whether a selected model is a `task: transcribe` model (so a local speech model is needed)."""
    return _needs(serve_config, models, "transcribe")


def _needs(serve_config: Mapping[str, Any], models: Sequence[str] | None, task: str) -> bool:
    selected = set(_selected_models(serve_config, models))
    return any(t == task for model_id, t in document_tasks(serve_config).items() if model_id in selected)


# Which local checkpoint stands in for a model of each task, and how to get it: a chat checkpoint
# has no classification head and no audio encoder.
_SPECIAL_WEIGHTS: Final = {
    "rerank": ("a cross-encoder checkpoint", "reranker_dir", "serve.tiny_model.ensure_tiny_reranker()"),
    "transcribe": (
        "a speech-to-text checkpoint",
        "transcriber_dir",
        "serve.tiny_model.ensure_tiny_whisper()",
    ),
}


def _local_weights(model_id: str, task: str, model_dir: Path, special: Mapping[str, Path | None]) -> Path:
    if task not in _SPECIAL_WEIGHTS:
        return model_dir
    directory = special.get(task)
    if directory is None:
        what, argument, how = _SPECIAL_WEIGHTS[task]
        raise ValueError(f"{model_id} is a {task} model and needs {what}: pass {argument} ({how})")
    return directory


def localize_serve_config(
    serve_config: Mapping[str, Any],
    model_dir: Path,
    models: Sequence[str] | None = None,
    *,
    kv_cache_gib: int = DEFAULT_KV_CACHE_GIB,
    reranker_dir: Path | None = None,
    transcriber_dir: Path | None = None,
    keep_model_source: bool = False,
) -> dict[str, Any]:
    """A copy of `serve_config` that runs on this machine's CPU with the local model in `model_dir`
    (a cross-encoder from `reranker_dir` for `task: rerank` models: a chat checkpoint has no
    classification head; a speech model from `transcriber_dir` for `task: transcribe`; `embed`
    models use `model_dir`, which vLLM's pooling runner converts).

    Every selected model (all when `models` is None) keeps its model id and its Serve settings;
    its weights come from `model_dir`, it runs on the CPU backend (`accelerator_config: cpu`, no
    `accelerator_type`) in float32 and eager mode with one tensor-parallel rank, a KV cache of
    `kv_cache_gib` GiB (vLLM's `VLLM_CPU_KVCACHE_SPACE`, set in the replica's runtime_env) and a
    context capped at the tiny model's limit; revision, quantization and GPU-only engine arguments
    are dropped. Autoscaling keeps min_replicas (0 still scales to zero) but is capped at one
    replica per model (see LOCAL_MAX_REPLICAS). Models not selected are left out.
    `keep_model_source`: leave each model's source as the document has it (the stack's gs://
    bucket, served from a local GCS emulator in tests) instead of pointing it at `model_dir`.
    Raises ValueError for an unknown or empty selection, listing the ids the config serves.
    """
    selected = _selected_models(serve_config, models)
    if kv_cache_gib < 1:
        raise ValueError(f"kv_cache_gib must be at least 1 (vLLM reads {KV_CACHE_ENV} in whole GiB)")
    out = copy.deepcopy(dict(serve_config))
    special = {"rerank": reranker_dir, "transcribe": transcriber_dir}
    model_tasks = document_tasks(out)
    local_apps: dict[str, dict[str, Any]] = {}
    for app in model_applications(out):
        llm = app["args"][LLM_CONFIG_ARG]
        model_id = llm["model_loading_config"]["model_id"]
        if model_id in selected:
            task = model_tasks.get(model_id, "generate")
            weights = _local_weights(model_id, task, model_dir, special)
            local = _localize_llm_config(llm, weights, kv_cache_gib, task, keep_model_source)
            app["args"][LLM_CONFIG_ARG] = local
            app["deployments"] = [_capped_replicas(override) for override in app.get("deployments") or []]
            local_apps[model_id] = app
    for router in router_applications(out):
        # The router's entries follow the localized configs (a context capped at the local model's).
        entries = router["args"].get(MODELS_ARG) or {}
        router["args"][MODELS_ARG] = {
            model_id: router_entry(
                local_apps[model_id]["args"][LLM_CONFIG_ARG], entry["application"], entry.get("task")
            )
            for model_id, entry in entries.items()
            if model_id in local_apps
        }
    dropped = {app["name"] for app in model_applications(out)} - {app["name"] for app in local_apps.values()}
    out["applications"] = [app for app in out.get("applications", []) if app["name"] not in dropped]
    return out


# What one local replica of an LLM config holds in Ray: its Serve actor's CPU plus the engine's
# placement bundle's CPU (Ray merges them into one bundle: ray/llm/_internal/serve/core/server/
# llm_server.py `_merge_replica_actor_and_child_actor_bundles`; Serve logs it as {"CPU": 2.0}).
CPUS_PER_LOCAL_REPLICA: Final = 2
# Room for Ray's own tasks next to the replicas (the model-download task, Serve's controller).
SPARE_LOCAL_CPUS: Final = 2
MIN_LOCAL_CPUS: Final = 8


def local_cpus_needed(serve_config: Mapping[str, Any]) -> int:
    """Logical CPUs the local Ray head must advertise so every replica of the localized document
    (at its capped max) and every ingress replica can be placed at once. They are logical: Ray
    schedules by them, the engines share the machine's real cores."""
    needed = SPARE_LOCAL_CPUS
    for app in model_applications(serve_config):
        deployment = model_deployment_config(app)
        replicas = int((deployment.get("autoscaling_config") or {}).get("max_replicas", LOCAL_MAX_REPLICAS))
        needed += CPUS_PER_LOCAL_REPLICA * (replicas + _surge_replicas(deployment, replicas))
    for app in router_applications(serve_config):
        ingress = (app.get("args") or {}).get(INGRESS_DEPLOYMENT_CONFIG_ARG) or {}
        cpus = float((ingress.get("ray_actor_options") or {}).get("num_cpus", 1))
        replicas = int((ingress.get("autoscaling_config") or {}).get("max_replicas", 1))
        needed += math.ceil(cpus * (replicas + _surge_replicas(ingress, replicas)))
    return max(MIN_LOCAL_CPUS, needed)


def _surge_replicas(options: Mapping[str, Any], replicas: int) -> int:
    """The extra replicas a rolling restart starts before stopping old ones (Serve's integer
    ceiling of `max_surge_percent` of the target, deployment_state.py `_surge_replicas_to_start`)."""
    return (int(options.get("max_surge_percent") or 0) * replicas + 99) // 100


API_KEY_ENV: Final = "LLM_SERVING_API_KEY"
LOCAL_KEY_PREFIX: Final = "sk-local-"


def new_api_key() -> str:
    """A key for one local run when LLM_SERVING_API_KEY is not set: 32 random bytes, URL-safe."""
    return LOCAL_KEY_PREFIX + secrets.token_urlsafe(32)


def with_api_keys_dir(serve_config: Mapping[str, Any], keys_dir: Path) -> dict[str, Any]:
    """The document with every keyed OpenAI app reading its keys from `keys_dir` (the run's own
    directory instead of the cluster's Secret mount)."""
    out = copy.deepcopy(dict(serve_config))
    for app in router_applications(out):
        app.setdefault("args", {})[API_KEYS_DIR_ARG] = str(keys_dir)
    return out


WARMUP_AUDIO_SECONDS: Final = 1
WARMUP_AUDIO_RATE: Final = 16_000  # Whisper's sampling rate


def silent_wav(seconds: float = WARMUP_AUDIO_SECONDS, rate: int = WARMUP_AUDIO_RATE) -> bytes:
    """A mono 16-bit PCM WAV of silence: the smallest audio a transcription request can carry."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as audio:
        audio.setnchannels(1)
        audio.setsampwidth(2)
        audio.setframerate(rate)
        audio.writeframes(b"\0\0" * int(seconds * rate))
    return buffer.getvalue()


def warmup_request(model: str, task: str) -> tuple[str, dict[str, Any]]:
    """The smallest request a model of `task` answers: (path under /v1, the HTTP client's keyword
    arguments: a JSON body, or a form with a file for a transcription)."""
    if task == "embed":
        return "/embeddings", {"json": {"model": model, "input": "ping"}}
    if task == "rerank":
        return "/score", {"json": {"model": model, "text_1": "ping", "text_2": ["pong"]}}
    if task == "transcribe":
        form = {"model": model, "language": "en", "max_completion_tokens": "1"}
        return "/audio/transcriptions", {
            "data": form,
            "files": {"file": ("ping.wav", silent_wav(), "audio/wav")},
        }
    return "/chat/completions", {
        "json": {"model": model, "messages": [{"role": "user", "content": "ping"}], "max_tokens": 1}
    }
