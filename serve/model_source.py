"""Where a model's config.json and safetensors headers come from: the Hugging Face Hub or a directory.

Every failure becomes a SourceError whose text is one sentence saying what is wrong and what to
do: no huggingface_hub exception or traceback reaches the person. HubUnreachable (no network,
offline mode) is the one failure that says nothing about a particular model, so commands that
read several models stop at it instead of repeating it for each.

huggingface_hub is imported when the Hub is first asked: `python -m serve.catalog check` and the
serving layer import the catalog without it.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol

from serve.model_facts import TensorInfo

if TYPE_CHECKING:
    from huggingface_hub import HfApi

CONFIG_FILE: Final = "config.json"
SAFETENSORS_SINGLE: Final = "model.safetensors"
SAFETENSORS_INDEX: Final = "model.safetensors.index.json"
# A safetensors file starts with the header's length (8 bytes, little-endian) and the JSON
# header. Real headers are kilobytes to a few megabytes; a bigger length means not safetensors.
_MAX_HEADER_BYTES: Final = 100 * 2**20
# Where huggingface_hub keeps a downloaded revision: .../models--OWNER--NAME/snapshots/<commit>.
_CACHE_REPO_DIR: Final = re.compile(r"^models--(?P<owner>[^/]+?)--(?P<name>[^/]+)$")
_COMMIT: Final = re.compile(r"^[0-9a-f]{40}$")
# huggingface_hub 1.x speaks HTTP through httpx, 2.x through httpx2; their connection errors are
# not OSErrors, so they are recognised by the package that raised them.
_HTTP_PACKAGES: Final = ("httpx", "httpx2", "httpcore", "requests", "urllib3", "h11")


class SourceError(Exception):
    """A model could not be read; str() is one sentence. `field` is the catalog key it concerns."""

    def __init__(self, message: str, *, field: str = "source") -> None:
        super().__init__(message)
        self.field = field


class HubUnreachable(SourceError):
    """The Hub cannot be asked at all: no model can be read from it until that is fixed."""


class ModelHub(Protocol):
    """What the catalog commands ask of a model hub; HuggingFaceHub is the real one."""

    def resolve(self, repo: str, revision: str) -> str:
        """The 40-hex commit `revision` (branch, tag or commit) of `repo` points at."""
        ...

    def config(self, repo: str, commit: str) -> dict[str, Any]:
        """config.json of `repo` at `commit`, parsed."""
        ...

    def tensors(self, repo: str, commit: str) -> list[TensorInfo]:
        """Every tensor in the safetensors headers of `repo` at `commit`."""
        ...


def _is_transport_error(error: BaseException) -> bool:
    if isinstance(error, ConnectionError | TimeoutError):
        return True
    return any(cls.__module__.split(".")[0] in _HTTP_PACKAGES for cls in type(error).__mro__)


def _gated_message(repo: str) -> str:
    import huggingface_hub

    page = f"https://huggingface.co/{repo}"
    if huggingface_hub.get_token() is None:
        return (
            f"{repo} is gated on Hugging Face and no token was sent: accept its license at {page}, "
            "then export HF_TOKEN=<a read token of that account> (or run `hf auth login`)"
        )
    return (
        f"{repo} is gated on Hugging Face and your token (HF_TOKEN or `hf auth login`) has no access "
        f"to it yet: accept its license at {page} with that account and wait for the approval"
    )


@contextmanager
def _hub_errors(repo: str, revision: str, file: str = CONFIG_FILE) -> Iterator[None]:
    """Turn what huggingface_hub raises into one SourceError sentence."""
    from huggingface_hub import errors

    try:
        yield
    except errors.GatedRepoError:  # a RepositoryNotFoundError subclass: test it first
        raise SourceError(_gated_message(repo)) from None
    except errors.RepositoryNotFoundError:
        raise SourceError(
            f"{repo} is not a model repo on the Hugging Face Hub (or it is private and your token "
            "cannot see it): check the spelling, owner/name as in Qwen/Qwen2.5-7B-Instruct"
        ) from None
    except errors.RevisionNotFoundError:
        raise SourceError(
            f"{repo} has no revision {revision!r}: pass a branch, tag or commit that exists (e.g. main)",
            field="revision",
        ) from None
    except errors.OfflineModeIsEnabled:
        raise HubUnreachable(
            f"HF_HUB_OFFLINE is set, so the Hugging Face Hub cannot be asked about {repo}: unset it, "
            "or pass a local model directory"
        ) from None
    except errors.LocalEntryNotFoundError:  # what a download raises when the Hub is unreachable
        raise HubUnreachable(
            f"cannot reach the Hugging Face Hub to read {repo}, and its files are not in the local "
            "cache: check the network or proxy (HF_ENDPOINT), or pass a local model directory"
        ) from None
    except errors.EntryNotFoundError:
        raise SourceError(
            f"{repo} has no {file} at {revision[:12]}: it is not a transformers model repo vLLM "
            "can load; pick the repo that holds the model's weights"
        ) from None
    except errors.NotASafetensorsRepoError:
        raise SourceError(
            f"{repo} has no safetensors weights ({SAFETENSORS_SINGLE} or its index) at {revision[:12]} "
            "to count the parameters of; use a repo that publishes safetensors weights"
        ) from None
    except errors.SafetensorsParsingError:
        raise SourceError(
            f"the safetensors headers of {repo} at {revision[:12]} cannot be read; "
            "the parameter count is needed, so pick another revision or add the model by hand"
        ) from None
    except errors.HfHubHTTPError as error:
        status = getattr(getattr(error, "response", None), "status_code", "an error")
        raise SourceError(
            f"the Hugging Face Hub answered HTTP {status} about {repo}; try again later"
        ) from None
    except Exception as error:
        if _is_transport_error(error):
            raise HubUnreachable(
                f"cannot reach the Hugging Face Hub to read {repo} ({type(error).__name__}): check "
                "the network or proxy (HF_ENDPOINT), or pass a local model directory"
            ) from None
        raise


def read_config_file(path: Path, where: str) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise SourceError(
            f"{where}: {CONFIG_FILE} is not valid JSON (line {error.lineno}: {error.msg}); "
            "fetch it again or fix it"
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise SourceError(f"{where}: {CONFIG_FILE} cannot be read ({error}); check the file") from None
    if not isinstance(config, dict):
        raise SourceError(f"{where}: {CONFIG_FILE} is not a JSON object; it is not a model config")
    return config


class HuggingFaceHub:
    """The Hugging Face Hub through huggingface_hub.

    The token is huggingface_hub's own choice: `HF_TOKEN` from the environment, else the one
    `hf auth login` stored. Gated repos (Llama) need it; it is never printed.
    """

    def __init__(self, endpoint: str | None = None, cache_dir: Path | None = None) -> None:
        self._endpoint = endpoint
        self._cache_dir = cache_dir

    def _api(self) -> HfApi:
        from huggingface_hub import HfApi
        from huggingface_hub.utils import disable_progress_bars, logging

        # A command prints its own lines: no download bars or retry warnings between them.
        disable_progress_bars()
        logging.set_verbosity_error()
        return HfApi(endpoint=self._endpoint)

    def resolve(self, repo: str, revision: str) -> str:
        with _hub_errors(repo, revision):
            commit = self._api().model_info(repo, revision=revision).sha
        if not commit:
            raise SourceError(f"the Hugging Face Hub gave no commit for {repo} at {revision!r}; try again")
        return commit

    def config(self, repo: str, commit: str) -> dict[str, Any]:
        with _hub_errors(repo, commit):
            path = self._api().hf_hub_download(repo, CONFIG_FILE, revision=commit, cache_dir=self._cache_dir)
        return read_config_file(Path(str(path)), f"{repo}@{commit[:8]}")

    def tensors(self, repo: str, commit: str) -> list[TensorInfo]:
        with _hub_errors(repo, commit, file="safetensors weights"):
            metadata = self._api().get_safetensors_metadata(repo, revision=commit)
        return [
            TensorInfo(name, info.dtype, tuple(info.shape))
            for file in metadata.files_metadata.values()
            for name, info in file.tensors.items()
        ]


def safetensors_header(path: Path) -> list[TensorInfo]:
    """The tensors a local safetensors file declares, read from its header only."""
    try:
        with path.open("rb") as file:
            prefix = file.read(8)
            length = struct.unpack("<Q", prefix)[0] if len(prefix) == 8 else -1
            if not 0 < length <= _MAX_HEADER_BYTES:
                raise ValueError("no safetensors header length")
            header = json.loads(file.read(length))
        return [
            TensorInfo(name, str(info["dtype"]), tuple(int(n) for n in info["shape"]))
            for name, info in header.items()
            if name != "__metadata__"
        ]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        raise SourceError(
            f"{path} is not a readable safetensors file ({reason}); fetch the weights again"
        ) from None


@dataclass(frozen=True)
class LocalModel:
    """A model directory as `save_pretrained` or a Hugging Face download leaves it."""

    directory: Path

    def config(self) -> dict[str, Any]:
        path = self.directory / CONFIG_FILE
        if not path.is_file():
            raise SourceError(
                f"{self.directory} has no {CONFIG_FILE}: pass the directory that holds the model's "
                f"{CONFIG_FILE} and *.safetensors files"
            )
        return read_config_file(path, str(self.directory))

    def weight_files(self) -> list[Path]:
        """The safetensors files vLLM would load: the index's shards, else model.safetensors, else all."""
        index = self.directory / SAFETENSORS_INDEX
        if index.is_file():
            try:
                shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
            except (OSError, ValueError, KeyError, AttributeError, TypeError):
                raise SourceError(f"{index} is not a safetensors index; fetch the weights again") from None
            return [self.directory / str(shard) for shard in shards]
        single = self.directory / SAFETENSORS_SINGLE
        return [single] if single.is_file() else sorted(self.directory.glob("*.safetensors"))

    def tensors(self) -> list[TensorInfo]:
        return [tensor for path in self.weight_files() for tensor in safetensors_header(path)]

    def origin(self) -> tuple[str, str] | None:
        """(repo, commit) when the directory is a Hugging Face cache snapshot, else None."""
        parts = self.directory.resolve().parts
        if len(parts) >= 3 and parts[-2] == "snapshots" and _COMMIT.match(parts[-1]):
            match = _CACHE_REPO_DIR.match(parts[-3])
            if match:
                return f"{match['owner']}/{match['name']}", parts[-1]
        return None
