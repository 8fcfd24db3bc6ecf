"""Bad input never reaches the cluster (issue 7).

Every case copies the shipped `model_catalog.yaml` or a shipped `Pulumi.<stack>.yaml` into a
temporary directory, breaks it in one way (or several, for the "all problems at once"
cases) and checks what a person sees:

- catalog cases run the real `python -m serve.catalog check PATH` entry point (`main([...])`):
  it must exit 1 and print only `FILE:LINE: field.path: message` lines plus the count;
- stack cases go through `infra.plan.build_plan_for_stack` (what the plan report and the
  Pulumi program call): a `ConfigError` whose every line has that same form;
- the line is the real line of the offending key or value in the file as written (computed
  from the written text, never hard-coded), the field path names the key, and the message
  says how to fix it; no traceback anywhere.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import REPO_ROOT

from configcheck.problems import ConfigError
from configcheck.yaml_lines import load_file
from infra.plan import build_plan_for_stack
from infra.settings import parse_stack_config
from serve.catalog import main as catalog_main

CATALOG_NAME = "model_catalog.yaml"
TOKEN = "hf_" + "A1b2C3d4E5" * 3 + "xy"  # looks like a real token to the detector; it is not one
SET_SECRET = "pulumi config set --secret llm-serving:hfToken"
# The field of a problem: a dotted/indexed key path (keys may be `namespace:name`) or a
# parenthesised pseudo-field for problems that are not about one key.
FIELD = r"\((?:yaml|file|document)\)|[\w-]+(?::[\w-]+)?(?:\.[\w-]+(?::[\w-]+)?|\[\d+\])*"

Text = str | bytes
Mutation = Callable[[str], Text]


# --- mutations -------------------------------------------------------------------------------


def sub(old: str, new: str, nth: int = 1) -> Mutation:
    """Replace the `nth` occurrence of `old` (which must exist)."""

    def apply(text: str) -> str:
        start = -1
        for _ in range(nth):
            start = text.find(old, start + 1)
            assert start >= 0, f"{old!r} (occurrence {nth}) not in the shipped file"
        return text[:start] + new + text[start + len(old) :]

    return apply


def chain(*steps: Mutation) -> Mutation:
    def apply(text: str) -> Text:
        out: Text = text
        for step in steps:
            assert isinstance(out, str)
            out = step(out)
        return out

    return apply


def append(extra: str) -> Mutation:
    return lambda text: text + extra


def const(content: Text) -> Mutation:
    return lambda _text: content


def edit(change: Callable[[Any], Any]) -> Mutation:
    """Load the YAML, change the data (in place or by returning a new value), dump it again."""

    def apply(text: str) -> str:
        data = yaml.safe_load(text)
        result = change(data)
        return yaml.safe_dump(data if result is None else result, sort_keys=False)

    return apply


def drop_line(needle: str, nth: int = 1) -> Mutation:
    """Delete the nth line that contains `needle`."""

    def apply(text: str) -> str:
        lines = text.splitlines(keepends=True)
        hits = [i for i, line in enumerate(lines) if needle in line]
        assert len(hits) >= nth, f"{needle!r} (occurrence {nth}) not in the shipped file"
        del lines[hits[nth - 1]]
        return "".join(lines)

    return apply


def drop_block(header: str, nth: int = 1) -> Mutation:
    """Delete the nth line containing `header` and the more-indented lines under it."""

    def apply(text: str) -> str:
        lines = text.splitlines(keepends=True)
        hits = [i for i, line in enumerate(lines) if header in line]
        assert len(hits) >= nth, f"{header!r} (occurrence {nth}) not in the shipped file"
        start = hits[nth - 1]
        indent = len(lines[start]) - len(lines[start].lstrip())
        end = start + 1
        while end < len(lines) and (
            not lines[end].strip() or len(lines[end]) - len(lines[end].lstrip()) > indent
        ):
            end += 1
        return "".join(lines[:start] + lines[end:])

    return apply


# --- expectations ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Expect:
    """One problem line that must be printed.

    `at`: the problem's line is the `nth` line of the written file containing this text;
    `line`: an explicit line (for bytes that are not text); neither: any line in the file.
    """

    field: str
    words: tuple[str, ...]
    at: str | None = None
    nth: int = 1
    line: int | None = None


@dataclass(frozen=True)
class Case:
    id: str
    target: str  # "catalog", "dev" or "prod": which file is mutated
    mutate: Mutation | None  # None: the file does not exist
    expects: tuple[Expect, ...]
    min_problems: int = 1
    catalog: Mutation | None = field(default=None)  # a stack case may also change the catalog


def find_line(text: str, needle: str, nth: int = 1) -> int:
    hits = [number for number, line in enumerate(text.splitlines(), start=1) if needle in line]
    assert len(hits) >= nth, f"{needle!r} (occurrence {nth}) is not in the written file:\n{text}"
    return hits[nth - 1]


def E(field: str, *words: str, at: str | None = None, nth: int = 1, line: int | None = None) -> Expect:
    return Expect(field=field, words=words, at=at, nth=nth, line=line)


def C(id: str, mutate: Mutation | None, *expects: Expect, min_problems: int = 1) -> Case:
    return Case(id=id, target="catalog", mutate=mutate, expects=expects, min_problems=min_problems)


def S(
    id: str,
    mutate: Mutation | None,
    *expects: Expect,
    stack: str = "dev",
    min_problems: int = 1,
    catalog: Mutation | None = None,
) -> Case:
    return Case(
        id=id, target=stack, mutate=mutate, expects=expects, min_problems=min_problems, catalog=catalog
    )


M0, M1, M2 = "models[0]", "models[1]", "models[2]"
M0_ID = "  - id: qwen2-5-1-5b-instruct"
M1_ID = "  - id: llama-3-1-8b-instruct"
M2_ID = "  - id: qwen2-5-32b-instruct"
TIERS = "config.llm-serving:tiers"
SCALING = "config.llm-serving:autoscaling"
MISSING = ("required field", "is missing", "add")


def missing(field_path: str, key: str, at: str, nth: int = 1) -> Expect:
    return E(field_path, *MISSING, f"'{key}'", at=at, nth=nth)


CATALOG_CASES: list[Case] = [
    # YAML syntax: the line to edit, the parser's words and a hint.
    C(
        "yaml-bad-indentation",
        sub("    source: Qwen/Qwen2.5-1.5B", "     source: Qwen/Qwen2.5-1.5B"),
        E("(yaml)", "invalid YAML", "indentation", at="     source: Qwen"),
    ),
    C(
        "yaml-dedented-key",
        sub("    dtype: float16", "   dtype: float16"),
        E("(yaml)", "invalid YAML", "indentation", at="   dtype: float16"),
    ),
    C(
        "yaml-unclosed-bracket",
        sub("    tier: t4\n", "    tier: [t4\n"),
        E("(yaml)", "invalid YAML", "close the '['", at="tier: [t4"),
    ),
    C(
        "yaml-unclosed-bracket-at-end-of-file",
        append("extra: [a, b\n"),
        E("(yaml)", "invalid YAML", "close the '['", at="extra: [a, b"),
    ),
    C(
        "yaml-unclosed-brace",
        sub("    engine:\n      gpu_memory_utilization: 0.90", "    engine: {gpu_memory_utilization: 0.90"),
        E("(yaml)", "invalid YAML", "close the '{'", at="engine: {gpu"),
    ),
    C(
        "yaml-unclosed-quote",
        sub("    source: Qwen/Qwen2.5-1.5B-Instruct", "    source: 'Qwen/Qwen2.5-1.5B-Instruct"),
        E("(yaml)", "invalid YAML", "close the quote", at="source: 'Qwen"),
    ),
    C(
        "yaml-tab-indentation",
        sub("    dtype: float16", "\tdtype: float16"),
        E("(yaml)", "invalid YAML", "spaces, not tabs", at="\tdtype"),
    ),
    C(
        "yaml-undefined-alias",
        sub("    tier: t4", "    tier: *t4"),
        E("(yaml)", "invalid YAML", "undefined alias", "anchor", at="tier: *t4"),
    ),
    C(
        "yaml-duplicate-model-key",
        sub("    tier: t4\n", "    tier: t4\n    tier: l4\n"),
        E(f"{M0}.tier", "duplicate key 'tier'", "keep only one", at="    tier: l4"),
    ),
    C(
        "yaml-duplicate-top-level-key",
        append("models: []\n"),
        E("models", "duplicate key 'models'", "keep only one", at="models: []"),
    ),
    # Wrong types.
    C(
        "type-string-for-int",
        sub("max_model_len: 8192", 'max_model_len: "8192"'),
        E(f"{M0}.max_model_len", "whole number", "remove the quotes", at='max_model_len: "8192"'),
    ),
    C(
        "type-float-for-int",
        sub("num_layers: 28", "num_layers: 28.5"),
        E(f"{M0}.architecture.num_layers", "whole number", "28.5", "fraction", at="num_layers: 28.5"),
    ),
    C(
        "type-quoted-float",
        sub("gpu_memory_utilization: 0.90", 'gpu_memory_utilization: "0.90"'),
        E(f"{M0}.engine.gpu_memory_utilization", "expected a number", "without quotes", at='"0.90"'),
    ),
    C(
        "type-bool-for-float",
        sub("parameters_billion: 1.54", "parameters_billion: true"),
        E(f"{M0}.architecture.parameters_billion", "expected a number", "boolean", at="billion: true"),
    ),
    C(
        "type-yes-string-for-bool",
        sub("enable_prefix_caching: true", 'enable_prefix_caching: "yes"'),
        E(f"{M0}.engine.enable_prefix_caching", "true or false", "'yes'", at='caching: "yes"'),
    ),
    C(
        "type-list-for-mapping",
        sub(
            "    architecture:\n      parameters_billion: 1.54\n      num_layers: 28\n"
            "      num_attention_heads: 12\n      num_kv_heads: 2\n      head_dim: 128\n"
            "      max_position_embeddings: 32768\n",
            "    architecture: [1.54, 28, 12, 2, 128, 32768]\n",
        ),
        E(f"{M0}.architecture", "expected a mapping", "got a list", at="architecture: [1.54"),
    ),
    C(
        "type-null-for-int",
        sub("    tensor_parallel_size: 2", "    tensor_parallel_size:"),
        E(f"{M2}.tensor_parallel_size", "whole number", "null", at="tensor_parallel_size:"),
    ),
    C(
        "type-unquoted-numeric-revision",
        sub("revision: 989aa7980e4cf806f80c7fef2b1adb7bc71aa306", "revision: 1234567890"),
        E(f"{M0}.revision", "expected text", "1234567890", "quotes", at="revision: 1234567890"),
    ),
    C(
        "type-model-is-a-string",
        append("  - just-a-model-name\n"),
        E("models[3]", "expected a mapping", "just-a-model-name", at="  - just-a-model-name"),
    ),
    C(
        "type-models-is-a-mapping",
        edit(lambda data: data.update(models={m["id"]: m for m in data["models"]})),
        E("models", "expected a list", "got a mapping", at="models:"),
    ),
    C(
        "type-catalog-is-a-list",
        edit(lambda data: data["models"]),
        E("(document)", "a catalog is a mapping", "models:", "got a list", line=1),
    ),
    # Missing required fields: reported on the model's (or the architecture's) first line.
    C(
        "missing-id",
        sub(f"{M0_ID}\n    source:", "  - source:"),
        missing(f"{M0}.id", "id", at="  - source: Qwen/Qwen2.5-1.5B"),
    ),
    C("missing-source", drop_line("source: Qwen/Qwen2.5-1.5B"), missing(f"{M0}.source", "source", at=M0_ID)),
    C("missing-revision", drop_line("revision: ", 2), missing(f"{M1}.revision", "revision", at=M1_ID)),
    C("missing-tier", drop_line("tier: a100"), missing(f"{M2}.tier", "tier", at=M2_ID)),
    C("missing-dtype", drop_line("dtype: ", 2), missing(f"{M1}.dtype", "dtype", at=M1_ID)),
    C(
        "missing-max-model-len",
        drop_line("max_model_len: "),
        missing(f"{M0}.max_model_len", "max_model_len", at=M0_ID),
    ),
    C(
        "missing-architecture",
        drop_block("    architecture:", 3),
        missing(f"{M2}.architecture", "architecture", at=M2_ID),
    ),
    C(
        "missing-parameters-billion",
        drop_line("parameters_billion: 8.03"),
        missing(f"{M1}.architecture.parameters_billion", "parameters_billion", at="architecture:", nth=2),
    ),
    C(
        "missing-num-layers",
        drop_line("num_layers: 28"),
        missing(f"{M0}.architecture.num_layers", "num_layers", at="architecture:"),
    ),
    C(
        "missing-num-attention-heads",
        drop_line("num_attention_heads: 40"),
        missing(f"{M2}.architecture.num_attention_heads", "num_attention_heads", at="architecture:", nth=3),
    ),
    C(
        "missing-num-kv-heads",
        drop_line("num_kv_heads: 2"),
        missing(f"{M0}.architecture.num_kv_heads", "num_kv_heads", at="architecture:"),
    ),
    C(
        "missing-head-dim",
        drop_line("head_dim: 128", 2),
        missing(f"{M1}.architecture.head_dim", "head_dim", at="architecture:", nth=2),
    ),
    C(
        "missing-max-position-embeddings",
        drop_line("max_position_embeddings: 131072"),
        missing(
            f"{M1}.architecture.max_position_embeddings", "max_position_embeddings", at="architecture:", nth=2
        ),
    ),
    # Unknown or misspelt keys, at every level, with a "did you mean" hint.
    C(
        "unknown-top-level-key-misspelt",
        sub("models:\n", "model:\n"),
        E("model", "unknown key 'model'", "did you mean 'models'?", at="model:"),
        E("models", *MISSING, at="model:"),
        min_problems=2,
    ),
    C(
        "unknown-top-level-key-extra",
        append("version: 2\n"),
        E("version", "unknown key 'version'", "allowed keys: models", at="version: 2"),
    ),
    C(
        "unknown-model-key-misspelt",
        sub("    tensor_parallel_size: 2", "    tensor_paralel_size: 2"),
        E(f"{M2}.tensor_paralel_size", "did you mean 'tensor_parallel_size'?", at="tensor_paralel_size"),
    ),
    C(
        "unknown-model-key-camel-case",
        sub("    max_model_len: 8192", "    maxModelLen: 8192"),
        E(
            f"{M0}.maxModelLen",
            "unknown key 'maxModelLen'",
            "did you mean 'max_model_len'?",
            at="maxModelLen",
        ),
        missing(f"{M0}.max_model_len", "max_model_len", at=M0_ID),
        min_problems=2,
    ),
    C(
        "unknown-engine-key",
        sub("gpu_memory_utilization: 0.90", "gpu_memory_utilisation: 0.90", 2),
        E(
            f"{M1}.engine.gpu_memory_utilisation",
            "did you mean 'gpu_memory_utilization'?",
            at="gpu_memory_utilisation",
        ),
    ),
    C(
        "unknown-engine-key-not-offered",
        sub("      max_num_seqs: 64\n", "      max_num_seqs: 64\n      swap_space: 4\n"),
        E(f"{M0}.engine.swap_space", "unknown key 'swap_space'", "allowed keys", at="swap_space: 4"),
    ),
    C(
        "unknown-architecture-key",
        sub("num_kv_heads: 8", "num_kv_head: 8"),
        E(f"{M1}.architecture.num_kv_head", "did you mean 'num_kv_heads'?", at="num_kv_head: 8"),
        missing(f"{M1}.architecture.num_kv_heads", "num_kv_heads", at="architecture:", nth=2),
        min_problems=2,
    ),
    # Ids, sources and revisions.
    C(
        "duplicate-model-id",
        sub("id: llama-3-1-8b-instruct", "id: qwen2-5-1-5b-instruct"),
        E(f"{M1}.id", "duplicate id 'qwen2-5-1-5b-instruct'", "models[0]", "unique", at="id:", nth=2),
    ),
    *[
        C(
            f"id-not-dns-label-{name}",
            sub("id: qwen2-5-1-5b-instruct", f"id: {bad}"),
            E(f"{M0}.id", "not a DNS label", "lowercase", at=f"id: {bad}"),
        )
        for name, bad in [
            ("uppercase", "Qwen2-5-1-5b"),
            ("underscore", "qwen2_5"),
            ("too-long", "q" * 64),
            ("leading-dash", "-qwen2-5"),
            ("dots", "qwen2.5-1.5b"),
            ("slash", "qwen/qwen2-5"),
            ("empty", "''"),
        ]
    ],
    *[
        C(
            f"source-not-hf-repo-{name}",
            sub("source: Qwen/Qwen2.5-1.5B-Instruct", f"source: {bad}"),
            E(f"{M0}.source", "not a Hugging Face repo id", "owner/name", at=f"source: {bad}"),
        )
        for name, bad in [
            ("no-owner", "Qwen2.5-1.5B-Instruct"),
            ("url", "https://huggingface.co/Qwen/Qwen2.5-1.5B-Instruct"),
            ("three-parts", "Qwen/Qwen2.5/Instruct"),
            ("empty-name", "Qwen/"),
            ("double-dash", "Qwen/Qwen--2.5"),
        ]
    ],
    *[
        C(
            f"revision-not-pinned-{name}",
            sub("revision: 0e9e39f249a16976918f6564b8830bc894c89659", f"revision: {bad}"),
            E(
                f"{M1}.revision",
                "not a pinned commit",
                "40-character",
                "never a branch",
                at=f"revision: {bad}",
            ),
        )
        for name, bad in [
            ("branch-main", "main"),
            ("short-sha", "0e9e39f"),
            ("uppercase-hex", "0E9E39F249A16976918F6564B8830BC894C89659"),
            ("41-chars", "0e9e39f249a16976918f6564b8830bc894c896590"),
            ("tag", "v1.0"),
        ]
    ],
    # Fit to the tier: memory, tensor parallelism, dtype and quantization support.
    C(
        "vram-exceeded-t4",
        sub("concurrency: 8", "concurrency: 512"),
        E(f"{M0}.tier", "does not fit", "GiB", "lower max_model_len or concurrency", at="tier: t4"),
    ),
    C(
        "vram-exceeded-a100-without-tp",
        drop_line("    tensor_parallel_size: 2"),
        E(f"{M2}.tier", "does not fit 1 x NVIDIA A100", "raise tensor_parallel_size", at="tier: a100"),
    ),
    C(
        "tp-above-schema-bound",
        sub("tensor_parallel_size: 2", "tensor_parallel_size: 16"),
        E(f"{M2}.tensor_parallel_size", "less than or equal to 8", "16", at="tensor_parallel_size: 16"),
    ),
    C(
        "tp-above-tier-max",
        sub("    tier: t4\n", "    tier: t4\n    tensor_parallel_size: 8\n"),
        E(f"{M0}.tensor_parallel_size", "exceed the 4 GPUs", "at most 4", at="tensor_parallel_size: 8"),
    ),
    C(
        "tp-not-a-gpu-count",
        sub("    tier: l4\n", "    tier: l4\n    tensor_parallel_size: 3\n"),
        E(f"{M1}.tensor_parallel_size", "not a GPU count", "[1, 2, 4, 8]", at="tensor_parallel_size: 3"),
        E(
            f"{M1}.tensor_parallel_size",
            "does not divide",
            "32 attention heads",
            at="tensor_parallel_size: 3",
        ),
        min_problems=2,
    ),
    C(
        "tp-not-dividing-heads",
        chain(
            sub(
                "num_attention_heads: 40\n      num_kv_heads: 8",
                "num_attention_heads: 42\n      num_kv_heads: 6",
            ),
            sub("tensor_parallel_size: 2", "tensor_parallel_size: 4"),
        ),
        E(
            f"{M2}.tensor_parallel_size",
            "does not divide",
            "42 attention heads",
            at="tensor_parallel_size: 4",
        ),
    ),
    C(
        "tp-and-kv-heads-not-dividing",
        chain(
            sub("num_kv_heads: 2", "num_kv_heads: 3"),
            sub("    tier: t4\n", "    tier: t4\n    tensor_parallel_size: 2\n"),
        ),
        E(f"{M0}.tensor_parallel_size", "3 KV heads", "divide one another", at="tensor_parallel_size: 2"),
    ),
    C(
        "kv-heads-not-dividing-heads",
        sub("num_kv_heads: 8", "num_kv_heads: 7"),
        E(f"{M1}.architecture.num_kv_heads", "must divide", "config.json", at="num_kv_heads: 7"),
    ),
    C(
        "bf16-on-t4",
        sub("dtype: float16", "dtype: bfloat16"),
        E(f"{M0}.dtype", "no bfloat16", "use 'float16'", at="dtype: bfloat16"),
    ),
    C(
        "fp8-on-t4",
        sub("    dtype: float16\n", "    dtype: float16\n    quantization: fp8\n"),
        E(f"{M0}.quantization", "t4 GPUs have no fp8", at="quantization: fp8"),
    ),
    C(
        "fp8-on-a100",
        sub("    tensor_parallel_size: 2\n", "    tensor_parallel_size: 2\n    quantization: fp8\n"),
        E(f"{M2}.quantization", "a100 GPUs have no fp8", "l4", at="quantization: fp8"),
    ),
    C(
        "dtype-unsupported",
        sub("dtype: float16", "dtype: fp16"),
        E(f"{M0}.dtype", "'fp16' is not supported", "'float16' or 'bfloat16'", at="dtype: fp16"),
    ),
    C(
        "quantization-unsupported",
        sub("    dtype: float16\n", "    dtype: float16\n    quantization: int8\n"),
        E(f"{M0}.quantization", "'int8' is not supported", "omit it", at="quantization: int8"),
    ),
    C(
        "unknown-tier",
        sub("tier: t4", "tier: h100"),
        E(f"{M0}.tier", "unknown tier 'h100'", "t4, l4, a100", at="tier: h100"),
    ),
    C(
        "tier-wrong-case",
        sub("tier: t4", "tier: T4"),
        E(f"{M0}.tier", "unknown tier 'T4'", "did you mean 't4'?", at="tier: T4"),
    ),
    C(
        "max-model-len-above-position-embeddings",
        sub("max_model_len: 32768", "max_model_len: 65536"),
        E(f"{M2}.max_model_len", "above the model's limit of 32768", "lower it", at="max_model_len: 65536"),
    ),
    C(
        "batched-tokens-below-max-num-seqs",
        sub("      max_num_seqs: 64\n", "      max_num_seqs: 64\n      max_num_batched_tokens: 32\n"),
        E(
            f"{M0}.engine.max_num_batched_tokens",
            "below max_num_seqs 64",
            "vLLM would refuse to start",
            at="max_num_batched_tokens: 32",
        ),
    ),
    C(
        "batched-tokens-below-max-model-len-without-chunked-prefill",
        sub(
            "      max_num_seqs: 32\n",
            "      max_num_seqs: 32\n      max_num_batched_tokens: 4096\n"
            "      enable_chunked_prefill: false\n",
        ),
        E(
            f"{M1}.engine.max_num_batched_tokens",
            "below max_model_len 8192",
            "enable chunked prefill",
            at="max_num_batched_tokens: 4096",
        ),
    ),
    # Negative, zero and absurd values.
    C(
        "zero-max-model-len",
        sub("max_model_len: 8192", "max_model_len: 0"),
        E(f"{M0}.max_model_len", "greater than or equal to 16", "got 0", at="max_model_len: 0"),
    ),
    C(
        "zero-concurrency",
        sub("concurrency: 3", "concurrency: 0"),
        E(f"{M1}.concurrency", "greater than or equal to 1", "got 0", at="concurrency: 0"),
    ),
    C(
        "negative-parameters",
        sub("parameters_billion: 1.54", "parameters_billion: -1.5"),
        E(f"{M0}.architecture.parameters_billion", "greater than 0", "-1.5", at="billion: -1.5"),
    ),
    C(
        "absurd-gpu-memory-utilization",
        sub("gpu_memory_utilization: 0.90", "gpu_memory_utilization: 1.5", 3),
        E(f"{M2}.engine.gpu_memory_utilization", "less than or equal to 0.98", "1.5", at="utilization: 1.5"),
    ),
    C(
        "absurd-num-layers",
        sub("num_layers: 64", "num_layers: 100000"),
        E(f"{M2}.architecture.num_layers", "less than or equal to 1000", "100000", at="num_layers: 100000"),
    ),
    C(
        "zero-max-num-seqs",
        sub("max_num_seqs: 32", "max_num_seqs: 0"),
        E(f"{M1}.engine.max_num_seqs", "greater than or equal to 1", at="max_num_seqs: 0"),
    ),
    # Whole-file problems.
    C(
        "empty-catalog",
        const("models: []\n"),
        E("models", "catalog is empty", "add at least one model", line=1),
    ),
    C("empty-file", const(""), E("(document)", "catalog file is empty", "models:", line=1)),
    C(
        "comments-only-file",
        const("# nothing here yet\n# models: []\n"),
        E("(document)", "catalog file is empty", line=1),
    ),
    C(
        "models-null",
        const("# the list went missing\nmodels:\n"),
        E("models", "expected a list", "null", line=2),
    ),
    C(
        "not-utf8",
        lambda text: text.replace("# Checked by", "# Ch\xe9cked by").encode("latin-1"),
        E("(file)", "not UTF-8", "save the file as UTF-8", line=2),
    ),
    C("missing-file", None, E("(file)", "file not found", "create it or pass the right path", line=1)),
    # Several independent problems in one file: every one of them is reported.
    C(
        "many-problems-at-once",
        chain(
            sub("id: qwen2-5-1-5b-instruct", "id: Qwen_2"),
            sub("revision: 0e9e39f249a16976918f6564b8830bc894c89659", "revision: main"),
            sub("max_num_seqs: 64", "max_num_seq: 64", 2),
            sub("dtype: float16", "dtype: bfloat16"),
        ),
        E(f"{M0}.id", "not a DNS label", at="id: Qwen_2"),
        E(f"{M0}.dtype", "no bfloat16", at="dtype: bfloat16"),
        E(f"{M1}.revision", "not a pinned commit", at="revision: main"),
        E(f"{M2}.engine.max_num_seq", "did you mean 'max_num_seqs'?", at="max_num_seq: 64"),
        min_problems=4,
    ),
]


def tier_block(tier: str, key: str, value: str) -> Mutation:
    """Replace `key: <anything>` inside the given tier's block of a stack file."""

    def apply(text: str) -> str:
        start = text.index(f"\n    {tier}:\n")
        end = text.find("\n    ", start + 1)
        while end >= 0 and text[end + 5] == " ":
            end = text.find("\n    ", end + 1)
        block_end = end if end >= 0 else len(text)
        block = text[start:block_end]
        changed = re.sub(rf"(\n      ){re.escape(key)}:[^\n]*", rf"\g<1>{value}", block, count=1)
        assert changed != block, f"{key} not in tier {tier}"
        return text[:start] + changed + text[block_end:]

    return apply


