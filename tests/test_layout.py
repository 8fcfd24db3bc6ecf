"""The dependency rules of the layout, checked in a fresh interpreter.

- `infra.plan` (and the inputs it is built from) is pure: importing all of it loads neither
  Pulumi nor the mock engine, so the plan can be built and tested without either.
- `serve` and `configcheck` never import `infra` or Pulumi: the serving layer runs on a Ray
  cluster that has neither.
- The tests: no test module imports Ray or vLLM when it is collected, and none imports another
  test module or `conftest`; what they share is in `tests/helpers`.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path
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


# --- the tests themselves ---------------------------------------------------------------------

TESTS_DIR: Final = REPO_ROOT / "tests"
HEAVY: Final = ("ray", "vllm", "torch")

_COLLECT_PROBE: Final = """
import importlib, json, pathlib, sys
tests = pathlib.Path(sys.argv[1])
sys.path[:0] = [str(tests)]
heavy = sys.argv[2].split(",")
loaded_by = {}
for path in sorted(tests.glob("test_*.py")):
    before = {name for name in heavy if name in sys.modules}
    try:
        importlib.import_module(path.stem)
    except Exception:  # pytest's own collection reports it
        pass
    loaded_by[path.name] = sorted(name for name in heavy if name in sys.modules and name not in before)
print(json.dumps(loaded_by))
"""


def _test_modules() -> list[Path]:
    return sorted([*TESTS_DIR.glob("test_*.py"), *(TESTS_DIR / "helpers").glob("*.py")])


def test_no_test_module_imports_ray_or_vllm_when_collected() -> None:
    """Collecting the tests stays fast (Ray Serve LLM and vLLM take about 11 s to import): test
    modules reach them through the `ray_oracles` fixture or inside a test, never at import time."""
    result = subprocess.run(
        [sys.executable, "-c", _COLLECT_PROBE, str(TESTS_DIR), ",".join(HEAVY)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    loaded_by: dict[str, list[str]] = json.loads(result.stdout)
    assert len(loaded_by) >= 15, loaded_by
    assert {name: heavy for name, heavy in loaded_by.items() if heavy} == {}


def _imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", _test_modules(), ids=lambda path: f"{path.parent.name}/{path.name}")
def test_tests_share_code_through_helpers_only(path: Path) -> None:
    imported = {name.split(".")[0] for name in _imported_modules(path)}
    assert not {name for name in imported if name.startswith("test_")}, "import shared code from helpers"
    assert "conftest" not in imported, "fixtures come as arguments; constants from helpers"
