"""The cold-start budget (infra/plan/cold_start.py): the weights formula, the design against the
baseline for every shipped model, the 8B/L4 figure against issue #11's 5-minute target, the
printed table and docs/cold-start.md, which must equal what the code renders for prod."""

from __future__ import annotations

import re

import pytest
from helpers.settings_edits import with_tier
from helpers.stack_files import STACKS

from infra.plan import ServingPlan, build_plan
from infra.plan.cold_start import (
    BOOT_DISK_TYPE,
    GCS_STREAM_MIBPS,
    NO_SPARE_NODE_LABEL,
    PHASES,
    PYARROW_IO_THREADS,
    TARGET_SECONDS,
    WARM_NODE_LABEL,
    WHAT_IFS,
    ColdStart,
    Design,
    cold_start_budget,
    copy_seconds,
    gcs_read_mibps,
    markdown_sources,
    markdown_table,
    markdown_what_ifs,
    max_modelled_cold_start_seconds,
    model_cold_start,
    pd_write_mibps,
    slower_than,
    weight_files,
)
from infra.plan.node_pools import gpu_pool_name
from serve.catalog import ModelEntry
from serve.paths import REPO_ROOT
from serve.tiers import TierName

LLAMA_8B = "llama-3-1-8b-instruct"
DOC = REPO_ROOT / "docs" / "cold-start.md"


def _by_id(budget: tuple[ColdStart, ...], model_id: str) -> ColdStart:
    return next(cold for cold in budget if cold.model_id == model_id)


def _resized(model: ModelEntry, parameters_billion: float) -> ModelEntry:
    arch = model.architecture.model_copy(update={"parameters_billion": parameters_billion})
    return model.model_copy(update={"architecture": arch})


# --- the formulas --------------------------------------------------------------------------


def test_persistent_disk_writes_faster_when_larger_and_on_ssd_up_to_the_vm_cap() -> None:
    assert pd_write_mibps("pd-balanced", 200, 8) == pytest.approx(140 + 0.28 * 200)
    assert pd_write_mibps("pd-balanced", 300, 8) > pd_write_mibps("pd-balanced", 200, 8)
    assert pd_write_mibps("pd-ssd", 200, 8) == pytest.approx(240 + 0.48 * 200)
    assert pd_write_mibps("pd-ssd", 200, 8) > pd_write_mibps("pd-balanced", 200, 8)
    # A huge disk is capped by the VM: 1,034 MB/s at 8-15 vCPUs, 2,069 MB/s at 16+.
    assert pd_write_mibps("pd-ssd", 64_000, 8) == pytest.approx(1034e6 / 2**20)
    assert pd_write_mibps("pd-ssd", 64_000, 24) == pytest.approx(2069e6 / 2**20)


def test_copy_takes_the_slower_of_source_and_disk() -> None:
    assert copy_seconds(10, source_mibps=800, disk_mibps=200) == pytest.approx(10 * 1024 / 200)
    assert copy_seconds(10, source_mibps=100, disk_mibps=200) == pytest.approx(10 * 1024 / 100)
    assert copy_seconds(20, 800, 200) == pytest.approx(2 * copy_seconds(10, 800, 200))


def test_gcs_reads_one_stream_per_weight_file_up_to_pyarrows_threads() -> None:
    # Llama-3.1-8B's 16.07 GB of bf16 weights are 4 files on the Hub (model-0000N-of-00004).
    assert weight_files(14.96) == 4
    assert gcs_read_mibps(14.96) == 4 * GCS_STREAM_MIBPS
    assert gcs_read_mibps(500) == PYARROW_IO_THREADS * GCS_STREAM_MIBPS


def test_weights_phase_scales_with_the_models_size(plans: dict[str, ServingPlan]) -> None:
    plan = plans["prod"]
    model = next(m for m in plan.served if m.id == LLAMA_8B)
    one = model_cold_start(plan, model).phase("weights")
    # Twice the parameters: 8 weight files instead of 4, still bound by the same disk.
    two = model_cold_start(plan, _resized(model, 2 * model.architecture.parameters_billion)).phase("weights")
    assert two.design_seconds == pytest.approx(2 * one.design_seconds)
    assert two.baseline_seconds == pytest.approx(2 * one.baseline_seconds)


def test_weights_phase_follows_the_pools_disk(plans: dict[str, ServingPlan]) -> None:
    plan = plans["prod"]
    model = next(m for m in plan.served if m.id == LLAMA_8B)
    pool = next(p for p in plan.gpu_pools if p.tier is TierName.L4)
    balanced = model_cold_start(plan, model).phase("weights").design_seconds
    ssd = model_cold_start(plan, model, Design(boot_disk_type="pd-ssd")).phase("weights").design_seconds
    weights_mib = model.memory().weights_gib * 1024
    assert balanced == pytest.approx(weights_mib / pd_write_mibps("pd-balanced", pool.boot_disk_gib, 8))
    assert ssd == pytest.approx(weights_mib / pd_write_mibps("pd-ssd", pool.boot_disk_gib, 8))
    # A bigger boot disk writes faster, so the same model copies sooner.
    bigger = plan.model_copy(
        update={"gpu_pools": tuple(p.model_copy(update={"boot_disk_gib": 400}) for p in plan.gpu_pools)}
    )
    assert model_cold_start(bigger, model).phase("weights").design_seconds < balanced


