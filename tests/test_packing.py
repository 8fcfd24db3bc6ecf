"""Small models share GPUs: each packed replica's share (serve/gpu_share.py) and the plan's
bin-packing of replicas onto cards (infra/plan/packing.py).

The rule that makes sharing safe is checked against a model of the two systems involved:
- Ray assigns a fractional GPU bundle to one GPU instance, and the bundles on an instance never
  add up to more than 1 (Ray's resource instances; `_detect_fractional_gpu_from_pg` passes the
  fraction to vLLM);
- vLLM 0.32 refuses to start an engine unless the card's free memory is at least
  `gpu_memory_utilization x total` (vllm/v1/worker/utils.py `request_memory`), and with
  `kv_cache_memory_bytes` it holds weights + that KV cache + its runtime overhead.
"""

from __future__ import annotations

import itertools
import random
from types import ModuleType
from typing import Any

import pytest
from helpers.generated_catalog import mixed_small_catalog

from configcheck.problems import LineMap
from infra.plan import ServingPlan
from infra.plan.packing import pack, packed_gpus, whole_gpus
from serve.catalog import ModelEntry, Task, load_catalog, parse_catalog
from serve.gpu_share import (
    BUNDLE_STEP,
    CARD_UTILIZATION,
    MAX_SHARED_BUNDLE,
    STEPS_PER_GPU,
    GpuShare,
    gpu_share,
)
from serve.memory import GIB
from serve.paths import REPO_ROOT
from serve.serve_config import llm_config

SHIPPED = load_catalog(REPO_ROOT / "model_catalog.yaml")


def entry(**changes: Any) -> ModelEntry:
    """The shipped T4 chat model with `changes` (a dict value replaces that whole block)."""
    base = SHIPPED.by_id("qwen2-5-1-5b-instruct").model_dump(mode="json", exclude_unset=True)
    return parse_catalog({"models": [{**base, **changes}]}, "test", LineMap()).models[0]


# --- one replica's share ------------------------------------------------------------------


def test_the_shipped_t4_chat_model_takes_half_a_card() -> None:
    # Needs 6.12 GiB (weights 2.87 + KV 1.75 + overhead 1.5) of a T4's 15 GiB x 0.90 = 13.5 GiB:
    # 0.453 of a card, rounded up to 0.5. Its engine may use 0.5 x 0.90 = 0.45 of the card; its KV
    # cache is fixed at the estimate's 1.75 GiB (8 sequences of 8192 tokens, 28 KiB a token).
    model = SHIPPED.by_id("qwen2-5-1-5b-instruct")
    share = gpu_share(model)
    assert share is not None
    assert (share.steps, share.bundle_gpus, share.gpu_memory_utilization) == (10, 0.5, 0.45)
    assert share.kv_cache_memory_bytes == 28 * 1024 * 8192 * 8 == int(1.75 * GIB)


def test_nodes_with_more_than_one_gpu_never_pack() -> None:
    """Ray's autoscaler sums a node's GPUs (ray-project/ray#39987): five 0.4 bundles "fit" a 2-GPU
    node by its count but only four fit its two cards, so the fifth would wait for a node the
    autoscaler never starts. On such nodes every replica takes whole GPUs."""
    model = SHIPPED.by_id("qwen2-5-1-5b-instruct")
    assert gpu_share(model, gpus_per_node=1) is not None
    assert gpu_share(model, gpus_per_node=2) is None
    config = llm_config(model, gpus_per_node=2)
    assert "placement_group_config" not in config and "runtime_env" not in config


def test_tensor_parallel_and_big_models_take_whole_gpus() -> None:
    assert gpu_share(SHIPPED.by_id("qwen2-5-32b-instruct")) is None  # tensor_parallel_size 2
    assert gpu_share(SHIPPED.by_id("llama-3-1-8b-instruct")) is None  # 19.5 of 20.25 GiB


