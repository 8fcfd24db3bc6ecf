"""Reading a model's facts (serve/model_facts.py) and its files (serve/model_source.py), offline.

- the shipped models' config.json fixtures give exactly the facts the catalog states, and their
  parameter counts agree with the count computed from the architecture;
- config.json is read the way transformers reads it: defaults for KV heads and head_dim, older
  names, a multimodal model's text_config, packed AWQ/GPTQ weights unpacked;
- what the estimate cannot size is refused with one sentence;
- local directories: safetensors headers, sharded indexes, Hugging Face cache paths, and the
  tiny model the project builds (its parameter count checked against the safetensors library);
- the Hugging Face adapter turns each huggingface_hub failure into one sentence, checked
  against huggingface_hub's own exceptions, a real refused connection and real offline mode.
"""

from __future__ import annotations

import math
import socket
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import huggingface_hub
import pytest
from helpers.fake_hub import install_fake_hub
from helpers.model_fixtures import SHIPPED, HubModel, hf_cache_snapshot, safetensors_bytes, write_model_dir
from huggingface_hub import errors

from serve import tiny_model
from serve.catalog import load_catalog
from serve.model_facts import (
    ENCODER_ARCHITECTURES,
    FactsError,
    TensorInfo,
    count_parameters,
    parameters_billion,
    read_facts,
)
from serve.model_source import HubUnreachable, HuggingFaceHub, LocalModel, SourceError, safetensors_header
from serve.paths import CATALOG_FILE_NAME, REPO_ROOT

QWEN = SHIPPED["qwen2-5-1-5b-instruct"]
LLAMA = SHIPPED["llama-3-1-8b-instruct"]


def facts_of(config: dict[str, Any], tensors: list[TensorInfo] | None = None, **kwargs: Any) -> Any:
    weights = tensors if tensors is not None else [TensorInfo("w", "BF16", (7_000_000_000,))]
    return read_facts(config, lambda: weights, where="test/model@12345678", **kwargs)


def encoder_parameter_count(config: dict[str, Any]) -> int:
    """Parameters of an XLM-RoBERTa encoder (transformers' modeling_xlm_roberta): embeddings (word,
    position, token type, LayerNorm), per layer Q/K/V/O with biases, two LayerNorms and the MLP;
    then the base model's pooler, or a sequence classifier's dense + out_proj head."""
    hidden, layers, inner = config["hidden_size"], config["num_hidden_layers"], config["intermediate_size"]
    embeddings = (
        config["vocab_size"] + config["max_position_embeddings"] + config["type_vocab_size"]
    ) * hidden
    per_layer = 4 * (hidden * hidden + hidden) + 2 * (hidden * inner) + inner + hidden + 4 * hidden
    dense = hidden * hidden + hidden
    if config["architectures"][0].endswith("ForSequenceClassification"):
        labels = len(config["id2label"])
        head = dense + hidden * labels + labels
    else:
        head = dense  # XLMRobertaModel's pooler
    return embeddings + 2 * hidden + layers * per_layer + head


def dense_parameter_count(config: dict[str, Any]) -> int:
    """Parameters of a Llama/Qwen2 decoder or an XLM-RoBERTa encoder from its config: the oracle for
    the fixtures' counts."""
    if config["model_type"] == "xlm-roberta":
        return encoder_parameter_count(config)
    hidden, layers = config["hidden_size"], config["num_hidden_layers"]
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    head_dim = config.get("head_dim") or hidden // heads
    attention = 2 * hidden * heads * head_dim + 2 * hidden * kv_heads * head_dim
    if config["model_type"] == "qwen2":  # Qwen2 has biases on q, k and v
        attention += (heads + 2 * kv_heads) * head_dim
    per_layer = attention + 3 * hidden * config["intermediate_size"] + 2 * hidden  # MLP, two norms
    embeddings = config["vocab_size"] * hidden * (1 if config["tie_word_embeddings"] else 2)
    return layers * per_layer + embeddings + hidden  # + the final norm


