"""A model's architecture facts, read from its config.json the way vLLM and transformers read them.

The memory estimate (serve/memory.py) needs six numbers per model: the parameter count, layers,
attention heads, KV heads, head dim and the longest trained context. Copied by hand they are
where typos hide, so `python -m serve.catalog add` and `check --verify` read them here:

- `num_hidden_layers`, `num_attention_heads`, `max_position_embeddings` as written;
- `num_key_value_heads`, defaulting to the attention heads (no grouped-query attention);
- `head_dim`, defaulting to `hidden_size // num_attention_heads` (transformers' default);
- the parameter count from the safetensors headers (the element count of every tensor), since
  config.json rarely records it; packed 4-bit AWQ/GPTQ weights are unpacked to the weights they
  hold, because the estimate multiplies parameters by 0.5625 bytes for them.

A model the estimate would size wrongly is refused with one sentence (FactsError): a mixture of
experts, attention without a per-layer KV cache (MLA, state-space or linear-attention layers), a
quantization it does not know, or a config without the fields above. Pure: no file or network
access (serve/model_source.py reads the files).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

from pydantic import ValidationError

from serve.catalog import Architecture, Task
from serve.memory import BYTES_PER_WEIGHT_BY_QUANTIZATION

# What a catalog model is served for (serve.catalog.Task), the default first.
TASKS: Final = tuple(task.value for task in Task)

# Class-name endings of the transformers classes that generate text (vLLM's generate task).
_GENERATIVE_CLASS_ENDINGS: Final = ("ForCausalLM", "ForConditionalGeneration", "LMHeadModel")
# What each task can serve, by the config's first architecture. Embeddings: an encoder's base
# model (BertModel, XLMRobertaModel, ...) or a causal LM, which vLLM's pooling runner converts
# (`convert: embed`). Rerank: a cross-encoder, a sequence classifier (vLLM scores pairs with it).
_TASK_CLASS_ENDINGS: Final[Mapping[str, tuple[str, ...]]] = {
    Task.GENERATE.value: _GENERATIVE_CLASS_ENDINGS,
    Task.EMBED.value: ("Model", *_GENERATIVE_CLASS_ENDINGS),
    Task.RERANK.value: ("ForSequenceClassification",),
    Task.TRANSCRIBE.value: ("ForConditionalGeneration",),
}
_TASK_NEEDS: Final[Mapping[str, str]] = {
    Task.GENERATE.value: "a ...ForCausalLM or ...ForConditionalGeneration model; pick a chat or instruct one",
    Task.EMBED.value: "an encoder (...Model) or a causal LM vLLM can pool; pick an embedding model",
    Task.RERANK.value: "a cross-encoder (...ForSequenceClassification); pick a reranker",
    Task.TRANSCRIBE.value: "a speech-to-text encoder-decoder (WhisperForConditionalGeneration); pick a "
    "Whisper model",
}

# Encoders: vLLM runs a pooling model whose default sequence pooling is CLS with bidirectional
# attention and no KV cache (vllm/config/model.py `ModelConfig.attn_type`: "encoder_only"). These
# are the text encoders vLLM 0.32's registry gives CLS pooling (tests/test_model_facts.py asks
# the registry); anything else pools causally and keeps a KV cache, which the estimate counts.
ENCODER_ARCHITECTURES: Final = frozenset(
    {
        "BertModel",
        "BertForSequenceClassification",
        "BertSpladeSparseEmbeddingModel",
        "GteModel",
        "GteNewModel",
        "ModernBertModel",
        "ModernBertForSequenceClassification",
        "NomicBertModel",
        "RobertaModel",
        "RobertaForSequenceClassification",
        "XLMRobertaModel",
        "XLMRobertaForSequenceClassification",
    }
)

# Older architectures (GPT-2, GPT-J) use other names; transformers maps them with each config
# class's `attribute_map`, so the same numbers are found here under either name.
_ALIASES: Final[Mapping[str, tuple[str, ...]]] = {
    "num_hidden_layers": ("n_layer",),
    "num_attention_heads": ("n_head",),
    "num_key_value_heads": ("num_kv_heads",),
    "hidden_size": ("n_embd",),
    "max_position_embeddings": ("n_positions",),
}

# A mixture of experts: the dense estimate ignores expert-parallel layouts and the fused-MoE
# kernels' workspace, so it would promise a fit vLLM might not deliver.
_EXPERT_KEYS: Final = ("num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts")
# The KV cache formula assumes every layer keeps K and V of num_kv_heads x head_dim per token;
# these layer kinds keep something else (a latent vector, a recurrent state) or nothing.
_NO_KV_FORMULA_KEYS: Final = ("kv_lora_rank", "layers_block_type", "hybrid_override_pattern")
_NO_KV_MODEL_TYPES: Final = ("mamba", "rwkv", "xlstm")
_ATTENTION_LAYER_TYPES: Final = ("full_attention", "sliding_attention")

# Quantized checkpoints the catalog accepts (serve/memory.py) and the weight width it assumes.
QUANTIZATIONS: Final = tuple(BYTES_PER_WEIGHT_BY_QUANTIZATION)
_PACKED_QUANTIZATIONS: Final = ("awq", "gptq")
_PACKED_BITS: Final = 4
# Per-group scales, zero points and the act-order index of packed weights: already counted in
# the estimate's 0.5625 bytes per weight, so they are not parameters of their own.
_PACKING_TENSOR_SUFFIXES: Final = (".qzeros", ".scales", ".g_idx")
# Bits per element of each safetensors dtype, to unpack integer-packed weights.
_DTYPE_BITS: Final = {
    "F64": 64, "I64": 64, "U64": 64,
    "F32": 32, "I32": 32, "U32": 32,
    "F16": 16, "BF16": 16, "I16": 16, "U16": 16,
    "F8_E4M3": 8, "F8_E5M2": 8, "I8": 8, "U8": 8, "BOOL": 8,
}  # fmt: skip

# What each Architecture field is called where it is read, for messages that say what to copy.
FACT_SOURCES: Final = {
    "parameters_billion": "the safetensors weights' element count",
    "num_layers": "num_hidden_layers",
    "num_attention_heads": "num_attention_heads",
    "num_kv_heads": "num_key_value_heads",
    "head_dim": "head_dim, or hidden_size / num_attention_heads",
    "max_position_embeddings": "max_position_embeddings",
    "encoder_only": "architectures (an encoder vLLM pools with CLS: BertModel, XLMRobertaModel, ...)",
    "encoder_positions": "max_source_positions, a speech encoder-decoder's encoder output",
}


class FactsError(Exception):
    """config.json describes a model the estimate cannot place; str() is one sentence."""


class TensorInfo(NamedTuple):
    """One tensor of a safetensors header: name, dtype ("BF16", "I32", ...) and shape."""

    name: str
    dtype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class ModelFacts:
    architecture: Architecture
    checkpoint_dtype: str | None  # config.json `torch_dtype` (`dtype` since transformers 5)
    quantization: str | None  # awq, gptq or fp8, from quantization_config.quant_method
    model_class: str  # architectures[0], else model_type, for messages
    parameter_count: int


def parameters_billion(count: int) -> float:
    """The catalog's figure: 2 decimals (8.03) from 1 billion up, 3 significant digits below."""
    billions = count / 1e9
    return round(billions, 2) if billions >= 1 else float(f"{billions:.3g}")


