"""An offline Hugging Face Hub: huggingface_hub's own HfApi, with its three network calls replaced.

`install_fake_hub` patches `HfApi.model_info`, `HfApi.hf_hub_download` and
`HfApi.get_safetensors_metadata` (the calls serve/model_source.py makes) and
`huggingface_hub.get_token`. The patched calls answer from `HubModel`s, or raise the exceptions
huggingface_hub itself raises (RepositoryNotFoundError, GatedRepoError, RevisionNotFoundError, a
connection error), so the real adapter, its error sentences included, runs in every test and no
test touches the network.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import huggingface_hub
import pytest
from huggingface_hub import errors
from huggingface_hub.hf_api import ModelInfo
from huggingface_hub.utils import SafetensorsFileMetadata, SafetensorsRepoMetadata, TensorInfo

from helpers.model_fixtures import SHIPPED, HubModel

SINGLE_FILE = "model.safetensors"


def _response(status: int) -> Any:
    # What HfHubHTTPError reads from a response: its headers and request.
    return SimpleNamespace(status_code=status, headers={}, request=None)


@dataclass
class FakeHub:
    models: dict[str, HubModel]
    files: Path
    token: str | None = None
    # Tokens whose accounts accepted every gated model's license.
    tokens_with_access: set[str] = field(default_factory=set)
    unreachable: bool = False
    calls: list[tuple[str, str, str]] = field(default_factory=list)

    def _model(self, repo: str) -> HubModel:
        if self.unreachable:
            raise ConnectionError("[Errno 101] Network is unreachable")
        if repo not in self.models:
            raise errors.RepositoryNotFoundError(f"404 Client Error: {repo}", response=_response(404))
        return self.models[repo]

    def _commit(self, model: HubModel, revision: str | None) -> str:
        refs = {"main": model.revision, **model.refs}
        if revision is None or revision in refs:
            return refs[revision or "main"]
        if len(revision) >= 7 and model.revision.startswith(revision):
            return model.revision
        raise errors.RevisionNotFoundError(f"404 Client Error: {revision}", response=_response(404))

    def model_info(self, repo: str, revision: str | None = None) -> ModelInfo:
        self.calls.append(("model_info", repo, str(revision)))
        model = self._model(repo)
        return ModelInfo(id=repo, sha=self._commit(model, revision))

    def download(self, repo: str, filename: str, revision: str | None) -> str:
        self.calls.append(("download", repo, filename))
        model = self._model(repo)
        commit = self._commit(model, revision)
        if model.gated and self.token not in self.tokens_with_access:
            status = 401 if self.token is None else 403
            raise errors.GatedRepoError(f"{status} Client Error: {repo}", response=_response(status))
        if filename != "config.json":
            raise errors.RemoteEntryNotFoundError(f"404 Client Error: {filename}", response=_response(404))
        path = self.files / repo / commit / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(model.config), encoding="utf-8")
        return str(path)

    def safetensors(self, repo: str, revision: str | None) -> SafetensorsRepoMetadata:
        self.calls.append(("safetensors", repo, str(revision)))
        model = self._model(repo)
        self._commit(model, revision)
        tensors = {
            name: TensorInfo(dtype=dtype, shape=shape, data_offsets=(0, 0))
            for name, (dtype, shape) in model.tensors().items()
        }
        return SafetensorsRepoMetadata(
            metadata=None,
            sharded=False,
            weight_map=dict.fromkeys(tensors, SINGLE_FILE),
            files_metadata={SINGLE_FILE: SafetensorsFileMetadata(metadata={}, tensors=tensors)},
        )


def install_fake_hub(
    monkeypatch: pytest.MonkeyPatch,
    files: Path,
    models: dict[str, HubModel] | None = None,
    token: str | None = None,
) -> FakeHub:
    """Serve `models` (default: the shipped models, by source) from huggingface_hub's HfApi."""
    served = models if models is not None else {model.source: model for model in SHIPPED.values()}
    hub = FakeHub(models=dict(served), files=files, token=token)

    def model_info(api: Any, repo_id: str, *, revision: str | None = None, **_: Any) -> ModelInfo:
        return hub.model_info(repo_id, revision)

    def hf_hub_download(
        api: Any, repo_id: str, filename: str, *, revision: str | None = None, **_: Any
    ) -> str:
        return hub.download(repo_id, filename, revision)

    def get_safetensors_metadata(
        api: Any, repo_id: str, *, revision: str | None = None, **_: Any
    ) -> SafetensorsRepoMetadata:
        return hub.safetensors(repo_id, revision)

    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", model_info)
    monkeypatch.setattr(huggingface_hub.HfApi, "hf_hub_download", hf_hub_download)
    monkeypatch.setattr(huggingface_hub.HfApi, "get_safetensors_metadata", get_safetensors_metadata)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: hub.token)
    return hub
