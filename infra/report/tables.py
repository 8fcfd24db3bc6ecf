"""The plan as a person reads it: placement, node pools and cost of a stack, and how two stacks
differ. Pure: rich tables from a `ServingPlan` and the stack files, no Pulumi."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from configcheck.yaml_lines import load_file
from infra.plan import ServingPlan, build_plan_for_stack
from infra.plan.cold_start import PHASES, TARGET_SECONDS, cold_start_budget
from infra.plan.gke_nodes import FACTS_READ_ON as GKE_FACTS_READ_ON
from infra.plan.gke_nodes import SAFETY_MARGIN, Resources, allocatable, node_pods_requests
from infra.plan.kuberay_rollout import rollout
from infra.plan.node_pools import NodePoolSpec
from infra.plan.observability import Scope, alerts, dashboard_display_name, sections
from infra.plan.ray_service import worker_component
from infra.plan.reclaim import Disruption, timeline
from infra.plan.reclaim import reclaim_table as reclaim_rows
from infra.plan.spreading import spread_table
from infra.settings import AUTOSCALING_KEY, HF_TOKEN_KEY, TIERS_KEY, set_secret_command, stack_file
from infra.versions import KUBERAY_VERSION
from serve.paths import REPO_ROOT

# Stacks may differ only in these (the project's rule; infra/settings.py enforces the keys).
SCOPED_KEYS: Final = (TIERS_KEY, AUTOSCALING_KEY)
# Wide enough that no model id or pool name is cut when the output is not a terminal.
NON_TTY_WIDTH: Final = 176


def make_console(file: IO[str] | None = None) -> Console:
    stream = file or sys.stdout
    width = None if stream.isatty() or "COLUMNS" in os.environ else NON_TTY_WIDTH
    return Console(file=stream, width=width, highlight=False, soft_wrap=False)


def usd(value: float) -> str:
    return f"${value:,.4f}"


def gib(value: float) -> str:
    return f"{value:.2f}"


def _zones(zones: Sequence[str]) -> str:
    """us-central1-a, us-central1-b -> us-central1-a/b (when they share a region)."""
    regions = {zone.rsplit("-", 1)[0] for zone in zones}
    if len(regions) == 1 and len(zones) > 1:
        region = regions.pop()
        return f"{region}-" + "/".join(zone.rsplit("-", 1)[1] for zone in zones)
    return ", ".join(zones)


# --- notes --------------------------------------------------------------------------------


def token_note(plan: ServingPlan) -> str:
    file = Path(plan.settings.file).name
    if plan.settings.has_hf_token:
        return (
            f"hfToken is set in {file} (encrypted); this report cannot decrypt it and runs the program "
            "with a placeholder token, written redacted."
        )
    return (
        f"hfToken is not set in {file}: `pulumi up` will refuse until you run "
        f"`{set_secret_command(plan.stack)}`. This report runs the program with a placeholder token, "
        "written redacted."
    )


def project_note(plan: ServingPlan) -> str | None:
    if plan.settings.project:
        return None
    file = Path(plan.settings.file).name
    return (
        f"gcp:project is not set in {file}: `pulumi up` uses the Google provider's project "
        "(GOOGLE_PROJECT or gcloud config); the manifests write <gcp:project> where it goes."
    )


# --- tables -------------------------------------------------------------------------------


def placement_table(plan: ServingPlan) -> Table:
    table = Table(title=f"Served models ({len(plan.placements)})", title_justify="left")
    table.add_column("model", no_wrap=True)
    table.add_column("tier", no_wrap=True)
    table.add_column("task", no_wrap=True)
    table.add_column("GPUs per replica", justify="right")
    table.add_column("replicas", justify="right", no_wrap=True)
    for heading in ("weights", "KV cache", "overhead", "headroom", "budget"):
        table.add_column(f"{heading} GiB", justify="right")
    tasks = {model.id: model.task.value for model in plan.served}
    for placement in plan.placements:
        memory = placement.memory
        fraction = placement.gpu_fraction
        table.add_row(
            escape(placement.model_id),
            placement.tier,
            tasks[placement.model_id],
            f"{fraction:g} (shared)" if fraction is not None else str(placement.gpus_per_replica),
            f"{placement.min_replicas}..{placement.max_replicas}",
            gib(memory.weights_gib),
            gib(memory.kv_cache_gib),
            gib(memory.overhead_gib),
            gib(memory.headroom_gib),
            gib(memory.budget_gib),
        )
    return table


def packing_table(plan: ServingPlan) -> Table:
    """GPUs each tier needs with small models sharing cards and without, at min and at max."""
    table = Table(
        title="GPUs needed, with and without packing small models onto shared GPUs",
        title_justify="left",
        caption="every model at minReplicas / at maxReplicas at once; first-fit decreasing by share "
        "(infra/plan/packing.py)",
        caption_justify="left",
        show_footer=True,
    )
    rows = plan.tier_gpus
    table.add_column("tier", no_wrap=True, footer="all tiers")
    table.add_column("models (packed)", justify="right")
    for heading, attribute in (
        ("at min, packed", "at_min_packed"),
        ("at min, whole", "at_min_whole"),
        ("at max, packed", "at_max_packed"),
        ("at max, whole", "at_max_whole"),
    ):
        table.add_column(heading, justify="right", footer=str(sum(getattr(row, attribute) for row in rows)))
    for row in rows:
        table.add_row(
            row.tier,
            f"{row.models} ({row.packed_models})",
            str(row.at_min_packed),
            str(row.at_min_whole),
            str(row.at_max_packed),
            str(row.at_max_whole),
        )
    return table


def skipped_table(plan: ServingPlan) -> Table:
    table = Table(title=f"Skipped models ({len(plan.skipped)})", title_justify="left")
    table.add_column("model", no_wrap=True)
    table.add_column("tier", no_wrap=True)
    table.add_column("reason")
    for skipped in plan.skipped:
        table.add_row(escape(skipped.model_id), skipped.tier, escape(skipped.reason))
    return table


def accelerator(pool: NodePoolSpec) -> str:
    return f"{pool.gke_accelerator} x {pool.accelerator_count}" if pool.gke_accelerator else "-"


def pool_table(plan: ServingPlan) -> Table:
    table = Table(title=f"Node pools ({len(plan.node_pools)})", title_justify="left")
    table.add_column("pool", no_wrap=True)
    table.add_column("machine", no_wrap=True)
    table.add_column("accelerator", no_wrap=True)
    table.add_column("spot")
    table.add_column("nodes", justify="right", no_wrap=True)
    table.add_column("zones")
    table.add_column("$/node-hour", justify="right")
    for pool in plan.node_pools:
        table.add_row(
            escape(pool.name),
            pool.machine.machine_type,
            accelerator(pool),
            "yes" if pool.spot else "no",
            f"{pool.min_nodes}..{pool.max_nodes}",
            _zones(pool.zones),
            usd(pool.usd_per_node_hour),
        )
    return table


def cost_table(plan: ServingPlan) -> Table:
    cost = plan.cost
    table = Table(
        title="Hourly cost (USD)",
        title_justify="left",
        caption=f"list prices read on {cost.prices_read_on}, region {cost.prices_region}; spot prices move",
        caption_justify="left",
        show_footer=True,
    )
    table.add_column("item", footer="total")
    table.add_column("$/unit-hour", justify="right")
    table.add_column("units idle..max", justify="right", no_wrap=True)
    table.add_column("idle $/h", justify="right", footer=usd(cost.idle_usd_per_hour))
    table.add_column("max $/h", justify="right", footer=usd(cost.max_usd_per_hour))
    for line in cost.lines:
        table.add_row(
            escape(line.item),
            usd(line.usd_per_unit_hour),
            f"{line.units_idle}..{line.units_max}",
            usd(line.idle_usd_per_hour),
            usd(line.max_usd_per_hour),
        )
    return table


def _cpu(millis: int) -> str:
    return f"{millis / 1000:.2f}"


def _gib(mib: int) -> str:
    return f"{mib / 1024:.1f}"


def _requests(requests: Resources) -> str:
    return f"{_cpu(requests.cpu_millis)} / {_gib(requests.memory_mib)}"


def node_fit_table(plan: ServingPlan) -> Table:
    """Each pool's node as the scheduler sees it, and the stack's pods on it (CPU cores / GiB)."""
    table = Table(
        title="Node fit (CPU cores / memory GiB per node)",
        title_justify="left",
        caption=f"GKE allocatable and node pods as read on {GKE_FACTS_READ_ON} (infra/plan/gke_nodes.py); "
        "schedulable keeps a margin for what the estimate may miss",
        caption_justify="left",
    )
    table.add_column("pool", no_wrap=True)
    table.add_column("machine", no_wrap=True)
    table.add_column("allocatable", justify="right", no_wrap=True)
    table.add_column("GKE node pods", justify="right", no_wrap=True)
    table.add_column("schedulable", justify="right", no_wrap=True)
    table.add_column("stack pods (requests)")
    table.add_column("nodes idle/upgrade", justify="right", no_wrap=True)
    table.add_column("left on fullest node", justify="right", no_wrap=True)
    for fit in plan.node_fits:
        machine = fit.pool.machine
        node_allocatable = allocatable(machine)
        system = node_pods_requests(gpu=machine.gpus > 0)
        pods = [f"{pod.name}: {_requests(pod.requests)}" for pod in fit.pods]
        pods += [f"(upgrade) {pod.name}: {_requests(pod.requests)}" for pod in fit.upgrade_pods]
        # What is left on the fullest node of GKE's allocatable after its own node pods.
        margin = fit.tightest_margin + SAFETY_MARGIN
        table.add_row(
            escape(fit.pool.name),
            machine.machine_type,
            _requests(node_allocatable),
            _requests(system),
            _requests(fit.node),
            escape("\n".join(pods)),
            f"{fit.nodes_needed}/{fit.nodes_needed_during_upgrade} of {fit.pool.max_nodes}",
            _requests(margin),
        )
    return table


def cold_start_table(plan: ServingPlan) -> Table:
    """Each served model's modelled cold start on a new spot node, phase by phase: baseline (Docker
    Hub image, weights from Hugging Face) -> this design (streamed image, weights from the bucket)."""
    table = Table(
        title="Cold start on a new node (seconds, baseline -> design)",
        title_justify="left",
        caption=f"figures and sources: infra/plan/cold_start.py, docs/cold-start.md; "
        f"target for the 8B model on L4: at most {TARGET_SECONDS:.0f} s",
        caption_justify="left",
    )
    # "model (tier)": the placement table's row is the one whose first cell is the bare model id.
    table.add_column("model (tier)", no_wrap=True)
    table.add_column("machine", no_wrap=True)
    table.add_column("weights GiB", justify="right", no_wrap=True)
    for phase in PHASES:
        table.add_column(phase, justify="right", no_wrap=True)
    table.add_column("total", justify="right", no_wrap=True)
    for cold in cold_start_budget(plan):
        table.add_row(
            escape(f"{cold.model_id} ({cold.tier})"),
            cold.machine_type,
            f"{cold.weights_gib:.1f}",
            *(f"{p.baseline_seconds:.0f} -> {p.design_seconds:.0f}" for p in cold.phases),
            f"{cold.baseline_seconds:.0f} -> {cold.design_seconds:.0f}",
        )
    return table


def reclaim_table(plan: ServingPlan) -> Table:
    """Per served model: whether a replacement is up before a reclaimed or evicted replica stops,
    whether two of its replicas can share a node, and the worker group's disruption budget."""
    budgets = {b["metadata"]["name"]: b["spec"]["minAvailable"] for b in plan.disruption_budgets}
    spread = {row.model_id: row for row in spread_table(plan)}
    first = {row.model_id: row for row in reclaim_rows(plan)}
    line = timeline(Disruption.SPOT_RECLAIM)
    table = Table(
        title="Spot reclaims and maintenance",
        title_justify="left",
        caption=f"spot reclaim: the old replica takes requests for {line.old_replica_stops} s, "
        f"the rest are cut at {line.requests_cut} s, the pod is killed at {line.pod_killed} s; "
        "infra/plan/reclaim.py, spreading.py, disruption.py",
        caption_justify="left",
    )
    table.add_column("model (tier)", no_wrap=True)
    table.add_column("replacement first", no_wrap=True)
    table.add_column("two replicas can share a node", no_wrap=True)
    table.add_column("budget minAvailable", justify="right", no_wrap=True)
    for model in plan.served:
        table.add_row(
            escape(f"{model.id} ({model.tier.value})"),
            "yes" if first[model.id].replacement_first else "no",
            "yes" if spread[model.id].may_share_a_node else "no",
            str(budgets[worker_component(model.tier)]),
        )
    return table


