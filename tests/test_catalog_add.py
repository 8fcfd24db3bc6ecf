"""`python -m serve.catalog add` (serve/catalog_add.py), offline.

The Hub is huggingface_hub's HfApi with its network calls answered from the shipped models'
config.json fixtures (helpers.fake_hub); local directories are the tiny model the project
builds and header-only model directories (helpers.model_fixtures). Every case runs the real
entry point, `serve.catalog.main(["add", ...])`, and checks what a person sees: the report, or
one sentence on stderr with exit status 1 and the catalog file byte-for-byte unchanged.
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import huggingface_hub
import pytest
import yaml
from helpers.fake_hub import FakeHub, install_fake_hub
from helpers.model_fixtures import SHIPPED, hf_cache_snapshot, write_model_dir
from helpers.stack_files import find_line

from serve import catalog_add, tiny_model
from serve.catalog import ModelEntry, fit_problems, load_catalog
from serve.catalog import main as catalog_main
from serve.model_facts import TensorInfo, parameters_billion, read_facts
from serve.paths import CATALOG_FILE_NAME, REPO_ROOT
from serve.tier_choice import Request, entry_for, placements

QWEN, LLAMA, QWEN_32B = (
    SHIPPED["qwen2-5-1-5b-instruct"],
    SHIPPED["llama-3-1-8b-instruct"],
    SHIPPED["qwen2-5-32b-instruct"],
)
TINY_REPO = "example-org/tiny-chat"
TINY_COMMIT = "0123456789abcdef0123456789abcdef01234567"
TOKEN = "hf_" + "T" * 34


@pytest.fixture
def catalog(tmp_path: Path) -> Path:
    """A copy of the shipped catalog to add to."""
    path = tmp_path / CATALOG_FILE_NAME
    shutil.copy(REPO_ROOT / CATALOG_FILE_NAME, path)
    return path


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeHub:
    return install_fake_hub(monkeypatch, tmp_path / "hub-files")


@pytest.fixture(scope="module")
def tiny_dir() -> Path:
    """The tiny model (serve/tiny_model.py), built offline once into the project's cache."""
    return tiny_model.ensure_tiny_model()


@dataclass
class Run:
    code: int
    out: str
    err: str


def add(capsys: pytest.CaptureFixture[str], catalog: Path, *args: str) -> Run:
    code = catalog_main(["add", *args, "--catalog", str(catalog)])
    captured = capsys.readouterr()
    return Run(code, captured.out, captured.err)


def new_entry(catalog: Path) -> dict[str, Any]:
    entry: dict[str, Any] = yaml.safe_load(catalog.read_text(encoding="utf-8"))["models"][-1]
    return entry


# --- the shipped models, recreated from their config.json -------------------------------------------


@pytest.mark.parametrize("model_id", sorted(SHIPPED))
def test_add_recreates_each_shipped_entry(
    model_id: str, catalog: Path, hub: FakeHub, capsys: pytest.CaptureFixture[str]
) -> None:
    """Given the shipped placement, `add` writes the shipped entry's facts and settings."""
    hub.token = TOKEN
    hub.tokens_with_access.add(TOKEN)
    shipped = load_catalog(catalog).by_id(model_id)
    run = add(
        capsys,
        catalog,
        shipped.source,
        "--id",
        f"{model_id}-copy",
        "--tier",
        shipped.tier.value,
        "--tensor-parallel-size",
        str(shipped.tensor_parallel_size),
        "--max-model-len",
        str(shipped.max_model_len),
        "--concurrency",
        str(shipped.concurrency),
        "--task",
        shipped.task.value,
    )
    assert run.code == 0, run.err
    added = load_catalog(catalog).by_id(f"{model_id}-copy")
    same = ("source", "revision", "tier", "tensor_parallel_size", "dtype", "quantization", "max_model_len")
    assert {k: getattr(added, k) for k in same} == {k: getattr(shipped, k) for k in same}
    assert added.architecture == shipped.architecture
    assert added.concurrency == shipped.concurrency


