"""Copy one model revision from Hugging Face into the stack's GCS bucket, once, and prove the copy.

The cluster runs this as one Kubernetes Job per (model, revision) before the RayService exists
(`infra/plan/model_store.py`); GPU replicas then read the bucket through Workload Identity and
never talk to Hugging Face. Layout, which is what Ray Serve LLM 2.60 reads for a `gs://`
`model_source` (ray/llm/_internal/common/utils/cloud_utils.py `download_model`):

    gs://<bucket>/models/<model id>/<revision>/<the repo's files>
    gs://<bucket>/models/<model id>/<revision>/hash           the revision: Ray names the local
                                                              snapshot folder after it
    gs://<bucket>/models/<model id>/<revision>.mirrored.json  the completion marker, written last

Idempotent: when the marker is there and every file it lists is in the bucket at the listed
size, a rerun copies nothing. Verified: every file is checked against the digest Hugging Face
publishes for that revision (sha256 for LFS files, the git blob id for the rest), and every
object is read back from the bucket and must hash to the same sha256.

Only what vLLM loads is copied: safetensors weights, configs and tokenizer files; pickled
checkpoints (`*.bin`, `*.pt`), ONNX/GGUF exports and `original/` folders are skipped, because
the bucket copy of an 8B model would otherwise double. A sub-folder (sentence-transformers'
`1_Pooling/config.json`) gets a folder marker object: Arrow's GCS listing returns objects only,
never prefixes (apache/arrow cpp/src/arrow/filesystem/gcsfs.cc `GetFileInfo(FileSelector)`), so
without the marker Ray's `copy_files` never creates the local folder and fails.

This file is mounted alone into the Job's container (the Ray image: pyarrow and huggingface_hub
are there), so it imports only the standard library and those two, lazily.
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol

if TYPE_CHECKING:
    from pyarrow.fs import FileSystem  # type: ignore[import-untyped]

LOG = logging.getLogger("model_mirror")

MODELS_PREFIX: Final = "models"
MARKER_SUFFIX: Final = ".mirrored.json"
# Ray reads `<bucket_uri>/hash` and names the local snapshot folder after its content
# (cloud_utils.py `download_model`); without it the folder is 000...0.
HASH_FILE: Final = "hash"
# What vLLM never loads when safetensors are there; skipping them keeps the bucket to one copy of
# the weights. Matched against the repo path (fnmatch, `*` crosses folders).
SKIPPED_PATTERNS: Final = (
    "*.bin",
    "*.pt",
    "*.pth",
    "*.ckpt",
    "*.h5",
    "*.msgpack",
    "*.onnx",
    "*.onnx_data",
    "*.gguf",
    "*.tflite",
    "*.ot",
    "*.mlmodel",
    "*.mlpackage/*",
    "original/*",
    "onnx/*",
    "openvino/*",
    "coreml/*",
    ".gitattributes",
    "*.md",
    "*.png",
    "*.jpg",
    "*.gif",
)
CHUNK_BYTES: Final = 8 * 1024 * 1024
DEFAULT_WORKERS: Final = 4


class MirrorError(RuntimeError):
    """The mirror cannot finish; the message says what and how to fix it."""


@dataclass(frozen=True)
class SourceFile:
    """One file of a model revision and the digest its source publishes for it."""

    path: str
    size: int
    sha256: str | None = None
    git_blob_sha1: str | None = None


class Source(Protocol):
    """Where a revision's files come from: Hugging Face on the cluster, a directory in tests."""

    def files(self) -> list[SourceFile]: ...

    def fetch(self, file: SourceFile, into: Path) -> Path: ...


@dataclass(frozen=True)
class HubSource:
    """A pinned revision of a Hugging Face repo, read with the HF token of the environment."""

    repo_id: str
    revision: str
    token: str | None = None

    def files(self) -> list[SourceFile]:
        from huggingface_hub import HfApi

        info = HfApi(token=self.token).model_info(self.repo_id, revision=self.revision, files_metadata=True)
        found = []
        for sibling in info.siblings or []:
            lfs = sibling.lfs
            sha256 = (
                (lfs.get("sha256") if isinstance(lfs, dict) else getattr(lfs, "sha256", None))
                if lfs
                else None
            )
            size = sibling.size if sibling.size is not None else (getattr(lfs, "size", 0) if lfs else 0)
            found.append(
                SourceFile(sibling.rfilename, int(size or 0), sha256, None if lfs else sibling.blob_id)
            )
        return found

    def fetch(self, file: SourceFile, into: Path) -> Path:
        from huggingface_hub import hf_hub_download

        return Path(
            hf_hub_download(self.repo_id, file.path, revision=self.revision, local_dir=into, token=self.token)
        )