# --- the shipped stacks --------------------------------------------------------------------


@pytest.mark.parametrize("stack", STACKS)
def test_every_served_model_has_five_cited_phases(plans: dict[str, ServingPlan], stack: str) -> None:
    budget = cold_start_budget(plans[stack])
    assert [cold.model_id for cold in budget] == plans[stack].served_model_ids
    for cold in budget:
        assert tuple(phase.name for phase in cold.phases) == PHASES
        for phase in cold.phases:
            assert phase.source.strip() and phase.what_changes.strip(), (cold.model_id, phase.name)
            assert phase.design_seconds >= 0 and phase.baseline_seconds > 0
        assert cold.machine_type == next(
            p.machine.machine_type
            for p in plans[stack].gpu_pools
            if p.name == gpu_pool_name(TierName(cold.tier))
        )


@pytest.mark.parametrize("stack", STACKS)
def test_the_design_beats_the_baseline_for_every_model(plans: dict[str, ServingPlan], stack: str) -> None:
    for cold in cold_start_budget(plans[stack]):
        assert cold.design_seconds < cold.baseline_seconds, cold.model_id
        for phase in cold.phases:
            assert phase.design_seconds <= phase.baseline_seconds, (cold.model_id, phase.name)
        # What this design changes: the image and the weights, and node and driver only where the
        # tier keeps a spare node; the engine is as before.
        spare = plans[stack].spare_nodes[TierName(cold.tier)] > 0
        for name in ("node", "driver"):
            assert cold.phase(name).design_seconds == (0 if spare else cold.phase(name).baseline_seconds)
        assert cold.phase("engine").design_seconds == cold.phase("engine").baseline_seconds
        assert cold.phase("image").design_seconds < cold.phase("image").baseline_seconds
        assert cold.phase("weights").design_seconds < cold.phase("weights").baseline_seconds


def test_the_image_is_streamed_only_from_artifact_registry(plans: dict[str, ServingPlan]) -> None:
    plan = plans["prod"]
    assert ".pkg.dev/" in plan.image
    docker_hub = plan.model_copy(update={"image": "rayproject/ray-llm:2.60.0-py312-cu130"})
    for cold in cold_start_budget(docker_hub):
        assert cold.phase("image").design_seconds == cold.phase("image").baseline_seconds


def _without_spare_nodes(plan: ServingPlan) -> ServingPlan:
    return build_plan(plan.catalog, with_tier(TierName.L4, spare_nodes=0)(plan.settings))


def test_the_8b_model_on_l4_meets_the_5_minute_target_in_prod_by_its_spare_node(
    plans: dict[str, ServingPlan],
) -> None:
    """Prod keeps one spare L4 (`spareNodes: 1`): the replica skips the node and driver phases
    (270 s) and is modelled at about 4.2 min, within issue #11's 5 min. The image, weights and
    engine phases stay."""
    prod = plans["prod"]
    assert prod.spare_nodes[TierName.L4] == 1
    cold = _by_id(cold_start_budget(prod), LLAMA_8B)
    assert (cold.tier, cold.machine_type) == ("l4", "g2-standard-8")
    assert cold.baseline_seconds == pytest.approx(865, abs=1)
    assert cold.design_seconds == pytest.approx(253, abs=1)
    assert cold.design_seconds <= TARGET_SECONDS
    assert cold.phase("node").design_seconds == cold.phase("driver").design_seconds == 0
    assert "spareNodes" in cold.phase("node").what_changes
    assert cold.phase("image").design_seconds > 0, "a spare node has not read the whole image"


def test_without_the_spare_node_the_8b_model_misses_the_target(plans: dict[str, ServingPlan]) -> None:
    """OVER TARGET, asserted as it is: with no spare node (prod with `spareNodes: 0`, and dev, which
    scales to zero) the design takes the 8B model on an L4 from about 14.4 min to about 8.7 min.
    The node and driver phases (270 s) nearly fill the budget alone."""
    for plan in (_without_spare_nodes(plans["prod"]), plans["dev"]):
        cold = _by_id(cold_start_budget(plan), LLAMA_8B)
        assert cold.design_seconds == pytest.approx(523, abs=1)
        assert cold.design_seconds > TARGET_SECONDS
        assert cold.phase("node").design_seconds + cold.phase("driver").design_seconds == pytest.approx(270)


