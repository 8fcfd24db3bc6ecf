"""Tiny models built on this machine, for running the real serving layer without downloads.

`kind="chat"` (the default) is a chat model; served with `task: embed` vLLM's pooling runner turns
the same checkpoint into an embedding model (`convert: embed`). `kind="reranker"` is the same
network with a one-label classification head (`Qwen2ForSequenceClassification`, num_labels 1),
a cross-encoder vLLM scores query/document pairs with, for `task: rerank`.

The model is a randomly initialised `Qwen2ForCausalLM` (the architecture of the catalog's Qwen
models, so vLLM loads it with the same code path) with a byte-level BPE tokenizer trained on
generated text and a ChatML chat template, so `/v1/chat/completions` works. Its output is noise;
it exists to exercise Ray Serve LLM and vLLM end to end on a CPU.

The recipe is deterministic (fixed seed, fixed corpus). It is written once into a cache
directory and reused; a marker file records the recipe, so changing any constant below rebuilds
the model on next use.

    python -m serve.tiny_model [--out DIR]     # builds if needed, prints the directory
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final, Literal

from serve.paths import CACHE_DIR

# ---------------------------------------------------------------- the recipe, in one place
RECIPE_VERSION: Final = 1
SEED: Final = 20240601

# Tokenizer: byte-level BPE. vLLM detokenises every id the model can emit, so the model's
# vocab_size is the tokenizer's real size (no padding rows).
TOKENIZER_VOCAB_SIZE: Final = 1024
CORPUS_SENTENCES: Final = 4000
BOS_TOKEN: Final = "<|startoftext|>"
EOS_TOKEN: Final = "<|endoftext|>"
PAD_TOKEN: Final = "<|pad|>"
IM_START: Final = "<|im_start|>"
IM_END: Final = "<|im_end|>"
SPECIAL_TOKENS: Final = (PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, IM_START, IM_END)

# ChatML, as the catalog's Qwen models use. No system prompt is injected.
CHAT_TEMPLATE: Final = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# Model: vLLM's CPU attention needs head_dim 64 (it rejects 16): hidden 128 / 2 heads.
HIDDEN_SIZE: Final = 128
INTERMEDIATE_SIZE: Final = 256
NUM_LAYERS: Final = 2
NUM_ATTENTION_HEADS: Final = 2
NUM_KV_HEADS: Final = 1
HEAD_DIM: Final = HIDDEN_SIZE // NUM_ATTENTION_HEADS
MAX_POSITION_EMBEDDINGS: Final = 2048
TORCH_DTYPE: Final = "float32"

# Speech to text (`kind="whisper"`): a randomly initialised WhisperForConditionalGeneration with
# Whisper's 80 mel bins and the special tokens vLLM's Whisper prompt spells out
# (vllm/model_executor/models/whisper.py `get_generation_prompt`:
# <|startoftranscript|><|lang|><|transcribe|><|notimestamps|>), on the same byte-level BPE.
WHISPER_D_MODEL: Final = HIDDEN_SIZE  # head_dim 64: vLLM's CPU attention rejects smaller
WHISPER_LAYERS: Final = 2
WHISPER_HEADS: Final = NUM_ATTENTION_HEADS
WHISPER_FFN_DIM: Final = INTERMEDIATE_SIZE
WHISPER_MEL_BINS: Final = 80
WHISPER_SOURCE_POSITIONS: Final = 1500
MAX_TARGET_POSITIONS: Final = 448
WHISPER_START: Final = "<|startoftranscript|>"
WHISPER_TASK_TOKENS: Final = (
    "<|translate|>",
    "<|transcribe|>",
    "<|startoflm|>",
    "<|startofprev|>",
    "<|nospeech|>",
)
WHISPER_NO_TIMESTAMPS: Final = "<|notimestamps|>"

MARKER_FILE: Final = "tiny-model-recipe.json"
Kind = Literal["chat", "reranker", "whisper"]
CACHE_DIR_NAMES: Final[dict[str, str]] = {
    "chat": "tiny-model",
    "reranker": "tiny-reranker",
    "whisper": "tiny-whisper",
}
CACHE_ENV: Final = "LLM_SERVING_CACHE"

_WORD_TEXT: Final = (
    "the a model serves tokens on every replica of the cluster while ray routes each request "
    "to an engine that batches prompts and streams answers back over http to clients who ask "
    "questions about weather cats numbers code python kubernetes gpu memory cache latency "
    "throughput hello world yes no maybe please thank you why how what when where which "
    "small large fast slow red green blue one two three four five six seven eight nine ten "
    "assistant user system answer question tiny random noise test local cpu json yaml"
)
_WORDS: Final = tuple(_WORD_TEXT.split())


def recipe() -> dict[str, Any]:
    """Everything that determines the built files; stored in the marker file."""
    return {
        "version": RECIPE_VERSION,
        "seed": SEED,
        "tokenizer_vocab_size": TOKENIZER_VOCAB_SIZE,
        "corpus_sentences": CORPUS_SENTENCES,
        "special_tokens": list(SPECIAL_TOKENS),
        "chat_template": CHAT_TEMPLATE,
        "hidden_size": HIDDEN_SIZE,
        "intermediate_size": INTERMEDIATE_SIZE,
        "num_layers": NUM_LAYERS,
        "num_attention_heads": NUM_ATTENTION_HEADS,
        "num_kv_heads": NUM_KV_HEADS,
        "max_position_embeddings": MAX_POSITION_EMBEDDINGS,
        "torch_dtype": TORCH_DTYPE,
    }


def recipe_digest(kind: Kind = "chat") -> str:
    described = recipe() if kind == "chat" else {**recipe(), "kind": kind}
    if kind == "whisper":
        described["whisper"] = [
            WHISPER_D_MODEL,
            WHISPER_LAYERS,
            WHISPER_HEADS,
            WHISPER_FFN_DIM,
            WHISPER_MEL_BINS,
        ]
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:16]


def default_cache_dir(kind: Kind = "chat") -> Path:
    """`$LLM_SERVING_CACHE/<name>`, else `<repo>/.cache/<name>` (gitignored): tiny-model, tiny-reranker."""
    base = os.environ.get(CACHE_ENV)
    name = CACHE_DIR_NAMES[kind]
    return Path(base) / name if base else CACHE_DIR / name


def _corpus(rng: random.Random) -> Iterator[str]:
    punctuation = (".", "?", "!", ",", ":")
    for i in range(CORPUS_SENTENCES):
        words = [rng.choice(_WORDS) for _ in range(rng.randint(3, 14))]
        if rng.random() < 0.3:
            words.insert(rng.randrange(len(words)), str(rng.randint(0, 10_000)))
        sentence = " ".join(words)
        if i % 5 == 0:
            sentence = sentence.capitalize()
        yield sentence + rng.choice(punctuation)


def _build_tokenizer(out: Path) -> int:
    """Train the tokenizer, write tokenizer.json + tokenizer_config.json; return its vocab size."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TOKENIZER_VOCAB_SIZE,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_corpus(random.Random(SEED)), trainer=trainer)
    tokenizer.save(str(out / "tokenizer.json"))

    ids = {token: tokenizer.token_to_id(token) for token in SPECIAL_TOKENS}
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": MAX_POSITION_EMBEDDINGS,
        "bos_token": BOS_TOKEN,
        "eos_token": EOS_TOKEN,
        "pad_token": PAD_TOKEN,
        "additional_special_tokens": [IM_START, IM_END],
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "chat_template": CHAT_TEMPLATE,
        "added_tokens_decoder": {
            str(ids[token]): {
                "content": token,
                "lstrip": False,
                "normalized": False,
                "rstrip": False,
                "single_word": False,
                "special": True,
            }
            for token in SPECIAL_TOKENS
        },
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    special_map = {"bos_token": BOS_TOKEN, "eos_token": EOS_TOKEN, "pad_token": PAD_TOKEN}
    (out / "special_tokens_map.json").write_text(json.dumps(special_map, indent=2) + "\n")
    vocab_size: int = tokenizer.get_vocab_size()
    return vocab_size


