"""Small stand-ins for real models: the shipped models' config.json fixtures and model directories.

- `SHIPPED`: tests/fixtures/model_configs/*.json, the config.json of each model the catalog
  ships, at the revision it pins, with the element count of its safetensors weights;
- `write_model_dir`: a model directory as `save_pretrained` leaves it (config.json and a
  safetensors file), but the safetensors file is its header only: the facts are read from the
  header, so a 32B model's directory is a few hundred bytes.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from serve.paths import REPO_ROOT

FIXTURES_DIR: Final = REPO_ROOT / "tests" / "fixtures" / "model_configs"


@dataclass(frozen=True)
class HubModel:
    """One model repo as the fake hub serves it."""

    source: str
    revision: str
    config: dict[str, Any]
    parameters: int
    dtype: str = "BF16"
    gated: bool = False
    # Branches and tags besides `main`, each naming the commit it points at.
    refs: dict[str, str] = field(default_factory=dict)

    def tensors(self) -> dict[str, tuple[str, list[int]]]:
        """One tensor holding every parameter: the facts need the element count, not the layout."""
        return {"model.all_weights": (self.dtype, [self.parameters])}


def _load(path: Path) -> HubModel:
    data = json.loads(path.read_text(encoding="utf-8"))
    return HubModel(
        source=data["source"],
        revision=data["revision"],
        config=data["config"],
        parameters=data["safetensors"]["parameters"],
        dtype=data["safetensors"]["dtype"],
        gated=bool(data.get("gated", False)),
    )


# Keyed by the catalog id of the shipped entry each fixture recreates.
SHIPPED: Final = {path.stem: _load(path) for path in sorted(FIXTURES_DIR.glob("*.json"))}


def safetensors_bytes(tensors: dict[str, tuple[str, list[int]]], with_data: bool = False) -> bytes:
    """A safetensors file: 8-byte little-endian header length, the JSON header, then the data
    (zeros, only with `with_data`; without it the file is the header alone)."""
    widths = {"F32": 4, "I32": 4, "F16": 2, "BF16": 2, "I8": 1, "U8": 1, "F8_E4M3": 1}
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, (dtype, shape) in tensors.items():
        size = widths[dtype]
        for n in shape:
            size *= n
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)  # the format pads the header to 8 bytes
    return struct.pack("<Q", len(raw)) + raw + (b"\0" * offset if with_data else b"")


def write_model_dir(
    directory: Path, config: dict[str, Any], tensors: dict[str, tuple[str, list[int]]] | None
) -> Path:
    """config.json and (unless `tensors` is None) a header-only model.safetensors in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    if tensors is not None:
        (directory / "model.safetensors").write_bytes(safetensors_bytes(tensors))
    return directory


def hf_cache_snapshot(root: Path, repo: str, commit: str) -> Path:
    """The directory huggingface_hub downloads `repo` at `commit` to, under the cache `root`."""
    return root / f"models--{repo.replace('/', '--')}" / "snapshots" / commit
