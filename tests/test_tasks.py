"""Tasks in the catalog (generate, embed, rerank, transcribe) and what they become: vLLM's pooling
runner in the LLM config, task-aware routing in the app builder, the local cross-encoder for rerank
models and the local speech model for transcribe.

Served for real on one endpoint: tests/test_tasks_local.py (slow).
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from configcheck.problems import ConfigError, LineMap
from serve.autoscaling import ReplicaAutoscaling
from serve.catalog import TASK_ENGINE_KWARGS, Task, parse_catalog
from serve.localize import localize_serve_config, needs_reranker
from serve.openai_app import ROUTE_METHODS, TASK_ROUTES, task_of, wrong_task_message
from serve.paths import REPO_ROOT
from serve.serve_config import document_llm_configs, llm_config, router_applications, serve_config

SCALING = ReplicaAutoscaling(
    min_replicas=0,
    max_replicas=1,
    target_ongoing_requests=4,
    max_ongoing_requests=16,
    upscale_delay_seconds=30,
    downscale_delay_seconds=600,
)


def entry(model_id: str, task: str | None) -> dict[str, Any]:
    model: dict[str, Any] = {
        "id": model_id,
        "source": "example/model",
        "revision": "0" * 40,
        "tier": "t4",
        "dtype": "float16",
        "max_model_len": 512,
        "architecture": {
            "parameters_billion": 0.5,
            "num_layers": 12,
            "num_attention_heads": 8,
            "num_kv_heads": 8,
            "head_dim": 64,
            "max_position_embeddings": 8192,
        },
    }
    if task is not None:
        model["task"] = task
    return model


def catalog(*models: dict[str, Any]) -> Any:
    return parse_catalog({"models": list(models)}, "model_catalog.yaml", LineMap())


def test_the_task_defaults_to_generate_and_the_shipped_catalog_is_unchanged() -> None:
    (model,) = catalog(entry("chat", None)).models
    assert model.task is Task.GENERATE
    assert llm_config(model)["engine_kwargs"].keys().isdisjoint({"runner", "convert"})


@pytest.mark.parametrize(
    ("task", "runner", "convert"), [("embed", "pooling", "embed"), ("rerank", "pooling", "classify")]
)
def test_pooling_tasks_run_on_vllms_pooling_runner(task: str, runner: str, convert: str) -> None:
    (model,) = catalog(entry("m", task)).models
    kwargs = llm_config(model)["engine_kwargs"]
    assert (kwargs["runner"], kwargs["convert"]) == (runner, convert)
    assert task_of(kwargs) == task


def test_every_task_has_engine_settings_routes_and_the_app_knows_them() -> None:
    assert set(TASK_ENGINE_KWARGS) == {t.value for t in Task} == set(TASK_ROUTES)
    assert {route for routes in TASK_ROUTES.values() for route in routes} == set(ROUTE_METHODS)
    assert task_of({}) == "generate" and task_of({"runner": "pooling"}) == "generate"


@pytest.mark.parametrize(
    ("value", "hint"),
    [
        ("embedding", "did you mean 'embed'?"),
        ("Rerank", "did you mean 'rerank'?"),
        ("classify", "use one of"),
    ],
)
def test_an_unknown_task_is_a_located_error(value: str, hint: str, tmp_path: Path) -> None:
    text = "models:\n" + yaml.safe_dump([entry("m", value)], sort_keys=False).replace("\n", "\n  ").replace(
        "- ", "  - ", 1
    )
    path = tmp_path / "model_catalog.yaml"
    path.write_text(text)
    from serve.catalog import load_catalog

    with pytest.raises(ConfigError) as raised:
        load_catalog(path)
    (problem,) = raised.value.problems
    assert problem.field == "models[0].task" and hint in problem.message
    lines = text.splitlines()
    assert problem.line == lines.index(next(line for line in lines if "task:" in line)) + 1


def test_the_pooling_llm_configs_are_valid_for_ray_and_vllm(ray_oracles: ModuleType) -> None:
    """Ray's LLMConfig accepts them and Ray's engine config hands vLLM `runner` and `convert`."""
    for task in ("embed", "rerank"):
        (model,) = catalog(entry("m", task)).models
        config = ray_oracles.LLMConfig(**llm_config(model))
        kwargs = ray_oracles.ray_vllm_kwargs(config)
        assert (kwargs["runner"], kwargs["convert"]) == tuple(TASK_ENGINE_KWARGS[task].values())
        ray_oracles.vllm_engine_args(config)  # vLLM's own AsyncEngineArgs takes them


def ingress_tasks(ray_oracles: ModuleType, document: dict[str, Any]) -> dict[str, str]:
    """Each model's task as the router's ingress deployment is given it, built as Serve builds it."""
    (app,) = router_applications(document)
    built = ray_oracles.build_serve_app(app["import_path"], app["args"])
    ingress = next(
        d for d in ray_oracles.flatten_app(built, name="check").deployments if d.name == "OpenAiIngress"
    )
    models = ingress._replica_config.init_kwargs["models"]
    return {model_id: entry["task"] for model_id, entry in models.items()}


def test_the_builder_tells_the_ingress_each_models_task(ray_oracles: ModuleType) -> None:
    models = catalog(entry("chat", None), entry("vectors", "embed"), entry("ranker", "rerank")).models
    document = serve_config(list(models), SCALING)
    assert ingress_tasks(ray_oracles, document) == {
        "chat": "generate",
        "vectors": "embed",
        "ranker": "rerank",
    }


def test_a_wrong_task_message_names_what_the_model_serves() -> None:
    message = wrong_task_message("vectors", "embed", "/v1/chat/completions")
    assert message == "model 'vectors' serves embed (/v1/embeddings), not /v1/chat/completions"


def test_rerank_models_are_served_locally_from_the_tiny_cross_encoder() -> None:
    models = catalog(entry("chat", None), entry("vectors", "embed"), entry("ranker", "rerank")).models
    document = serve_config(list(models), SCALING)
    assert needs_reranker(document) and not needs_reranker(document, ["chat", "vectors"])
    with pytest.raises(ValueError, match="ranker is a rerank model and needs a cross-encoder"):
        localize_serve_config(document, REPO_ROOT / "chat-dir")
    local = localize_serve_config(document, REPO_ROOT / "chat-dir", reranker_dir=REPO_ROOT / "ranker-dir")
    sources = {
        llm["model_loading_config"]["model_id"]: llm["model_loading_config"]["model_source"]
        for llm in document_llm_configs(local)
    }
    assert sources == {
        "chat": str(REPO_ROOT / "chat-dir"),
        "vectors": str(REPO_ROOT / "chat-dir"),  # vLLM converts the causal LM to an embedder
        "ranker": str(REPO_ROOT / "ranker-dir"),
    }
    runners = {llm["engine_kwargs"].get("runner") for llm in document_llm_configs(local)}
    assert runners == {None, "pooling"}


@pytest.mark.parametrize(
    ("task", "path"),
    [
        ("generate", "/chat/completions"),
        ("embed", "/embeddings"),
        ("rerank", "/score"),
        ("transcribe", "/audio/transcriptions"),
    ],
)
def test_local_warm_up_uses_the_route_of_the_models_task(task: str, path: str) -> None:
    """`make serve-local` waits until every engine answers; a chat probe would get the 400 above."""
    from serve.localize import warmup_request

    route, request = warmup_request("m", task)
    body = request.get("json") or request["data"]
    assert route == path and body["model"] == "m"
    assert f"/v1{route}" in TASK_ROUTES[task]


# --- speech to text ----------------------------------------------------------------------------

# openai/whisper-large-v3's config.json, as its model card shows it: 32 decoder layers of 20 heads,
# d_model 1280, 448 target positions, an encoder output of 1500 positions.
WHISPER_LARGE_V3 = {
    "parameters_billion": 1.54,
    "num_layers": 32,
    "num_attention_heads": 20,
    "num_kv_heads": 20,
    "head_dim": 64,
    "max_position_embeddings": 448,
    "encoder_positions": 1500,
}


def speech(model_id: str = "whisper", task: str | None = "transcribe", **changes: Any) -> dict[str, Any]:
    model = {**entry(model_id, task), "max_model_len": 448, "architecture": dict(WHISPER_LARGE_V3)}
    return {**model, **changes}


def test_a_whisper_model_serves_transcribe_with_room_for_its_audio() -> None:
    (model,) = catalog(speech()).models
    assert model.task is Task.TRANSCRIBE
    config = llm_config(model)
    # One scheduler step holds the encoder's 1500 positions and the decoder's 448 tokens.
    assert config["engine_kwargs"]["max_num_batched_tokens"] == 1500 + 448
    assert config["engine_kwargs"].keys().isdisjoint({"runner", "convert"})
    # The cross-attention cache: 2 x 32 layers x 20 heads x 64 x 2 B = 160 KiB a position, for
    # 448 + 1500 positions of one sequence = 0.30 GiB.
    assert model.memory().kv_cache_gib == pytest.approx(163_840 * (448 + 1500) / 2**30)


@pytest.mark.parametrize(
    ("model", "field", "words"),
    [
        (speech(task=None), "models[0].task", "set task to 'transcribe'"),
        (speech(task="embed"), "models[0].task", "set task to 'transcribe'"),
        (
            {**entry("m", "transcribe"), "max_model_len": 448},
            "models[0].task",
            "needs a speech-to-text encoder-decoder",
        ),
        (
            speech(engine={"max_num_batched_tokens": 1024}),
            "models[0].engine.max_num_batched_tokens",
            "below the encoder's 1500 positions",
        ),
        (
            speech(engine={"enable_prefix_caching": True}),
            "models[0].engine.enable_prefix_caching",
            "for a speech-to-text encoder-decoder",
        ),
    ],
    ids=[
        "whisper-as-generate",
        "whisper-as-embed",
        "transcribe-without-audio",
        "step-too-small",
        "prefix-caching",
    ],
)
def test_speech_settings_that_cannot_work_are_located_errors(
    model: dict[str, Any], field: str, words: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        catalog(model)
    assert any(p.field == field and words in p.message for p in raised.value.problems), raised.value.problems


def test_the_builder_routes_transcriptions_to_speech_models_only(ray_oracles: ModuleType) -> None:
    models = catalog(entry("chat", None), speech("ears")).models
    document = serve_config(list(models), SCALING)
    assert ingress_tasks(ray_oracles, document) == {"chat": "generate", "ears": "transcribe"}
    for model in models:
        config = ray_oracles.LLMConfig(**llm_config(model))
        ray_oracles.vllm_engine_args(config)  # vLLM's AsyncEngineArgs take what the catalog sets


def test_the_tiny_speech_model_reads_as_a_whisper_for_transcribe() -> None:
    from serve.model_facts import FactsError, read_facts
    from serve.model_source import LocalModel
    from serve.tiny_model import MAX_TARGET_POSITIONS, ensure_tiny_whisper

    source = LocalModel(ensure_tiny_whisper())
    facts = read_facts(source.config(), source.tensors, where="tiny", task="transcribe")
    assert facts.model_class == "WhisperForConditionalGeneration"
    assert (facts.architecture.encoder_positions, facts.architecture.max_position_embeddings) == (
        1500,
        MAX_TARGET_POSITIONS,
    )
    with pytest.raises(FactsError, match="add it with --task transcribe"):
        read_facts(source.config(), source.tensors, where="tiny", task="generate")


@pytest.mark.parametrize(
    ("task", "route"),
    [
        ("generate", "/v1/chat/completions"),
        ("embed", "/v1/embeddings"),
        ("rerank", "/v1/score"),
        ("transcribe", "/v1/audio/transcriptions"),
    ],
)
def test_the_example_curl_uses_the_models_task(task: str, route: str) -> None:
    """`make serve-local` prints a request that model answers (a chat curl for an embedder is a 400)."""
    from infra.local import _example_curl

    curl = _example_curl("http://127.0.0.1:8000", "m", task)
    assert curl.startswith(f"curl http://127.0.0.1:8000{route} ")
    assert ("-F file=@" in curl) == (task == "transcribe")
