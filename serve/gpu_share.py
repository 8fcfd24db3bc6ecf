"""How much of one GPU a model replica takes, and whether it shares the card with other replicas.

A replica whose memory estimate (serve/memory.py) needs at most half of a card is *packed*: it
asks Ray for a fraction of a GPU, and vLLM gets a memory share that follows that fraction:

    bundle   = ceil(required_gib / (vram_gib × CARD_UTILIZATION), to a multiple of BUNDLE_STEP)
    gpu_memory_utilization = bundle × CARD_UTILIZATION
    kv_cache_memory_bytes  = the estimate's KV cache (concurrency × max_model_len tokens)
    VLLM_RAY_PER_WORKER_GPUS = bundle   (the replica's runtime env)

Why the two are tied: Ray places fractional GPU bundles so that the bundles on one card never
add up to more than 1 (it assigns fractions of a GPU *instance*, not of the node), and vLLM 0.32
refuses to start unless the free memory is at least `gpu_memory_utilization × total`
(vllm/v1/worker/utils.py `request_memory`). With the share a fixed multiple of the bundle, Ray's
rule is the memory rule: the shares on a card never pass CARD_UTILIZATION, and every engine
finds its share free. Raising the share alone is what Ray issue 62553 ran into (0.49 GPU bundles
with a 0.6 share: the second replica no longer fitted beside the first).

Start-up races: two engines starting on one card at the same moment can mis-size each other's KV
cache, because vLLM sizes it from a memory profile that also sees the neighbour's allocations
(vLLM issue 55827). A packed replica sets `kv_cache_memory_bytes`, which skips that profile
(vllm/v1/worker/gpu_worker.py `determine_available_memory`), so its KV cache is the same however
its neighbours start. It is the estimate's KV cache, not what the share would leave: the share is
measured against the tier table's VRAM (nvidia-smi's total), and CUDA reports less (a T4: 14.58
GiB of 15), so the footprint stays at the estimate, inside the share either way. An encoder (no
KV cache) has nothing to size. If an estimate is still wrong and an engine fails to start, Serve
restarts the replica; its neighbours keep serving.

The fraction must also reach vLLM's worker: vLLM asks Ray for VLLM_RAY_PER_WORKER_GPUS of a GPU
(default 1.0, vllm/envs.py), and a worker asking for a whole GPU inside a 0.5 bundle is never
scheduled. Ray 2.60 works the value out from the bundle but puts it only in its helper tasks'
env, not the replica's (ray-project/ray#63875, open), so the LLM config sets it itself.

Never packed: tensor-parallel replicas (their ranks must own whole GPUs), replicas needing
more than MAX_SHARED_BUNDLE (two of them could not share a card anyway), replicas on nodes
with more than one GPU: Ray's autoscaler compares a node's GPUs as one total and can start too
few nodes for fractional replicas that the raylet must fit on single GPUs (ray-project/ray#39987);
and replicas of a stack that keeps SPREAD_WARM_REPLICAS or more of each model warm. Two packed
replicas of one model can share a card, and so one node and one spot reclaim, and nothing in Ray
Serve keeps them apart for Ray Serve LLM (infra/plan/spreading.py). A whole GPU per replica on a
one-GPU node does: the node holds one replica of anything. Warm replicas are the ones bought for
availability, so that stack pays whole GPUs for them; below it, packing saves the GPUs.
"""

from __future__ import annotations

import math
from typing import Final

from pydantic import BaseModel, ConfigDict

from serve.catalog import ModelEntry
from serve.memory import GIB

# vLLM's worker asks Ray for this much of a GPU (vllm/envs.py, default 1.0).
PER_WORKER_GPUS_ENV: Final = "VLLM_RAY_PER_WORKER_GPUS"
# What the engines sharing a card may use together; the rest is left to the CUDA contexts'
# driver overhead outside vLLM's accounting. The catalog's default gpu_memory_utilization.
CARD_UTILIZATION: Final = 0.90
# Bundles are multiples of this: Ray keeps resources at 1e-4 precision, and a coarse step keeps
# the plan's bin-packing exact in integers.
BUNDLE_STEP: Final = 0.05
STEPS_PER_GPU: Final = round(1 / BUNDLE_STEP)
MAX_SHARED_BUNDLE: Final = 0.5
# Warm replicas per model from which a stack stops packing (module docstring): two replicas are
# the first that a single node could otherwise hold together.
SPREAD_WARM_REPLICAS: Final = 2
# On nodes of several GPUs a whole-GPU replica that leaves GPUs free could still meet a second
# replica of its model. Every worker of such a group declares one unit of this Ray resource
# (infra/plan/ray_service.py `worker_ray_resources`), and in a stack keeping two or more replicas
# warm every replica that leaves GPUs free asks for it in its first bundle: one such replica per
# node, of any model, so the node's other GPUs stay idle (the plan counts the whole node). Ray
# places and autoscales for custom resources like for GPUs.
SPREAD_RESOURCE: Final = "llm_serving_spread"


class GpuShare(BaseModel):
    """A packed replica's fraction of one GPU and the engine settings that keep it inside it."""

    model_config = ConfigDict(frozen=True)

    steps: int
    gpu_memory_utilization: float
    kv_cache_memory_bytes: int | None

    @property
    def bundle_gpus(self) -> float:
        """The replica's placement bundle: Ray's `GPU` resource (sets VLLM_RAY_PER_WORKER_GPUS)."""
        return round(self.steps * BUNDLE_STEP, 4)


def bundle_steps(required_gib: float, vram_gib: float) -> int:
    """The fewest BUNDLE_STEPs of a card whose memory share holds `required_gib`."""
    exact = required_gib / (vram_gib * CARD_UTILIZATION) * STEPS_PER_GPU
    return max(1, math.ceil(exact - 1e-9))


def node_exclusive(model: ModelEntry, gpus_per_node: int, warm_replicas: int) -> bool:
    """Whether each replica of `model` must hold a node of `gpus_per_node` GPUs to itself among
    the replicas that ask (SPREAD_RESOURCE): kept warm in two or more, and leaving GPUs free."""
    return warm_replicas >= SPREAD_WARM_REPLICAS and model.tensor_parallel_size < gpus_per_node


def gpu_share(model: ModelEntry, gpus_per_node: int = 1, warm_replicas: int = 0) -> GpuShare | None:
    """The model's share of one GPU if it is packed on nodes of `gpus_per_node` GPUs in a stack
    that keeps `warm_replicas` of each model running, None if each replica takes whole GPUs."""
    if model.tensor_parallel_size != 1 or gpus_per_node != 1 or warm_replicas >= SPREAD_WARM_REPLICAS:
        return None
    memory, vram = model.memory(), model.gpu_tier.vram_gib
    steps = bundle_steps(memory.required_gib, vram)
    if steps * BUNDLE_STEP > MAX_SHARED_BUNDLE + 1e-9:
        return None
    utilization = round(steps * BUNDLE_STEP * CARD_UTILIZATION, 4)
    kv_bytes = None if model.architecture.encoder_only else math.ceil(memory.kv_cache_gib * GIB)
    return GpuShare(steps=steps, gpu_memory_utilization=utilization, kv_cache_memory_bytes=kv_bytes)
