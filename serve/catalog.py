"""The model catalog: one typed, validated list of the models the platform serves.

`python -m serve.catalog check [PATH]` validates a catalog file and prints one summary
line per model, or every problem as `FILE:LINE: models[i].field: message`; with `--verify` it
also compares each model's architecture facts with its config.json (serve/catalog_verify.py).
`python -m serve.catalog add SOURCE` appends a model read from the Hub or a directory
(serve/catalog_add.py).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from collections.abc import Iterable
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final

from pydantic import Field, StrictBool, StrictInt, ValidationError, field_validator

from configcheck.models import Strict
from configcheck.problems import ConfigError, LineMap, Path_, Problem, locate
from configcheck.pydantic_errors import describe, validation_problems
from configcheck.yaml_lines import load_file
from serve.memory import (
    BYTES_PER_WEIGHT_BY_DTYPE,
    BYTES_PER_WEIGHT_BY_QUANTIZATION,
    MemoryBudget,
    estimate,
)
from serve.openai_app import TASK_ENGINE_KWARGS as APP_TASK_ENGINE_KWARGS
from serve.paths import CATALOG_FILE_NAME
from serve.tiers import TIERS, GpuTier, TierName

if TYPE_CHECKING:
    from serve.model_source import ModelHub

# Relative, so messages name the file the way a person at the repository root types it.
DEFAULT_CATALOG: Final = Path(CATALOG_FILE_NAME)

# Public: `python -m serve.catalog add` checks what it is given against the same rules.
DNS_LABEL: Final = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_HF_REPO_PART: Final = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?"
_HF_REPO: Final = re.compile(rf"^{_HF_REPO_PART}/{_HF_REPO_PART}$")
COMMIT_SHA: Final = re.compile(r"^[0-9a-f]{40}$")
MAX_TENSOR_PARALLEL: Final = 8


class Task(StrEnum):
    """What a model serves on the one endpoint (`serve.openai_app` checks requests against it)."""

    GENERATE = "generate"
    """Chat and text completions: /v1/chat/completions, /v1/completions."""
    EMBED = "embed"
    """Embeddings: /v1/embeddings."""
    RERANK = "rerank"
    """A cross-encoder: /v1/score and /v1/rerank."""
    TRANSCRIBE = "transcribe"
    """Speech to text (Whisper): /v1/audio/transcriptions."""


# What each task runs as in vLLM (one table, in serve/openai_app.py, which the cluster also reads).
TASK_ENGINE_KWARGS: Final[dict[Task, dict[str, str]]] = {
    Task(name): kw for name, kw in APP_TASK_ENGINE_KWARGS.items()
}


def is_hf_repo_id(value: str) -> bool:
    """`owner/name` as the Hugging Face Hub spells repo ids (no `--` or `..`)."""
    return bool(_HF_REPO.match(value)) and "--" not in value and ".." not in value


def _one_of(names: Iterable[str]) -> str:
    """'a', 'b' or 'c'."""
    quoted = [repr(name) for name in names]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"


class Architecture(Strict):
    """Facts from the model's config.json that the memory estimate needs."""

    parameters_billion: Annotated[
        float,
        Field(gt=0, le=2000, description="Parameter count in billions (weights = this x bytes per weight)."),
    ]
    num_layers: Annotated[
        StrictInt, Field(gt=0, le=1000, description="config.json `num_hidden_layers`: KV cache per token.")
    ]
    num_attention_heads: Annotated[
        StrictInt,
        Field(gt=0, le=1024, description="config.json `num_attention_heads`: must split evenly over TP."),
    ]
    num_kv_heads: Annotated[
        StrictInt,
        Field(gt=0, le=1024, description="config.json `num_key_value_heads` (GQA): KV cache per token."),
    ]
    head_dim: Annotated[
        StrictInt, Field(gt=0, le=1024, description="config.json `head_dim` (or hidden_size / heads).")
    ]
    max_position_embeddings: Annotated[
        StrictInt, Field(gt=0, le=10_000_000, description="The longest context the model was trained for.")
    ]
    encoder_positions: Annotated[
        StrictInt,
        Field(
            ge=0,
            le=100_000,
            description="An encoder-decoder's encoder output length (Whisper: config.json "
            "`max_source_positions`): every sequence's cross-attention cache holds this many positions.",
        ),
    ] = 0
    encoder_only: StrictBool = Field(
        default=False,
        description="An encoder (BERT, XLM-RoBERTa; serve/model_facts.py knows which): bidirectional "
        "attention, no KV cache, embeddings or scores only.",
    )

    @field_validator("num_kv_heads")
    @classmethod
    def _kv_heads_divide_heads(cls, value: int, info: Any) -> int:
        heads = info.data.get("num_attention_heads")
        if heads is not None and heads % value != 0:
            raise ValueError(
                f"num_kv_heads {value} must divide num_attention_heads {heads}: copy both from config.json"
            )
        return value


