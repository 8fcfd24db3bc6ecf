"""Render Ray Serve LLM configs and the Serve deploy document (serveConfigV2) from the catalog.

One OpenAI-compatible endpoint at route `/`: a router application (Ray's OpenAI ingress behind
API keys) dispatches on the request's `model` field, the catalog id, to that model's own
application, which is not exposed over HTTP (`route_prefix: null`). One application per model
keeps a model that cannot start from failing the others (`serve/openai_app.py` says why).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from serve.autoscaling import ReplicaAutoscaling
from serve.catalog import TASK_ENGINE_KWARGS, ModelEntry
from serve.gpu_share import PER_WORKER_GPUS_ENV, SPREAD_RESOURCE, gpu_share, node_exclusive
from serve.model_mirror import model_prefix
from serve.openai_app import (
    API_KEYS_DIR_ARG,
    INGRESS_DEPLOYMENT_CONFIG_ARG,
    LLM_CONFIG_ARG,
    MODEL_APP_IMPORT_PATH,
    MODELS_ARG,
    model_deployment_name,
    router_entry,
)
from serve.tiers import TierName
from serve.versions import OPENAI_APP_IMPORT_PATH

# The router application; a model's application is MODEL_APP_PREFIX + its catalog id, which
# cannot collide with the router's name.
APP_NAME: Final = "llm"
MODEL_APP_PREFIX: Final = "model-"
ROUTE_PREFIX: Final = "/"
SERVE_HTTP_PORT: Final = 8000
# Env var the Ray pods carry (from the Kubernetes Secret); vLLM and huggingface_hub read it.
HF_TOKEN_ENV: Final = "HF_TOKEN"
# A custom Ray resource only the head node declares. Serve spreads replicas over nodes, so
# without it the OpenAI ingress can land on a spot GPU node, keep that node from scaling to
# zero, and take every model's endpoint down with it when the node is reclaimed.
HEAD_NODE_RESOURCE: Final = "llm_serving_head"
# Serve's HTTP proxies run on the head only (Serve's `proxy_location: HeadOnly`): GPU nodes
# carry model replicas and nothing a request must pass through.
PROXY_LOCATION: Final = "HeadOnly"
# How long Serve lets a replica finish its requests when it is stopped (Serve's default is
# 20 s, ray/serve/_private/constants.py): a spot reclaim leaves a worker pod 15 s, of which the
# node drain takes 12 (infra/plan/ray_service.py). Streams longer than this are cut; clients retry.
REPLICA_GRACEFUL_SHUTDOWN_SECONDS: Final = 10
REPLICA_GRACEFUL_SHUTDOWN_WAIT_LOOP_SECONDS: Final = 1
# How often Serve asks a model replica whether its engine lives. Serve replaces a replica after
# three failed checks in a row (ray/serve/_private/constants.py
# REPLICA_HEALTH_CHECK_UNHEALTHY_THRESHOLD) and until then keeps routing requests to it, which
# fail at once when its engine died: with Ray Serve LLM's 10 s (ray/llm/_internal/serve/
# constants.py DEFAULT_HEALTH_CHECK_PERIOD_S), 43 s of failed requests after an engine was killed
# (tests/test_faults_local.py). The check reads a flag of vLLM's engine client
# (LLMServer.check_health, AsyncLLM.check_health), so checking often costs nothing.
REPLICA_HEALTH_CHECK_PERIOD_SECONDS: Final = 2
# Replacements start before the replicas they replace stop. Serve's rolling restart (a new
# code version: a model's LLM config, the router's model list) otherwise stops an old replica
# first, a cold start of downtime for a model with one replica and cut requests for the one
# router. With a surge (Serve 2.60 `max_surge_percent`, ray/serve/_private/deployment_state.py
# `_surge_replicas_to_start`/`_surge_replicas_to_stop`) the old replicas serve until their
# replacements run; when there is no capacity for a replacement the old ones keep serving while
# it waits (the application stays DEPLOYING until it is placed); and when the replacements fail
# to start (a bad revision) the old ones are kept. An old replica is then stopped like any other:
# requests it still holds get its graceful shutdown (a model's 10 s; the router's, below).
# The router: one extra replica on the head (HEAD_CPUS holds it). A model: a quarter of its
# replicas at a time, at least one, so a rollout needs one spare GPU share, not a second fleet.
ROUTER_MAX_SURGE_PERCENT: Final = 100
MODEL_MAX_SURGE_PERCENT: Final = 25
INGRESS_CPUS: Final = 1
# One ingress replica: Ray's ingress defaults target 1e9 ongoing requests per replica
# (ray/llm/_internal/serve/core/ingress/ingress.py DEFAULT_INGRESS_OPTIONS), so a higher
# max_replicas would never be reached; raise both together if the ingress ever limits throughput.
INGRESS_REPLICAS: Final = 1
# Where the ingress reads its API keys on the cluster: the keys Secret, mounted on the head (the
# only node the ingress runs on). The Secret's files change in place when keys rotate.
API_KEYS_MOUNT_PATH: Final = "/etc/llm-serving/api-keys"
# How long a request may wait for its answer, cold start included: a request for a model at zero
# replicas queues until a replica is up (ray/serve/_private/router.py, "block indefinitely if no
# replicas are available"), but Ray Serve LLM's ingress answers 408 after
# RAY_SERVE_LLM_ROUTER_HTTP_TIMEOUT (default 600 s, ray/llm/_internal/serve/constants.py), which
# a GPU node's cold start can pass. Both the ingress's limit (the Ray head's env) and Serve's
# proxy limit (`http_options.request_timeout_s`, no limit by default) are set to this, which the
# plan checks against every model's modelled cold start (infra/plan/cold_start.py).
REQUEST_TIMEOUT_SECONDS: Final = 1200
ROUTER_TIMEOUT_ENV: Final = "RAY_SERVE_LLM_ROUTER_HTTP_TIMEOUT"
# Engine arguments that name a Hub revision: a model read from the bucket is a local folder of
# that revision already, and the pods cannot reach the Hub (HF_HUB_OFFLINE).
HUB_REVISION_KWARGS: Final = ("revision", "tokenizer_revision")


def bucket_model_source(bucket: str, model: ModelEntry) -> str:
    """The mirrored revision of the model's Hub repo in the stack's bucket (serve/model_mirror.py
    lays it out); two catalog entries of one repo and revision share it."""
    return f"gs://{model_prefix(bucket, model.source, model.revision)}"


def llm_config(
    model: ModelEntry,
    gpus_per_node: int = 1,
    model_bucket: str | None = None,
    warm_replicas: int = 0,
) -> dict[str, Any]:
    """The `ray.serve.llm.LLMConfig` document for one catalog model on nodes of `gpus_per_node`
    GPUs, as plain data; its weights come from `model_bucket` when given, else from the Hub.

    Of what a stack file sets it holds one fact: whether the stack keeps two or more replicas
    warm, which stops packing (serve/gpu_share.py `SPREAD_WARM_REPLICAS`). The rest of the
    stack's autoscaling is an override of the model's application (`model_deployment_overrides`),
    so that changing it restarts no replica; crossing that threshold restarts the packable models
    once, new replicas first."""
    engine_kwargs: dict[str, Any] = {
        "tensor_parallel_size": model.tensor_parallel_size,
        "dtype": model.dtype,
        "max_model_len": model.max_model_len,
        "revision": model.revision,
        "tokenizer_revision": model.revision,
        **model.engine.as_engine_kwargs(),
        **TASK_ENGINE_KWARGS[model.task],
    }
    if model.quantization is not None:
        engine_kwargs["quantization"] = model.quantization
    if model_bucket is not None:
        for key in HUB_REVISION_KWARGS:
            engine_kwargs.pop(key)
    positions = model.architecture.encoder_positions
    if positions and model.engine.max_num_batched_tokens is None:
        # One step must hold an audio item's encoder output and the decoder's tokens; vLLM's own
        # default may not (it refuses to start then: serve.catalog.speech_problems).
        engine_kwargs["max_num_batched_tokens"] = positions + model.max_model_len
    share = gpu_share(model, gpus_per_node, warm_replicas)
    if share is not None:
        # A packed replica: its memory share and a fixed KV cache follow its GPU fraction
        # (serve/gpu_share.py says why, and how two engines starting on one card stay apart).
        engine_kwargs["gpu_memory_utilization"] = share.gpu_memory_utilization
        if share.kv_cache_memory_bytes is not None:
            engine_kwargs["kv_cache_memory_bytes"] = share.kv_cache_memory_bytes
    config: dict[str, Any] = {
        "model_loading_config": {
            "model_id": model.id,
            "model_source": bucket_model_source(model_bucket, model) if model_bucket else model.source,
        },
        "accelerator_type": model.gpu_tier.ray_accelerator_type,
        "engine_kwargs": engine_kwargs,
        "deployment_config": {
            "graceful_shutdown_timeout_s": REPLICA_GRACEFUL_SHUTDOWN_SECONDS,
            "graceful_shutdown_wait_loop_s": REPLICA_GRACEFUL_SHUTDOWN_WAIT_LOOP_SECONDS,
            "health_check_period_s": REPLICA_HEALTH_CHECK_PERIOD_SECONDS,
        },
    }
    exclusive = node_exclusive(model, gpus_per_node, warm_replicas)
    if share is not None:
        # Ray adds the accelerator_type hint to the bundle. vLLM's worker must ask for the same
        # fraction, which Ray 2.60 does not pass to the replica (serve/gpu_share.py says why).
        config["placement_group_config"] = {"bundles": [{"GPU": share.bundle_gpus}], "strategy": "PACK"}
        config["runtime_env"] = {"env_vars": {PER_WORKER_GPUS_ENV: str(share.bundle_gpus)}}
    elif model.tensor_parallel_size > 1 or exclusive:
        # Tensor-parallel ranks exchange activations on every layer: keep them on one node.
        # Ray's default, PACK, would split a replica across two nodes that each have a free GPU.
        # Ray adds the accelerator_type hint to each bundle itself. A replica that must not meet
        # another of its model on a node asks for the node's one spread unit as well.
        bundles: list[dict[str, float]] = [{"GPU": 1} for _ in range(model.tensor_parallel_size)]
        if exclusive:
            bundles[0][SPREAD_RESOURCE] = 1
        config["placement_group_config"] = {"bundles": bundles, "strategy": "STRICT_PACK"}
    return config


def ingress_deployment_config() -> dict[str, Any]:
    """The OpenAI ingress: on the head, always one replica up.

    Ray's default would scale the ingress to zero with the models when every model may
    (ray/llm/_internal/serve/core/ingress/ingress.py `get_deployment_options`); on the head
    it costs no GPU node, and keeping it up lets `/v1/models` answer while the GPUs sleep.
    """
    return {
        "ray_actor_options": {"num_cpus": INGRESS_CPUS, "resources": {HEAD_NODE_RESOURCE: 0.001}},
        "autoscaling_config": {"min_replicas": INGRESS_REPLICAS, "max_replicas": INGRESS_REPLICAS},
        "max_surge_percent": ROUTER_MAX_SURGE_PERCENT,
        # A replaced router finishes what it holds, requests waiting out a cold start included;
        # Serve's default (20 s) would cut them when a model is added or removed.
        "graceful_shutdown_timeout_s": REQUEST_TIMEOUT_SECONDS,
    }


def model_app_name(model_id: str) -> str:
    return MODEL_APP_PREFIX + model_id


def model_deployment_overrides(model_id: str, autoscaling: ReplicaAutoscaling) -> dict[str, Any]:
    """The stack's autoscaling and the rollout surge for one model's deployment, as an entry of
    its application's `deployments`.

    Serve hashes an application's `args` into its code version, and a new code version replaces
    every replica (ray/serve/_private/deploy_utils.py `get_app_code_version`, version.py
    `requires_actor_restart`). Options given here instead are applied over the code's
    (application_state.py `override_deployment_info`) and reach the running replicas without a
    restart: `autoscaling_config` and `max_ongoing_requests` are NeedsActorReconfigure options,
    `max_surge_percent` a LightWeight one (ray/serve/_private/config.py)."""
    return {
        "name": model_deployment_name(model_id),
        **autoscaling.serve_deployment_config(),
        "max_surge_percent": MODEL_MAX_SURGE_PERCENT,
    }


def model_application(llm: dict[str, Any], autoscaling: ReplicaAutoscaling) -> dict[str, Any]:
    """One model's Serve application: its LLM config, reachable only through the router, scaled
    as the stack says."""
    model_id = llm["model_loading_config"]["model_id"]
    return {
        "name": model_app_name(model_id),
        "route_prefix": None,
        "import_path": MODEL_APP_IMPORT_PATH,
        "args": {LLM_CONFIG_ARG: llm},
        "deployments": [model_deployment_overrides(model_id, autoscaling)],
    }


def model_deployment_config(app: Mapping[str, Any]) -> dict[str, Any]:
    """A model application's deployment options as Serve applies them: its LLM config's
    `deployment_config` with each option its deployment's override names replaced whole
    (`override_deployment_info`: `original_options.update(options)`)."""
    llm = app["args"][LLM_CONFIG_ARG]
    name = model_deployment_name(llm["model_loading_config"]["model_id"])
    merged = dict(llm.get("deployment_config") or {})
    for override in app.get("deployments") or []:
        if override.get("name") == name:
            merged.update({key: value for key, value in override.items() if key != "name"})
    return merged


def router_application(model_apps: Sequence[Mapping[str, Any]], tasks: Mapping[str, str]) -> dict[str, Any]:
    """The OpenAI endpoint at `/`, routing each model id to its application. It changes only when
    the set of models, a task or a context length does, so editing one model's engine settings
    redeploys that model's application and not the ingress every request passes through."""
    models = {}
    for app in model_apps:
        llm = app["args"][LLM_CONFIG_ARG]
        model_id = llm["model_loading_config"]["model_id"]
        models[model_id] = router_entry(llm, app["name"], tasks.get(model_id))
    return {
        "name": APP_NAME,
        "route_prefix": ROUTE_PREFIX,
        "import_path": OPENAI_APP_IMPORT_PATH,
        "args": {
            MODELS_ARG: models,
            INGRESS_DEPLOYMENT_CONFIG_ARG: ingress_deployment_config(),
            API_KEYS_DIR_ARG: API_KEYS_MOUNT_PATH,
        },
    }


