"""Pieces of the local run that are neither localization nor supervision: the tiny local model
(its recipe is what vLLM's CPU backend accepts) and the benchmark's statistics."""

from __future__ import annotations

from pathlib import Path

import pytest

from serve import tiny_model
from serve.bench import percentile


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