@dataclass(frozen=True)
class LocalSource:
    """A model directory on disk (the project's tiny model in tests); digests are its own."""

    directory: Path

    def files(self) -> list[SourceFile]:
        return [
            SourceFile(path.relative_to(self.directory).as_posix(), path.stat().st_size, file_sha256(path))
            for path in sorted(self.directory.rglob("*"))
            if path.is_file()
        ]

    def fetch(self, file: SourceFile, into: Path) -> Path:
        return self.directory / file.path


@dataclass
class MirrorReport:
    """What one run did: `copied` is empty when the revision was already mirrored."""

    model_id: str
    revision: str
    prefix: str
    copied: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    bytes_copied: int = 0
    seconds: float = 0.0
    already_mirrored: bool = False


def model_prefix(bucket: str, model_id: str, revision: str) -> str:
    """`<bucket>/models/<id>/<revision>`: a pyarrow path; `gs://` plus this is the model source."""
    return f"{bucket}/{MODELS_PREFIX}/{model_id}/{revision}"


def marker_path(bucket: str, model_id: str, revision: str) -> str:
    return model_prefix(bucket, model_id, revision) + MARKER_SUFFIX


def is_skipped(path: str) -> bool:
    return any(fnmatch.fnmatch(path, pattern) for pattern in SKIPPED_PATTERNS)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def git_blob_sha1(path: Path) -> str:
    """The id git (and so the Hub, for files outside LFS) gives a file's content."""
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())  # git's own scheme
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _object_sha256(fs: FileSystem, path: str) -> str:
    digest = hashlib.sha256()
    with fs.open_input_stream(path) as stream:
        for chunk in iter(lambda: stream.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _read_marker(fs: FileSystem, path: str) -> dict[str, Any] | None:
    from pyarrow.fs import FileType

    if fs.get_file_info(path).type != FileType.File:
        return None
    with fs.open_input_stream(path) as stream:
        try:
            marker = json.loads(stream.read().decode())
        except ValueError:
            return None
    return marker if isinstance(marker, dict) else None


def already_mirrored(fs: FileSystem, bucket: str, model_id: str, revision: str) -> bool:
    """The marker is there, names this revision, and every file it lists is in the bucket at its size."""
    from pyarrow.fs import FileType

    marker = _read_marker(fs, marker_path(bucket, model_id, revision))
    if marker is None or marker.get("revision") != revision or not isinstance(marker.get("files"), dict):
        return False
    prefix = model_prefix(bucket, model_id, revision)
    listed = marker["files"]
    infos = fs.get_file_info([f"{prefix}/{path}" for path in listed])
    return all(
        info.type == FileType.File and info.size == entry.get("size")
        for info, entry in zip(infos, listed.values(), strict=True)
    )


def _check_download(file: SourceFile, local: Path) -> str:
    """The local file's sha256, after checking it against the source's published digest."""
    size = local.stat().st_size
    if size != file.size:
        raise MirrorError(
            f"{file.path}: downloaded {size} bytes, the source lists {file.size}; rerun the Job"
        )
    sha256 = file_sha256(local)
    if file.sha256 is not None and sha256 != file.sha256:
        raise MirrorError(
            f"{file.path}: sha256 {sha256} differs from the source's {file.sha256}; rerun the Job"
        )
    if file.git_blob_sha1 is not None and git_blob_sha1(local) != file.git_blob_sha1:
        raise MirrorError(f"{file.path}: content differs from the source's git blob {file.git_blob_sha1}")
    return sha256


def _upload(fs: FileSystem, local: Path, destination: str) -> None:
    with local.open("rb") as handle, fs.open_output_stream(destination) as out:
        for chunk in iter(lambda: handle.read(CHUNK_BYTES), b""):
            out.write(chunk)


def _folders(paths: Iterable[str]) -> list[str]:
    """Every folder under the prefix that holds a file, parents first."""
    found: set[str] = set()
    for path in paths:
        parts = path.split("/")[:-1]
        found.update("/".join(parts[: depth + 1]) for depth in range(len(parts)))
    return sorted(found, key=lambda folder: (folder.count("/"), folder))


def mirror_model(
    source: Source,
    fs: FileSystem,
    bucket: str,
    model_id: str,
    revision: str,
    *,
    workers: int = DEFAULT_WORKERS,
    log: Callable[[str], None] = LOG.info,
) -> MirrorReport:
    """Copy `source`'s files for (model_id, revision) into `bucket`, verify them, write the marker.

    Raises MirrorError if the revision has no safetensors weights, or a file does not match the
    digest its source publishes or the bytes it was uploaded with."""
    started = time.monotonic()
    prefix = model_prefix(bucket, model_id, revision)
    report = MirrorReport(model_id=model_id, revision=revision, prefix=prefix)
    if already_mirrored(fs, bucket, model_id, revision):
        report.already_mirrored = True
        report.seconds = time.monotonic() - started
        log(f"{model_id}@{revision}: already mirrored at gs://{prefix}; nothing to do")
        return report

    listed = source.files()
    wanted = [file for file in listed if not is_skipped(file.path) and file.path != HASH_FILE]
    report.skipped = sorted(file.path for file in listed if file not in wanted)
    if not any(file.path.endswith(".safetensors") for file in wanted):
        raise MirrorError(
            f"{model_id}@{revision} has no *.safetensors weights; pick a revision that has them "
            "(vLLM's pickled-checkpoint loading is not mirrored)"
        )
    folders = _folders(file.path for file in wanted)
    if folders:
        # Arrow's recursive create_dir walks up to the first existing marker and, finding none,
        # reads the bucket's metadata (gcsfs.cc `CreateDirMarkerRecursive`), which needs
        # storage.buckets.get: more than the mirror's object role. A `models/` marker stops the walk.
        fs.create_dir(f"{bucket}/{MODELS_PREFIX}", recursive=False)
    for folder in folders:
        fs.create_dir(f"{prefix}/{folder}", recursive=True)

    def copy_one(file: SourceFile, scratch: Path) -> tuple[str, str, int]:
        local = source.fetch(file, scratch)
        try:
            sha256 = _check_download(file, local)
            destination = f"{prefix}/{file.path}"
            _upload(fs, local, destination)
            if _object_sha256(fs, destination) != sha256:
                raise MirrorError(f"{file.path}: the bucket's copy does not hash to what was uploaded; rerun")
        finally:
            if isinstance(source, HubSource):
                local.unlink(missing_ok=True)  # one file's space at a time, not the whole model's
        log(f"{model_id}@{revision}: {file.path} ({file.size} bytes) verified")
        return file.path, sha256, file.size

    with tempfile.TemporaryDirectory(prefix="model-mirror-") as scratch_dir:
        scratch = Path(scratch_dir)
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            results = list(pool.map(lambda file: copy_one(file, scratch), wanted))
    with fs.open_output_stream(f"{prefix}/{HASH_FILE}") as out:
        out.write(revision.encode())
    manifest = {
        "model_id": model_id,
        "revision": revision,
        "files": {path: {"size": size, "sha256": sha256} for path, sha256, size in sorted(results)},
        "skipped": report.skipped,
        "mirrored_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    with fs.open_output_stream(marker_path(bucket, model_id, revision)) as out:
        out.write(json.dumps(manifest, indent=2, sort_keys=True).encode())
    report.copied = [path for path, _, _ in sorted(results)]
    report.bytes_copied = sum(size for _, _, size in results)
    report.seconds = time.monotonic() - started
    log(
        f"{model_id}@{revision}: {len(report.copied)} files, {report.bytes_copied} bytes mirrored to "
        f"gs://{prefix} in {report.seconds:.1f} s"
    )
    return report


def gcs_filesystem(endpoint: str | None = None) -> FileSystem:
    """The bucket's filesystem: Google's default credentials (Workload Identity in the Job), or an
    emulator at `endpoint` (`host:port`, anonymous, plain HTTP) for local runs."""
    from pyarrow.fs import GcsFileSystem

    if endpoint:
        return GcsFileSystem(anonymous=True, scheme="http", endpoint_override=endpoint)
    return GcsFileSystem()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serve.model_mirror", description=__doc__.split("\n")[0])
    parser.add_argument("--model-id", required=True, help="the Hugging Face repo id (the catalog's id)")
    parser.add_argument("--revision", required=True, help="the commit to mirror (the catalog's revision)")
    parser.add_argument("--bucket", required=True, help="the bucket's name, without gs://")
    parser.add_argument("--source-dir", type=Path, help="copy this directory instead of the Hub's files")
    parser.add_argument("--endpoint", help="a GCS emulator's host:port (anonymous, plain HTTP)")
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS, help="files copied at once")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    source: Source = (
        LocalSource(args.source_dir)
        if args.source_dir
        else HubSource(args.model_id, args.revision, os.environ.get("HF_TOKEN") or None)
    )
    try:
        report = mirror_model(
            source,
            gcs_filesystem(args.endpoint),
            args.bucket,
            args.model_id,
            args.revision,
            workers=args.workers,
        )
    except MirrorError as error:
        print(f"model mirror failed: {error}", file=sys.stderr)
        return 1
    print(json.dumps(asdict(report), sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