def serve_config(
    models: Sequence[ModelEntry],
    autoscaling: ReplicaAutoscaling,
    gpus_per_node: Mapping[TierName, int] | None = None,
    model_bucket: str | None = None,
) -> dict[str, Any]:
    """The Serve deploy document: what KubeRay submits and what `serve run` reads locally.
    `gpus_per_node`: the GPUs of each tier's nodes (one where not given); `model_bucket`: the
    bucket the weights are mirrored to (the Hub when None)."""
    per_node = gpus_per_node or {}
    model_apps = [
        model_application(
            llm_config(model, per_node.get(model.tier, 1), model_bucket, autoscaling.min_replicas),
            autoscaling,
        )
        for model in models
    ]
    # The ingress routes by task; generate and transcribe look alike in engine arguments.
    tasks = {model.id: model.task.value for model in models}
    return {
        "proxy_location": PROXY_LOCATION,
        "http_options": {"request_timeout_s": REQUEST_TIMEOUT_SECONDS},
        "applications": [router_application(model_apps, tasks), *model_apps],
    }


def model_applications(document: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The document's model applications, in document order."""
    return _applications(document, MODEL_APP_IMPORT_PATH)


def router_applications(document: Mapping[str, Any]) -> list[dict[str, Any]]:
    return _applications(document, OPENAI_APP_IMPORT_PATH)


def _applications(document: Mapping[str, Any], import_path: str) -> list[dict[str, Any]]:
    return [app for app in document.get("applications", []) if app.get("import_path") == import_path]


def document_llm_configs(document: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every model's LLM config in a Serve deploy document, in document order."""
    return [app["args"][LLM_CONFIG_ARG] for app in model_applications(document)]


def document_tasks(document: Mapping[str, Any]) -> dict[str, str]:
    """Each routed model's task, as the router application's entries declare it."""
    return {
        model_id: entry["task"]
        for app in router_applications(document)
        for model_id, entry in (app.get("args", {}).get(MODELS_ARG) or {}).items()
    }
