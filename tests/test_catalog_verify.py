"""`python -m serve.catalog check --verify` (serve/catalog_verify.py), offline.

Each model's facts are read again from config.json at its pinned revision, from the fake hub
(huggingface_hub's HfApi answering from the shipped models' fixtures) or a local directory, and
every fact that differs is a `FILE:LINE: models[i].field: message` line on the line to edit.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
from helpers.fake_hub import FakeHub, install_fake_hub
from helpers.located_cases import parse
from helpers.model_fixtures import SHIPPED, hf_cache_snapshot, write_model_dir
from helpers.stack_files import find_line, sub

from serve.catalog import main as catalog_main
from serve.paths import CATALOG_FILE_NAME, REPO_ROOT

QWEN, LLAMA = SHIPPED["qwen2-5-1-5b-instruct"], SHIPPED["llama-3-1-8b-instruct"]
TOKEN = "hf_" + "V" * 34


@pytest.fixture
def catalog(tmp_path: Path) -> Path:
    path = tmp_path / CATALOG_FILE_NAME
    shutil.copy(REPO_ROOT / CATALOG_FILE_NAME, path)
    return path


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeHub:
    """The shipped models, with a token that may read the gated Llama."""
    fake = install_fake_hub(monkeypatch, tmp_path / "hub-files", token=TOKEN)
    fake.tokens_with_access.add(TOKEN)
    return fake


def verify(capsys: pytest.CaptureFixture[str], catalog: Path, *args: str) -> tuple[int, list[str], list[str]]:
    code = catalog_main(["check", str(catalog), "--verify", *args])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured.out.splitlines(), captured.err.splitlines()


def problems(err: list[str], catalog: Path) -> list[tuple[int, str, str]]:
    *lines, summary = err
    assert summary == f"{catalog}: {len(lines)} problem" + ("s" if len(lines) != 1 else "")
    return [parse(line, catalog) for line in lines]


def test_the_shipped_catalog_matches_its_config_json(
    catalog: Path, hub: FakeHub, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = verify(capsys, catalog)
    assert (code, err) == (0, [])
    assert out[-1] == f"{catalog}: 5 models OK, architecture facts match config.json"
    # Each model read at its pinned commit, never at a branch.
    pinned = {(model.source, model.revision) for model in SHIPPED.values()}
    assert {(repo, rev) for kind, repo, rev in hub.calls if kind == "model_info"} == pinned


def test_each_differing_fact_is_reported_on_its_line(
    catalog: Path, hub: FakeHub, capsys: pytest.CaptureFixture[str]
) -> None:
    text = catalog.read_text()
    text = text.replace("num_layers: 28", "num_layers: 29")
    text = text.replace("parameters_billion: 8.03", "parameters_billion: 8.0")
    text = sub("head_dim: 128", "head_dim: 64")(text)  # the first model's
    catalog.write_text(text)
    code, _, err = verify(capsys, catalog)
    assert code == 1
    assert problems(err, catalog) == [
        (
            find_line(text, "num_layers: 29"),
            "models[0].architecture.num_layers",
            f"{QWEN.source} at 989aa798 has 28 (num_hidden_layers), the catalog says 29: write 28",
        ),
        (
            find_line(text, "head_dim: 64"),
            "models[0].architecture.head_dim",
            f"{QWEN.source} at 989aa798 has 128 (head_dim, or hidden_size / num_attention_heads), "
            "the catalog says 64: write 128",
        ),
        (
            find_line(text, "parameters_billion: 8.0"),
            "models[1].architecture.parameters_billion",
            f"{LLAMA.source} at 0e9e39f2 has 8.03 (the safetensors weights' element count), "
            "the catalog says 8.0: write 8.03",
        ),
    ]


def test_a_quantization_the_checkpoint_lacks_is_reported(
    catalog: Path, hub: FakeHub, capsys: pytest.CaptureFixture[str]
) -> None:
    text = catalog.read_text().replace(
        "    dtype: float16\n", "    dtype: float16\n    quantization: awq\n", 1
    )
    catalog.write_text(text)
    code, _, err = verify(capsys, catalog)
    assert code == 1
    ((line, field, message),) = problems(err, catalog)
    assert (line, field) == (find_line(text, "quantization: awq"), "models[0].quantization")
    assert message.endswith(
        "is quantized with nothing (config.json quantization_config), the catalog says awq: "
        "remove quantization"
    )


def test_fp8_on_a_16_bit_checkpoint_is_not_a_difference(
    catalog: Path, hub: FakeHub, capsys: pytest.CaptureFixture[str]
) -> None:
    """vLLM quantizes a 16-bit checkpoint to fp8 as it loads it (the L4 tier has fp8)."""
    catalog.write_text(
        catalog.read_text().replace(
            "    dtype: bfloat16\n", "    dtype: bfloat16\n    quantization: fp8\n", 1
        )
    )
    code, _, err = verify(capsys, catalog)
    assert (code, err) == (0, [])


def test_a_model_that_cannot_be_read_is_located_on_its_source_or_revision(
    catalog: Path, hub: FakeHub, capsys: pytest.CaptureFixture[str]
) -> None:
    hub.tokens_with_access.clear()  # the gated Llama can no longer be read
    # The Qwen 32B repo was rewritten: its pinned commit is gone.
    gone = SHIPPED["qwen2-5-32b-instruct"]
    hub.models[gone.source] = dataclasses.replace(gone, revision="f" * 40)
    text = catalog.read_text()
    code, _, err = verify(capsys, catalog)
    assert code == 1
    found = problems(err, catalog)
    assert [(line, field) for line, field, _ in found] == [
        (find_line(text, f"source: {LLAMA.source}"), "models[1].source"),
        (find_line(text, f"revision: {gone.revision}"), "models[2].revision"),
    ]
    assert found[0][2].startswith(f"cannot verify: {LLAMA.source} is gated on Hugging Face and your token")
    assert TOKEN not in "\n".join(err)
    assert found[1][2] == (
        f"cannot verify: {gone.source} has no revision '{gone.revision}': "
        "pass a branch, tag or commit that exists (e.g. main)"
    )


def test_an_unreachable_hub_stops_with_one_sentence(
    catalog: Path, hub: FakeHub, capsys: pytest.CaptureFixture[str]
) -> None:
    hub.unreachable = True
    code, out, err = verify(capsys, catalog)
    assert (code, out) == (1, [])
    assert err == [
        f"{catalog}: nothing verified: cannot reach the Hugging Face Hub to read {QWEN.source} "
        "(ConnectionError): check the network or proxy (HF_ENDPOINT), or pass a local model directory"
    ]


def test_local_directories_stand_in_for_the_hub(
    tmp_path: Path, catalog: Path, hub: FakeHub, capsys: pytest.CaptureFixture[str]
) -> None:
    local = [
        f"{model.source}={write_model_dir(tmp_path / name, model.config, model.tensors())}"
        for name, model in SHIPPED.items()
    ]
    hub.unreachable = True  # nothing may come from the Hub
    code, out, err = verify(capsys, catalog, *[arg for value in local for arg in ("--local", value)])
    assert (code, err) == (0, [])
    assert out[-1].endswith("5 models OK, architecture facts match config.json")


def test_a_local_snapshot_of_another_commit_is_reported(
    tmp_path: Path, catalog: Path, hub: FakeHub, capsys: pytest.CaptureFixture[str]
) -> None:
    snapshot = write_model_dir(
        hf_cache_snapshot(tmp_path, QWEN.source, "a" * 40), QWEN.config, QWEN.tensors()
    )
    code, _, err = verify(capsys, catalog, "--local", f"{QWEN.source}={snapshot}")
    assert code == 1
    ((line, field, message),) = problems(err, catalog)
    assert (line, field) == (
        find_line(catalog.read_text(), f"revision: {QWEN.revision}"),
        "models[0].revision",
    )
    assert message == f"{snapshot} holds commit aaaaaaaaaaaa, not the pinned {QWEN.revision[:12]}"


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("Qwen/Qwen2.5-1.5B-Instruct", "is not SOURCE=DIR"),
        (
            "Qwen/Other=/tmp",
            "names Qwen/Other, which no catalog model uses; use one of: BAAI/bge-reranker-v2-m3, "
            "Qwen/Qwen2.5-1.5B-Instruct",
        ),
    ],
    ids=["no-equals", "unknown-source"],
)
def test_a_malformed_local_option_is_one_sentence(
    value: str, words: str, catalog: Path, hub: FakeHub, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = verify(capsys, catalog, "--local", value)
    assert (code, out, len(err)) == (1, [], 1)
    assert err[0].startswith(f"{catalog}: nothing verified: --local ") and words in err[0]


def test_an_invalid_catalog_is_reported_before_anything_is_read(
    catalog: Path, hub: FakeHub, capsys: pytest.CaptureFixture[str]
) -> None:
    catalog.write_text(catalog.read_text().replace("tier: t4", "tier: h100"))
    code, _, err = verify(capsys, catalog)
    assert code == 1 and "unknown tier 'h100'" in err[0]
    assert hub.calls == []