# The cluster's name is known only once GKE has it; the tables show where it goes.
_CLUSTER_PLACEHOLDER: Final = "<cluster>"


def dashboard_table(plan: ServingPlan) -> Table:
    table = Table(
        title=f"Dashboard: {dashboard_display_name(plan.stack)} (Cloud Monitoring, PromQL)",
        title_justify="left",
    )
    for column in ("section", "panel", "series", "unit", "by", "metrics"):
        table.add_column(column)
    for section in sections(Scope(_CLUSTER_PLACEHOLDER)):
        for panel in section.panels:
            metrics = ", ".join(sorted({m.name for m in panel.metrics}))
            table.add_row(
                section.title,
                escape(panel.title),
                ", ".join(series.name for series in panel.series),
                escape(panel.unit),
                ", ".join(panel.group_by),
                escape(metrics + (" (cluster only)" if panel.cluster_only else "")),
            )
    return table


def alert_table(plan: ServingPlan) -> Table:
    email = plan.settings.alert_email
    where = f"notify {email}" if email else "no notification channel (llm-serving:alertEmail unset)"
    table = Table(title=f"Alert policies ({where})", title_justify="left")
    for column in ("alert", "severity", "fires when", "for"):
        table.add_column(column)
    for alert in alerts(Scope(_CLUSTER_PLACEHOLDER)):
        metrics = ", ".join(m.name for m in alert.metrics)
        table.add_row(
            f"{escape(alert.title)} ({alert.name})",
            alert.severity,
            escape(f"{metrics} {alert.comparison} {alert.threshold:g}"),
            f"{alert.duration_s // 60} min",
        )
    return table