def test_only_a_warm_node_brings_the_8b_model_under_the_target(plans: dict[str, ServingPlan]) -> None:
    plan = _without_spare_nodes(plans["prod"])
    model = next(m for m in plan.served if m.id == LLAMA_8B)
    totals = {label: model_cold_start(plan, model, design).design_seconds for label, design in WHAT_IFS}
    meets = [label for label, total in totals.items() if total <= TARGET_SECONDS]
    assert meets == [label for label, design in WHAT_IFS if design.warm_node]
    shipped = model_cold_start(plan, model).design_seconds
    assert all(total < shipped for total in totals.values())
    # The warm node of the what-if is exactly what prod's spare node gives.
    assert totals[WARM_NODE_LABEL] == model_cold_start(plans["prod"], model).design_seconds


def test_the_what_ifs_say_when_the_warm_node_is_shipped(plans: dict[str, ServingPlan]) -> None:
    prod = markdown_what_ifs(plans["prod"], LLAMA_8B)
    assert "| none (the design, with spareNodes: 1) | 253 s (4.2 min) | 0 s | yes |" in prod
    assert f"| {WARM_NODE_LABEL}: shipped, spareNodes: 1 |" in prod
    assert f"| {NO_SPARE_NODE_LABEL} | 523 s (8.7 min) | +270 s | no |" in prod
    dev = markdown_what_ifs(plans["dev"], LLAMA_8B)
    assert "| none (the design) | 523 s (8.7 min) | 0 s | no |" in dev
    assert NO_SPARE_NODE_LABEL not in dev and "shipped" not in dev


def test_the_largest_modelled_cold_start_and_timeouts_against_it(plans: dict[str, ServingPlan]) -> None:
    for stack in STACKS:
        budget = cold_start_budget(plans[stack])
        slowest = max_modelled_cold_start_seconds(plans[stack])
        assert slowest == max(cold.design_seconds for cold in budget)
        assert slower_than(slowest, budget) == ()
        assert [cold.design_seconds for cold in slower_than(slowest - 1, budget)] == [slowest]
    # Prod's slowest is the 32B model on two A100s; dev serves no A100 model.
    assert _by_id(cold_start_budget(plans["prod"]), "qwen2-5-32b-instruct").design_seconds == (
        max_modelled_cold_start_seconds(plans["prod"])
    )
    assert max_modelled_cold_start_seconds(plans["dev"]) < max_modelled_cold_start_seconds(plans["prod"])


def test_the_modelled_boot_disk_type_is_the_one_the_pools_get() -> None:
    from infra.components.cluster import BOOT_DISK_TYPE as POOLS_BOOT_DISK_TYPE

    assert BOOT_DISK_TYPE == POOLS_BOOT_DISK_TYPE


# --- the rendered forms --------------------------------------------------------------------


def _block(text: str, name: str) -> str:
    found = re.search(rf"<!-- {name}:begin[^>]*-->\n(.*?)<!-- {name}:end -->", text, re.DOTALL)
    assert found, f"docs/cold-start.md has no {name} block"
    return found.group(1)


def test_the_docs_tables_are_what_the_code_renders_for_prod(plans: dict[str, ServingPlan]) -> None:
    doc = DOC.read_text(encoding="utf-8")
    assert _block(doc, "cold-start-table") == markdown_table(plans["prod"])
    assert _block(doc, "cold-start-what-ifs") == markdown_what_ifs(plans["prod"], LLAMA_8B)
    assert _block(doc, "cold-start-sources") == markdown_sources()
    # The README's Cold start section carries the same table.
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    assert _block(readme, "cold-start-table") == markdown_table(plans["prod"])


def test_every_phase_source_is_listed_in_the_docs(plans: dict[str, ServingPlan]) -> None:
    listed = markdown_sources()
    for design in (Design(), Design(warm_node=False), *(design for _, design in WHAT_IFS)):
        for cold in cold_start_budget(plans["prod"], design):
            for phase in cold.phases:
                for source in phase.source.split("; "):
                    assert source.split(" ")[0] in listed, source


def test_the_plan_report_prints_the_cold_start_table(plans: dict[str, ServingPlan]) -> None:
    import io

    from infra.report.tables import make_console, print_plan

    out = io.StringIO()
    print_plan(make_console(out), plans["prod"])
    text = out.getvalue()
    assert "Cold start on a new node" in text
    cold = _by_id(cold_start_budget(plans["prod"]), LLAMA_8B)
    line = next(line for line in text.splitlines() if LLAMA_8B in line and "->" in line)
    assert f"{cold.baseline_seconds:.0f} -> {cold.design_seconds:.0f}" in line


def test_the_docs_give_the_spare_nodes_cost_from_the_cost_model(plans: dict[str, ServingPlan]) -> None:
    """The prose's hourly figure for prod's spare L4 is the cost model's idle difference it makes."""
    prod = plans["prod"]
    spare_cost = prod.cost.idle_usd_per_hour - _without_spare_nodes(prod).cost.idle_usd_per_hour
    figure = f"${spare_cost:.4f} an hour"
    doc = DOC.read_text(encoding="utf-8")
    section = doc[doc.index("## The 5-minute target") : doc.index("## Sources")]
    assert figure in " ".join(section.split())
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    assert figure in " ".join(readme[readme.index("### The 5-minute target") :].split())
