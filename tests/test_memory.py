"""The GPU memory estimate (serve/memory.py), against examples worked by hand (GiB = 2^30 bytes)."""

from __future__ import annotations

from typing import Any

import pytest

from serve.catalog import load_catalog
from serve.memory import RUNTIME_OVERHEAD_GIB_PER_GPU, MemoryBudget, estimate
from serve.paths import CATALOG_FILE_NAME, REPO_ROOT

# The README's worked example: Llama-3.1-8B-Instruct on one L4 (22.5 GiB usable).
WORKED_EXAMPLE: dict[str, Any] = {
    "parameters_billion": 8.03,
    "num_layers": 32,
    "num_kv_heads": 8,
    "head_dim": 128,
    "dtype": "bfloat16",
    "quantization": None,
    "max_model_len": 8192,
    "concurrency": 3,
    "tensor_parallel_size": 1,
    "vram_gib_per_gpu": 22.5,
    "gpu_memory_utilization": 0.90,
}


def test_worked_example_matches_the_readme() -> None:
    # weights 8.03e9 x 2 B = 14.96 GiB; KV cache 2 x 32 x 8 x 128 x 2 B x 8192 x 3 = 3 GiB exactly;
    # overhead 1.5 GiB; total 19.46 GiB <= 22.5 x 0.90 = 20.25 GiB, 0.79 GiB to spare.
    budget = estimate(**WORKED_EXAMPLE)
    assert round(budget.weights_gib, 2) == 14.96
    assert budget.kv_cache_gib == 3.0
    assert budget.overhead_gib == 1.5
    assert round(budget.required_gib, 2) == 19.46
    assert round(budget.budget_gib, 2) == 20.25
    assert round(budget.headroom_gib, 2) == 0.79
    assert budget.fits


def test_worked_example_with_concurrency_4_does_not_fit() -> None:
    budget = estimate(**{**WORKED_EXAMPLE, "concurrency": 4})
    assert budget.kv_cache_gib == 4.0
    assert round(budget.required_gib, 2) == 20.46
    assert not budget.fits


# Each shipped model, by hand: (weights, KV cache, overhead, budget) in GiB.
CATALOG_MODELS = {
    # 1.54e9 x 2 B = 2.87 GiB; KV 2 x 28 layers x 2 KV heads x 128 x 2 B = 28 KiB a token,
    # x 8192 x 8 = 1.75 GiB; one GPU: 1.5 GiB overhead; T4 15 GiB x 0.90 = 13.5 GiB.
    "qwen2-5-1-5b-instruct": (2.87, 1.75, 1.5, 13.5),
    # The README's worked example above.
    "llama-3-1-8b-instruct": (14.96, 3.0, 1.5, 20.25),
    # 32.76e9 x 2 B = 61.02 GiB; KV 2 x 64 x 8 x 128 x 2 B = 256 KiB a token, x 32768 x 4 = 32 GiB;
    # two GPUs: 3 GiB overhead; 2 x A100 80 GiB x 0.90 = 144 GiB.
    "qwen2-5-32b-instruct": (61.02, 32.0, 3.0, 144.0),
    # Encoders keep no KV cache: 0.56e9 and 0.568e9 x 2 B of weights and the overhead; on a T4
    # (the whole card's budget here; packed, each gets 0.2 of it: tests/test_packing.py).
    "multilingual-e5-large": (1.04, 0.0, 1.5, 13.5),
    "bge-reranker-v2-m3": (1.06, 0.0, 1.5, 13.5),
}


def test_an_encoder_keeps_no_kv_cache_and_a_speech_model_caches_its_encoder_output() -> None:
    as_decoder = estimate(**WORKED_EXAMPLE)
    assert estimate(**WORKED_EXAMPLE, encoder_only=True).kv_cache_gib == 0
    # 1500 encoder positions more per sequence: 3 sequences x 1500 x 128 KiB a position.
    speech = estimate(**WORKED_EXAMPLE, encoder_positions=1500)
    assert speech.kv_cache_gib - as_decoder.kv_cache_gib == pytest.approx(3 * 1500 * 131_072 / 2**30)


@pytest.mark.parametrize("model_id", sorted(CATALOG_MODELS))
def test_catalog_models_are_worked_examples(model_id: str) -> None:
    model = load_catalog(REPO_ROOT / CATALOG_FILE_NAME).by_id(model_id)
    budget = model.memory()
    found = (
        round(budget.weights_gib, 2),
        budget.kv_cache_gib,
        budget.overhead_gib,
        round(budget.budget_gib, 2),
    )
    assert found == CATALOG_MODELS[model_id]
    assert budget.fits
    if model_id == "llama-3-1-8b-instruct":
        assert budget == estimate(**WORKED_EXAMPLE)


@pytest.mark.parametrize(
    ("quantization", "weights_gib"),
    [
        ("fp8", 7.48),  # 8.03e9 x 1 B
        ("awq", 4.21),  # 8.03e9 x 0.5625 B: 4-bit weights plus group scales and zeros
        ("gptq", 4.21),
    ],
)
def test_quantization_shrinks_weights_only(quantization: str, weights_gib: float) -> None:
    full = estimate(**WORKED_EXAMPLE)
    quantized = estimate(**{**WORKED_EXAMPLE, "quantization": quantization})
    assert round(quantized.weights_gib, 2) == weights_gib
    assert quantized.kv_cache_gib == full.kv_cache_gib
    assert quantized.overhead_gib == full.overhead_gib
    assert quantized.budget_gib == full.budget_gib


def test_float16_and_bfloat16_weigh_the_same() -> None:
    assert estimate(**WORKED_EXAMPLE) == estimate(**{**WORKED_EXAMPLE, "dtype": "float16"})


def test_tensor_parallel_scales_budget_and_overhead() -> None:
    one = estimate(**WORKED_EXAMPLE)
    two = estimate(**{**WORKED_EXAMPLE, "tensor_parallel_size": 2})
    assert two.budget_gib == pytest.approx(2 * one.budget_gib)
    assert two.overhead_gib == pytest.approx(2 * RUNTIME_OVERHEAD_GIB_PER_GPU)
    assert (two.weights_gib, two.kv_cache_gib) == (one.weights_gib, one.kv_cache_gib)


def test_headroom_zero_still_fits() -> None:
    exact = MemoryBudget(weights_gib=14.5, kv_cache_gib=3.0, overhead_gib=1.5, budget_gib=19.0)
    assert exact.headroom_gib == 0 and exact.fits
    assert not exact.model_copy(update={"budget_gib": 18.99}).fits
    # The worked example fits exactly from the utilization that makes the budget its 19.46 GiB.
    boundary = estimate(**WORKED_EXAMPLE).required_gib / 22.5
    assert estimate(**{**WORKED_EXAMPLE, "gpu_memory_utilization": boundary + 1e-6}).fits
    assert not estimate(**{**WORKED_EXAMPLE, "gpu_memory_utilization": boundary - 1e-6}).fits