@pytest.mark.parametrize(
    ("model_id", "placement"),
    [
        # The first two are the shipped placements: T4 in float16 (no bf16) and one L4.
        ("qwen2-5-1-5b-instruct", ("t4", 1, "float16", 8192, 8)),
        ("llama-3-1-8b-instruct", ("l4", 1, "bfloat16", 8192, 3)),
        # Four L4s ($1.60/h spot) are cheaper than the shipped two A100s ($4.06/h) at 8192 tokens;
        # the shipped entry chose 32k tokens, which `--tier a100 --tensor-parallel-size 2` keeps.
        ("qwen2-5-32b-instruct", ("l4", 4, "bfloat16", 8192, 6)),
    ],
)
def test_add_chooses_the_cheapest_placement_that_fits(
    model_id: str,
    placement: tuple[str, int, str, int, int],
    catalog: Path,
    hub: FakeHub,
    capsys: pytest.CaptureFixture[str],
) -> None:
    hub.token = TOKEN
    hub.tokens_with_access.add(TOKEN)
    run = add(capsys, catalog, SHIPPED[model_id].source, "--id", "new-model")
    assert run.code == 0, run.err
    added = load_catalog(catalog).by_id("new-model")
    assert (
        added.tier.value,
        added.tensor_parallel_size,
        added.dtype,
        added.max_model_len,
        added.concurrency,
    ) == (placement)
    assert added.revision == SHIPPED[model_id].revision  # `main` pinned to its commit
    # Cheapest: every cheaper placement fails the catalog's own check even at 2048 tokens, one sequence.
    fixture = SHIPPED[model_id]
    facts = read_facts(fixture.config, lambda: [TensorInfo("w", "BF16", (fixture.parameters,))], where="x")
    base = {"id": "new-model", "source": added.source, "revision": added.revision}
    chosen = next(
        p
        for p in placements(Request())
        if (p.tier.name, p.tensor_parallel_size) == (added.tier, added.tensor_parallel_size)
    )
    for cheaper in placements(Request()):
        if cheaper.usd_per_hour >= chosen.usd_per_hour:
            break
        assert fit_problems(entry_for(base, facts, cheaper, 2048, 1)), cheaper.label
    # The longest context first, then the most concurrency: one more sequence would not fit.
    if added.concurrency < 8:
        denser = added.model_copy(update={"concurrency": added.concurrency + 1})
        assert not denser.memory().fits


def test_the_report_gives_the_estimate_and_the_monthly_cost(
    catalog: Path, hub: FakeHub, capsys: pytest.CaptureFixture[str]
) -> None:
    hub.token = TOKEN
    hub.tokens_with_access.add(TOKEN)
    run = add(capsys, catalog, LLAMA.source, "--id", "llama-again")
    assert run.code == 0 and run.err == ""
    line = find_line(catalog.read_text(), "  - id: llama-again")
    assert run.out.splitlines() == [
        f"read {LLAMA.source}@0e9e39f2: LlamaForCausalLM, bfloat16, 8.03B parameters, 32 layers, "
        "32 attention heads (8 KV), head_dim 128, 131072 positions",
        "placement: l4, tensor_parallel_size 1, bfloat16, max_model_len 8192, concurrency 3 "
        "(the cheapest of 10 placements that fit)",
        "memory: weights 14.96 + KV cache 3.00 + overhead 1.50 = 19.46 GiB of a 20.25 GiB budget "
        "(1 x 22.5 GiB x 0.90), 0.79 GiB to spare",
        "cost: $248.64 a month for one replica (730 h x $0.3406/h, one spot g2-standard-8; us-central1 "
        "prices read on 2026-11-01)",
        f"added llama-again to {catalog} (line {line})",
    ]


# --- the catalog file keeps its layout -------------------------------------------------------------------


