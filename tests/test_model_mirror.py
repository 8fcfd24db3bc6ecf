"""serve/model_mirror.py against a real GCS API: the gcp-storage-emulator, started by the tests.

The mirror runs its real code (pyarrow's GcsFileSystem, the same client Ray's gs:// path uses)
with the project's tiny model as the "Hugging Face" source. Ray's own download of the mirrored
folder (`CloudFileSystem.download_model`, what a replica runs before vLLM starts) closes the loop.
"""

from __future__ import annotations

import ast
import hashlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.gcs_emulator import EMULATOR_ENV, GcsEmulator, fake_service_account_key, running_emulator

from serve import model_mirror
from serve.model_mirror import (
    HASH_FILE,
    LocalSource,
    MirrorError,
    SourceFile,
    already_mirrored,
    mirror_model,
    model_prefix,
)
from serve.tiny_model import ensure_tiny_model

BUCKET = "llm-serving-test-models"
MODEL = "acme/tiny-chat"
REVISION = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def emulator() -> Iterator[GcsEmulator]:
    with running_emulator(BUCKET) as running:
        yield running


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    """The tiny model plus what a real repo also holds: a pickled twin, a README, a sub-folder."""
    directory = tmp_path / "repo"
    shutil.copytree(ensure_tiny_model(), directory)
    (directory / "pytorch_model.bin").write_bytes(b"pickled weights vLLM never reads here")
    (directory / "README.md").write_text("# tiny\n")
    (directory / "original").mkdir()
    (directory / "original" / "consolidated.00.pth").write_bytes(b"meta checkpoint")
    (directory / "1_Pooling").mkdir()
    (directory / "1_Pooling" / "config.json").write_text('{"pooling_mode_mean_tokens": true}\n')
    return directory


def _objects(emulator: GcsEmulator, prefix: str) -> dict[str, bytes]:
    from pyarrow.fs import FileSelector, FileType

    fs = emulator.filesystem()
    found = {}
    for info in fs.get_file_info(FileSelector(prefix, recursive=True)):
        if info.type == FileType.File and not info.path.endswith("/"):
            with fs.open_input_stream(info.path) as stream:
                found[info.path.removeprefix(prefix + "/")] = stream.read()
    return found


def _mirror(
    emulator: GcsEmulator, source: model_mirror.Source, revision: str = REVISION
) -> model_mirror.MirrorReport:
    return mirror_model(source, emulator.filesystem(), BUCKET, MODEL, revision, workers=2)


def test_the_mirror_copies_what_vllm_loads_and_proves_every_byte(
    emulator: GcsEmulator, model_dir: Path
) -> None:
    report = _mirror(emulator, LocalSource(model_dir))

    prefix = model_prefix(BUCKET, MODEL, REVISION)
    objects = _objects(emulator, prefix)
    expected = {
        path.relative_to(model_dir).as_posix()
        for path in model_dir.rglob("*")
        if path.is_file() and not model_mirror.is_skipped(path.relative_to(model_dir).as_posix())
    }
    assert set(objects) == expected | {HASH_FILE}
    assert "model.safetensors" in objects and "1_Pooling/config.json" in objects
    assert {"pytorch_model.bin", "README.md", "original/consolidated.00.pth"} == set(report.skipped)
    for path in expected:
        assert objects[path] == (model_dir / path).read_bytes(), path
    assert objects[HASH_FILE] == REVISION.encode()
    marker = json.loads(_objects(emulator, f"{BUCKET}/models/{MODEL}")[f"{REVISION}.mirrored.json"])
    assert marker["revision"] == REVISION
    assert (
        marker["files"]["model.safetensors"]["sha256"]
        == hashlib.sha256((model_dir / "model.safetensors").read_bytes()).hexdigest()
    )
    assert report.bytes_copied == sum((model_dir / path).stat().st_size for path in expected)
    assert not report.already_mirrored


def test_a_rerun_of_the_same_revision_copies_nothing(emulator: GcsEmulator, model_dir: Path) -> None:
    _mirror(emulator, LocalSource(model_dir))
    fetched: list[str] = []

    class Watching(LocalSource):
        def fetch(self, file: SourceFile, into: Path) -> Path:
            fetched.append(file.path)
            return super().fetch(file, into)

    again = _mirror(emulator, Watching(model_dir))

    assert again.already_mirrored and again.copied == [] and fetched == []


def test_a_revision_bump_mirrors_beside_the_old_one(emulator: GcsEmulator, model_dir: Path) -> None:
    _mirror(emulator, LocalSource(model_dir))
    bumped = "f" * 40
    report = _mirror(emulator, LocalSource(model_dir), bumped)

    assert not report.already_mirrored and report.copied
    assert already_mirrored(emulator.filesystem(), BUCKET, MODEL, REVISION)
    assert already_mirrored(emulator.filesystem(), BUCKET, MODEL, bumped)


def test_a_lost_object_makes_the_next_run_copy_again(emulator: GcsEmulator, model_dir: Path) -> None:
    _mirror(emulator, LocalSource(model_dir))
    emulator.filesystem().delete_file(f"{model_prefix(BUCKET, MODEL, REVISION)}/model.safetensors")

    assert not already_mirrored(emulator.filesystem(), BUCKET, MODEL, REVISION)
    assert "model.safetensors" in _mirror(emulator, LocalSource(model_dir)).copied


def test_a_download_that_differs_from_the_published_digest_fails_and_writes_no_marker(
    emulator: GcsEmulator, model_dir: Path
) -> None:
    class Tampered(LocalSource):
        def files(self) -> list[SourceFile]:
            return [
                SourceFile(f.path, f.size, "0" * 64 if f.path == "model.safetensors" else f.sha256)
                for f in super().files()
            ]

    with pytest.raises(MirrorError, match=r"model\.safetensors: sha256 .* differs from the source's 0{64}"):
        _mirror(emulator, Tampered(model_dir))
    assert not already_mirrored(emulator.filesystem(), BUCKET, MODEL, REVISION)