# --- the shipped models ------------------------------------------------------------------------


@pytest.mark.parametrize("model_id", sorted(SHIPPED))
def test_config_json_gives_the_facts_the_catalog_ships(model_id: str) -> None:
    fixture = SHIPPED[model_id]
    entry = load_catalog(REPO_ROOT / CATALOG_FILE_NAME).by_id(model_id)
    assert (entry.source, entry.revision) == (fixture.source, fixture.revision)
    facts = facts_of(
        fixture.config, [TensorInfo("w", fixture.dtype, (fixture.parameters,))], task=entry.task.value
    )
    assert facts.architecture == entry.architecture
    assert (facts.checkpoint_dtype, facts.quantization) == (fixture.config["torch_dtype"], None)
    assert facts.parameter_count == fixture.parameters
    assert facts.architecture.encoder_only == (fixture.config["model_type"] == "xlm-roberta")


def test_the_encoder_architectures_are_the_ones_vllm_pools_with_cls(ray_oracles: ModuleType) -> None:
    """vLLM 0.32 runs a pooling model as an encoder (no KV cache) when its registry gives it CLS
    pooling (vllm/config/model.py `ModelConfig.attn_type`); the catalog's table must agree."""
    from vllm.model_executor.models.registry import ModelRegistry

    for name in sorted(ENCODER_ARCHITECTURES):
        info = ModelRegistry._try_inspect_model_cls(name)
        assert info is not None and info.default_seq_pooling_type == "CLS", name
    for causal in ("Qwen2ForCausalLM", "LlamaForCausalLM", "Qwen3ForCausalLM"):
        info = ModelRegistry._try_inspect_model_cls(causal)
        assert info is not None and info.default_seq_pooling_type != "CLS", causal


def test_an_encoder_is_read_as_encoder_only_and_sized_without_a_kv_cache() -> None:
    reranker = SHIPPED["bge-reranker-v2-m3"]
    facts = facts_of(reranker.config, [TensorInfo("w", "F32", (reranker.parameters,))], task="rerank")
    assert facts.architecture.encoder_only
    decoder = facts_of(QWEN.config)
    assert not decoder.architecture.encoder_only


@pytest.mark.parametrize("model_id", sorted(SHIPPED))
def test_fixture_parameter_counts_match_the_architecture(model_id: str) -> None:
    assert dense_parameter_count(SHIPPED[model_id].config) == SHIPPED[model_id].parameters


def test_every_shipped_model_has_a_fixture() -> None:
    catalog = load_catalog(REPO_ROOT / CATALOG_FILE_NAME)
    assert sorted(model.id for model in catalog.models) == sorted(SHIPPED)


# --- reading config.json the way transformers does ------------------------------------------------


def test_kv_heads_default_to_the_attention_heads() -> None:
    config = {k: v for k, v in LLAMA.config.items() if k != "num_key_value_heads"}
    assert facts_of(config).architecture.num_kv_heads == 32


def test_head_dim_defaults_to_hidden_over_heads_and_an_explicit_one_wins() -> None:
    assert facts_of(LLAMA.config).architecture.head_dim == 4096 // 32
    # Gemma-style: head_dim 256 although hidden_size / heads is 192.
    config = {**LLAMA.config, "hidden_size": 3072, "num_attention_heads": 16, "head_dim": 256}
    assert facts_of(config).architecture.head_dim == 256
    assert facts_of({**config, "head_dim": None}).architecture.head_dim == 192


def test_older_names_are_read_like_transformers_attribute_map() -> None:
    gpt2 = {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "n_layer": 12,
        "n_head": 12,
        "n_embd": 768,
        "n_positions": 1024,
        "torch_dtype": "float32",
    }
    arch = facts_of(gpt2).architecture
    assert (arch.num_layers, arch.num_attention_heads, arch.num_kv_heads) == (12, 12, 12)
    assert (arch.head_dim, arch.max_position_embeddings) == (64, 1024)