def scaling(key: str, value: str) -> Mutation:
    """Replace the line `key: <anything>` of the autoscaling block (the only keys indented by 4)."""

    def apply(text: str) -> str:
        changed = re.sub(rf"\n    {re.escape(key)}: [^\n]*", f"\n    {value}", text, count=1)
        assert changed != text, f"{key} not in the autoscaling block"
        return changed

    return apply


def keep(text: str) -> str:
    return text


STACK_CASES: list[Case] = [
    # YAML syntax.
    S(
        "stack-yaml-unclosed-bracket",
        sub("zones: [us-central1-a, us-central1-b, us-central1-c]", "zones: [us-central1-a, us-central1-b"),
        E("(yaml)", "invalid YAML", "close the '['", at="zones: [us-central1-a, us-central1-b", nth=2),
    ),
    S(
        "stack-yaml-tab-indentation",
        sub("      spot: true", "\tspot: true"),
        E("(yaml)", "spaces, not tabs", at="\tspot"),
    ),
    S(
        "stack-yaml-duplicate-key",
        tier_block("l4", "maxNodes", "maxNodes: 2\n      maxNodes: 3"),
        E(f"{TIERS}.l4.maxNodes", "duplicate key 'maxNodes'", at="maxNodes: 3"),
    ),
    # Keys a stack may not set.
    S(
        "stack-key-cluster-name",
        sub("  gcp:region: us-central1\n", "  gcp:region: us-central1\n  llm-serving:clusterName: llm\n"),
        E("config.llm-serving:clusterName", "a stack may only set", "remove it", at="clusterName"),
    ),
    S(
        "stack-key-gcp-zone",
        sub("  gcp:region: us-central1\n", "  gcp:region: us-central1\n  gcp:zone: us-central1-a\n"),
        E("config.gcp:zone", "a stack may only set", "llm-serving:tiers.<tier>.zones", at="  gcp:zone:"),
    ),
    S(
        "stack-key-aws-region",
        sub("  gcp:region: us-central1\n", "  gcp:region: us-central1\n  aws:region: us-east-1\n"),
        E("config.aws:region", "a stack may only set", "gcp:region", at="  aws:region:"),
    ),
    S(
        "stack-key-misspelt",
        sub("  llm-serving:autoscaling:", "  llm-serving:autoscalling:"),
        E("config.llm-serving:autoscalling", "did you mean 'llm-serving:autoscaling'?", at="autoscalling"),
        E("config.llm-serving:autoscaling", "required", "minReplicas", line=4),
        min_problems=2,
    ),
    S(
        "stack-top-level-key-misspelt",
        sub("config:\n", "confg:\n"),
        E("confg", "unknown key 'confg'", "did you mean 'config'?", at="confg:"),
        min_problems=2,
    ),
    S(
        "stack-tier-key-misspelt",
        tier_block("t4", "maxNodes", "maxNode: 2"),
        E(f"{TIERS}.t4.maxNode", "did you mean 'maxNodes'?", at="maxNode: 2"),
        E(f"{TIERS}.t4.maxNodes", *MISSING, at="    t4:"),
        min_problems=2,
    ),
    S(
        "stack-tier-key-snake-case",
        tier_block("l4", "gpusPerNode", "gpus_per_node: 1"),
        E(f"{TIERS}.l4.gpus_per_node", "did you mean 'gpusPerNode'?", "camelCase", at="gpus_per_node"),
    ),
    S(
        "stack-tier-name-wrong-case",
        sub("    t4:\n", "    T4:\n"),
        E(f"{TIERS}.T4", "unknown tier 'T4'", "did you mean 't4'?", at="    T4:"),
        E(TIERS, "tier 't4' is missing", "add `t4:`", at="llm-serving:tiers:"),
        min_problems=2,
    ),
    S(
        "stack-autoscaling-key-misspelt",
        scaling("minReplicas", "minReplica: 0"),
        E(f"{SCALING}.minReplica", "did you mean 'minReplicas'?", at="minReplica: 0"),
        min_problems=2,
    ),
    S(
        "stack-autoscaling-key-snake-case",
        scaling("targetOngoingRequests", "target_ongoing_requests: 8"),
        E(f"{SCALING}.target_ongoing_requests", "did you mean 'targetOngoingRequests'?", at="target_ongoing"),
    ),
    # The Hugging Face token.
    S(
        "stack-hf-token-plain-text",
        sub("  gcp:region: us-central1\n", f"  gcp:region: us-central1\n  llm-serving:hfToken: {TOKEN}\n"),
        E(
            "config.llm-serving:hfToken",
            "plain text",
            f"`{SET_SECRET} <token> -s dev`",
            at="  llm-serving:hfToken:",
        ),
    ),
    S(
        "stack-hf-token-hidden-in-another-value",
        sub("  gcp:region: us-central1\n", f"  gcp:region: us-central1\n  gcp:project: {TOKEN}\n"),
        E("config.gcp:project", "plain text", f"`{SET_SECRET} <token> -s dev`", at="  gcp:project:"),
    ),
    S(
        "stack-hf-token-not-secret",
        sub("  gcp:region: us-central1\n", "  gcp:region: us-central1\n  llm-serving:hfToken: my-token\n"),
        E(
            "config.llm-serving:hfToken",
            "not a secret",
            f"`{SET_SECRET} <token> -s dev`",
            at="  llm-serving:hfToken:",
        ),
    ),
    S(
        "stack-hf-token-number",
        sub("  gcp:region: us-central1\n", "  gcp:region: us-central1\n  llm-serving:hfToken: 12345\n"),
        E("config.llm-serving:hfToken", "encrypted secret", "12345", SET_SECRET, at="  llm-serving:hfToken:"),
    ),
    S(
        "stack-hf-token-bad-secure-value",
        sub(
            "  gcp:region: us-central1\n",
            "  gcp:region: us-central1\n  llm-serving:hfToken:\n    secure: abc\n    plain: def\n",
        ),
        E("config.llm-serving:hfToken", "encrypted `secure:` value", SET_SECRET, at="  llm-serving:hfToken:"),
    ),
    # Region, project and zones.
    S(
        "stack-missing-region",
        drop_line("  gcp:region: us-central1"),
        E("config.gcp:region", "required", "pulumi config set gcp:region", at="config:"),
    ),
    S(
        "stack-bad-region",
        sub("gcp:region: us-central1", "gcp:region: US Central"),
        E("config.gcp:region", "not a GCP region name", "pulumi config set gcp:region", at="  gcp:region:"),
    ),
    S(
        "stack-bad-project",
        sub("  gcp:region: us-central1\n", "  gcp:region: us-central1\n  gcp:project: My_Project\n"),
        E("config.gcp:project", "not a GCP project id", "pulumi config set gcp:project", at="  gcp:project:"),
    ),
    S(
        "stack-zone-not-in-region",
        sub(
            "[us-central1-a, us-central1-b, us-central1-c]", "[us-central1-a, europe-west4-b, us-central1-c]"
        ),
        E(f"{TIERS}.l4.zones[1]", "not in the stack's region us-central1", "gcp:region", at="europe-west4-b"),
    ),
    S(
        "stack-zone-without-the-gpu",
        sub("[us-central1-a, us-central1-b, us-central1-c]", "[us-central1-a, us-central1-f]"),
        E(f"{TIERS}.l4.zones[1]", "offers no NVIDIA L4", "use us-central1-a", at="us-central1-f]", nth=2),
    ),
    S(
        "stack-zone-malformed",
        sub("[us-central1-a, us-central1-c]", "[us-central1-a, uscentral1c]"),
        E(f"{TIERS}.a100.zones[1]", "not a GCP zone name", "'us-central1-a'", at="uscentral1c"),
    ),
    S(
        "stack-zone-twice",
        sub("[us-central1-a, us-central1-c]", "[us-central1-a, us-central1-a]"),
        E(f"{TIERS}.a100.zones", "listed twice", at="[us-central1-a, us-central1-a]"),
    ),
    S(
        "stack-zones-empty",
        sub("[us-central1-a, us-central1-c]", "[]"),
        E(f"{TIERS}.a100.zones", "at least 1 item", at="zones: []"),
    ),
    S(
        "stack-zones-string",
        sub("[us-central1-a, us-central1-c]", "us-central1-a"),
        E(f"{TIERS}.a100.zones", "expected a list", "'us-central1-a'", at="zones: us-central1-a"),
    ),
    # Tier settings: types, bounds, order, GPU counts.
    S(
        "stack-spot-yes-string",
        tier_block("t4", "spot", 'spot: "yes"'),
        E(f"{TIERS}.t4.spot", "true or false", at='spot: "yes"'),
    ),
    S(
        "stack-max-nodes-string",
        tier_block("t4", "maxNodes", 'maxNodes: "2"'),
        E(f"{TIERS}.t4.maxNodes", "whole number", "remove the quotes", at='maxNodes: "2"'),
    ),
    S(
        "stack-min-above-max-nodes",
        chain(tier_block("l4", "maxNodes", "maxNodes: 1"), tier_block("l4", "minNodes", "minNodes: 2")),
        E(f"{TIERS}.l4.maxNodes", "below minNodes 2", "minNodes <= maxNodes", at="maxNodes: 1"),
    ),
    S(
        "stack-negative-min-nodes",
        tier_block("t4", "minNodes", "minNodes: -1"),
        E(f"{TIERS}.t4.minNodes", "greater than or equal to 0", "-1", at="minNodes: -1"),
    ),
    S(
        "stack-zero-max-nodes",
        tier_block("t4", "maxNodes", "maxNodes: 0"),
        E(f"{TIERS}.t4.maxNodes", "greater than or equal to 1", at="maxNodes: 0"),
    ),
    S(
        "stack-max-nodes-above-bound",
        tier_block("l4", "maxNodes", "maxNodes: 33"),
        E(f"{TIERS}.l4.maxNodes", "less than or equal to 32", "33", at="maxNodes: 33"),
    ),
    S(
        "stack-max-nodes-absurd",
        tier_block("a100", "maxNodes", "maxNodes: 100000"),
        E(f"{TIERS}.a100.maxNodes", "less than or equal to 32", at="maxNodes: 100000"),
    ),
    S(
        "stack-gpus-per-node-not-offered",
        tier_block("l4", "gpusPerNode", "gpusPerNode: 3"),
        E(f"{TIERS}.l4.gpusPerNode", "1, 2, 4, 8 GPUs, not 3", "set gpusPerNode", at="gpusPerNode: 3"),
    ),
    S(
        "stack-gpus-per-node-zero",
        tier_block("t4", "gpusPerNode", "gpusPerNode: 0"),
        E(f"{TIERS}.t4.gpusPerNode", "greater than or equal to 1", at="gpusPerNode: 0"),
    ),
    S(
        "stack-missing-tier",
        drop_block("    a100:"),
        E(TIERS, "tier 'a100' is missing", "enabled: false", at="llm-serving:tiers:"),
    ),
    S(
        "stack-extra-tier",
        sub(
            "  llm-serving:autoscaling:",
            "    h100:\n      enabled: false\n  llm-serving:autoscaling:",
        ),
        E(f"{TIERS}.h100", "unknown tier 'h100'", "the tiers are t4, l4, a100", at="h100:"),
    ),
    S(
        "stack-tier-missing-field",
        drop_line("zones: [us-central1-a, us-central1-b, us-central1-c, us-central1-f]"),
        E(f"{TIERS}.t4.zones", *MISSING, at="    t4:"),
    ),
    S(
        "stack-tiers-is-a-list",
        edit(lambda data: data["config"].update({"llm-serving:tiers": ["t4", "l4", "a100"]})),
        E(TIERS, "expected a mapping from tier name", "got a list", at="llm-serving:tiers:"),
    ),
    S(
        "stack-tier-is-a-list",
        edit(lambda data: data["config"]["llm-serving:tiers"].update(t4=["enabled", "spot"])),
        E(f"{TIERS}.t4", "expected a mapping", "got a list", at="t4:"),
    ),
    # Autoscaling.
    S(
        "stack-min-above-max-replicas",
        scaling("minReplicas", "minReplicas: 3"),
        E(
            f"{SCALING}.maxReplicas",
            "maxReplicas 2 is below minReplicas 3",
            "minReplicas <= maxReplicas",
            at="maxReplicas: 2",
        ),
    ),
    S(
        "stack-zero-max-replicas",
        scaling("maxReplicas", "maxReplicas: 0"),
        E(f"{SCALING}.maxReplicas", "greater than or equal to 1", at="maxReplicas: 0"),
    ),
    S(
        "stack-absurd-max-replicas",
        scaling("maxReplicas", "maxReplicas: 1000"),
        E(f"{SCALING}.maxReplicas", "less than or equal to 64", at="maxReplicas: 1000"),
    ),
    S(
        "stack-negative-min-replicas",
        scaling("minReplicas", "minReplicas: -1"),
        E(f"{SCALING}.minReplicas", "greater than or equal to 0", at="minReplicas: -1"),
    ),
    S(
        "stack-zero-target-ongoing-requests",
        scaling("targetOngoingRequests", "targetOngoingRequests: 0"),
        E(f"{SCALING}.targetOngoingRequests", "greater than 0", at="targetOngoingRequests: 0"),
    ),
    S(
        "stack-target-above-max-ongoing",
        scaling("targetOngoingRequests", "targetOngoingRequests: 64"),
        E(
            f"{SCALING}.maxOngoingRequests",
            "maxOngoingRequests 32 is below targetOngoingRequests 64",
            at="maxOngoingRequests: 32",
        ),
    ),
    S(
        "stack-negative-delay",
        scaling("upscaleDelaySeconds", "upscaleDelaySeconds: -5"),
        E(f"{SCALING}.upscaleDelaySeconds", "greater than or equal to 0", at="upscaleDelaySeconds: -5"),
    ),
    S(
        "stack-quoted-float",
        scaling("targetOngoingRequests", 'targetOngoingRequests: "8"'),
        E(f"{SCALING}.targetOngoingRequests", "expected a number", "without quotes", at='"8"'),
    ),
    S(
        "stack-missing-autoscaling-field",
        drop_line("    downscaleDelaySeconds:"),
        E(f"{SCALING}.downscaleDelaySeconds", *MISSING, at="llm-serving:autoscaling:"),
    ),
    S(
        "stack-missing-autoscaling",
        drop_block("  llm-serving:autoscaling:"),
        E(SCALING, "required", "minReplicas, maxReplicas", at="config:"),
    ),
    # The stack against the catalog (checked when the plan is built).
    S(
        "stack-serves-no-model",
        chain(tier_block("t4", "enabled", "enabled: false"), tier_block("l4", "enabled", "enabled: false")),
        E(TIERS, "no catalog model is served", "enable a tier", at="llm-serving:tiers:"),
    ),
    S(
        "stack-serves-no-model-of-a100-only-catalog",
        keep,
        E(TIERS, "no catalog model is served", "a100", at="llm-serving:tiers:"),
        catalog=edit(lambda data: data.update(models=[data["models"][2]])),
    ),
    S(
        "stack-tp2-model-on-one-gpu-nodes",
        tier_block("a100", "gpusPerNode", "gpusPerNode: 1"),
        E(
            f"{TIERS}.a100.gpusPerNode",
            "qwen2-5-32b-instruct needs 2 GPUs on one node",
            "set gpusPerNode to at least 2",
            at="gpusPerNode: 1",
            nth=3,
        ),
        stack="prod",
    ),
    # Whole-file problems.
    S(
        "stack-config-is-a-list",
        const("config:\n  - gcp:region\n"),
        E("config", "expected a mapping", "got a list", line=1),
    ),
    S(
        "stack-file-is-a-list",
        const("- config\n- gcp:region: us-central1\n"),
        E("(document)", "a stack file is a mapping", "config:", line=1),
    ),
    S(
        "stack-empty-file",
        const(""),
        E("config.gcp:region", "required", line=1),
        E(TIERS, "required", line=1),
        E(SCALING, "required", line=1),
        min_problems=3,
    ),
    S(
        "stack-not-utf8",
        lambda text: text.replace("# Stacks may", "# St\xe4cks may").encode("latin-1"),
        E("(file)", "not UTF-8", line=2),
    ),
    S("stack-missing-file", None, E("(file)", "file not found", line=1)),
    # Several independent problems at once.
    S(
        "stack-many-problems-at-once",
        chain(
            tier_block("t4", "maxNodes", "maxNodes: 99"),
            tier_block("l4", "gpusPerNode", "gpusPerNode: 3"),
            scaling("minReplicas", "minReplica: 0"),
            sub("  gcp:region: us-central1\n", "  gcp:region: us-central1\n  gcp:zone: us-central1-a\n"),
        ),
        E("config.gcp:zone", "a stack may only set", at="  gcp:zone:"),
        E(f"{TIERS}.t4.maxNodes", "less than or equal to 32", at="maxNodes: 99"),
        E(f"{TIERS}.l4.gpusPerNode", "not 3", at="gpusPerNode: 3"),
        E(f"{SCALING}.minReplica", "did you mean 'minReplicas'?", at="minReplica: 0"),
        E(f"{SCALING}.minReplicas", *MISSING, at="llm-serving:autoscaling:"),
        min_problems=5,
    ),
]


