"""The local run serves the plan's own serve application; only weights and accelerator change.

Fast checks without starting Ray: what `localize_serve_config` keeps and changes, that its output
is still a valid Serve deploy document with valid LLM configs, the tiny model's recipe, and the
command line's refusals. The slow end-to-end run is tests/test_e2e_local.py.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO_ROOT, STACKS
from ray.serve.llm import LLMConfig
from ray.serve.schema import ServeDeploySchema

from infra import local as local_cli
from infra.plan import build_plan_for_stack
from serve import tiny_model
from serve.bench import percentile
from serve.local import (
    CPU_DTYPE,
    DROPPED_ENGINE_KWARGS,
    KV_CACHE_ENV,
    LOCAL_MAX_REPLICAS,
    localize_serve_config,
    served_model_ids,
)
from serve.versions import OPENAI_APP_IMPORT_PATH

MODEL_DIR = Path("/models/tiny")


def llm_configs(document: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        llm
        for app in document["applications"]
        if app["import_path"] == OPENAI_APP_IMPORT_PATH
        for llm in app["args"]["llm_configs"]
    ]


@pytest.mark.parametrize("stack", STACKS)
def test_localized_config_keeps_ids_and_serve_settings(stack: str) -> None:
    plan = build_plan_for_stack(stack, REPO_ROOT)
    local = localize_serve_config(plan.serve_config, MODEL_DIR)
    assert served_model_ids(local) == plan.served_model_ids
    for app, original in zip(local["applications"], plan.serve_config["applications"], strict=True):
        assert {k: app[k] for k in ("name", "route_prefix", "import_path")} == {
            k: original[k] for k in ("name", "route_prefix", "import_path")
        }
    for llm, original in zip(llm_configs(local), plan.llm_configs, strict=True):
        assert llm["model_loading_config"] == {
            "model_id": original["model_loading_config"]["model_id"],
            "model_source": str(MODEL_DIR),
        }
        assert llm["accelerator_config"] == {"kind": "cpu"} and "accelerator_type" not in llm
        assert llm["runtime_env"]["env_vars"][KV_CACHE_ENV] == "1"
        engine = llm["engine_kwargs"]
        assert engine["dtype"] == CPU_DTYPE and engine["tensor_parallel_size"] == 1
        assert not DROPPED_ENGINE_KWARGS & engine.keys()
        kept = {k: v for k, v in original["engine_kwargs"].items() if k not in DROPPED_ENGINE_KWARGS}
        for key in kept.keys() - {"dtype", "tensor_parallel_size", "max_model_len"}:
            assert engine[key] == kept[key], key
        scaling, original_scaling = (
            llm["deployment_config"]["autoscaling_config"],
            original["deployment_config"]["autoscaling_config"],
        )
        assert scaling["max_replicas"] == min(original_scaling["max_replicas"], LOCAL_MAX_REPLICAS)
        assert scaling["min_replicas"] == min(original_scaling["min_replicas"], LOCAL_MAX_REPLICAS)
        for key in ("target_ongoing_requests", "upscale_delay_s", "downscale_delay_s"):
            assert scaling[key] == original_scaling[key]
        assert (
            llm["deployment_config"]["max_ongoing_requests"]
            == original["deployment_config"]["max_ongoing_requests"]
        )


@pytest.mark.parametrize("stack", STACKS)
def test_localized_config_is_still_valid_for_ray(stack: str) -> None:
    local = localize_serve_config(build_plan_for_stack(stack, REPO_ROOT).serve_config, MODEL_DIR)
    ServeDeploySchema.model_validate(copy.deepcopy(local))
    for llm in llm_configs(local):
        LLMConfig(**copy.deepcopy(llm))


def test_the_plan_is_not_modified() -> None:
    plan = build_plan_for_stack("dev", REPO_ROOT)
    before = json.dumps(plan.serve_config, sort_keys=True)
    localize_serve_config(plan.serve_config, MODEL_DIR)
    assert json.dumps(plan.serve_config, sort_keys=True) == before


def test_a_subset_of_models_is_served_in_catalog_order() -> None:
    plan = build_plan_for_stack("prod", REPO_ROOT)
    wanted = list(reversed(plan.served_model_ids[:2]))
    local = localize_serve_config(plan.serve_config, MODEL_DIR, wanted)
    assert served_model_ids(local) == plan.served_model_ids[:2]


def test_an_unknown_model_is_refused_with_the_ids_served() -> None:
    plan = build_plan_for_stack("dev", REPO_ROOT)
    with pytest.raises(ValueError, match="unknown model id") as raised:
        localize_serve_config(plan.serve_config, MODEL_DIR, ["gpt-5"])
    assert all(model in str(raised.value) for model in plan.served_model_ids)


def test_the_command_refuses_unknown_models_and_missing_model_dirs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert local_cli.main(["--models", "gpt-5", "--model-dir", str(tmp_path)]) == 2
    assert "no config.json" in capsys.readouterr().err
    (tmp_path / "config.json").write_text("{}")
    assert local_cli.main(["--models", "gpt-5", "--model-dir", str(tmp_path)]) == 2
    assert "unknown model id(s) 'gpt-5'" in capsys.readouterr().err


def test_the_command_reports_a_broken_stack_as_located_lines(capsys: pytest.CaptureFixture[str]) -> None:
    assert local_cli.main(["--stack", "staging"]) == 2
    assert "Pulumi.staging.yaml" in capsys.readouterr().err


def test_models_option_takes_repeats_and_commas() -> None:
    assert local_cli._selected_models(["a,b", " c "]) == ["a", "b", "c"]
    assert local_cli._selected_models(None) is None


def test_tiny_model_recipe_is_what_vllm_cpu_needs() -> None:
    assert tiny_model.HEAD_DIM == 64, "vLLM's CPU attention rejects head_dim 16"
    assert tiny_model.HIDDEN_SIZE % tiny_model.NUM_ATTENTION_HEADS == 0
    assert tiny_model.NUM_ATTENTION_HEADS % tiny_model.NUM_KV_HEADS == 0


def test_tiny_model_builds_once_with_a_working_chat_template(tmp_path: Path) -> None:
    from transformers import AutoConfig, AutoTokenizer

    model_dir = tiny_model.ensure_tiny_model(tmp_path / "tiny")
    assert tiny_model.is_current(model_dir)
    weights = model_dir / "model.safetensors"
    built_at = weights.stat().st_mtime_ns
    assert tiny_model.ensure_tiny_model(tmp_path / "tiny") == model_dir
    assert weights.stat().st_mtime_ns == built_at, "a current model is reused, not rebuilt"

    config = AutoConfig.from_pretrained(model_dir)
    assert config.model_type == "qwen2" and config.head_dim == tiny_model.HEAD_DIM
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    assert config.vocab_size == len(tokenizer)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hello world"}], tokenize=False, add_generation_prompt=True
    )
    assert prompt.endswith("<|im_start|>assistant\n") and "hello world" in prompt
    assert tokenizer.decode(tokenizer.encode("the cluster serves tokens")) == "the cluster serves tokens"


def test_a_changed_recipe_is_rebuilt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model_dir = tiny_model.ensure_tiny_model(tmp_path / "tiny")
    monkeypatch.setattr(tiny_model, "RECIPE_VERSION", tiny_model.RECIPE_VERSION + 1)
    assert not tiny_model.is_current(model_dir)
    assert tiny_model.ensure_tiny_model(model_dir) == model_dir and tiny_model.is_current(model_dir)


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 0.5), percentile(values, 0.95), percentile(values, 1.0)) == (50.0, 95.0, 100.0)
    assert percentile([3.0], 0.95) == 3.0
    with pytest.raises(ValueError):
        percentile([], 0.5)