def print_plan(console: Console, plan: ServingPlan) -> None:
    settings = plan.settings
    console.print(
        f"[bold]llm-serving plan[/bold] for stack [bold]{escape(plan.stack)}[/bold]: "
        f"{escape(settings.file)} + {escape(plan.catalog.file)}, region {escape(settings.region)}"
    )
    console.print(escape(token_note(plan)), soft_wrap=True)
    note = project_note(plan)
    if note:
        console.print(escape(note), soft_wrap=True)
    console.print()
    console.print(placement_table(plan))
    if plan.skipped:
        console.print(skipped_table(plan))
    console.print(packing_table(plan))
    console.print(pool_table(plan))
    console.print(node_fit_table(plan))
    console.print(cost_table(plan))
    console.print(
        f"Hourly cost: idle {usd(plan.cost.idle_usd_per_hour)}, at max {usd(plan.cost.max_usd_per_hour)} "
        f"(prices read on {plan.cost.prices_read_on}, {plan.cost.prices_region})"
    )
    console.print(cold_start_table(plan))
    console.print(reclaim_table(plan))
    console.print(dashboard_table(plan))
    console.print(alert_table(plan))


# --- two stacks ---------------------------------------------------------------------------


class _Missing:
    def __repr__(self) -> str:
        return "(unset)"