def test_a_multimodal_models_language_part_is_read_from_text_config() -> None:
    text = {k: v for k, v in LLAMA.config.items() if k not in ("architectures", "torch_dtype")}
    config = {
        "architectures": ["LlavaForConditionalGeneration"],
        "model_type": "llava",
        "text_config": text,
        "vision_config": {"hidden_size": 1024, "num_hidden_layers": 24},
        "torch_dtype": "float16",
    }
    facts = facts_of(config)
    assert facts.architecture.num_layers == 32 and facts.architecture.num_kv_heads == 8
    assert facts.checkpoint_dtype == "float16" and facts.model_class == "LlavaForConditionalGeneration"


def test_dtype_is_read_under_either_name() -> None:
    """transformers 5 writes `dtype` where earlier versions wrote `torch_dtype`."""
    config = {k: v for k, v in QWEN.config.items() if k != "torch_dtype"}
    assert facts_of({**config, "dtype": "float16"}).checkpoint_dtype == "float16"
    assert facts_of(config).checkpoint_dtype is None


def test_a_recorded_parameter_count_spares_reading_the_weights() -> None:
    def no_weights() -> list[TensorInfo]:
        raise AssertionError("the weights were read although config.json records the count")

    facts = read_facts({**QWEN.config, "num_parameters": 1_543_714_304}, no_weights, where="x")
    assert facts.architecture.parameters_billion == 1.54


@pytest.mark.parametrize(
    ("count", "billions"),
    [
        (1_543_714_304, 1.54),
        (8_030_261_248, 8.03),
        (32_763_876_352, 32.76),
        (494_032_768, 0.494),
        (427_136, 0.000427),
    ],
)
def test_parameters_are_written_as_the_catalog_writes_them(count: int, billions: float) -> None:
    assert parameters_billion(count) == billions


# --- quantized checkpoints -------------------------------------------------------------------------


def test_packed_awq_and_gptq_weights_count_the_weights_they_hold() -> None:
    awq = [
        TensorInfo("model.layers.0.mlp.down_proj.qweight", "I32", (4096, 512)),  # 8 weights per int32
        TensorInfo("model.layers.0.mlp.down_proj.qzeros", "I32", (32, 512)),
        TensorInfo("model.layers.0.mlp.down_proj.scales", "F16", (32, 4096)),
        TensorInfo("model.embed_tokens.weight", "F16", (1000, 4096)),
    ]
    assert count_parameters(awq, "awq") == 4096 * 4096 + 1000 * 4096
    gptq = [
        TensorInfo("model.layers.0.mlp.down_proj.qweight", "I32", (512, 4096)),
        TensorInfo("model.layers.0.mlp.down_proj.g_idx", "I32", (4096,)),
    ]
    assert count_parameters(gptq, "gptq") == 4096 * 4096
    config = {**QWEN.config, "quantization_config": {"quant_method": "awq", "bits": 4, "group_size": 128}}
    assert facts_of(config, awq).quantization == "awq"


def test_fp8_checkpoints_are_read() -> None:
    config = {**LLAMA.config, "quantization_config": {"quant_method": "fp8", "activation_scheme": "dynamic"}}
    weights = [TensorInfo("w", "F8_E4M3", (8_030_261_248,)), TensorInfo("w.weight_scale", "F32", ())]
    facts = facts_of(config, weights)
    assert facts.quantization == "fp8" and facts.architecture.parameters_billion == 8.03


# --- refusals: one sentence each ---------------------------------------------------------------------

