"""Project modules the cluster's containers import from a ConfigMap.

Each module is mounted alone, as `serve/<module>.py` beside an empty package `__init__` (the
repo's would import what the image lacks), so its import path is the same on the cluster and
locally. ConfigMaps are named by their content: a change is a new immutable ConfigMap and a new
pod template.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any, Final

PACKAGE: Final = "serve"


def content_name(prefix: str, data: Mapping[str, str]) -> str:
    digest = hashlib.sha256(json.dumps(dict(data), sort_keys=True).encode()).hexdigest()[:8]
    return f"{prefix}-{digest}"


def module_files(module: ModuleType) -> dict[str, str]:
    """The ConfigMap data that makes `module` importable in the Ray image: its source and an empty
    package `__init__`."""
    source = Path(str(module.__file__)).read_text(encoding="utf-8")
    return {Path(str(module.__file__)).name: source, "__init__.py": ""}


def code_volume(volume: str, config_map: str, files: Mapping[str, str]) -> dict[str, Any]:
    """A pod volume laying `files` out as the package they belong to."""
    return {
        "name": volume,
        "configMap": {
            "name": config_map,
            "items": [{"key": key, "path": f"{PACKAGE}/{key}"} for key in sorted(files)],
        },
    }