def test_half_a_card_is_the_largest_share() -> None:
    # T4: half a card's share is 0.5 x 13.5 = 6.75 GiB. Concurrency moves the KV cache by 28 KiB a
    # token x 8192 = 0.219 GiB per sequence: 8 sequences need 6.12 GiB, 11 need 6.78.
    assert gpu_share(entry(concurrency=10)) is not None  # 6.56 GiB
    assert gpu_share(entry(concurrency=11)) is None  # 6.78 GiB: more than half, whole GPU


@pytest.mark.parametrize(
    ("required", "steps"), [(0.01, 1), (0.675, 1), (0.6751, 2), (6.75, 10), (6.7501, 11), (13.5, 20)]
)
def test_bundles_round_up_to_a_step(required: float, steps: int) -> None:
    from serve.gpu_share import bundle_steps

    # T4: one step is 0.05 x 13.5 GiB = 0.675 GiB of memory share.
    assert bundle_steps(required, 15.0) == steps


def _shares(catalog_models: list[ModelEntry]) -> list[tuple[ModelEntry, GpuShare]]:
    return [(m, s) for m in catalog_models if (s := gpu_share(m)) is not None]


def test_every_packed_replica_fits_its_share() -> None:
    """Weights + KV cache + overhead within the share, the KV cache at least the estimate's."""
    models = list(mixed_small_catalog().models) + list(SHIPPED.models)
    shares = _shares(models)
    assert len(shares) >= 20
    for model, share in shares:
        memory, vram = model.memory(), model.gpu_tier.vram_gib
        kv = (share.kv_cache_memory_bytes or 0) / GIB
        assert memory.weights_gib + kv + memory.overhead_gib <= share.gpu_memory_utilization * vram + 1e-6
        assert kv == pytest.approx(memory.kv_cache_gib, abs=1e-9), model.id
        assert (share.kv_cache_memory_bytes is None) == model.architecture.encoder_only
        assert share.bundle_gpus <= MAX_SHARED_BUNDLE
        assert share.gpu_memory_utilization == pytest.approx(share.bundle_gpus * CARD_UTILIZATION)


# --- Ray's rule is the memory rule ----------------------------------------------------------


def _footprint_gib(model: ModelEntry, share: GpuShare) -> float:
    memory = model.memory()
    kv = (share.kv_cache_memory_bytes or 0) / GIB
    return memory.weights_gib + kv + memory.overhead_gib


def _engines_start(card: list[tuple[ModelEntry, float, float]], vram: float) -> bool:
    """vLLM's start-up check for every engine on one card, the others already holding their
    footprint: free memory = total - the others' footprints >= gpu_memory_utilization x total."""
    for index, (_, utilization, _) in enumerate(card):
        others = sum(footprint for i, (_, _, footprint) in enumerate(card) if i != index)
        if vram - others < utilization * vram:
            return False
    return True


# What CUDA reports as a T4's total memory (torch.cuda.mem_get_info, which vLLM's check reads),
# below nvidia-smi's 15 GiB the tier table holds (datawhalechina/self-llm#162 shows 14.58 GiB).
T4_CUDA_TOTAL_GIB = 14.58


@pytest.mark.parametrize("total_gib", [15.0, T4_CUDA_TOTAL_GIB])
def test_any_set_of_bundles_ray_puts_on_one_card_can_start(total_gib: float) -> None:
    """Every combination of packed replicas whose bundles Ray would put on one T4 (sum <= 1)."""
    t4 = [(m, s) for m, s in _shares(list(mixed_small_catalog().models)) if m.tier.value == "t4"]
    assert len({s.steps for _, s in t4}) >= 3
    tried = 0
    for size in (2, 3, 4):
        for combination in itertools.combinations_with_replacement(t4, size):
            if sum(s.steps for _, s in combination) > STEPS_PER_GPU:
                continue  # Ray would not place these together
            tried += 1
            card = [(m, s.gpu_memory_utilization, _footprint_gib(m, s)) for m, s in combination]
            assert _engines_start(card, total_gib), [m.id for m, _ in combination]
    assert tried > 50


