"""Properties of the catalog → settings → plan pipeline, over generated inputs.

- Random *valid* catalogs (built from the tier table and the memory estimate, so every model
  fits its tier by construction) with random valid stack settings always plan, and what the
  plan hands to the cluster is accepted by Ray's and KubeRay's own definitions: every LLM config
  constructs `ray.serve.llm.LLMConfig`, the serve config validates as `ServeDeploySchema`
  (as planned and as parsed back from serveConfigV2), and the RayService validates against the
  KubeRay v1.7.0 CRD (`helpers.crd_schema.validate_ray_service`).
- Random *invalid* mutations of a valid catalog or stack file (one field given a bad value
  from a per-field list, or an unknown key injected) are always refused with a located
  problem naming the file, a line inside the file, on which the mutated key is written, and
  the mutated field path.

Deterministic: every test uses `derandomize=True` and a fixed number of examples.
"""

from __future__ import annotations

import copy
import math
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from helpers.crd_schema import validate_ray_service
from helpers.documents import ray_service_document
from helpers.stack_files import STACKS, raw_config
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from configcheck.problems import ConfigError
from infra.plan import build_plan
from infra.settings import MAX_NODES_PER_TIER, load_stack_file, stack_file
from serve.autoscaling import MAX_REPLICAS_BOUND
from serve.catalog import MAX_TENSOR_PARALLEL, load_catalog
from serve.gpu_share import SPREAD_WARM_REPLICAS
from serve.memory import BYTES_PER_WEIGHT, GIB, KV_BYTES_PER_ELEMENT, RUNTIME_OVERHEAD_GIB_PER_GPU, estimate
from serve.paths import CATALOG_FILE_NAME
from serve.tiers import PRICES_REGION, TIERS, TierName

