"""How much GPU memory a model replica needs, and whether it fits its tier.

The estimate (all sizes in GiB, 1 GiB = 2**30 bytes):

    weights  = parameters × bytes_per_weight(dtype, quantization)
    kv_cache = 2 (K and V) × layers × kv_heads × head_dim × kv_bytes × max_model_len × concurrency
    overhead = RUNTIME_OVERHEAD_GIB_PER_GPU × tensor_parallel_size
    budget   = vram_per_gpu × tensor_parallel_size × gpu_memory_utilization

    fits  ⇔  weights + kv_cache + overhead ≤ budget

`concurrency` is how many full-length (max_model_len) sequences the KV cache must hold at
once; vLLM pages the cache, so many shorter requests share the same space. kv_bytes is the
activation dtype's width (2 for float16/bfloat16); quantization shrinks weights, not the
KV cache. The overhead covers the CUDA context, activations and CUDA graphs per GPU.
An encoder-only model (BERT, XLM-RoBERTa: bidirectional attention over the whole input) keeps
no KV cache in vLLM, so its kv_cache is 0: the estimate of an embedding model or a cross-encoder
is its weights and the overhead. An encoder-decoder (Whisper) also caches, for each sequence, K
and V of the encoder's output in every decoder layer's cross-attention: its KV cache counts
max_model_len + encoder_positions positions per sequence, with the decoder's layers and heads.

Worked example: Llama-3.1-8B-Instruct on one L4 (22.5 GiB), bfloat16, max_model_len 8192,
concurrency 3, gpu_memory_utilization 0.90:
    weights  = 8.03e9 × 2 B                          = 14.96 GiB
    kv_cache = 2 × 32 × 8 × 128 × 2 B × 8192 × 3     =  3.00 GiB
    overhead = 1.5 × 1                               =  1.50 GiB
    total 19.46 GiB ≤ budget 22.5 × 1 × 0.90 = 20.25 GiB, headroom 0.79 GiB: it fits.
With concurrency 4 the KV cache is 4.00 GiB, total 20.46 GiB > 20.25 GiB: it does not.
"""

from __future__ import annotations

from typing import Final

from pydantic import BaseModel, ConfigDict

GIB: Final = 2**30
RUNTIME_OVERHEAD_GIB_PER_GPU: Final = 1.5
KV_BYTES_PER_ELEMENT: Final = 2

# Bytes per weight, which also lists every dtype and quantization the catalog accepts:
# 16-bit dtypes store 2 bytes; fp8 stores 1; 4-bit AWQ/GPTQ store half a byte plus group
# scales and zeros (≈ 0.5625 at group size 128, rounded up to be safe).
BYTES_PER_WEIGHT_BY_DTYPE: Final = {"float16": 2.0, "bfloat16": 2.0}
BYTES_PER_WEIGHT_BY_QUANTIZATION: Final = {"fp8": 1.0, "awq": 0.5625, "gptq": 0.5625}
BYTES_PER_WEIGHT: Final = {**BYTES_PER_WEIGHT_BY_DTYPE, **BYTES_PER_WEIGHT_BY_QUANTIZATION}


class MemoryBudget(BaseModel):
    model_config = ConfigDict(frozen=True)

    weights_gib: float
    kv_cache_gib: float
    overhead_gib: float
    budget_gib: float

    @property
    def required_gib(self) -> float:
        return self.weights_gib + self.kv_cache_gib + self.overhead_gib

    @property
    def headroom_gib(self) -> float:
        return self.budget_gib - self.required_gib

    @property
    def fits(self) -> bool:
        return self.headroom_gib >= 0


def estimate(
    *,
    parameters_billion: float,
    num_layers: int,
    num_kv_heads: int,
    head_dim: int,
    dtype: str,
    quantization: str | None,
    max_model_len: int,
    concurrency: int,
    tensor_parallel_size: int,
    vram_gib_per_gpu: float,
    gpu_memory_utilization: float,
    encoder_only: bool = False,
    encoder_positions: int = 0,
) -> MemoryBudget:
    bytes_per_weight = BYTES_PER_WEIGHT[quantization or dtype]
    kv_bytes_per_token = 2 * num_layers * num_kv_heads * head_dim * KV_BYTES_PER_ELEMENT
    return MemoryBudget(
        weights_gib=parameters_billion * 1e9 * bytes_per_weight / GIB,
        kv_cache_gib=(
            0.0
            if encoder_only
            else kv_bytes_per_token * (max_model_len + encoder_positions) * concurrency / GIB
        ),
        overhead_gib=RUNTIME_OVERHEAD_GIB_PER_GPU * tensor_parallel_size,
        budget_gib=vram_gib_per_gpu * tensor_parallel_size * gpu_memory_utilization,
    )