def test_a_share_that_ignores_the_bundle_cannot_start_beside_a_neighbour() -> None:
    """The check above can fail: Ray issue 62553's setup, half-card bundles with the catalog's own
    0.90 utilisation, leaves the second engine without the memory it asks for."""
    model = SHIPPED.by_id("qwen2-5-1-5b-instruct")
    share = gpu_share(model)
    assert share is not None and share.bundle_gpus == 0.5  # Ray puts two of them on one card
    footprint = _footprint_gib(model, share)
    assert _engines_start([(model, share.gpu_memory_utilization, footprint)] * 2, 15.0)
    unaware = model.engine.gpu_memory_utilization
    assert not _engines_start([(model, unaware, footprint)] * 2, 15.0)


def test_packed_llm_configs_carry_the_share() -> None:
    model = SHIPPED.by_id("qwen2-5-1-5b-instruct")
    share = gpu_share(model)
    assert share is not None
    config = llm_config(model)
    assert config["placement_group_config"] == {"bundles": [{"GPU": 0.5}], "strategy": "PACK"}
    assert config["engine_kwargs"]["gpu_memory_utilization"] == share.gpu_memory_utilization
    assert config["engine_kwargs"]["kv_cache_memory_bytes"] == share.kv_cache_memory_bytes
    assert config["runtime_env"] == {"env_vars": {"VLLM_RAY_PER_WORKER_GPUS": "0.5"}}
    whole = llm_config(SHIPPED.by_id("llama-3-1-8b-instruct"))
    assert "placement_group_config" not in whole and "runtime_env" not in whole
    assert "kv_cache_memory_bytes" not in whole["engine_kwargs"]


def test_the_gpu_fraction_reaches_the_replica_that_starts_vllm(ray_oracles: ModuleType) -> None:
    """vLLM's worker asks Ray for VLLM_RAY_PER_WORKER_GPUS of a GPU (1.0 unless set); inside a 0.5
    bundle a request for 1.0 is never scheduled. Ray 2.60 derives the fraction but sets it only for
    its helper tasks (ray-project/ray#63875): the replica's actor options, which Ray builds from the
    LLM config, must carry it, and they do only because the LLM config sets it."""
    model = SHIPPED.by_id("qwen2-5-1-5b-instruct")
    config = llm_config(model)
    with ray_oracles.offline_runtime_context():
        options = ray_oracles.LLMServer.get_deployment_options(ray_oracles.LLMConfig(**config))
    assert options["ray_actor_options"]["runtime_env"]["env_vars"]["VLLM_RAY_PER_WORKER_GPUS"] == "0.5"
    without = {key: value for key, value in config.items() if key != "runtime_env"}
    with ray_oracles.offline_runtime_context():
        options = ray_oracles.LLMServer.get_deployment_options(ray_oracles.LLMConfig(**without))
    env = (options["ray_actor_options"].get("runtime_env") or {}).get("env_vars") or {}
    assert "VLLM_RAY_PER_WORKER_GPUS" not in env


# --- the bin-packing ---------------------------------------------------------------------------


def _with_steps(steps: int, model_id: str) -> ModelEntry:
    """A T4 model whose share is `steps` steps (its concurrency tuned to land there)."""
    for concurrency in range(1, 40):
        model = entry(id=model_id, concurrency=concurrency)
        share = gpu_share(model)
        if share is not None and share.steps == steps:
            return model
    raise AssertionError(f"no concurrency gives {steps} steps")