def _build_model(out: Path, vocab_size: int, kind: Kind) -> None:
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM, Qwen2ForSequenceClassification

    tokenizer = json.loads((out / "tokenizer.json").read_text())
    special_ids = {t["content"]: t["id"] for t in tokenizer["added_tokens"]}
    config = Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=HIDDEN_SIZE,
        intermediate_size=INTERMEDIATE_SIZE,
        num_hidden_layers=NUM_LAYERS,
        num_attention_heads=NUM_ATTENTION_HEADS,
        num_key_value_heads=NUM_KV_HEADS,
        max_position_embeddings=MAX_POSITION_EMBEDDINGS,
        tie_word_embeddings=True,
        bos_token_id=special_ids[BOS_TOKEN],
        eos_token_id=special_ids[EOS_TOKEN],
        pad_token_id=special_ids[PAD_TOKEN],
    )
    config.head_dim = HEAD_DIM
    torch.manual_seed(SEED)
    if kind == "reranker":
        # One relevance logit per (query, document) pair: what vLLM's score API needs of a cross-encoder.
        config.num_labels = 1
        config.architectures = ["Qwen2ForSequenceClassification"]
        reranker = Qwen2ForSequenceClassification(config).to(getattr(torch, TORCH_DTYPE))
        reranker.eval()
        reranker.save_pretrained(out, safe_serialization=True)
        return
    model = Qwen2ForCausalLM(config).to(getattr(torch, TORCH_DTYPE))
    model.eval()
    model.save_pretrained(out, safe_serialization=True)
    GenerationConfig(
        bos_token_id=special_ids[BOS_TOKEN],
        eos_token_id=[special_ids[EOS_TOKEN], special_ids[IM_END]],
        pad_token_id=special_ids[PAD_TOKEN],
        do_sample=True,
    ).save_pretrained(out)