MISSING: Final = _Missing()


def format_value(value: Any) -> str:
    if value is MISSING:
        return "(unset)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, list):
        return "[" + ", ".join(format_value(item) for item in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{key}: {format_value(item)}" for key, item in value.items()) + "}"
    return str(value)


@dataclass(frozen=True)
class SettingChange:
    key: str
    before: Any
    after: Any

    @property
    def scoped(self) -> bool:
        """A tier or autoscaling setting: the only kind stacks are meant to differ in."""
        return any(self.key == key or self.key.startswith(f"{key}.") for key in SCOPED_KEYS)

    def __str__(self) -> str:
        return f"{self.key}: {format_value(self.before)} -> {format_value(self.after)}"


def _flatten(value: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(value, Mapping) and value:
        for key, item in value.items():
            _flatten(item, f"{prefix}.{key}", out)
    else:
        out[prefix] = value


def flat_settings(path: Path) -> dict[str, Any]:
    """A stack file's config as `key.sub.key -> value` (lists are values); the HF token left out."""
    data, _ = load_file(path)
    config = (data or {}).get("config") or {}
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if key == HF_TOKEN_KEY:
            continue
        if key in SCOPED_KEYS:
            _flatten(value, key, flat)
        else:
            flat[key] = value
    return flat


def setting_changes(root: Path, stack: str, other: str) -> list[SettingChange]:
    before, after = flat_settings(stack_file(stack, root)), flat_settings(stack_file(other, root))
    keys = [*before, *(key for key in after if key not in before)]
    return [
        SettingChange(key, before.get(key, MISSING), after.get(key, MISSING))
        for key in keys
        if before.get(key, MISSING) != after.get(key, MISSING)
    ]


def _signed(value: float) -> str:
    return f"{'+' if value >= 0 else '-'}{usd(abs(value))}"


def diff_lines(root: Path, plan: ServingPlan, other: ServingPlan) -> list[str]:
    a, b = plan.stack, other.stack
    changes = setting_changes(root, a, b)
    lines = [f"Settings that differ, {Path(plan.settings.file).name} -> {Path(other.settings.file).name}:"]
    lines += [f"  {change}" for change in changes if change.scoped] or ["  (none)"]
    outside = [change for change in changes if not change.scoped]
    if outside:
        lines.append(
            "Other settings that differ (stacks should differ only in tier and autoscaling settings):"
        )
        lines += [f"  {change}" for change in outside]
    only_a = [m for m in plan.served_model_ids if m not in other.served_model_ids]
    only_b = [m for m in other.served_model_ids if m not in plan.served_model_ids]
    lines.append(f"Models served only in {a}: {', '.join(only_a) or '(none)'}")
    lines.append(f"Models served only in {b}: {', '.join(only_b) or '(none)'}")
    lines.append(f"Hourly cost (prices read on {plan.cost.prices_read_on}, {plan.cost.prices_region}):")
    for label, before, after in (
        ("idle", plan.cost.idle_usd_per_hour, other.cost.idle_usd_per_hour),
        ("max", plan.cost.max_usd_per_hour, other.cost.max_usd_per_hour),
    ):
        lines.append(f"  {label}: {usd(before)} -> {usd(after)} ({_signed(round(after - before, 4))})")
    result = rollout(plan.ray_service_spec, other.ray_service_spec)
    lines.append(f"If {a} were changed to {b}, KubeRay v{KUBERAY_VERSION} would: {result.action}")
    if result.unapplied:
        lines.append(f"  and never apply: {', '.join(result.unapplied)}")
    return lines


# --- the command line shared by `python -m infra.plan` and `python -m infra.report` ------------

EXIT_PROBLEMS: Final = 1


def add_stack_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("stack", help="stack name: reads Pulumi.<stack>.yaml")
    parser.add_argument(
        "--diff",
        metavar="OTHER_STACK",
        help="print only what differs from OTHER_STACK (settings, models, cost)",
    )
    parser.add_argument(
        "--root",
        type=Path,
        default=None,
        help="repository root with the catalog and stack files (default: this repo)",
    )


def display_root(root: Path) -> Path:
    """The root as a path relative to the working directory when it is below it (shorter messages)."""
    resolved, cwd = root.resolve(), Path.cwd().resolve()
    if resolved == cwd:
        return Path(".")
    if resolved.is_relative_to(cwd):
        return Path(os.path.relpath(resolved, cwd))
    return resolved


def load_plans(args: argparse.Namespace) -> tuple[Path, ServingPlan, ServingPlan | None]:
    """The root, the stack's plan and the `--diff` stack's plan; ConfigError on bad input."""
    root = display_root(args.root or REPO_ROOT)
    plan = build_plan_for_stack(args.stack, root)
    other = build_plan_for_stack(args.diff, root) if args.diff else None
    return root, plan, other


def print_problems(lines: str) -> int:
    for line in lines.splitlines():
        if line.strip():
            print(line, file=sys.stderr)
    return EXIT_PROBLEMS


def print_diff_or_plan(console: Console, root: Path, plan: ServingPlan, other: ServingPlan | None) -> None:
    if other is not None:
        for line in diff_lines(root, plan, other):
            console.print(line, markup=False, soft_wrap=True)
    else:
        print_plan(console, plan)
