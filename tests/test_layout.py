"""The dependency rules of the layout, checked in a fresh interpreter.

- `infra.plan` (and the inputs it is built from) is pure: importing all of it loads neither
  Pulumi nor the mock engine, so the plan can be built and tested without either.
- `serve` and `configcheck` never import `infra` or Pulumi: the serving layer runs on a Ray
  cluster that has neither.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Final

import pytest

from serve.paths import REPO_ROOT

PURE_PACKAGES: Final = ("infra.plan", "infra.inputs", "infra.settings", "configcheck", "serve")

_PROBE: Final = """
import importlib, json, pkgutil, sys
name = sys.argv[1]
module = importlib.import_module(name)
for info in pkgutil.walk_packages(getattr(module, "__path__", []), name + "."):
    if not info.name.endswith("__main__"):
        importlib.import_module(info.name)
print(json.dumps(sorted(sys.modules)))
"""


def loaded_modules(package: str) -> list[str]:
    """Every module loaded by importing `package` and all its submodules (except `__main__`)."""
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, package], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    loaded: list[str] = json.loads(result.stdout)
    return loaded


@pytest.mark.parametrize("package", PURE_PACKAGES)
def test_the_plan_and_its_inputs_never_load_pulumi(package: str) -> None:
    loaded = loaded_modules(package)
    assert not [m for m in loaded if m == "pulumi" or m.startswith(("pulumi.", "pulumi_"))]
    assert "infra.report.mock_engine" not in loaded


@pytest.mark.parametrize("package", ["serve", "configcheck"])
def test_serve_never_imports_infra(package: str) -> None:
    assert not [m for m in loaded_modules(package) if m == "infra" or m.startswith("infra.")]


def test_the_plan_command_is_pure_too() -> None:
    # `python -m infra.plan` prints the plan without the program; only --out hands over to the report.
    loaded = loaded_modules("infra.report.tables")
    assert not [m for m in loaded if m.startswith(("pulumi", "infra.report.mock_engine"))]