def count_parameters(tensors: Iterable[TensorInfo], quantization: str | None) -> int:
    """Elements of every tensor; AWQ/GPTQ weights unpacked from the integers that hold them."""
    total = 0
    for tensor in tensors:
        elements = math.prod(tensor.shape)
        if quantization in _PACKED_QUANTIZATIONS:
            if tensor.name.endswith(_PACKING_TENSOR_SUFFIXES):
                continue
            if tensor.name.endswith(".qweight"):
                elements *= _DTYPE_BITS.get(tensor.dtype, _PACKED_BITS) // _PACKED_BITS
        total += elements
    return total


def _value(config: Mapping[str, Any], key: str) -> Any:
    for name in (key, *_ALIASES.get(key, ())):
        if config.get(name) is not None:
            return config[name]
    return None


def _count(config: Mapping[str, Any], key: str, where: str, model_class: str) -> int:
    value = _value(config, key)
    if value is None:
        raise FactsError(
            f"{where}: config.json has no {key}, which the memory estimate needs; this architecture "
            f"({model_class}) is not one the estimate can read, so add the model by hand"
        )
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise FactsError(f"{where}: config.json's {key} is {value!r}, not a positive whole number")
    return value


def _text_config(config: Mapping[str, Any], where: str, model_class: str) -> Mapping[str, Any]:
    """The language model's part: the whole config, or its `text_config` for a multimodal model."""
    if _value(config, "num_hidden_layers") is not None:
        return config
    text = config.get("text_config")
    if isinstance(text, Mapping):
        return text
    if any(isinstance(config.get(key), Mapping) for key in ("vision_config", "audio_config")):
        raise FactsError(
            f"{where}: {model_class} is a multimodal model whose config.json has no text_config "
            "with the language model's layers and heads; the memory estimate cannot read it, so add "
            "the model by hand"
        )
    return config  # _count names the missing field