BASE_SETTINGS = settings(
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
VALID_EXAMPLES = 50
INVALID_EXAMPLES = 200


def examples(count: int) -> settings:
    return settings(BASE_SETTINGS, max_examples=count)


DNS_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789"
HEX = "0123456789abcdef"


# --- valid catalogs, valid by construction -----------------------------------------------------


@st.composite
def model_entries(draw: st.DrawFn, model_id: str) -> dict[str, Any]:
    """One catalog entry whose architecture, dtype, TP and memory fit its tier."""
    tier_name = draw(st.sampled_from(list(TierName)))
    tier = TIERS[tier_name]
    tp = draw(st.sampled_from([n for n in tier.gpu_counts_per_node if n <= MAX_TENSOR_PARALLEL]))
    kv_heads = draw(st.sampled_from([1, 2, 4, 8]))
    heads = max(kv_heads, tp) * draw(st.integers(1, 8))  # powers of two: divisible by both
    head_dim = draw(st.sampled_from([64, 80, 96, 128, 256]))
    layers = draw(st.integers(1, 96))
    max_positions = draw(st.sampled_from([2048, 4096, 8192, 32768, 131072]))
    dtype = draw(st.sampled_from(["float16", "bfloat16"] if tier.supports_bf16 else ["float16"]))
    quantization = draw(st.sampled_from([None, "awq", "gptq", *(["fp8"] if tier.supports_fp8 else [])]))
    utilization = draw(st.sampled_from([0.6, 0.8, 0.85, 0.9, 0.95, 0.98]))

    budget = tier.vram_gib * tp * utilization - RUNTIME_OVERHEAD_GIB_PER_GPU * tp
    assume(budget > 0.5)
    kv_per_token_gib = 2 * layers * kv_heads * head_dim * KV_BYTES_PER_ELEMENT / GIB
    kv_share = draw(st.floats(0.05, 0.6))
    longest = min(max_positions, int(budget * kv_share / kv_per_token_gib))
    assume(longest >= 16)
    max_model_len = draw(st.integers(16, longest))
    concurrency = draw(
        st.integers(1, max(1, min(4096, int(budget * kv_share / (kv_per_token_gib * max_model_len)))))
    )
    weights_gib = budget - kv_per_token_gib * max_model_len * concurrency
    weights_share = draw(st.floats(0.01, 0.95))
    parameters = (
        math.floor(weights_gib * weights_share * GIB / BYTES_PER_WEIGHT[quantization or dtype] / 1e7) / 100
    )
    assume(0 < parameters <= 2000)

    entry: dict[str, Any] = {
        "id": model_id,
        "source": draw(
            st.sampled_from(["Qwen/Qwen2.5-7B-Instruct", "meta-llama/Llama-3.1-8B", "org/model.v2"])
        ),
        "revision": draw(st.text(HEX, min_size=40, max_size=40)),
        "tier": tier_name.value,
        "dtype": dtype,
        "max_model_len": max_model_len,
        "concurrency": concurrency,
        "architecture": {
            "parameters_billion": parameters,
            "num_layers": layers,
            "num_attention_heads": heads,
            "num_kv_heads": kv_heads,
            "head_dim": head_dim,
            "max_position_embeddings": max_positions,
        },
        "engine": {"gpu_memory_utilization": utilization},
    }
    if tp > 1 or draw(st.booleans()):
        entry["tensor_parallel_size"] = tp
    if quantization is not None:
        entry["quantization"] = quantization
    engine = entry["engine"]
    max_num_seqs = draw(st.none() | st.integers(1, 1024))
    if max_num_seqs is not None:
        engine["max_num_seqs"] = max_num_seqs
    chunked = draw(st.none() | st.booleans())
    if chunked is not None:
        engine["enable_chunked_prefill"] = chunked
    if draw(st.booleans()):
        lowest = max(max_num_seqs or 1, max_model_len if chunked is False else 1)
        engine["max_num_batched_tokens"] = draw(st.integers(lowest, max(lowest, 65536)))
    for flag in ("enable_prefix_caching", "enforce_eager"):
        value = draw(st.none() | st.booleans())
        if value is not None:
            engine[flag] = value

    # Valid by construction; the project's own estimate must agree.
    fits = estimate(
        parameters_billion=parameters,
        num_layers=layers,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        dtype=dtype,
        quantization=quantization,
        max_model_len=max_model_len,
        concurrency=concurrency,
        tensor_parallel_size=tp,
        vram_gib_per_gpu=tier.vram_gib,
        gpu_memory_utilization=utilization,
    ).fits
    assert fits, entry
    return entry


@st.composite
def catalogs(draw: st.DrawFn) -> dict[str, Any]:
    ids = draw(
        st.lists(
            st.text(DNS_CHARS, min_size=1, max_size=20).map(lambda s: f"m-{s}"),
            min_size=1,
            max_size=4,
            unique=True,
        )
    )
    return {"models": [draw(model_entries(model_id)) for model_id in ids]}


@st.composite
def stack_configs(draw: st.DrawFn, catalog: dict[str, Any]) -> dict[str, Any]:
    """Valid settings for every tier; a tier with models is enabled at least once, its nodes are
    big enough for the largest tensor-parallel model on it, and its pool at maxNodes holds each
    model at maxReplicas and all of them at minReplicas twice over, as an upgrade's two clusters
    do (the plan's capacity rule)."""
    widest: dict[str, int] = {}
    total_tp: dict[str, int] = {}
    for model in catalog["models"]:
        tp = model.get("tensor_parallel_size", 1)
        widest[model["tier"]] = max(widest.get(model["tier"], 1), tp)
        total_tp[model["tier"]] = total_tp.get(model["tier"], 0) + tp
    must_enable = draw(st.sampled_from(sorted(widest)))
    gpus_per_node = {
        name: draw(
            st.sampled_from([n for n in TIERS[name].gpu_counts_per_node if n >= widest.get(name.value, 1)])
        )
        for name in TierName
    }
    # The largest replica bounds that every tier's biggest possible pool can hold.
    most_gpus = {name.value: MAX_NODES_PER_TIER * gpus_per_node[name] for name in TierName}
    max_replicas = draw(
        st.integers(1, min([MAX_REPLICAS_BOUND, *(most_gpus[t] // widest[t] for t in widest)]))
    )
    # Twice the warm replicas' whole nodes must fit maxNodes.
    most_warm_gpus = {name.value: MAX_NODES_PER_TIER // 2 * gpus_per_node[name] for name in TierName}
    min_replicas = draw(
        st.integers(0, min([max_replicas, *(most_warm_gpus[t] // total_tp[t] for t in total_tp)]))
    )

    def replica_gpus(tier: TierName, tp: int, warm: int) -> int:
        # Two or more warm replicas: a replica leaving GPUs free keeps its node (serve.gpu_share).
        return gpus_per_node[tier] if warm >= SPREAD_WARM_REPLICAS else tp

    def nodes_needed(tier: TierName, warm: int) -> int:
        per_node = gpus_per_node[tier]
        on_tier = [m.get("tensor_parallel_size", 1) for m in catalog["models"] if m["tier"] == tier.value]
        widest_gpus = max((replica_gpus(tier, tp, warm) for tp in on_tier), default=0)
        warm_gpus = sum(replica_gpus(tier, tp, warm) for tp in on_tier) * warm
        # Each cluster's worker pods take whole nodes: an upgrade's two clusters need twice the
        # warm replicas' nodes, not twice their GPUs (a generated 8-GPU stack with ten warm GPUs
        # needs four nodes, not three).
        return max(-(-max_replicas * widest_gpus // per_node), 2 * -(-warm_gpus // per_node), 1)

    if any(nodes_needed(name, min_replicas) > MAX_NODES_PER_TIER for name in TierName):
        min_replicas = 1  # spreading would need more nodes than a pool may have
    tiers: dict[str, Any] = {}
    for name in TierName:
        tier = TIERS[name]
        enabled = name.value == must_enable or draw(st.booleans())
        max_nodes = draw(st.integers(nodes_needed(name, min_replicas), MAX_NODES_PER_TIER))
        zones = draw(st.lists(st.sampled_from(tier.zones_in_price_region), min_size=1, unique=True))
        tiers[name.value] = {
            "enabled": enabled,
            "spot": draw(st.booleans()),
            "gpusPerNode": gpus_per_node[name],
            "minNodes": draw(st.integers(0, max_nodes)),
            "maxNodes": max_nodes,
            "zones": zones,
        }
        if draw(st.booleans()):  # optional, like onDemandFallback: absent means 0
            tiers[name.value]["spareNodes"] = draw(st.integers(0, max_nodes))
    max_ongoing = draw(st.integers(1, 4096))
    config: dict[str, Any] = {
        "gcp:region": PRICES_REGION,
        "llm-serving:tiers": tiers,
        "llm-serving:autoscaling": {
            "minReplicas": min_replicas,
            "maxReplicas": max_replicas,
            "targetOngoingRequests": draw(st.integers(1, min(max_ongoing, 1024)) | st.just(0.5)),
            "maxOngoingRequests": max_ongoing,
            "upscaleDelaySeconds": draw(st.integers(0, 3600)),
            "downscaleDelaySeconds": draw(st.floats(0, 86400, allow_nan=False)),
        },
    }
    if draw(st.booleans()):
        config["gcp:project"] = "my-gcp-project-1"
    if draw(st.booleans()):
        config["llm-serving:hfToken"] = {"secure": "v1:AAAABBBBCCCCDDDD"}
    return config


def write(directory: Path, name: str, data: Any) -> Path:
    path = directory / name
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


@st.composite
def valid_inputs(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    catalog = draw(catalogs())
    return catalog, draw(stack_configs(catalog))


@examples(VALID_EXAMPLES)
@given(valid_inputs())
def test_valid_inputs_always_plan_into_what_ray_and_kuberay_accept(
    ray_oracles: ModuleType, inputs: tuple[dict[str, Any], dict[str, Any]]
) -> None:
    catalog_data, config = inputs
    with tempfile.TemporaryDirectory() as directory:
        catalog = load_catalog(write(Path(directory), CATALOG_FILE_NAME, catalog_data))
        stack = load_stack_file(write(Path(directory), stack_file("gen").name, {"config": config}))
    plan = build_plan(catalog, stack)

    enabled = {name for name, tier in config["llm-serving:tiers"].items() if tier["enabled"]}
    assert plan.served_model_ids == [m["id"] for m in catalog_data["models"] if m["tier"] in enabled]
    assert plan.served_model_ids, "every generated stack serves at least one model"
    for raw in plan.llm_configs:
        ray_oracles.LLMConfig(**copy.deepcopy(raw))
    ray_oracles.ServeDeploySchema.model_validate(copy.deepcopy(plan.serve_config))
    from_yaml = yaml.safe_load(plan.ray_service_spec["serveConfigV2"])
    ray_oracles.ServeDeploySchema.model_validate(from_yaml)
    assert validate_ray_service(ray_service_document(plan.ray_service_spec)) == []


# --- invalid mutations ---------------------------------------------------------------------------

Path_ = tuple[str | int, ...]
BadValues = list[Any]

MODEL_BAD_VALUES: dict[Path_, BadValues] = {
    ("id",): ["Bad_Id", "", 123, "-x", "x" * 64, None, ["a"], "a.b"],
    ("source",): ["no-slash", "a/b/c", 5, "https://huggingface.co/a/b", None, "/name"],
    ("revision",): ["main", "abc1234", "A" * 40, 1234567, None, "g" * 40],
    ("tier",): ["h100", "T4", 4, None, ["t4"], "cpu"],
    ("tensor_parallel_size",): [0, -1, 16, "2", 2.0, None, True, 3],
    ("dtype",): ["fp32", "float32", 16, None, "half"],
    ("quantization",): ["int8", 8, ["awq"], "bnb"],
    ("max_model_len",): [0, 15, "8192", 8192.5, None, 10**8, False],
    ("concurrency",): [0, -1, "8", 5000, 1.5, None, True],
    ("architecture",): ["x", [1, 2], None, 7],
    ("architecture", "parameters_billion"): [0, -1, "7", 5000, None, True],
    ("architecture", "num_layers"): [0, 1001, "32", 3.5, None],
    ("architecture", "num_attention_heads"): [0, 2000, "x", None, 4.0],
    ("architecture", "num_kv_heads"): [0, "8", None, -2],
    ("architecture", "head_dim"): [0, 2048, "128", None],
    ("architecture", "max_position_embeddings"): [0, "x", None, 10**9],
    ("engine",): ["fast", [1], None, 3],
    ("engine", "gpu_memory_utilization"): [0.5, 0.99, 1.5, "0.9", True, None, 0],
    ("engine", "max_num_seqs"): [0, 2000, "64", 1.5],
    ("engine", "max_num_batched_tokens"): [0, "8192", 2**21],
    ("engine", "enable_prefix_caching"): ["yes", 1, "true"],
    ("engine", "enable_chunked_prefill"): ["no", 0],
    ("engine", "enforce_eager"): ["false", 1.0],
}
TIER_BAD_VALUES: dict[Path_, BadValues] = {
    ("enabled",): ["yes", 1, None, "true"],
    ("spot",): ["true", 0, None],
    ("gpusPerNode",): [0, 17, 3, "1", 1.0, None, 5],
    ("minNodes",): [-1, 33, "0", None, 0.5],
    ("maxNodes",): [0, 33, "2", -5, None, 1000],
    # 7: above every shipped tier's maxNodes (at most 6), so refused on spareNodes' own line.
    ("spareNodes",): [-1, "1", 1.5, None, 33, 7],
    ("zones",): [[], "us-central1-a", [1], ["europe-west4-a"], ["nowhere"], None, ["us-central1-z"]],
}
SCALING_BAD_VALUES: dict[Path_, BadValues] = {
    ("minReplicas",): [-1, 65, "0", None, 0.5],
    ("maxReplicas",): [0, 65, "4", None],
    ("targetOngoingRequests",): [0, -1, "8", 2000, True, None],
    ("maxOngoingRequests",): [0, 5000, "32", 1.5, None],
    ("upscaleDelaySeconds",): [-1, 4000, "30", None],
    ("downscaleDelaySeconds",): [-1, 90000, "x", None],
}
UNKNOWN_KEYS = ["bogus", "max_model_lenght", "gpuMemoryUtilization", "nodes", "tier_name"]
CONFIG_UNKNOWN_KEYS = [
    "llm-serving:clusterName",
    "gcp:zone",
    "aws:region",
    "llm-serving:tier",
    "kubernetes:context",
]


def set_at(data: Any, path: Path_, value: Any) -> None:
    for part in path[:-1]:
        data = data[part]
    data[path[-1]] = value


def format_path(path: Path_) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


Mutation = tuple[Any, Path_, str]  # (mutated data, path of the mutated key, key written on its line)


@st.composite
def bad_catalogs(draw: st.DrawFn) -> Mutation:
    data = copy.deepcopy(draw(catalogs()))
    index = draw(st.integers(0, len(data["models"]) - 1))
    model = data["models"][index]
    if draw(st.integers(0, 4)) == 0:  # an unknown key at some level of the document
        parent: Path_ = draw(st.sampled_from([(), ("models", index), ("models", index, "architecture")]))
        if parent == ("models", index):
            parent = draw(st.sampled_from([parent, ("models", index, "engine")]))
        key = draw(st.sampled_from(UNKNOWN_KEYS))
        target: Any = data
        for part in parent:
            target = target[part]
        assume(key not in target)
        target[key] = draw(st.sampled_from([1, "x", True]))
        return data, (*parent, key), key
    field = draw(st.sampled_from(sorted(MODEL_BAD_VALUES)))
    bad = draw(st.sampled_from(MODEL_BAD_VALUES[field]))
    set_at(model, field, bad)
    return data, ("models", index, *field), str(field[-1])


@st.composite
def bad_stacks(draw: st.DrawFn) -> Mutation:
    config = copy.deepcopy(raw_config(draw(st.sampled_from(STACKS))))
    data: dict[str, Any] = {"config": config}
    kind = draw(st.sampled_from(["tier", "scaling", "unknown", "region", "token"]))
    if kind == "tier":
        tier = draw(st.sampled_from([t.value for t in TierName]))
        field = draw(st.sampled_from(sorted(TIER_BAD_VALUES)))
        bad = draw(st.sampled_from(TIER_BAD_VALUES[field]))
        config["llm-serving:tiers"][tier][field[0]] = bad
        return data, ("config", "llm-serving:tiers", tier, *field), str(field[-1])
    if kind == "scaling":
        field = draw(st.sampled_from(sorted(SCALING_BAD_VALUES)))
        config["llm-serving:autoscaling"][field[0]] = draw(st.sampled_from(SCALING_BAD_VALUES[field]))
        return data, ("config", "llm-serving:autoscaling", *field), str(field[-1])
    if kind == "region":
        config["gcp:region"] = draw(st.sampled_from(["US", 5, "us_central1", None, "us-central"]))
        return data, ("config", "gcp:region"), "gcp:region"
    if kind == "token":
        token = "hf_" + draw(
            st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123456789", min_size=30, max_size=36)
        )
        config["llm-serving:hfToken"] = token
        return data, ("config", "llm-serving:hfToken"), "llm-serving:hfToken"
    where = draw(st.sampled_from(["config", "tier", "scaling", "top"]))
    if where == "config":
        key = draw(st.sampled_from(CONFIG_UNKNOWN_KEYS))
        config[key] = "x"
        return data, ("config", key), key
    key = draw(st.sampled_from(UNKNOWN_KEYS))
    if where == "top":
        data[key] = 1
        return data, (key,), key
    if where == "tier":
        tier = draw(st.sampled_from([t.value for t in TierName]))
        config["llm-serving:tiers"][tier][key] = 1
        return data, ("config", "llm-serving:tiers", tier, key), key
    config["llm-serving:autoscaling"][key] = 1
    return data, ("config", "llm-serving:autoscaling", key), key


def assert_refused_at(load: Callable[[Path], Any], path: Path, mutated: Path_, key: str) -> None:
    text = path.read_text(encoding="utf-8")
    line_count = len(text.splitlines())
    with pytest.raises(ConfigError) as raised:
        load(path)
    problems = raised.value.problems
    field = format_path(mutated)
    for problem in problems:
        assert problem.file == str(path)
        assert 1 <= problem.line <= line_count, problem
        assert "\n" not in problem.message and problem.message
    on_field = [p for p in problems if p.field == field or p.field.startswith((f"{field}[", f"{field}."))]
    assert on_field, f"nothing reported on {field}:\n{raised.value}"
    for problem in on_field:
        written = text.splitlines()[problem.line - 1]
        if problem.field == field:
            # The problem points at the line where the mutated key is written.
            assert written.lstrip(" -").startswith(f"{key}:"), (problem, written)


@examples(INVALID_EXAMPLES)
@given(bad_catalogs())
def test_invalid_catalog_mutations_are_refused_at_the_mutated_field(mutation: Mutation) -> None:
    data, mutated, key = mutation
    with tempfile.TemporaryDirectory() as directory:
        path = write(Path(directory), CATALOG_FILE_NAME, data)
        assert_refused_at(load_catalog, path, mutated, key)


@examples(INVALID_EXAMPLES)
@given(bad_stacks())
def test_invalid_stack_mutations_are_refused_at_the_mutated_field(mutation: Mutation) -> None:
    data, mutated, key = mutation
    with tempfile.TemporaryDirectory() as directory:
        path = write(Path(directory), stack_file("dev").name, data)
        assert_refused_at(load_stack_file, path, mutated, key)
