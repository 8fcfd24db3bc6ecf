"""How long planning takes: the pure plan (shipped and a generated 200-model catalog) and the
whole program under Pulumi's mock engine (issue 6). Figures are in docs/plan-report.md.

Rounds are kept small so the file runs in seconds; `pytest --benchmark-disable` runs each
body once as a plain test.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO_ROOT, STACKS
from pytest_benchmark.fixture import BenchmarkFixture

from configcheck.problems import LineMap
from infra.plan import build_plan, build_plan_for_stack
from infra.report.__main__ import main
from infra.report.mock_engine import run_program, stack_config
from infra.settings import StackSettings, load_stack
from serve.catalog import Catalog, parse_catalog
from serve.tiers import TierName

GENERATED_MODELS = 200
# Per tier: (dtype, smallest and largest parameter count in billions). Ranges keep every
# model well inside one GPU's budget with the KV cache below, so all of them validate.
_SIZES: dict[TierName, tuple[str, float, float]] = {
    TierName.T4: ("float16", 0.5, 3.0),
    TierName.L4: ("bfloat16", 1.0, 6.0),
    TierName.A100: ("bfloat16", 7.0, 30.0),
}


def generated_models(tiers: list[TierName], count: int = GENERATED_MODELS) -> list[dict[str, Any]]:
    """`count` valid catalog entries with distinct ids, spread over `tiers`, sizes that fit."""
    models = []
    for index in range(count):
        tier = tiers[index % len(tiers)]
        dtype, smallest, largest = _SIZES[tier]
        step = (index // len(tiers)) % 10
        parameters = round(smallest + (largest - smallest) * step / 9, 2)
        models.append(
            {
                "id": f"gen-{tier.value}-{index:03d}",
                "source": f"example/generated-{index:03d}",
                "revision": f"{index:040x}",
                "tier": tier.value,
                "dtype": dtype,
                "max_model_len": 2048 * (1 + index % 2),
                "concurrency": 1 + index % 2,
                "architecture": {
                    "parameters_billion": parameters,
                    "num_layers": 24 + 4 * (index % 3),
                    "num_attention_heads": 32,
                    "num_kv_heads": 8,
                    "head_dim": 128,
                    "max_position_embeddings": 32768,
                },
                "engine": {"gpu_memory_utilization": 0.9, "max_num_seqs": 16 + index % 48},
            }
        )
    return models


def scaling_to_zero(settings: StackSettings) -> StackSettings:
    """The stack with minReplicas 0: 200 models cannot all keep a warm replica on a stack's
    pools (the plan's capacity rule refuses that), but they can share the pools on demand."""
    autoscaling = settings.autoscaling.model_copy(update={"min_replicas": 0})
    return settings.model_copy(update={"autoscaling": autoscaling})


def generated_catalog(settings: StackSettings, count: int = GENERATED_MODELS) -> Catalog:
    """A validated catalog (the same checks as model_catalog.yaml) for the stack's enabled tiers."""
    return parse_catalog(
        {"models": generated_models(settings.enabled_tiers(), count)}, "generated", LineMap()
    )


def test_generated_catalog_is_valid_and_fully_served() -> None:
    for stack in STACKS:
        settings = scaling_to_zero(load_stack(stack, REPO_ROOT))
        catalog = generated_catalog(settings)
        plan = build_plan(catalog, settings)
        assert len(plan.placements) == GENERATED_MODELS and not plan.skipped
        assert {p.tier for p in plan.placements} == {t.value for t in settings.enabled_tiers()}
        assert all(p.memory.fits for p in plan.placements)


def test_bench_plan_shipped_catalog(benchmark: BenchmarkFixture) -> None:
    """Load + validate model_catalog.yaml and Pulumi.dev.yaml, then plan."""
    plan = benchmark.pedantic(build_plan_for_stack, args=("dev", REPO_ROOT), rounds=20, iterations=1)
    assert plan.served_model_ids


@pytest.mark.parametrize("stack", STACKS)
def test_bench_plan_200_models(benchmark: BenchmarkFixture, stack: str) -> None:
    """Validate a generated 200-model catalog and plan it (file parsing aside)."""
    settings = scaling_to_zero(load_stack(stack, REPO_ROOT))
    raw = {"models": generated_models(settings.enabled_tiers())}

    def parse_and_plan() -> int:
        return len(build_plan(parse_catalog(raw, "generated", LineMap()), settings).placements)

    assert benchmark.pedantic(parse_and_plan, rounds=5, iterations=1) == GENERATED_MODELS


def test_bench_mock_program_run(benchmark: BenchmarkFixture) -> None:
    """The real Pulumi program for the dev stack under the mock engine."""
    config = stack_config("dev", REPO_ROOT)
    run = benchmark.pedantic(
        run_program,
        args=("dev",),
        kwargs={"config": config, "root": REPO_ROOT},
        rounds=3,
        iterations=1,
        warmup_rounds=1,
    )
    assert run.outputs["served_models"]


def test_bench_report_command(benchmark: BenchmarkFixture, tmp_path: Path) -> None:
    """`python -m infra.plan dev --out DIR` in process: plan, mock run, tables, 15 files."""

    def report() -> int:
        with contextlib.redirect_stdout(io.StringIO()):
            return main(["dev", "--out", str(tmp_path / "plan"), "--root", str(REPO_ROOT)])

    assert benchmark.pedantic(report, rounds=3, iterations=1) == 0