def check_task(task: str) -> None:
    if task not in TASKS:
        raise FactsError(
            f"task {task!r} is not one the catalog serves; the tasks are: {', '.join(TASKS)} "
            "(text generation, the default)"
        )


def _check_task(config: Mapping[str, Any], task: str, where: str) -> None:
    check_task(task)
    classes = config.get("architectures")
    first = classes[0] if isinstance(classes, list) and classes else None
    speech = _speech_encoder_decoder(config)
    wrong_class = isinstance(first, str) and not first.endswith(_TASK_CLASS_ENDINGS[task])
    if wrong_class or (task == Task.TRANSCRIBE.value and not speech):
        does = "does not generate text" if task == Task.GENERATE.value else f"cannot serve task {task!r}"
        raise FactsError(f"{where}: {first or 'this model'} {does} (task {task!r} needs {_TASK_NEEDS[task]})")
    if speech and task != Task.TRANSCRIBE.value:
        raise FactsError(
            f"{where}: {first or 'this model'} is a speech-to-text model; add it with --task transcribe"
        )


def _speech_encoder_decoder(config: Mapping[str, Any]) -> bool:
    """Whisper's layout: an audio encoder (mel bins in, max_source_positions out) and a decoder."""
    return bool(config.get("is_encoder_decoder")) and all(
        config.get(key) is not None for key in _SPEECH_KEYS.values()
    )


# A speech-to-text encoder-decoder's facts, by the catalog's name: the KV cache is the decoder's
# (its layers and heads, d_model wide, max_target_positions long), plus the cross-attention's
# cache of the encoder output (max_source_positions), as transformers' WhisperConfig names them.
_SPEECH_KEYS: Final = {
    "num_hidden_layers": "decoder_layers",
    "num_attention_heads": "decoder_attention_heads",
    "hidden_size": "d_model",
    "max_position_embeddings": "max_target_positions",
    "encoder_positions": "max_source_positions",
    "num_mel_bins": "num_mel_bins",
}


def _decoder_view(config: Mapping[str, Any]) -> dict[str, Any]:
    """The speech model's config as the estimate reads a decoder's (see _SPEECH_KEYS)."""
    return {name: config[key] for name, key in _SPEECH_KEYS.items()}


def _check_estimable(config: Mapping[str, Any], where: str, model_class: str) -> None:
    experts = next(
        (key for key in _EXPERT_KEYS if isinstance(config.get(key), int) and config[key] > 1), None
    )
    if experts is not None or config.get("num_experts_per_tok"):
        detail = f" ({experts} {config[experts]})" if experts else ""
        raise FactsError(
            f"{where}: {model_class} is a mixture-of-experts model{detail}; the memory estimate "
            "knows dense models only, so add it by hand and check its memory on a GPU"
        )
    model_type = str(config.get("model_type", "")).lower()
    layer_types = config.get("layer_types")
    odd_layers = (
        sorted({str(kind) for kind in layer_types} - set(_ATTENTION_LAYER_TYPES))
        if isinstance(layer_types, list)
        else []
    )
    special = next((key for key in _NO_KV_FORMULA_KEYS if config.get(key) is not None), None)
    if special or odd_layers or any(kind in model_type for kind in _NO_KV_MODEL_TYPES):
        what = special or (
            f"layer_types {', '.join(odd_layers)}" if odd_layers else f"model_type {model_type}"
        )
        raise FactsError(
            f"{where}: {model_class} keeps no plain per-layer K/V cache ({what}); the memory "
            "estimate cannot size it, so add it by hand and check its memory on a GPU"
        )


