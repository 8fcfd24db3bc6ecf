"""The reclaim timeline and the knobs it comes from."""

from __future__ import annotations

import re

import pytest
from helpers.stack_files import STACKS

from infra.plan import ServingPlan
from infra.plan.ray_service import (
    DRAIN_TIMEOUT_ENV,
    RAY_TEARDOWN_SECONDS,
    SPOT_POD_SHUTDOWN_SECONDS,
    WORKER_DRAIN_TIMEOUT_SECONDS,
    WORKER_GRACE_SECONDS,
)
from infra.plan.reclaim import (
    Disruption,
    markdown_models,
    markdown_timeline,
    reclaim_table,
    replacement_first,
    timeline,
    timing_problems,
)
from serve.paths import REPO_ROOT
from serve.serve_config import REPLICA_GRACEFUL_SHUTDOWN_SECONDS


def test_shipped_knobs_agree() -> None:
    assert timing_problems() == []
    assert WORKER_DRAIN_TIMEOUT_SECONDS == WORKER_GRACE_SECONDS - RAY_TEARDOWN_SECONDS
    assert REPLICA_GRACEFUL_SHUTDOWN_SECONDS < WORKER_DRAIN_TIMEOUT_SECONDS


def test_disagreeing_knobs_are_reported() -> None:
    # Ray's own default drain timeout outlives a reclaimed pod.
    assert "killed mid-drain" in " ".join(timing_problems(drain_timeout=30))
    # Serve's default replica shutdown (20 s) is longer than the drain: replicas stop at SIGTERM.
    assert "stops them at SIGTERM" in " ".join(timing_problems(replica_graceful=20))
    # A longer grace on spot is cut to the spot window all the same.
    assert timing_problems(grace=60, drain_timeout=50, replica_graceful=10) != []


def test_spot_timeline() -> None:
    line = timeline(Disruption.SPOT_RECLAIM)
    assert line.pod_killed == SPOT_POD_SHUTDOWN_SECONDS
    assert line.drain_deadline == WORKER_DRAIN_TIMEOUT_SECONDS
    assert line.old_replica_stops == WORKER_DRAIN_TIMEOUT_SECONDS - REPLICA_GRACEFUL_SHUTDOWN_SECONDS
    assert line.requests_cut == WORKER_DRAIN_TIMEOUT_SECONDS
    # The grace a spot pod asks for is cut to the window; an evicted pod gets it whole.
    assert timeline(Disruption.SPOT_RECLAIM, grace=60).pod_killed == SPOT_POD_SHUTDOWN_SECONDS
    assert timeline(Disruption.EVICTION, grace=60).pod_killed == 60


def test_replacement_first_only_when_the_cold_start_fits_the_window() -> None:
    line = timeline(Disruption.EVICTION, grace=600, drain_timeout=590, replica_graceful=10)
    assert replacement_first(300.0, line)
    assert not replacement_first(600.0, line)
    assert not replacement_first(60.0, timeline(Disruption.SPOT_RECLAIM))


@pytest.mark.parametrize("stack", STACKS)
def test_no_gpu_model_comes_back_before_its_old_replica_stops(
    plans: dict[str, ServingPlan], stack: str
) -> None:
    rows = reclaim_table(plans[stack])
    assert {row.model_id for row in rows} == set(plans[stack].served_model_ids)
    assert not any(row.replacement_first for row in rows)
    assert all(row.cold_start_seconds > row.old_replica_stops for row in rows)


@pytest.mark.parametrize("stack", STACKS)
def test_workers_carry_the_drain_timeout_and_grace(plans: dict[str, ServingPlan], stack: str) -> None:
    for group in plans[stack].ray_cluster_config["workerGroupSpecs"]:
        spec = group["template"]["spec"]
        assert spec["terminationGracePeriodSeconds"] == WORKER_GRACE_SECONDS
        env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
        assert env[DRAIN_TIMEOUT_ENV] == str(WORKER_DRAIN_TIMEOUT_SECONDS)
    for llm in plans[stack].llm_configs:
        assert llm["deployment_config"]["graceful_shutdown_timeout_s"] == REPLICA_GRACEFUL_SHUTDOWN_SECONDS


def _block(text: str, name: str) -> str:
    found = re.search(rf"<!-- {name}:begin[^>]*-->\n(.*?)<!-- {name}:end -->", text, re.DOTALL)
    assert found, f"README.md has no {name} block"
    return found.group(1)


def test_the_readme_tables_are_what_the_code_renders(plans: dict[str, ServingPlan]) -> None:
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    assert _block(readme, "reclaim-timeline") == markdown_timeline()
    assert _block(readme, "reclaim-models") == markdown_models(plans["prod"])
    # The prose quotes the same numbers.
    section = readme[readme.index("### Spot reclaims and maintenance") :]
    assert f"gives it\n{SPOT_POD_SHUTDOWN_SECONDS} s" in section


def test_the_plan_report_prints_the_reclaim_table(plans: dict[str, ServingPlan]) -> None:
    import io

    from infra.report.tables import make_console, print_plan

    out = io.StringIO()
    print_plan(make_console(out), plans["prod"])
    text = out.getvalue()
    assert "Spot reclaims and maintenance" in text
    section = text[text.index("Spot reclaims and maintenance") :]
    row = next(line for line in section.splitlines() if "qwen2-5-1-5b-instruct (t4)" in line)
    # No replacement before the old replica stops; two replicas can share a node; budget 0.
    assert [cell.strip() for cell in row.split("│")[2:5]] == ["no", "yes", "0"]