class EngineSettings(Strict):
    """The vLLM engine settings a catalog may set; anything else is refused."""

    gpu_memory_utilization: Annotated[
        float, Field(gt=0.5, le=0.98, description="Share of each GPU's memory vLLM may use (the budget).")
    ] = 0.90
    max_num_seqs: (
        Annotated[StrictInt, Field(ge=1, le=1024, description="Sequences vLLM schedules in one batch.")]
        | None
    ) = None
    max_num_batched_tokens: (
        Annotated[StrictInt, Field(ge=1, le=1_048_576, description="Tokens vLLM processes in one step.")]
        | None
    ) = None
    enable_prefix_caching: StrictBool | None = Field(
        default=None, description="Reuse the KV cache of shared prompt prefixes."
    )
    enable_chunked_prefill: StrictBool | None = Field(
        default=None, description="Split long prompts across steps (vLLM's default on recent versions)."
    )
    enforce_eager: StrictBool | None = Field(
        default=None, description="Skip CUDA graph capture: faster start, slower decode."
    )

    def as_engine_kwargs(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class ModelEntry(Strict):
    id: str = Field(description="OpenAI model name clients send; a DNS label.")
    source: str = Field(description="Hugging Face repo id, owner/name.")
    revision: str = Field(description="Pinned 40-hex commit of the Hugging Face repo.")
    tier: TierName = Field(description="GPU tier the model runs on: t4, l4 or a100 (80GB).")
    task: Task = Field(
        default=Task.GENERATE,
        description="What the model serves: generate (chat, completions), embed (embeddings), "
        "rerank (a cross-encoder: score, rerank) or transcribe (speech to text).",
    )
    tensor_parallel_size: Annotated[
        StrictInt,
        Field(ge=1, le=MAX_TENSOR_PARALLEL, description="GPUs per replica, all on one node (STRICT_PACK)."),
    ] = 1
    dtype: str = Field(description="Activation and weight dtype: float16 or bfloat16 (no bf16 on T4).")
    quantization: str | None = Field(default=None, description="Weight quantization: awq, gptq or fp8.")
    max_model_len: Annotated[
        StrictInt, Field(ge=16, le=10_000_000, description="Longest sequence (prompt + answer) served.")
    ]
    concurrency: Annotated[StrictInt, Field(ge=1, le=4096)] = Field(
        default=1, description="Full-length sequences the KV cache must hold at once."
    )
    architecture: Architecture = Field(description="Facts from config.json for the memory estimate.")
    engine: EngineSettings = Field(
        default_factory=EngineSettings, description="vLLM engine settings from a typed allowlist."
    )

    @field_validator("id")
    @classmethod
    def _dns_label(cls, value: str) -> str:
        if not DNS_LABEL.match(value):
            raise ValueError(
                f"{value!r} is not a DNS label: use 1-63 lowercase letters, digits and '-', "
                "starting and ending with a letter or digit (e.g. 'llama-3-1-8b-instruct')"
            )
        return value

    @field_validator("source")
    @classmethod
    def _hf_repo(cls, value: str) -> str:
        if not is_hf_repo_id(value):
            raise ValueError(
                f"{value!r} is not a Hugging Face repo id: write it as 'owner/name' "
                "(e.g. 'Qwen/Qwen2.5-7B-Instruct')"
            )
        return value

    @field_validator("revision")
    @classmethod
    def _commit(cls, value: str) -> str:
        if not COMMIT_SHA.match(value):
            raise ValueError(
                f"{value!r} is not a pinned commit: use the repo's full 40-character lowercase commit "
                "hash, never a branch or tag"
            )
        return value

    @field_validator("tier", mode="before")
    @classmethod
    def _known_tier(cls, value: Any) -> Any:
        names = [t.value for t in TierName]
        if not isinstance(value, str) or value not in names:
            hint = next((name for name in names if isinstance(value, str) and value.lower() == name), None)
            fix = f"did you mean {hint!r}?" if hint else f"use one of: {', '.join(names)}"
            raise ValueError(f"unknown tier {value!r}; {fix}")
        return TierName(value)

    @field_validator("task", mode="before")
    @classmethod
    def _known_task(cls, value: Any) -> Any:
        names = [t.value for t in Task]
        if not isinstance(value, str) or value not in names:
            aliases = {
                "chat": "generate",
                "embedding": "embed",
                "embeddings": "embed",
                "score": "rerank",
                "transcription": "transcribe",
                "speech": "transcribe",
            }
            hint = aliases.get(value.lower()) if isinstance(value, str) else None
            hint = hint or next((n for n in names if isinstance(value, str) and value.lower() == n), None)
            fix = f"did you mean {hint!r}?" if hint else f"use one of: {', '.join(names)}"
            raise ValueError(f"unknown task {value!r}; {fix}")
        return Task(value)

    @field_validator("dtype")
    @classmethod
    def _dtype(cls, value: str) -> str:
        if value not in BYTES_PER_WEIGHT_BY_DTYPE:
            raise ValueError(f"dtype {value!r} is not supported; use {_one_of(BYTES_PER_WEIGHT_BY_DTYPE)}")
        return value

    @field_validator("quantization")
    @classmethod
    def _quantization(cls, value: str | None) -> str | None:
        if value is not None and value not in BYTES_PER_WEIGHT_BY_QUANTIZATION:
            raise ValueError(
                f"quantization {value!r} is not supported; use {_one_of(BYTES_PER_WEIGHT_BY_QUANTIZATION)} "
                "or omit it"
            )
        return value

    @property
    def gpu_tier(self) -> GpuTier:
        return TIERS[self.tier]

    def memory(self) -> MemoryBudget:
        arch = self.architecture
        return estimate(
            parameters_billion=arch.parameters_billion,
            num_layers=arch.num_layers,
            num_kv_heads=arch.num_kv_heads,
            head_dim=arch.head_dim,
            dtype=self.dtype,
            quantization=self.quantization,
            max_model_len=self.max_model_len,
            concurrency=self.concurrency,
            tensor_parallel_size=self.tensor_parallel_size,
            vram_gib_per_gpu=self.gpu_tier.vram_gib,
            gpu_memory_utilization=self.engine.gpu_memory_utilization,
            encoder_only=arch.encoder_only,
            encoder_positions=arch.encoder_positions,
        )


class CatalogDocument(Strict):
    """The file's top level; each model is validated on its own so every error is reported."""

    models: list[Any]


class Catalog(Strict):
    file: str
    models: tuple[ModelEntry, ...]

    def by_id(self, model_id: str) -> ModelEntry:
        for model in self.models:
            if model.id == model_id:
                return model
        raise KeyError(model_id)


def fit_problems(model: ModelEntry) -> list[tuple[Path_, str]]:
    """Checks that need the tier's facts: (path within the model, message)."""
    tier, arch, tp = model.gpu_tier, model.architecture, model.tensor_parallel_size
    found: list[tuple[Path_, str]] = []
    if tp > tier.max_gpus_per_node:
        found.append(
            (
                ("tensor_parallel_size",),
                f"{tp} GPUs exceed the {tier.max_gpus_per_node} GPUs of the largest {tier.name} node; "
                f"use at most {tier.max_gpus_per_node} or a bigger tier",
            )
        )
    elif tp not in tier.gpu_counts_per_node:
        found.append(
            (
                ("tensor_parallel_size",),
                f"{tp} is not a GPU count {tier.name} nodes offer; "
                f"use one of {list(tier.gpu_counts_per_node)}",
            )
        )
    if arch.num_attention_heads % tp != 0:
        found.append(
            (
                ("tensor_parallel_size",),
                f"{tp} does not divide the model's {arch.num_attention_heads} attention heads; "
                "choose a divisor of the head count",
            )
        )
    elif arch.num_kv_heads % tp != 0 and tp % arch.num_kv_heads != 0:
        found.append(
            (
                ("tensor_parallel_size",),
                f"{tp} and the model's {arch.num_kv_heads} KV heads must divide one another; "
                "choose another tensor_parallel_size",
            )
        )
    if model.dtype == "bfloat16" and not tier.supports_bf16:
        cc = ".".join(map(str, tier.compute_capability))
        found.append(
            (
                ("dtype",),
                f"{tier.name} GPUs (compute capability {cc}) have no bfloat16; use 'float16' or another tier",
            )
        )
    if model.quantization == "fp8" and not tier.supports_fp8:
        found.append(
            (
                ("quantization",),
                f"{tier.name} GPUs have no fp8 support; use 'awq'/'gptq', no quantization, or the l4 tier",
            )
        )
    if model.max_model_len > arch.max_position_embeddings:
        found.append(
            (
                ("max_model_len",),
                f"{model.max_model_len} is above the model's limit of {arch.max_position_embeddings} tokens "
                "(architecture.max_position_embeddings); lower it",
            )
        )
    if not found:
        budget = model.memory()
        if not budget.fits:
            found.append(
                (
                    ("tier",),
                    f"does not fit {tp} x {tier.gpu_model}: needs {budget.required_gib:.1f} GiB "
                    f"(weights {budget.weights_gib:.1f} + KV cache {budget.kv_cache_gib:.1f} + "
                    f"overhead {budget.overhead_gib:.1f}) but the budget is {budget.budget_gib:.1f} GiB; "
                    "lower max_model_len or concurrency, quantize, raise tensor_parallel_size or use a "
                    "bigger tier",
                )
            )
    found += encoder_problems(model) + speech_problems(model)
    # vLLM's scheduler refuses these at engine start, i.e. on a GPU node after the download.
    engine, batched = model.engine, model.engine.max_num_batched_tokens
    if batched is not None and engine.max_num_seqs is not None and batched < engine.max_num_seqs:
        found.append(
            (
                ("engine", "max_num_batched_tokens"),
                f"{batched} is below max_num_seqs {engine.max_num_seqs} and vLLM would refuse to start; "
                f"raise it to at least {engine.max_num_seqs} or lower max_num_seqs",
            )
        )
    # An encoder's prompt is processed whole, so chunked prefill is off for it unless set.
    chunked = engine.enable_chunked_prefill
    unchunked = chunked is False or (model.architecture.encoder_only and chunked is None)
    if batched is not None and unchunked and batched < model.max_model_len:
        if chunked is False:
            why, fix = "with enable_chunked_prefill false", "lower max_model_len or enable chunked prefill"
        else:
            why, fix = "for an encoder (no chunked prefill)", "or lower max_model_len"
        found.append(
            (
                ("engine", "max_num_batched_tokens"),
                f"{batched} is below max_model_len {model.max_model_len} {why} and vLLM would refuse to "
                f"start; raise it to at least {model.max_model_len}{',' if chunked is False else ''} {fix}",
            )
        )
    return found


def speech_problems(model: ModelEntry) -> list[tuple[Path_, str]]:
    """A speech-to-text model is an encoder-decoder: its encoder's output (architecture.
    encoder_positions) must fit one scheduler step, and only such a model transcribes."""
    positions = model.architecture.encoder_positions
    found: list[tuple[Path_, str]] = []
    if model.task is Task.TRANSCRIBE and positions == 0:
        found.append(
            (
                ("task",),
                "transcribe needs a speech-to-text encoder-decoder (Whisper) and architecture."
                "encoder_positions is 0; set it from config.json's max_source_positions, or pick "
                "another task",
            )
        )
    if positions and model.task is not Task.TRANSCRIBE:
        found.append(
            (
                ("task",),
                f"a model with encoder_positions {positions} is a speech-to-text encoder-decoder; set "
                "task to 'transcribe'",
            )
        )
    if positions:
        # vLLM 0.32 leaves both off for encoder-decoders ("Encoder decoder models do not support
        # prefix caching" / "chunked prefill": vllm/config/model.py, the same two properties).
        found += _unsupported_engine_settings(model, "for a speech-to-text encoder-decoder")
    batched = model.engine.max_num_batched_tokens
    if positions and batched is not None and batched < positions:
        # vLLM refuses an audio item larger than one step (vllm/v1/core/encoder_cache_manager.py
        # `compute_mm_encoder_budget`: "Chunked MM input disabled but max_tokens_per_mm_item ...").
        found.append(
            (
                ("engine", "max_num_batched_tokens"),
                f"{batched} is below the encoder's {positions} positions and vLLM would refuse to "
                f"start; raise it to at least {positions} or leave it out",
            )
        )
    return found


# vLLM 0.32 turns prefix caching and chunked prefill off for pooling models with bidirectional
# attention, and warns that turning them on "may cause the engine to crash or produce incorrect
# outputs" (vllm/config/model.py `is_prefix_caching_supported`, `is_chunked_prefill_supported`;
# vllm/engine/arg_utils.py `_set_default_chunked_prefill_and_prefix_caching_args`).
ENCODER_UNSUPPORTED_ENGINE: Final = ("enable_prefix_caching", "enable_chunked_prefill")


def _unsupported_engine_settings(model: ModelEntry, why: str) -> list[tuple[Path_, str]]:
    """Each of ENCODER_UNSUPPORTED_ENGINE the model turns on, refused: `vLLM does not support <it> <why>`."""
    return [
        (
            ("engine", name),
            f"vLLM does not support {name.removeprefix('enable_').replace('_', ' ')} {why}; "
            "remove the setting",
        )
        for name in ENCODER_UNSUPPORTED_ENGINE
        if getattr(model.engine, name) is True
    ]


def encoder_problems(model: ModelEntry) -> list[tuple[Path_, str]]:
    """Settings that mean nothing or break an encoder-only model (no KV cache, no generation)."""
    if not model.architecture.encoder_only:
        return []
    found: list[tuple[Path_, str]] = []
    if model.task is Task.GENERATE:
        found.append(
            (
                ("task",),
                "an encoder-only model (architecture.encoder_only) cannot generate text; set task to "
                "'embed' or 'rerank', or pick a chat model",
            )
        )
    found += _unsupported_engine_settings(
        model, "for an encoder-only model and warns it may crash or answer wrongly"
    )
    if "concurrency" in model.model_fields_set:
        found.append(
            (
                ("concurrency",),
                "concurrency sizes the KV cache and an encoder-only model has none; remove it "
                "(max_num_seqs bounds the batch)",
            )
        )
    return found


# Fields the tier checks do not read: a model whose only problems are here is still checked
# against its tier, so one run reports a bad id and a bf16-on-T4 together.
_NAME_PLACEHOLDERS: Final = {"id": "placeholder", "source": "owner/name", "revision": "0" * 40}


def _entry_for_fit_checks(raw: Any, problems: list[Problem], index: int) -> ModelEntry | None:
    if not isinstance(raw, dict) or not problems:
        return None
    prefix = f"models[{index}]."
    bad = {problem.field.removeprefix(prefix) for problem in problems}
    if not bad <= set(_NAME_PLACEHOLDERS):
        return None
    try:
        return ModelEntry.model_validate(
            {**raw, **{name: _NAME_PLACEHOLDERS[name] for name in bad}}, strict=True
        )
    except ValidationError:
        return None


def parse_catalog(data: Any, file: str, lines: LineMap) -> Catalog:
    """Validate a loaded catalog document, reporting every problem with its line."""
    if data is None:
        raise ConfigError(
            [
                locate(
                    file, lines, (), "the catalog file is empty: add a `models:` list with at least one model"
                )
            ]
        )
    if not isinstance(data, dict):
        raise ConfigError(
            [
                locate(
                    file,
                    lines,
                    (),
                    f"a catalog is a mapping with a `models:` key holding the list of models, "
                    f"got {describe(data)}: put the models under `models:`",
                )
            ]
        )
    document, problems = validation_problems(CatalogDocument, data, file, lines)
    raw_models = document.models if document is not None else data.get("models")
    if not isinstance(raw_models, list):
        raise ConfigError(problems)  # `models` itself is missing or not a list: nothing more to check
    if not raw_models:
        problems.append(locate(file, lines, ("models",), "the catalog is empty: add at least one model"))
        raise ConfigError(problems)
    models: list[ModelEntry] = []
    for index, raw in enumerate(raw_models):
        entry, entry_problems = validation_problems(ModelEntry, raw, file, lines, ("models", index))
        problems += entry_problems
        if entry is not None:
            models.append(entry)
        checked = entry if entry is not None else _entry_for_fit_checks(raw, entry_problems, index)
        if checked is not None:
            problems += [
                locate(file, lines, ("models", index, *path), message)
                for path, message in fit_problems(checked)
            ]
    # Only text ids take part (another type is already reported and may not be hashable).
    ids = [
        raw.get("id") if isinstance(raw, dict) and isinstance(raw.get("id"), str) else None
        for raw in raw_models
    ]
    for index, model_id in enumerate(ids):
        if model_id is not None and Counter(ids)[model_id] > 1 and ids.index(model_id) != index:
            first = ids.index(model_id)
            problems.append(
                locate(
                    file,
                    lines,
                    ("models", index, "id"),
                    f"duplicate id {model_id!r} (first used by models[{first}]); give each model a unique id",
                )
            )
    if problems:
        raise ConfigError(problems)
    return Catalog(file=file, models=tuple(models))


def load_catalog(path: Path = DEFAULT_CATALOG) -> Catalog:
    data, lines = load_file(path)
    return parse_catalog(data, str(path), lines)


def summary_line(model: ModelEntry) -> str:
    from serve.gpu_share import gpu_share  # it sizes catalog entries: imported here, not at the top

    budget, share = model.memory(), gpu_share(model)
    quant = f", {model.quantization}" if model.quantization else ""
    task = "" if model.task is Task.GENERATE else f" [{model.task.value}]"
    sequences = (
        "encoder, no KV cache" if model.architecture.encoder_only else f"concurrency {model.concurrency}"
    )
    where = (
        f"{share.bundle_gpus:g} of a {model.tier.value} (shared while one replica is warm)"
        if share is not None
        else f"{model.tensor_parallel_size}x {model.tier.value}"
    )
    of = share.gpu_memory_utilization * model.gpu_tier.vram_gib if share is not None else budget.budget_gib
    return (
        f"{model.id}{task}: {model.source}@{model.revision[:8]} on {where} "
        f"({model.dtype}{quant}, max_model_len {model.max_model_len}, {sequences}), "
        f"{budget.required_gib:.1f} of {of:.1f} GiB"
    )


def main(argv: list[str] | None = None, *, hub: ModelHub | None = None) -> int:
    """The command line; `hub` replaces the Hugging Face Hub (tests)."""
    # Imported here: they need huggingface_hub and ruamel.yaml, which the serving layer and the
    # Pulumi program, importing this module for the catalog, do not.
    from serve import catalog_add, catalog_verify
    from serve.model_source import HuggingFaceHub, SourceError

    parser = argparse.ArgumentParser(prog="python -m serve.catalog", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", help="validate a catalog file")
    check.add_argument("path", nargs="?", type=Path, default=DEFAULT_CATALOG)
    check.add_argument(
        "--verify", action="store_true", help="compare the architecture facts with each model's config.json"
    )
    check.add_argument(
        "--local",
        action="append",
        default=[],
        metavar="SOURCE=DIR",
        help="with --verify: read the model whose source is SOURCE from DIR instead of the Hub",
    )
    catalog_add.add_arguments(commands.add_parser("add", help="add a model from the Hub or a directory"))
    args = parser.parse_args(argv)
    if args.command == "check" and args.local and not args.verify:
        parser.error("--local is for --verify: add --verify")
    if args.command == "add":
        return catalog_add.run(args, hub)
    try:
        data, lines = load_file(args.path)
        catalog = parse_catalog(data, str(args.path), lines)
        problems = (
            catalog_verify.verify(
                catalog,
                lines,
                hub if hub is not None else HuggingFaceHub(),
                catalog_verify.parse_local(args.local, catalog),
            )
            if args.verify
            else []
        )
        if problems:
            raise ConfigError(problems)
    except ConfigError as error:
        print(error, file=sys.stderr)
        count = len(error.problems)
        print(f"{args.path}: {count} problem{'s' if count != 1 else ''}", file=sys.stderr)
        return 1
    except SourceError as error:
        print(f"{args.path}: nothing verified: {error}", file=sys.stderr)
        return 1
    for model in catalog.models:
        print(summary_line(model))
    verified = ", architecture facts match config.json" if args.verify else ""
    print(f"{args.path}: {len(catalog.models)} models OK{verified}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