def test_add_appends_keeping_every_existing_byte(
    catalog: Path, hub: FakeHub, capsys: pytest.CaptureFixture[str]
) -> None:
    old = catalog.read_text(encoding="utf-8")
    assert add(capsys, catalog, QWEN.source, "--id", "qwen-small").code == 0
    new = catalog.read_text(encoding="utf-8")
    assert new.startswith(old)
    appended = new[len(old) :].splitlines()
    assert appended[:3] == [
        "",
        f"  # {QWEN.source} at {QWEN.revision[:12]}: facts from its config.json "
        "(python -m serve.catalog add).",
        "  - id: qwen-small",
    ]
    # Written like the shipped entries: same key order, defaults left out, 0.90 as 0.90.
    shipped = yaml.safe_load(old)["models"][0]
    entry = new_entry(catalog)
    assert list(entry) == list(shipped)
    assert list(entry["architecture"]) == list(shipped["architecture"])
    assert "      gpu_memory_utilization: 0.90" in appended
    assert catalog_main(["check", str(catalog)]) == 0


LAYOUTS: dict[str, Callable[[str], str]] = {
    "crlf-line-ends": lambda text: text.replace("\n", "\r\n"),
    "trailing-comment": lambda text: text + "\n# more models go here\n",
    "no-final-newline": lambda text: text.rstrip("\n"),
    "list-items-not-indented": lambda text: text.replace("\n  - id:", "\n- id:").replace("\n    ", "\n  "),
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_add_keeps_other_layouts_too(
    layout: str, catalog: Path, hub: FakeHub, capsys: pytest.CaptureFixture[str]
) -> None:
    old = LAYOUTS[layout](catalog.read_text(encoding="utf-8"))
    catalog.write_bytes(old.encode("utf-8"))
    assert add(capsys, catalog, QWEN.source, "--id", "qwen-small").code == 0
    new = catalog.read_bytes().decode("utf-8")
    assert new.startswith(old)
    if layout == "crlf-line-ends":
        assert new.count("\n") == new.count("\r\n")
    assert catalog_main(["check", str(catalog)]) == 0
    assert load_catalog(catalog).models[-1].id == "qwen-small"


def test_dry_run_prints_the_entry_and_writes_nothing(
    catalog: Path, hub: FakeHub, capsys: pytest.CaptureFixture[str]
) -> None:
    before = catalog.read_bytes()
    run = add(capsys, catalog, QWEN.source, "--id", "qwen-small", "--dry-run")
    assert run.code == 0 and catalog.read_bytes() == before
    assert f"would add qwen-small to {catalog}" in run.out
    assert "  - id: qwen-small" in run.out.splitlines() and "    tier: t4" in run.out.splitlines()


def test_the_write_keeps_the_files_mode_and_leaves_no_temporary_file(
    catalog: Path, hub: FakeHub, capsys: pytest.CaptureFixture[str]
) -> None:
    catalog.chmod(0o640)
    assert add(capsys, catalog, QWEN.source, "--id", "qwen-small").code == 0
    assert stat.S_IMODE(catalog.stat().st_mode) == 0o640
    assert sorted(p.name for p in catalog.parent.iterdir()) == sorted([CATALOG_FILE_NAME, "hub-files"])


# --- local directories: the tiny model ----------------------------------------------------------------------


def test_add_reads_the_tiny_model_from_its_directory(
    catalog: Path, tiny_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = add(capsys, catalog, str(tiny_dir), "--repo", TINY_REPO, "--revision", TINY_COMMIT)
    assert run.code == 0, run.err
    entry = load_catalog(catalog).by_id("tiny-chat")
    arch = entry.architecture
    assert (entry.source, entry.revision) == (TINY_REPO, TINY_COMMIT)
    assert (arch.num_layers, arch.num_attention_heads, arch.num_kv_heads, arch.head_dim) == (
        tiny_model.NUM_LAYERS,
        tiny_model.NUM_ATTENTION_HEADS,
        tiny_model.NUM_KV_HEADS,
        tiny_model.HEAD_DIM,
    )
    assert arch.max_position_embeddings == tiny_model.MAX_POSITION_EMBEDDINGS
    assert 0 < arch.parameters_billion < 0.01
    # float32 weights, the cheapest tier: a T4 in float16, the model's whole context, 8 sequences.
    assert (entry.tier.value, entry.dtype, entry.max_model_len, entry.concurrency) == (
        "t4",
        "float16",
        2048,
        8,
    )
    assert run.out.splitlines()[0].startswith(f"read {tiny_dir}: Qwen2ForCausalLM, float32, ")


def test_add_reads_the_tiny_speech_model_as_a_transcribe_entry(
    catalog: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A Whisper is read as its decoder plus the encoder's 1500 positions, written without the
    engine settings vLLM refuses for encoder-decoders, and the whole catalog still passes check."""
    whisper = tiny_model.ensure_tiny_whisper()
    run = add(
        capsys,
        catalog,
        str(whisper),
        "--repo",
        "org/tiny-whisper",
        "--revision",
        TINY_COMMIT,
        "--task",
        "transcribe",
    )
    assert run.code == 0, run.err
    entry = load_catalog(catalog).by_id("tiny-whisper")
    assert entry.task.value == "transcribe"
    assert (entry.architecture.encoder_positions, entry.max_model_len) == (
        tiny_model.WHISPER_SOURCE_POSITIONS,
        tiny_model.MAX_TARGET_POSITIONS,
    )
    assert entry.engine.enable_prefix_caching is None and entry.engine.enable_chunked_prefill is None
    refused = add(
        capsys, catalog, str(whisper), "--repo", "org/tiny-whisper", "--revision", TINY_COMMIT, "--id", "w2"
    )
    assert refused.code == 1 and "add it with --task transcribe" in refused.err


def test_a_huggingface_cache_snapshot_needs_no_repo_or_revision(
    tmp_path: Path, catalog: Path, tiny_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    snapshot = hf_cache_snapshot(tmp_path / "hf-cache", TINY_REPO, TINY_COMMIT)
    shutil.copytree(tiny_dir, snapshot)
    assert add(capsys, catalog, str(snapshot)).code == 0
    assert (new_entry(catalog)["source"], new_entry(catalog)["revision"]) == (TINY_REPO, TINY_COMMIT)


def test_model_ids_are_dns_labels_from_the_repo_name() -> None:
    assert catalog_add.model_id_for("Qwen/Qwen2.5-7B-Instruct") == "qwen2-5-7b-instruct"
    assert catalog_add.model_id_for("meta-llama/Llama-3.1-8B-Instruct") == "llama-3-1-8b-instruct"
    assert catalog_add.model_id_for("org/--Odd__Name..v2--") == "odd-name-v2"
    assert len(catalog_add.model_id_for("org/" + "x" * 90)) == 63


# --- bad inputs: one sentence, exit 1, the catalog unchanged ------------------------------------------------


@dataclass(frozen=True)
class Bad:
    id: str
    args: Callable[[Path], list[str]]  # from the test's tmp_path
    words: tuple[str, ...]
    setup: Callable[[FakeHub, Path], None] = lambda hub, tmp: None
    downloads: bool = True  # whether the hub may be asked at all before the refusal


def _moe(tmp: Path) -> list[str]:
    config = {**QWEN.config, "architectures": ["MixtralForCausalLM"], "num_local_experts": 8}
    return [
        str(write_model_dir(tmp / "moe", config, QWEN.tensors())),
        "--repo",
        "org/moe",
        "--revision",
        TINY_COMMIT,
    ]


def _local(tmp: Path, name: str, config: dict[str, Any], *extra: str) -> list[str]:
    directory = write_model_dir(tmp / name, config, {"w": ("BF16", [1_000_000])})
    return [str(directory), "--repo", f"org/{name}", "--revision", TINY_COMMIT, *extra]


def _huge(tmp: Path) -> list[str]:
    directory = write_model_dir(tmp / "huge", LLAMA.config, {"w": ("BF16", [1_200_000_000_000])})
    return [str(directory), "--repo", "org/huge", "--revision", TINY_COMMIT]


def _gated_without_access(hub: FakeHub, tmp: Path) -> None:
    hub.token = TOKEN


def _unreachable(hub: FakeHub, tmp: Path) -> None:
    hub.unreachable = True


def _no_config(tmp: Path) -> list[str]:
    (tmp / "weights-only").mkdir()
    (tmp / "weights-only" / "model.safetensors").write_bytes(b"\0" * 16)
    return [str(tmp / "weights-only"), "--repo", "org/weights-only", "--revision", TINY_COMMIT]


def _bad_json(tmp: Path) -> list[str]:
    directory = write_model_dir(tmp / "bad-json", QWEN.config, {})
    (directory / "config.json").write_text('{"num_hidden_layers": 28,,}')
    return [str(directory), "--repo", "org/bad-json", "--revision", TINY_COMMIT]


def _a_file(tmp: Path) -> list[str]:
    (tmp / "config.json").write_text("{}")
    return [str(tmp / "config.json")]


BAD: list[Bad] = [
    Bad(
        "unknown-repo",
        lambda tmp: ["Qwen/Qwen9-Nope"],
        ("Qwen/Qwen9-Nope is not a model repo on the Hugging Face Hub",),
    ),
    Bad(
        "unknown-revision",
        lambda tmp: [QWEN.source, "--id", "q", "--revision", "v9.9"],
        (f"{QWEN.source} has no revision 'v9.9'", "branch, tag or commit"),
    ),
    Bad(
        "gated-without-token",
        lambda tmp: [LLAMA.source, "--id", "llama-copy"],
        ("is gated on Hugging Face and no token was sent", "export HF_TOKEN"),
    ),
    Bad(
        "gated-token-without-access",
        lambda tmp: [LLAMA.source, "--id", "llama-copy"],
        ("your token (HF_TOKEN or `hf auth login`) has no access",),
        setup=_gated_without_access,
    ),
    Bad(
        "network-unreachable",
        lambda tmp: [QWEN.source, "--id", "q"],
        ("cannot reach the Hugging Face Hub", "pass a local model directory"),
        setup=_unreachable,
    ),
    Bad("directory-without-config-json", _no_config, ("has no config.json",), downloads=False),
    Bad("config-json-not-json", _bad_json, ("config.json is not valid JSON (line 1",), downloads=False),
    Bad(
        "no-such-directory",
        lambda tmp: ["./no/such/dir"],
        ("neither a model directory nor a Hugging Face repo id",),
        downloads=False,
    ),
    Bad("a-file-not-a-directory", _a_file, ("is a file",), downloads=False),
    Bad("mixture-of-experts", _moe, ("MixtralForCausalLM is a mixture-of-experts model",), downloads=False),
    Bad(
        "multimodal-without-text-config",
        lambda tmp: _local(
            tmp,
            "vlm",
            {
                "architectures": ["SomeVisionForConditionalGeneration"],
                "vision_config": {},
                "model_type": "vlm",
            },
        ),
        ("multimodal model whose config.json has no text_config",),
        downloads=False,
    ),
    Bad(
        "architecture-without-the-facts",
        lambda tmp: _local(tmp, "odd", {"architectures": ["OddForCausalLM"], "model_type": "odd"}),
        ("config.json has no num_attention_heads", "(OddForCausalLM) is not one the estimate can read"),
        downloads=False,
    ),
    Bad(
        "task-not-served",
        lambda tmp: [QWEN.source, "--task", "classify"],
        ("task 'classify'", "the tasks are: generate, embed, rerank"),
        downloads=False,
    ),
    Bad(
        "derived-id-taken",
        lambda tmp: [QWEN.source],
        ("already serves 'qwen2-5-1-5b-instruct' (models[0])", "pass --id"),
        downloads=False,
    ),
    Bad(
        "id-not-a-dns-label",
        lambda tmp: [QWEN.source, "--id", "Qwen_7B"],
        ("'Qwen_7B' is not a DNS label",),
        downloads=False,
    ),
    Bad(
        "unknown-tier",
        lambda tmp: [QWEN.source, "--id", "q", "--tier", "h100"],
        ("unknown tier 'h100'", "t4, l4, a100"),
        downloads=False,
    ),
    Bad(
        "fits-nowhere",
        _huge,
        ("does not fit any tier", "8 x NVIDIA A100 80GB (a100) with a budget of 576.0 GiB", "quantized"),
        downloads=False,
    ),
    Bad(
        "does-not-fit-the-given-tier",
        lambda tmp: [QWEN_32B.source, "--id", "q", "--tier", "t4"],
        ("does not fit the t4 tier", "4 x NVIDIA T4 16GB (t4) with a budget of 54.0 GiB"),
    ),
    Bad(
        "tensor-parallel-size-not-offered",
        lambda tmp: [QWEN.source, "--id", "q", "--tier", "t4", "--tensor-parallel-size", "8"],
        ("no node offers 8 GPUs", "t4: 1, 2, 4"),
    ),
    Bad(
        "tensor-parallel-size-not-dividing-heads",
        lambda tmp: [QWEN.source, "--id", "q", "--tier", "l4", "--tensor-parallel-size", "8"],
        ("8 does not divide the model's 12 attention heads",),
    ),
    Bad(
        "context-above-the-models-limit",
        lambda tmp: [QWEN.source, "--id", "q", "--max-model-len", "65536"],
        ("cannot be served at max_model_len 65536", "65536 is above the model's limit of 32768 tokens"),
    ),
    Bad(
        "local-directory-without-repo",
        lambda tmp: [str(tiny_model.ensure_tiny_model())],
        ("does not say which Hugging Face repo and commit it holds", "--repo OWNER/NAME"),
        downloads=False,
    ),
    Bad(
        "local-directory-with-a-branch",
        lambda tmp: [str(tiny_model.ensure_tiny_model()), "--repo", TINY_REPO, "--revision", "main"],
        ("--revision 'main' is not a full commit",),
        downloads=False,
    ),
    Bad(
        "repo-option-with-a-hub-source",
        lambda tmp: [QWEN.source, "--repo", "a/b"],
        ("--repo is for local directories",),
        downloads=False,
    ),
]


@pytest.mark.parametrize("case", BAD, ids=[case.id for case in BAD])
def test_bad_input_is_one_sentence_and_leaves_the_catalog_alone(
    case: Bad, tmp_path: Path, catalog: Path, hub: FakeHub, capsys: pytest.CaptureFixture[str]
) -> None:
    case.setup(hub, tmp_path)
    before = catalog.read_bytes()
    run = add(capsys, catalog, *case.args(tmp_path))
    assert run.code == 1 and run.out == ""
    assert len(run.err.splitlines()) == 1, run.err
    assert "Traceback" not in run.err and "Error:" not in run.err
    assert all(word in run.err for word in case.words), run.err
    assert catalog.read_bytes() == before
    assert (
        sorted(p.name for p in catalog.parent.iterdir() if p.name.startswith(f".{CATALOG_FILE_NAME}")) == []
    )
    if not case.downloads:
        assert [call for call in hub.calls if call[0] != "model_info"] == []


def test_bad_input_cases_are_distinct_and_cover_the_issue() -> None:
    names = [case.id for case in BAD]
    assert len(names) == len(set(names))
    for required in (
        "unknown-repo",
        "network-unreachable",
        "gated-without-token",
        "directory-without-config-json",
    ):
        assert required in names


def test_offline_mode_is_one_sentence(
    monkeypatch: pytest.MonkeyPatch, catalog: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """huggingface_hub's real offline mode (no fake hub): it refuses before any request."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    before = catalog.read_bytes()
    run = add(capsys, catalog, "Qwen/Qwen2.5-7B-Instruct")
    assert run.code == 1 and catalog.read_bytes() == before
    assert run.err.splitlines() == [
        "HF_HUB_OFFLINE is set, so the Hugging Face Hub cannot be asked about Qwen/Qwen2.5-7B-Instruct: "
        "unset it, or pass a local model directory"
    ]


def test_an_invalid_catalog_is_reported_and_left_alone(
    catalog: Path, hub: FakeHub, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = catalog.read_text().replace("tier: t4", "tier: h100", 1)
    catalog.write_text(broken)
    run = add(capsys, catalog, QWEN.source, "--id", "q")
    assert run.code == 1 and catalog.read_text() == broken
    *problems, last = run.err.splitlines()
    line = find_line(broken, "tier: h100")
    assert problems == [f"{catalog}:{line}: models[0].tier: unknown tier 'h100'; use one of: t4, l4, a100"]
    assert last == f"{catalog}: fix these problems first (python -m serve.catalog check); nothing was added"
    assert hub.calls == []


# --- the real command, as a person runs it -------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.mark.parametrize(
    ("args", "env", "words"),
    [
        (lambda tmp: [str(tmp)], {}, "has no config.json"),
        (lambda tmp: ["Qwen/Qwen2.5-7B-Instruct"], {"HF_HUB_OFFLINE": "1"}, "HF_HUB_OFFLINE is set"),
        (
            lambda tmp: ["Qwen/Qwen2.5-7B-Instruct"],
            {"HF_ENDPOINT": f"http://127.0.0.1:{_closed_port()}"},
            "cannot reach the Hugging Face Hub to read Qwen/Qwen2.5-7B-Instruct (ConnectError)",
        ),
    ],
    ids=["directory-without-config-json", "offline-mode", "connection-refused"],
)
def test_real_cli_process_prints_one_sentence(
    args: Callable[[Path], list[str]], env: dict[str, str], words: str, tmp_path: Path, catalog: Path
) -> None:
    empty = tmp_path / "empty-dir"
    empty.mkdir()
    before = catalog.read_bytes()
    result = subprocess.run(
        [sys.executable, "-m", "serve.catalog", "add", *args(empty), "--catalog", str(catalog)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env={**os.environ, "HF_HUB_CACHE": str(tmp_path / "hf-cache"), **env},
        timeout=120,
        check=False,
    )
    assert result.returncode == 1 and result.stdout == ""
    assert len(result.stderr.splitlines()) == 1 and words in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert catalog.read_bytes() == before


def test_the_new_entry_passes_the_catalogs_validation(
    catalog: Path, hub: FakeHub, capsys: pytest.CaptureFixture[str]
) -> None:
    assert add(capsys, catalog, QWEN_32B.source, "--id", "big").code == 0
    entry = load_catalog(catalog).by_id("big")
    assert isinstance(entry, ModelEntry) and fit_problems(entry) == []
    assert entry.architecture.parameters_billion == parameters_billion(QWEN_32B.parameters)


def test_an_entry_the_check_would_refuse_is_never_written(
    monkeypatch: pytest.MonkeyPatch, catalog: Path, hub: FakeHub, capsys: pytest.CaptureFixture[str]
) -> None:
    """The safety net under the appender: the whole new file must pass the catalog's validation."""
    monkeypatch.setattr(
        catalog_add, "appended_text", lambda text, entry, comment: text + "  - id: Broken_Id\n"
    )
    before = catalog.read_bytes()
    run = add(capsys, catalog, QWEN.source, "--id", "qwen-small")
    assert run.code == 1 and catalog.read_bytes() == before
    shipped = len(load_catalog(REPO_ROOT / CATALOG_FILE_NAME).models)
    assert run.err.startswith(f"the new entry would not pass the catalog check (models[{shipped}]")
    assert run.err.rstrip().endswith(f"nothing was written to {catalog}")


def test_a_failed_write_is_one_sentence(
    monkeypatch: pytest.MonkeyPatch, catalog: Path, hub: FakeHub, capsys: pytest.CaptureFixture[str]
) -> None:
    def refuse(path: Path, text: str) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(catalog_add, "write_atomically", refuse)
    run = add(capsys, catalog, QWEN.source, "--id", "qwen-small")
    assert run.code == 1
    assert run.err.splitlines() == [
        f"cannot write {catalog} (Permission denied); it is unchanged: check the permissions"
    ]


def test_the_readme_shows_what_add_prints(
    monkeypatch: pytest.MonkeyPatch, catalog: Path, hub: FakeHub, capsys: pytest.CaptureFixture[str]
) -> None:
    """README "The catalog": the example output is the command's, character for character."""
    hub.token = TOKEN
    hub.tokens_with_access.add(TOKEN)
    monkeypatch.chdir(catalog.parent)  # the default --catalog, as a person at the repo root runs it
    assert catalog_main(["add", LLAMA.source, "--id", "llama-8b"]) == 0
    printed = capsys.readouterr().out
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    command = f"$ HF_TOKEN=hf_... .venv/bin/python -m serve.catalog add {LLAMA.source} --id llama-8b\n"
    assert command + printed in readme