ALL_CASES = CATALOG_CASES + STACK_CASES


# --- running a case --------------------------------------------------------------------------


def written(case: Case, tmp_path: Path) -> tuple[Path, Text | None]:
    """Write the case's files into tmp_path: (the mutated file's path, what was written to it)."""
    shutil.copy(REPO_ROOT / CATALOG_NAME, tmp_path / CATALOG_NAME)
    for stack in ("dev", "prod"):
        shutil.copy(REPO_ROOT / f"Pulumi.{stack}.yaml", tmp_path / f"Pulumi.{stack}.yaml")
    if case.catalog is not None:
        catalog = tmp_path / CATALOG_NAME
        content = case.catalog(catalog.read_text(encoding="utf-8"))
        assert isinstance(content, str)
        catalog.write_text(content, encoding="utf-8")
    path = tmp_path / (CATALOG_NAME if case.target == "catalog" else f"Pulumi.{case.target}.yaml")
    if case.mutate is None:
        path.unlink()
        return path, None
    content = case.mutate(path.read_text(encoding="utf-8"))
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path, content


def problem_lines(case: Case, path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> list[str]:
    """What the person sees: the CLI's stderr (catalog) or the plan's ConfigError (stacks)."""
    if case.target == "catalog":
        code = catalog_main(["check", str(path)])
        out = capsys.readouterr()
        assert code == 1, f"check accepted a bad catalog:\n{out.out}"
        assert "Traceback" not in out.err + out.out
        assert "models OK" not in out.out
        *lines, summary = out.err.splitlines()
        assert summary == f"{path}: {len(lines)} problem{'s' if len(lines) != 1 else ''}"
        return lines
    with pytest.raises(ConfigError) as raised:
        build_plan_for_stack(case.target, root=tmp_path)
    text = str(raised.value)
    assert "Traceback" not in text
    return text.splitlines()


def parse(line: str, path: Path) -> tuple[int, str, str]:
    match = re.fullmatch(rf"{re.escape(str(path))}:(\d+): ({FIELD}): (\S.*)", line)
    assert match, f"not `FILE:LINE: field.path: message` for {path}: {line!r}"
    return int(match.group(1)), match.group(2), match.group(3)


@pytest.mark.parametrize("case", ALL_CASES, ids=[case.id for case in ALL_CASES])
def test_bad_input_is_refused_with_located_actionable_messages(
    case: Case, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, content = written(case, tmp_path)
    lines = problem_lines(case, path, tmp_path, capsys)
    assert len(lines) >= max(case.min_problems, len(case.expects)), "\n".join(lines)

    text = content.decode("utf-8", "replace") if isinstance(content, bytes) else content or ""
    line_count = max(1, len(text.splitlines()))
    parsed = [parse(line, path) for line in lines]
    for number, _field, message in parsed:
        assert 1 <= number <= line_count, f"line {number} is outside the file ({line_count} lines)"
        assert len(message) >= 10, message

    for expect in case.expects:
        line = expect.line
        if expect.at is not None:
            line = find_line(text, expect.at, expect.nth)
        hits = [
            (number, message)
            for number, field_path, message in parsed
            if field_path == expect.field and all(word in message for word in expect.words)
        ]
        assert hits, f"no problem on {expect.field} saying {expect.words}; got:\n" + "\n".join(lines)
        if line is not None:
            assert line in [number for number, _ in hits], (
                f"{expect.field} reported on line(s) {[n for n, _ in hits]}, expected line {line}:\n"
                + "\n".join(lines)
            )


def test_there_are_at_least_60_distinct_cases() -> None:
    ids = [case.id for case in ALL_CASES]
    assert len(set(ids)) == len(ids)
    assert len(ids) >= 60
    assert sum(case.target == "catalog" for case in ALL_CASES) >= 30
    assert sum(case.target != "catalog" for case in ALL_CASES) >= 30


def test_shipped_files_pass(capsys: pytest.CaptureFixture[str]) -> None:
    """The baseline every case mutates is valid: each case's problem comes from its mutation."""
    assert catalog_main(["check", str(REPO_ROOT / CATALOG_NAME)]) == 0
    assert "3 models OK" in capsys.readouterr().out
    for stack in ("dev", "prod"):
        build_plan_for_stack(stack, root=REPO_ROOT)


def test_problems_in_both_files_are_reported_together(tmp_path: Path) -> None:
    """A plan over a broken catalog and a broken stack file lists both files' problems at once."""
    case = S("both", tier_block("t4", "maxNodes", "maxNodes: 0"), catalog=sub("tier: t4", "tier: h100"))
    path, _ = written(case, tmp_path)
    with pytest.raises(ConfigError) as raised:
        build_plan_for_stack("dev", root=tmp_path)
    files = {problem.file for problem in raised.value.problems}
    assert files == {str(path), str(tmp_path / CATALOG_NAME)}


@pytest.mark.parametrize(
    "case_id", ["yaml-unclosed-bracket", "type-catalog-is-a-list", "many-problems-at-once", "not-utf8"]
)
def test_real_cli_process_prints_no_traceback(case_id: str, tmp_path: Path) -> None:
    """`python -m serve.catalog check` as a person runs it: exit 1, located lines, no traceback."""
    case = next(case for case in CATALOG_CASES if case.id == case_id)
    path, _ = written(case, tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "serve.catalog", "check", str(path)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr + result.stdout
    *lines, summary = result.stderr.splitlines()
    assert lines and summary.endswith("problem" + ("s" if len(lines) != 1 else ""))
    for line in lines:
        parse(line, path)


def test_catalog_cli_on_a_directory_is_a_located_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert catalog_main(["check", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert (
        err.splitlines()[0] == f"{tmp_path}:1: (file): is a directory, not a YAML file: pass the file's path"
    )


# --- the Pulumi-side settings path: the token is required there ------------------------------


def dev_config(tmp_path: Path, extra: str = "") -> tuple[dict[str, Any], Any, str, str]:
    """The dev stack file's config (plus `extra` config lines), its line map, its path and text."""
    text = (REPO_ROOT / "Pulumi.dev.yaml").read_text(encoding="utf-8")
    text = text.replace("  gcp:region: us-central1\n", f"  gcp:region: us-central1\n{extra}")
    path = tmp_path / "Pulumi.dev.yaml"
    path.write_text(text, encoding="utf-8")
    data, lines = load_file(path)
    return dict(data["config"]), lines, str(path), text


def test_missing_token_is_allowed_offline_but_required_by_the_program(tmp_path: Path) -> None:
    config, lines, file, text = dev_config(tmp_path)
    settings = parse_stack_config(config, stack="dev", file=file, lines=lines)
    assert settings.has_hf_token is False

    with pytest.raises(ConfigError) as raised:
        parse_stack_config(config, stack="dev", file=file, lines=lines, require_hf_token=True)
    (problem,) = raised.value.problems
    assert problem.field == "config.llm-serving:hfToken"
    assert problem.file == file
    assert problem.line == find_line(text, "config:")  # the key is absent: its parent's line
    assert f"`{SET_SECRET} <token> -s dev`" in problem.message
    assert "missing" in problem.message


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (TOKEN, ("plain text", "delete it")),
        ("my-token", ("plain text", "not a secret")),
        (12345, ("encrypted secret", "12345")),
        ("", ("encrypted secret",)),
    ],
    ids=["hf-token-text", "other-text", "number", "empty"],
)
def test_required_token_must_be_a_secret(tmp_path: Path, value: Any, words: tuple[str, ...]) -> None:
    config, lines, file, text = dev_config(tmp_path, f"  llm-serving:hfToken: {value!r}\n")
    for secret_keys in (frozenset(), frozenset({"llm-serving:other"})):
        with pytest.raises(ConfigError) as raised:
            parse_stack_config(
                config, stack="dev", file=file, lines=lines, secret_keys=secret_keys, require_hf_token=True
            )
        problems = [p for p in raised.value.problems if p.field == "config.llm-serving:hfToken"]
        assert problems, str(raised.value)
        assert all(p.line == find_line(text, "  llm-serving:hfToken:") for p in problems)
        assert any(all(word in p.message for word in words) for p in problems), str(raised.value)
        assert all(f"`{SET_SECRET} <token> -s dev`" in p.message for p in problems)


def test_required_token_held_as_a_secret_is_accepted(tmp_path: Path) -> None:
    config, lines, file, _ = dev_config(tmp_path)
    secret = {**config, "llm-serving:hfToken": TOKEN}
    settings = parse_stack_config(
        secret,
        stack="dev",
        file=file,
        lines=lines,
        secret_keys=frozenset({"llm-serving:hfToken"}),
        require_hf_token=True,
    )
    assert settings.has_hf_token is True
    encrypted = {**config, "llm-serving:hfToken": {"secure": "v1:AAAABBBBCCCC"}}
    assert parse_stack_config(
        encrypted, stack="dev", file=file, lines=lines, require_hf_token=True
    ).has_hf_token