def _quantization(config: Mapping[str, Any], where: str) -> str | None:
    settings = config.get("quantization_config")
    if settings is None:
        return None
    method = settings.get("quant_method") if isinstance(settings, Mapping) else None
    if method not in QUANTIZATIONS:
        raise FactsError(
            f"{where}: quantization_config.quant_method {method!r} is not one the memory estimate "
            f"knows ({', '.join(QUANTIZATIONS)}); use an unquantized, AWQ, GPTQ or FP8 checkpoint"
        )
    bits = settings.get("bits", settings.get("w_bit", _PACKED_BITS))
    if method in _PACKED_QUANTIZATIONS and bits != _PACKED_BITS:
        raise FactsError(
            f"{where}: {bits}-bit {method} is not what the estimate assumes ({_PACKED_BITS}-bit); "
            f"use a {_PACKED_BITS}-bit {method} checkpoint"
        )
    return str(method)


def _head_dim(text: Mapping[str, Any], heads: int, where: str, model_class: str) -> int:
    if text.get("head_dim") is not None:
        return _count(text, "head_dim", where, model_class)
    hidden = _count(text, "hidden_size", where, model_class)
    if hidden % heads:
        raise FactsError(
            f"{where}: config.json has no head_dim and hidden_size {hidden} is not a multiple of "
            f"num_attention_heads {heads}; add the model by hand"
        )
    return hidden // heads


def read_facts(
    config: Mapping[str, Any],
    tensors: Callable[[], Iterable[TensorInfo]],
    *,
    where: str,
    task: str = "generate",
) -> ModelFacts:
    """The facts of the model `config` (a parsed config.json) describes; `where` names it in messages.

    `tensors` is called only once everything else is read and only when config.json does not
    record the parameter count.
    """
    classes = config.get("architectures")
    named = classes[0] if isinstance(classes, list) and classes else config.get("model_type")
    model_class = str(named) if named else "an unnamed architecture"
    _check_task(config, task, where)
    _check_estimable(config, where, model_class)
    speech = _speech_encoder_decoder(config)
    text = _decoder_view(config) if speech else _text_config(config, where, model_class)
    if text is not config and not speech:
        _check_estimable(text, where, model_class)
    quantization = _quantization(config, where) or _quantization(text, where)
    heads = _count(text, "num_attention_heads", where, model_class)
    kv_heads = (
        _count(text, "num_key_value_heads", where, model_class)
        if _value(text, "num_key_value_heads") is not None
        else heads
    )
    facts: dict[str, Any] = {
        "num_layers": _count(text, "num_hidden_layers", where, model_class),
        "num_attention_heads": heads,
        "num_kv_heads": kv_heads,
        "head_dim": _head_dim(text, heads, where, model_class),
        "max_position_embeddings": _count(text, "max_position_embeddings", where, model_class),
    }
    if model_class in ENCODER_ARCHITECTURES:
        facts["encoder_only"] = True
    if speech:
        facts["encoder_positions"] = _count(text, "encoder_positions", where, model_class)
    # Counted last: for a hub repo it costs a request per weight shard.
    recorded = config.get("num_parameters")
    count = (
        recorded if isinstance(recorded, int) and recorded > 0 else count_parameters(tensors(), quantization)
    )
    if count <= 0:
        raise FactsError(
            f"{where}: no safetensors weights to count the parameters of, and config.json does not "
            "record the count; the memory estimate needs it, so use a checkpoint in safetensors format"
        )
    facts = {"parameters_billion": parameters_billion(count), **facts}  # the catalog's key order
    try:
        architecture = Architecture.model_validate(facts, strict=True)
    except ValidationError as error:
        first = error.errors(include_url=False)[0]
        field = str(first["loc"][0]) if first["loc"] else "architecture"
        reason = str(first["msg"]).removeprefix("Value error, ")
        raise FactsError(f"{where}: config.json gives an impossible {field}: {reason}") from None
    dtype = text.get("torch_dtype") or text.get("dtype") or config.get("torch_dtype") or config.get("dtype")
    return ModelFacts(
        architecture=architecture,
        checkpoint_dtype=str(dtype) if dtype else None,
        quantization=quantization,
        model_class=model_class,
        parameter_count=count,
    )
