"""The model catalog (serve/catalog.py): the shipped catalog, `python -m serve.catalog check`, and
every way a broken catalog is refused with located, actionable problems.

Each bad-input case copies the shipped `model_catalog.yaml`, breaks it, runs the real
`check` entry point and checks every printed `FILE:LINE: field.path: message` line
(`helpers.located_cases`).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers.located_cases import (
    MISSING,
    C,
    Case,
    E,
    assert_distinct,
    check_case,
    ids,
    missing,
    parse,
    written,
)
from helpers.stack_files import append, chain, const, drop_block, drop_line, edit, sub

from serve.catalog import Task, load_catalog, summary_line
from serve.catalog import main as catalog_main
from serve.paths import CATALOG_FILE_NAME, REPO_ROOT
from serve.tiers import TierName

M0, M1, M2 = "models[0]", "models[1]", "models[2]"
M0_ID = "  - id: qwen2-5-1-5b-instruct"
M1_ID = "  - id: llama-3-1-8b-instruct"
M2_ID = "  - id: qwen2-5-32b-instruct"

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
        E("models[5]", "expected a mapping", "just-a-model-name", at="  - just-a-model-name"),
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


@pytest.mark.parametrize("case", CATALOG_CASES, ids=ids(CATALOG_CASES))
def test_bad_catalog_is_refused_with_located_actionable_messages(
    case: Case, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    check_case(case, tmp_path, capsys)


def test_cases_are_distinct_and_many() -> None:
    assert_distinct(CATALOG_CASES, at_least=30)


# --- the shipped catalog -----------------------------------------------------------------------


def test_shipped_catalog_passes_the_check(capsys: pytest.CaptureFixture[str]) -> None:
    """The baseline every case mutates is valid: each case's problem comes from its mutation."""
    catalog = load_catalog(REPO_ROOT / CATALOG_FILE_NAME)
    assert catalog_main(["check", str(REPO_ROOT / CATALOG_FILE_NAME)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        *(summary_line(model) for model in catalog.models),
        f"{REPO_ROOT / CATALOG_FILE_NAME}: 5 models OK",
    ]


def test_shipped_catalog_is_the_documented_one() -> None:
    """Qwen2.5-1.5B on a T4 in float16, Llama-3.1-8B on an L4, Qwen2.5-32B on two A100s, and an
    embedder and a reranker (XLM-RoBERTa encoders) sharing the chat model's T4."""
    catalog = load_catalog(REPO_ROOT / CATALOG_FILE_NAME)
    generate, embed, rerank = Task.GENERATE, Task.EMBED, Task.RERANK
    assert [(m.id, m.source, m.tier, m.task, m.tensor_parallel_size, m.dtype) for m in catalog.models] == [
        ("qwen2-5-1-5b-instruct", "Qwen/Qwen2.5-1.5B-Instruct", TierName.T4, generate, 1, "float16"),
        ("llama-3-1-8b-instruct", "meta-llama/Llama-3.1-8B-Instruct", TierName.L4, generate, 1, "bfloat16"),
        ("qwen2-5-32b-instruct", "Qwen/Qwen2.5-32B-Instruct", TierName.A100, generate, 2, "bfloat16"),
        ("multilingual-e5-large", "intfloat/multilingual-e5-large", TierName.T4, embed, 1, "float16"),
        ("bge-reranker-v2-m3", "BAAI/bge-reranker-v2-m3", TierName.T4, rerank, 1, "float16"),
    ]
    assert [m.architecture.encoder_only for m in catalog.models] == [False, False, False, True, True]
    assert catalog.by_id("llama-3-1-8b-instruct") is catalog.models[1]
    summary = summary_line(catalog.models[2])
    assert summary.startswith("qwen2-5-32b-instruct: Qwen/Qwen2.5-32B-Instruct@")
    assert " on 2x a100 (bfloat16, max_model_len " in summary


# --- the command line ----------------------------------------------------------------------------


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
    assert lines and summary == f"{path}: {len(lines)} problem" + ("s" if len(lines) != 1 else "")
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