def test_first_fit_decreasing_worked_example() -> None:
    # Shares 0.5, 0.5, 0.4, 0.4, 0.4 (in steps 10, 10, 8, 8, 8) and a whole-GPU model:
    # whole first; then 0.5+0.5 | 0.4+0.4 | 0.4 = 3 shared cards, 4 in all (6 GPUs without).
    half_a, half_b = _with_steps(10, "half-a"), _with_steps(10, "half-b")
    forty = _with_steps(8, "forty")
    big = SHIPPED.by_id("llama-3-1-8b-instruct")
    demands = [(forty, 3), (half_b, 1), (big, 1), (half_a, 1)]
    packing = pack(demands)
    assert [card.replicas for card in packing.cards] == [
        ("llama-3-1-8b-instruct",),
        ("half-a", "half-b"),
        ("forty", "forty"),
        ("forty",),
    ]
    assert [card.used_steps for card in packing.cards] == [20, 20, 16, 8]
    assert packing.gpus == 4
    assert sum(n * model.tensor_parallel_size for model, n in demands) == 6


def test_a_card_holds_no_more_replicas_than_the_worker_has_cpus() -> None:
    """Each replica's bundle holds one CPU; a one-GPU worker has 6 (infra/plan/ray_service.py), so
    ten 0.1 shares need two cards, not one."""
    tiny = entry(
        id="tiny",
        tier="l4",
        dtype="bfloat16",
        max_model_len=512,
        concurrency=1,
        architecture={
            "parameters_billion": 0.01,
            "num_layers": 2,
            "num_attention_heads": 2,
            "num_kv_heads": 1,
            "head_dim": 64,
            "max_position_embeddings": 2048,
        },
    )
    share = gpu_share(tiny)
    assert share is not None and share.bundle_gpus == 0.1  # 1.52 GiB of an L4's 20.25
    assert pack([(tiny, 10)]).gpus == 1
    capped = pack([(tiny, 10)], replicas_per_card=6)
    assert [len(card.replicas) for card in capped.cards] == [6, 4]


def test_packing_never_overfills_a_card_or_shares_a_tensor_parallel_rank() -> None:
    models = list(mixed_small_catalog().models) + list(SHIPPED.models)
    rng = random.Random(7)
    for _ in range(50):
        demands = [(m, rng.randint(0, 4)) for m in rng.sample(models, rng.randint(1, len(models)))]
        packing = pack(demands)
        for card in packing.cards:
            assert card.used_steps <= STEPS_PER_GPU
            if card.shared:
                assert all(gpu_share(next(m for m in models if m.id == i)) for i in card.replicas)
        assert sorted(i for c in packing.cards for i in c.replicas) == sorted(
            m.id for m, n in demands for _ in range(n * (1 if gpu_share(m) else m.tensor_parallel_size))
        )
        assert packing.gpus <= sum(n * m.tensor_parallel_size for m, n in demands)


def test_packing_does_not_depend_on_the_catalog_order() -> None:
    models = list(mixed_small_catalog().models)
    shuffled = models[:]
    random.Random(3).shuffle(shuffled)
    assert pack([(m, 3) for m in models]) == pack([(m, 3) for m in shuffled])


# --- the saving ----------------------------------------------------------------------------------


def test_twenty_small_models_of_mixed_tasks_need_at_least_half_the_gpus() -> None:
    catalog = mixed_small_catalog()
    assert len(catalog.models) == 20
    assert {m.task for m in catalog.models} == set(Task)
    for replicas in (1, 2, 4):
        assert 2 * packed_gpus(catalog.models, replicas) <= whole_gpus(catalog.models, replicas)


def test_the_dev_stack_serves_its_catalog_at_max_on_half_the_gpus(plans: dict[str, ServingPlan]) -> None:
    tiers = plans["dev"].tier_gpus
    packed, whole = sum(t.at_max_packed for t in tiers), sum(t.at_max_whole for t in tiers)
    assert 2 * packed <= whole, (packed, whole)


def test_bundle_step_is_exact_in_ray_resource_precision() -> None:
    # Ray keeps resource quantities as integers of 1/10000; a step must be a whole number of them.
    assert round(BUNDLE_STEP * 10_000) == BUNDLE_STEP * 10_000
    assert STEPS_PER_GPU * BUNDLE_STEP == 1