REFUSED: list[tuple[str, dict[str, Any], tuple[str, ...]]] = [
    ("mixtral-experts", {"num_local_experts": 8, "num_experts_per_tok": 2}, ("mixture-of-experts", "8")),
    ("qwen-moe-experts", {"num_experts": 60}, ("mixture-of-experts", "by hand")),
    ("mla-latent-kv", {"kv_lora_rank": 512}, ("no plain per-layer K/V cache", "kv_lora_rank")),
    ("mamba", {"model_type": "mamba"}, ("no plain per-layer K/V cache", "mamba")),
    (
        "linear-attention-layers",
        {"layer_types": ["full_attention", "linear_attention"]},
        ("no plain per-layer K/V cache", "linear_attention"),
    ),
    (
        "multimodal-without-text-config",
        {"num_hidden_layers": None, "vision_config": {"hidden_size": 1024}},
        ("multimodal", "text_config", "by hand"),
    ),
    ("missing-heads", {"num_attention_heads": None}, ("no num_attention_heads", "add the model by hand")),
    ("zero-layers", {"num_hidden_layers": 0}, ("num_hidden_layers is 0", "positive whole number")),
    ("text-layers", {"num_hidden_layers": "28"}, ("num_hidden_layers is '28'",)),
    ("encoder", {"architectures": ["BertForMaskedLM"]}, ("BertForMaskedLM does not generate text",)),
    ("kv-heads-not-dividing", {"num_key_value_heads": 5}, ("impossible num_kv_heads", "must divide")),
    ("hidden-not-divisible", {"hidden_size": 1000}, ("not a multiple of num_attention_heads 12",)),
    (
        "bitsandbytes",
        {"quantization_config": {"quant_method": "bitsandbytes"}},
        ("'bitsandbytes' is not one the memory estimate knows", "awq", "gptq", "fp8"),
    ),
    ("awq-8-bit", {"quantization_config": {"quant_method": "awq", "bits": 8}}, ("8-bit awq", "4-bit")),
]


@pytest.mark.parametrize(("change", "words"), [(c, w) for _, c, w in REFUSED], ids=[n for n, _, _ in REFUSED])
def test_what_the_estimate_cannot_size_is_refused_in_one_sentence(
    change: dict[str, Any], words: tuple[str, ...]
) -> None:
    config = {k: v for k, v in {**QWEN.config, **change}.items() if v is not None}
    with pytest.raises(FactsError) as raised:
        facts_of(config)
    message = str(raised.value)
    assert message.startswith("test/model@12345678: ") and "\n" not in message
    assert all(word in message for word in words), message


def test_no_weights_and_no_recorded_count_is_refused() -> None:
    with pytest.raises(FactsError, match="no safetensors weights to count"):
        facts_of(QWEN.config, [])


def test_an_unknown_task_is_refused_naming_the_tasks() -> None:
    with pytest.raises(
        FactsError,
        match=r"task 'classify' is not one the catalog serves; the tasks are: generate, embed, rerank",
    ):
        facts_of(QWEN.config, task="classify")


@pytest.mark.parametrize(
    ("architecture", "task", "served"),
    [
        ("Qwen2ForCausalLM", "embed", True),  # vLLM's pooling runner converts a causal LM
        ("BertModel", "embed", True),
        ("XLMRobertaModel", "embed", True),
        ("XLMRobertaForSequenceClassification", "rerank", True),
        ("Qwen2ForCausalLM", "rerank", False),
        ("BertForMaskedLM", "embed", False),
        ("XLMRobertaForSequenceClassification", "generate", False),
    ],
)
def test_the_architecture_must_serve_the_task(architecture: str, task: str, served: bool) -> None:
    config = {**QWEN.config, "architectures": [architecture]}
    if served:
        assert facts_of(config, task=task).architecture.num_layers == QWEN.config["num_hidden_layers"]
        return
    with pytest.raises(FactsError) as raised:
        facts_of(config, task=task)
    assert f"{architecture} " in str(raised.value) and f"task {task!r} needs" in str(raised.value)


# --- local directories ----------------------------------------------------------------------------------


def test_a_local_directory_is_read_from_config_json_and_safetensors_headers(tmp_path: Path) -> None:
    directory = write_model_dir(tmp_path / "qwen", QWEN.config, QWEN.tensors())
    model = LocalModel(directory)
    facts = read_facts(model.config(), model.tensors, where=str(directory))
    assert facts.architecture == load_catalog(REPO_ROOT / CATALOG_FILE_NAME).models[0].architecture
    assert (directory / "model.safetensors").stat().st_size < 1000  # the header alone