def _whisper_special_tokens() -> list[str]:
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    languages = [f"<|{code}|>" for code in LANGUAGES]
    return [EOS_TOKEN, WHISPER_START, *languages, *WHISPER_TASK_TOKENS, WHISPER_NO_TIMESTAMPS]


def _build_whisper(out: Path) -> int:
    """The tiny speech-to-text model: tokenizer with Whisper's special tokens, feature extractor,
    model. Returns the vocab size."""
    import torch
    from tokenizers import Tokenizer
    from transformers import (
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
        WhisperTokenizer,
    )

    _build_tokenizer(out)
    tokenizer = Tokenizer.from_file(str(out / "tokenizer.json"))
    tokenizer.add_special_tokens(_whisper_special_tokens())
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (out / name).unlink()
    fast = WhisperTokenizer(
        tokenizer_object=tokenizer,
        unk_token=EOS_TOKEN,
        bos_token=EOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=EOS_TOKEN,
    )
    WhisperProcessor(
        feature_extractor=WhisperFeatureExtractor(feature_size=WHISPER_MEL_BINS), tokenizer=fast
    ).save_pretrained(out)
    vocab_size = len(fast)
    end, start = tokenizer.token_to_id(EOS_TOKEN), tokenizer.token_to_id(WHISPER_START)
    assert end is not None and start is not None, "the special tokens were just added"
    config = WhisperConfig(
        vocab_size=vocab_size,
        num_mel_bins=WHISPER_MEL_BINS,
        d_model=WHISPER_D_MODEL,
        encoder_layers=WHISPER_LAYERS,
        decoder_layers=WHISPER_LAYERS,
        encoder_attention_heads=WHISPER_HEADS,
        decoder_attention_heads=WHISPER_HEADS,
        encoder_ffn_dim=WHISPER_FFN_DIM,
        decoder_ffn_dim=WHISPER_FFN_DIM,
        max_source_positions=WHISPER_SOURCE_POSITIONS,
        max_target_positions=MAX_TARGET_POSITIONS,
        pad_token_id=end,
        bos_token_id=end,
        eos_token_id=end,
        decoder_start_token_id=start,
    )
    torch.manual_seed(SEED)
    model = WhisperForConditionalGeneration(config).to(getattr(torch, TORCH_DTYPE))
    model.eval()
    model.generation_config.decoder_start_token_id = start
    model.save_pretrained(out, safe_serialization=True)
    return vocab_size


def build_tiny_model(out: Path, kind: Kind = "chat") -> None:
    """Write the tokenizer, model and marker into an existing, empty directory `out`."""
    if kind == "whisper":
        vocab_size = _build_whisper(out)
    else:
        vocab_size = _build_tokenizer(out)
        _build_model(out, vocab_size, kind)
    marker = {"digest": recipe_digest(kind), "recipe": recipe(), "kind": kind, "vocab_size": vocab_size}
    (out / MARKER_FILE).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n")


def is_current(model_dir: Path, kind: Kind = "chat") -> bool:
    """Whether `model_dir` holds a complete model of `kind` built from the current recipe."""
    try:
        marker = json.loads((model_dir / MARKER_FILE).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(marker, dict) and marker.get("digest") == recipe_digest(kind)


def ensure_tiny_model(cache_dir: Path | None = None, kind: Kind = "chat") -> Path:
    """Build the tiny model into `cache_dir` unless it already holds the current recipe.

    The model is built in a temporary sibling directory and renamed into place, so a reader
    never sees a half-written model and concurrent builders do not corrupt each other.
    Returns the model directory (usable as an LLM config's `model_source`).
    """
    target = (cache_dir if cache_dir is not None else default_cache_dir(kind)).resolve()
    if is_current(target, kind):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.build-", dir=target.parent))
    try:
        build_tiny_model(staging, kind)
        if is_current(target, kind):  # someone else finished first
            return target
        if target.exists():
            stale = Path(tempfile.mkdtemp(prefix=f".{target.name}.stale-", dir=target.parent))
            target.rename(stale / target.name)
            shutil.rmtree(stale, ignore_errors=True)
        staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target


def ensure_tiny_reranker(cache_dir: Path | None = None) -> Path:
    """The tiny cross-encoder (see the module docstring), built once like the chat model."""
    return ensure_tiny_model(cache_dir, "reranker")


def ensure_tiny_whisper(cache_dir: Path | None = None) -> Path:
    """The tiny speech-to-text model (see WHISPER_* above), built once like the chat model."""
    return ensure_tiny_model(cache_dir, "whisper")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serve.tiny_model", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--out", type=Path, default=None, help=f"model directory (default: {default_cache_dir()})"
    )
    args = parser.parse_args(argv)
    print(ensure_tiny_model(args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
