"""How long planning takes: the pure plan (shipped and a generated 200-model catalog), the whole
program under Pulumi's mock engine, and the report command. Figures are in docs/plan-report.md.

The benchmarks carry the `bench` marker. `make test` runs each body once, untimed
(`--benchmark-disable` in pytest's addopts), so they cannot rot; `make bench` times them.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest
from helpers.generated_catalog import (
    GENERATED_MODELS,
    generated_catalog,
    generated_models,
    mixed_small_catalog,
    scaling_to_zero,
)
from helpers.stack_files import STACKS
from pytest_benchmark.fixture import BenchmarkFixture

from configcheck.problems import LineMap
from infra.plan import build_plan, build_plan_for_stack
from infra.plan.packing import pack, whole_gpus
from infra.report.__main__ import main
from infra.report.mock_engine import run_program, stack_config
from infra.settings import load_stack
from serve.catalog import parse_catalog
from serve.paths import REPO_ROOT


def test_generated_catalog_is_valid_and_fully_served() -> None:
    for stack in STACKS:
        settings = scaling_to_zero(load_stack(stack, REPO_ROOT))
        catalog = generated_catalog(settings)
        plan = build_plan(catalog, settings)
        assert len(plan.placements) == GENERATED_MODELS and not plan.skipped
        assert {p.tier for p in plan.placements} == {t.value for t in settings.enabled_tiers()}
        assert all(p.memory.fits for p in plan.placements)


@pytest.mark.bench
def test_bench_plan_shipped_catalog(benchmark: BenchmarkFixture) -> None:
    """Load + validate model_catalog.yaml and Pulumi.dev.yaml, then plan."""
    plan = benchmark.pedantic(build_plan_for_stack, args=("dev", REPO_ROOT), rounds=20, iterations=1)
    assert plan.served_model_ids


@pytest.mark.bench
@pytest.mark.parametrize("stack", STACKS)
def test_bench_plan_200_models(benchmark: BenchmarkFixture, stack: str) -> None:
    """Validate a generated 200-model catalog and plan it (file parsing aside)."""
    settings = scaling_to_zero(load_stack(stack, REPO_ROOT))
    raw = {"models": generated_models(settings.enabled_tiers())}

    def parse_and_plan() -> int:
        return len(build_plan(parse_catalog(raw, "generated", LineMap()), settings).placements)

    assert benchmark.pedantic(parse_and_plan, rounds=5, iterations=1) == GENERATED_MODELS


@pytest.mark.bench
@pytest.mark.parametrize("replicas", [1, 4])
def test_bench_packing_twenty_small_models(benchmark: BenchmarkFixture, replicas: int) -> None:
    """Pack 20 small models of every task (T4 and L4) at `replicas` replicas each onto shared GPUs;
    the GPUs it saves are the benchmark's result (recorded in docs/plan-report.md)."""
    models = mixed_small_catalog().models
    packing = benchmark.pedantic(
        pack, args=([(model, replicas) for model in models],), rounds=20, iterations=1
    )
    whole = whole_gpus(models, replicas)
    benchmark.extra_info.update(gpus_packed=packing.gpus, gpus_whole=whole)
    assert 2 * packing.gpus <= whole


@pytest.mark.bench
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


@pytest.mark.bench
def test_bench_report_command(benchmark: BenchmarkFixture, tmp_path: Path) -> None:
    """`python -m infra.report dev --out DIR` in process: plan, mock run, tables, 15 files."""

    def report() -> int:
        with contextlib.redirect_stdout(io.StringIO()):
            return main(["dev", "--out", str(tmp_path / "plan"), "--root", str(REPO_ROOT)])

    assert benchmark.pedantic(report, rounds=3, iterations=1) == 0