def test_sharded_weights_are_the_ones_the_index_names(tmp_path: Path) -> None:
    directory = write_model_dir(tmp_path / "sharded", QWEN.config, None)
    (directory / "model-00001-of-00002.safetensors").write_bytes(safetensors_bytes({"a": ("BF16", [10, 10])}))
    (directory / "model-00002-of-00002.safetensors").write_bytes(safetensors_bytes({"b": ("BF16", [5])}))
    # Mistral-style repos also ship a consolidated copy; vLLM loads the indexed shards.
    (directory / "consolidated.safetensors").write_bytes(safetensors_bytes({"a": ("BF16", [10, 10])}))
    index = (
        '{"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}'
    )
    (directory / "model.safetensors.index.json").write_text(index)
    assert count_parameters(LocalModel(directory).tensors(), None) == 105


def test_a_huggingface_cache_snapshot_names_its_repo_and_commit(tmp_path: Path) -> None:
    snapshot = write_model_dir(hf_cache_snapshot(tmp_path, QWEN.source, QWEN.revision), QWEN.config, {})
    assert LocalModel(snapshot).origin() == (QWEN.source, QWEN.revision)
    assert LocalModel(tmp_path).origin() is None


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"", "not a readable safetensors file"),
        (b"\xff" * 8 + b"{}", "no safetensors header length"),
        (b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!", "not a readable safetensors file"),
    ],
    ids=["empty", "absurd-length", "not-json"],
)
def test_a_broken_safetensors_file_is_one_sentence(tmp_path: Path, content: bytes, words: str) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(content)
    with pytest.raises(SourceError) as raised:
        safetensors_header(path)
    assert words in str(raised.value) and str(path) in str(raised.value) and "\n" not in str(raised.value)