def test_an_upload_the_bucket_does_not_hold_intact_fails(
    emulator: GcsEmulator, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_upload = model_mirror._upload

    def corrupting_upload(fs, local: Path, destination: str) -> None:  # type: ignore[no-untyped-def]
        real_upload(fs, local, destination)
        if destination.endswith("config.json"):
            with fs.open_output_stream(destination) as out:
                out.write(b"{}")

    monkeypatch.setattr(model_mirror, "_upload", corrupting_upload)
    with pytest.raises(
        MirrorError, match=r"config\.json: the bucket's copy does not hash to what was uploaded"
    ):
        _mirror(emulator, LocalSource(model_dir))
    assert not already_mirrored(emulator.filesystem(), BUCKET, MODEL, REVISION)


def test_a_revision_without_safetensors_is_refused(emulator: GcsEmulator, model_dir: Path) -> None:
    (model_dir / "model.safetensors").unlink()
    with pytest.raises(MirrorError, match=r"has no \*\.safetensors weights"):
        _mirror(emulator, LocalSource(model_dir))


def test_the_command_line_mirrors_and_prints_its_report(
    emulator: GcsEmulator, model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--model-id", MODEL, "--revision", REVISION, "--bucket", BUCKET]
    argv += ["--source-dir", str(model_dir), "--endpoint", emulator.endpoint]
    assert model_mirror.main(argv) == 0
    first = json.loads(capsys.readouterr().out)
    assert model_mirror.main(argv) == 0
    second = json.loads(capsys.readouterr().out)
    assert first["copied"] and not first["already_mirrored"]
    assert second["already_mirrored"] and second["copied"] == []


def test_hub_files_carry_the_digests_the_hub_publishes(monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import HfApi
    from huggingface_hub.hf_api import ModelInfo

    info = ModelInfo(
        id=MODEL,
        sha=REVISION,
        siblings=[
            {"rfilename": "config.json", "size": 12, "blobId": "a" * 40},
            {
                "rfilename": "model.safetensors",
                "size": 99,
                "blobId": "b" * 40,
                "lfs": {"sha256": "c" * 64, "size": 99, "pointerSize": 130},
            },
        ],
    )
    monkeypatch.setattr(HfApi, "model_info", lambda self, *a, **k: info)
    files = {f.path: f for f in model_mirror.HubSource(MODEL, REVISION).files()}
    assert files["config.json"] == SourceFile("config.json", 12, None, "a" * 40)
    assert files["model.safetensors"] == SourceFile("model.safetensors", 99, "c" * 64, None)


def test_git_blob_ids_are_gits(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"hello\n")
    # `printf 'hello\n' | git hash-object --stdin`
    assert model_mirror.git_blob_sha1(path) == "ce013625030ba8dba906f756967f9e9ca394464a"


def test_the_module_runs_alone_in_the_ray_image() -> None:
    """It is mounted alone into the Job: only the standard library, pyarrow and huggingface_hub."""
    tree = ast.parse(Path(model_mirror.__file__).read_text())
    modules = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    modules |= {
        node.module.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module
    }
    import sys

    assert modules - set(sys.stdlib_module_names) <= {"pyarrow", "huggingface_hub"}


@pytest.mark.parametrize("with_folder_markers", [True, False])
def test_ray_downloads_the_mirrored_folder_with_sub_folders_only_with_their_markers(
    emulator: GcsEmulator,
    model_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    with_folder_markers: bool,
) -> None:
    """Ray's own gs:// download, on the production URI: what a replica does before vLLM starts."""
    if not with_folder_markers:
        monkeypatch.setattr(model_mirror, "_folders", lambda _paths: [])
    _mirror(emulator, LocalSource(model_dir))
    monkeypatch.setenv(EMULATOR_ENV, emulator.url)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(fake_service_account_key(tmp_path)))
    from ray.llm._internal.common.utils.cloud_utils import CloudFileSystem

    destination = tmp_path / "hf-cache" / "models--acme--tiny-chat"
    download = lambda: CloudFileSystem.download_model(  # noqa: E731
        str(destination), f"gs://{model_prefix(BUCKET, MODEL, REVISION)}", tokenizer_only=False
    )
    if not with_folder_markers:
        with pytest.raises(FileNotFoundError, match="1_Pooling"):
            download()
        return
    download()
    snapshot = destination / "snapshots" / REVISION
    assert (destination / "refs" / "main").read_text() == REVISION
    assert (snapshot / "1_Pooling" / "config.json").read_bytes() == (
        model_dir / "1_Pooling" / "config.json"
    ).read_bytes()
    assert (snapshot / "model.safetensors").read_bytes() == (model_dir / "model.safetensors").read_bytes()


def test_the_emulator_dies_with_the_test_process_that_started_it(tmp_path: Path) -> None:
    """A test run killed outright (SIGKILL: no finally runs) leaves no emulator behind."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import psutil

    pid_file = tmp_path / "pid"
    script = (
        "import sys, time; sys.path.insert(0, 'tests')\n"
        "from helpers.gcs_emulator import running_emulator\n"
        "with running_emulator('b') as emu:\n"
        f"    open({str(pid_file)!r}, 'w').write(str(emu.pid)); time.sleep(600)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.monotonic() + 30
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < deadline and parent.poll() is None, "the emulator never started"
        time.sleep(0.1)
    emulator = psutil.Process(int(pid_file.read_text()))
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    gone, _ = psutil.wait_procs([emulator], timeout=10)
    assert gone, "the emulator outlived the process that started it"
