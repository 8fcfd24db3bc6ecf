"""The GPU memory estimate (serve/memory.py): its documented worked example and quantization factors."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import REPO_ROOT

from serve.catalog import load_catalog
from serve.memory import GIB, RUNTIME_OVERHEAD_GIB_PER_GPU, estimate

# The docstring's worked example: Llama-3.1-8B-Instruct on one L4.
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


def test_worked_example_matches_the_docstring() -> None:
    budget = estimate(**WORKED_EXAMPLE)
    assert round(budget.weights_gib, 2) == 14.96
    assert round(budget.kv_cache_gib, 2) == 3.00
    assert round(budget.overhead_gib, 2) == 1.50
    assert round(budget.required_gib, 2) == 19.46
    assert round(budget.budget_gib, 2) == 20.25
    assert round(budget.headroom_gib, 2) == 0.79
    assert budget.fits


def test_worked_example_with_concurrency_4_does_not_fit() -> None:
    budget = estimate(**{**WORKED_EXAMPLE, "concurrency": 4})
    assert round(budget.kv_cache_gib, 2) == 4.00
    assert round(budget.required_gib, 2) == 20.46
    assert not budget.fits


def test_kv_cache_by_hand() -> None:
    # 2 (K and V) x 32 layers x 8 KV heads x 128 head_dim x 2 bytes = 131072 B per token;
    # x 8192 tokens x 3 sequences = 3 GiB exactly.
    assert estimate(**WORKED_EXAMPLE).kv_cache_gib == 2 * 32 * 8 * 128 * 2 * 8192 * 3 / GIB == 3.0


def test_the_catalog_llama_entry_is_the_worked_example() -> None:
    llama = load_catalog(REPO_ROOT / "model_catalog.yaml").by_id("llama-3-1-8b-instruct")
    assert llama.memory() == estimate(**WORKED_EXAMPLE)


@pytest.mark.parametrize(
    ("quantization", "factor"),
    [("fp8", 0.5), ("awq", 0.5625 / 2), ("gptq", 0.5625 / 2)],
)
def test_quantization_shrinks_weights_only(quantization: str, factor: float) -> None:
    full = estimate(**WORKED_EXAMPLE)
    quantized = estimate(**{**WORKED_EXAMPLE, "quantization": quantization})
    assert quantized.weights_gib == pytest.approx(full.weights_gib * factor)
    assert quantized.kv_cache_gib == full.kv_cache_gib
    assert quantized.overhead_gib == full.overhead_gib
    assert quantized.budget_gib == full.budget_gib


def test_fp8_halves_and_4_bit_about_quarters_the_weights() -> None:
    full = estimate(**WORKED_EXAMPLE).weights_gib
    assert estimate(**{**WORKED_EXAMPLE, "quantization": "fp8"}).weights_gib == pytest.approx(full / 2)
    for four_bit in ("awq", "gptq"):
        weights = estimate(**{**WORKED_EXAMPLE, "quantization": four_bit}).weights_gib
        # Half a byte per weight plus group scales and zeros: a quarter of 16-bit, a little more.
        assert full / 4 < weights <= full / 4 * 1.125


def test_float16_and_bfloat16_weigh_the_same() -> None:
    assert estimate(**WORKED_EXAMPLE) == estimate(**{**WORKED_EXAMPLE, "dtype": "float16"})


def test_tensor_parallel_scales_budget_and_overhead() -> None:
    one = estimate(**WORKED_EXAMPLE)
    two = estimate(**{**WORKED_EXAMPLE, "tensor_parallel_size": 2})
    assert two.budget_gib == pytest.approx(2 * one.budget_gib)
    assert two.overhead_gib == pytest.approx(2 * RUNTIME_OVERHEAD_GIB_PER_GPU)
    assert (two.weights_gib, two.kv_cache_gib) == (one.weights_gib, one.kv_cache_gib)


def test_headroom_zero_still_fits() -> None:
    one = estimate(**WORKED_EXAMPLE)
    exact = estimate(**{**WORKED_EXAMPLE, "gpu_memory_utilization": one.required_gib / 22.5})
    assert exact.headroom_gib == pytest.approx(0, abs=1e-9)
    assert estimate(**{**WORKED_EXAMPLE, "gpu_memory_utilization": one.required_gib / 22.5 + 1e-6}).fits