def test_a_config_json_that_is_not_json_names_the_line(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{\n  "num_hidden_layers": 28,\n  oops\n}')
    with pytest.raises(SourceError, match=r"config.json is not valid JSON \(line 3: "):
        LocalModel(tmp_path).config()


def test_the_tiny_model_is_read_from_its_own_files() -> None:
    """The model the project builds offline: save_pretrained's config.json and safetensors."""
    from safetensors import safe_open

    directory = tiny_model.ensure_tiny_model()
    model = LocalModel(directory)
    facts = read_facts(model.config(), model.tensors, where=str(directory))
    arch = facts.architecture
    assert (arch.num_layers, arch.num_attention_heads, arch.num_kv_heads) == (
        tiny_model.NUM_LAYERS,
        tiny_model.NUM_ATTENTION_HEADS,
        tiny_model.NUM_KV_HEADS,
    )
    assert (arch.head_dim, arch.max_position_embeddings) == (
        tiny_model.HEAD_DIM,
        tiny_model.MAX_POSITION_EMBEDDINGS,
    )
    assert facts.checkpoint_dtype == tiny_model.TORCH_DTYPE
    with safe_open(str(directory / "model.safetensors"), framework="numpy") as weights:
        names = weights.keys()  # a safetensors handle, not a dict: keys() is its API
        expected = sum(math.prod(weights.get_slice(name).get_shape()) for name in names)
    assert facts.parameter_count == expected


# --- the Hugging Face adapter -------------------------------------------------------------------------------


def _sentence(call: Any) -> SourceError:
    with pytest.raises(SourceError) as raised:
        call()
    message = str(raised.value)
    assert "\n" not in message and "Traceback" not in message and "Client Error" not in message
    return raised.value


def test_the_hub_adapter_reads_a_pinned_model(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    install_fake_hub(monkeypatch, tmp_path)
    hub = HuggingFaceHub()
    commit = hub.resolve(QWEN.source, "main")
    assert commit == QWEN.revision
    assert hub.config(QWEN.source, commit) == QWEN.config
    assert count_parameters(hub.tensors(QWEN.source, commit), None) == QWEN.parameters


def test_hub_failures_are_one_sentence_each(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = install_fake_hub(monkeypatch, tmp_path)
    hub = HuggingFaceHub()

    unknown = _sentence(lambda: hub.resolve("Qwen/Qwen9-Nope", "main"))
    assert "Qwen/Qwen9-Nope is not a model repo on the Hugging Face Hub" in str(unknown)
    assert unknown.field == "source"

    revision = _sentence(lambda: hub.resolve(QWEN.source, "v9.9"))
    assert "has no revision 'v9.9'" in str(revision) and revision.field == "revision"

    no_token = _sentence(lambda: hub.config(LLAMA.source, LLAMA.revision))
    assert "gated on Hugging Face and no token was sent" in str(no_token)
    assert f"https://huggingface.co/{LLAMA.source}" in str(no_token) and "HF_TOKEN" in str(no_token)

    fake.token = "hf_" + "a" * 34
    no_access = _sentence(lambda: hub.config(LLAMA.source, LLAMA.revision))
    assert "your token (HF_TOKEN or `hf auth login`) has no access" in str(no_access)
    assert fake.token not in str(no_access)
    fake.tokens_with_access.add(fake.token)
    assert hub.config(LLAMA.source, LLAMA.revision) == LLAMA.config

    fake.unreachable = True
    offline = _sentence(lambda: hub.resolve(QWEN.source, "main"))
    assert isinstance(offline, HubUnreachable) and "cannot reach the Hugging Face Hub" in str(offline)


@pytest.mark.parametrize(
    ("raised", "kind", "words"),
    [
        (errors.NotASafetensorsRepoError("no safetensors"), SourceError, "has no safetensors weights"),
        (errors.SafetensorsParsingError("bad header"), SourceError, "safetensors headers of"),
        (errors.LocalEntryNotFoundError("not cached"), HubUnreachable, "not in the local cache"),
        (
            errors.HfHubHTTPError(
                "503 Server Error", response=SimpleNamespace(status_code=503, headers={}, request=None)
            ),
            SourceError,
            "answered HTTP 503",
        ),
        (TimeoutError("read timed out"), HubUnreachable, "(TimeoutError)"),
    ],
    ids=["not-safetensors", "unparsable-header", "download-unreachable", "server-error", "timeout"],
)
def test_other_hub_failures(
    monkeypatch: pytest.MonkeyPatch, raised: Exception, kind: type[SourceError], words: str
) -> None:
    def fail(*args: Any, **kwargs: Any) -> Any:
        raise raised

    monkeypatch.setattr(huggingface_hub.HfApi, "get_safetensors_metadata", fail)
    error = _sentence(lambda: HuggingFaceHub().tensors(QWEN.source, QWEN.revision))
    assert type(error) is kind and words in str(error)


def test_a_refused_connection_is_hub_unreachable() -> None:
    """huggingface_hub's real HTTP client against a local port nobody listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    error = _sentence(
        lambda: HuggingFaceHub(endpoint=f"http://127.0.0.1:{port}").resolve(QWEN.source, "main")
    )
    assert isinstance(error, HubUnreachable)
    assert "cannot reach the Hugging Face Hub to read Qwen/Qwen2.5-1.5B-Instruct" in str(error)


def test_offline_mode_is_hub_unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    error = _sentence(lambda: HuggingFaceHub().resolve(QWEN.source, "main"))
    assert isinstance(error, HubUnreachable) and "HF_HUB_OFFLINE is set" in str(error)


def test_fixture_models_are_served_by_source() -> None:
    assert {model.source for model in SHIPPED.values()} == {
        "Qwen/Qwen2.5-1.5B-Instruct",
        "meta-llama/Llama-3.1-8B-Instruct",
        "Qwen/Qwen2.5-32B-Instruct",
        "intfloat/multilingual-e5-large",
        "BAAI/bge-reranker-v2-m3",
    }
    assert all(isinstance(model, HubModel) for model in SHIPPED.values()) and LLAMA.gated
