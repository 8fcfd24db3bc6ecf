"""The offline plan report: placement, node pools and cost of a stack, and how two stacks differ.

Tables come from the pure plan (`infra.plan.build_plan_for_stack`); the manifests come from
the real Pulumi program under the mock engine (`infra.plan.manifests`). `agreement_problems`
checks that the two say the same thing.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from infra.plan import ServingPlan
from infra.plan.node_pools import POOL_LABEL, NodePoolSpec
from infra.settings import AUTOSCALING_KEY, HF_TOKEN_KEY, TIERS_KEY, set_secret_command, stack_file
from infra.testing import ProgramRun
from serve.located_yaml import load_file

RAY_SERVICE_TYPE: Final = "kubernetes:ray.io/v1:RayService"
CONFIG_MAP_TYPE: Final = "kubernetes:core/v1:ConfigMap"
SECRET_TYPE: Final = "kubernetes:core/v1:Secret"
NODE_POOL_TYPE: Final = "gcp:container/nodePool:NodePool"
# Stacks may differ only in these (the project's rule; infra/settings.py enforces the keys).
SCOPED_KEYS: Final = (TIERS_KEY, AUTOSCALING_KEY)
# Wide enough that no model id or pool name is cut when the output is not a terminal.
NON_TTY_WIDTH: Final = 160


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
    table.add_column("GPUs per replica", justify="right")
    table.add_column("replicas", justify="right", no_wrap=True)
    for heading in ("weights", "KV cache", "overhead", "headroom", "budget"):
        table.add_column(f"{heading} GiB", justify="right")
    for placement in plan.placements:
        memory = placement.memory
        table.add_row(
            escape(placement.model_id),
            placement.tier,
            str(placement.gpus_per_replica),
            f"{placement.min_replicas}..{placement.max_replicas}",
            gib(memory.weights_gib),
            gib(memory.kv_cache_gib),
            gib(memory.overhead_gib),
            gib(memory.headroom_gib),
            gib(memory.budget_gib),
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
    console.print(pool_table(plan))
    console.print(cost_table(plan))
    console.print(
        f"Hourly cost: idle {usd(plan.cost.idle_usd_per_hour)}, at max {usd(plan.cost.max_usd_per_hour)} "
        f"(prices read on {plan.cost.prices_read_on}, {plan.cost.prices_region})"
    )


# --- plan vs program ----------------------------------------------------------------------


def _pool_facts(inputs: Mapping[str, Any]) -> dict[str, Any]:
    config = inputs.get("nodeConfig") or {}
    accelerators = config.get("guestAccelerators") or []
    scaling = inputs.get("autoscaling") or {}
    return {
        "machine": config.get("machineType"),
        "spot": bool(config.get("spot")),
        "zones": list(inputs.get("nodeLocations") or []),
        "accelerator": (accelerators[0].get("type"), accelerators[0].get("count")) if accelerators else None,
        "min": scaling.get("totalMinNodeCount", inputs.get("nodeCount")),
        "max": scaling.get("totalMaxNodeCount", inputs.get("nodeCount")),
    }


def _plan_pool_facts(pool: NodePoolSpec) -> dict[str, Any]:
    return {
        "machine": pool.machine.machine_type,
        "spot": pool.spot,
        "zones": list(pool.zones),
        "accelerator": (pool.gke_accelerator, pool.accelerator_count) if pool.gke_accelerator else None,
        "min": pool.min_nodes,
        "max": pool.max_nodes,
    }


def agreement_problems(plan: ServingPlan, run: ProgramRun) -> list[str]:
    """Where what the program registered differs from the pure plan (empty when they agree)."""
    problems: list[str] = []

    def single(type_: str) -> dict[str, Any] | None:
        found = run.of_type(type_)
        if len(found) != 1:
            problems.append(f"expected one {type_}, the program registered {len(found)}")
            return None
        return found[0].inputs

    ray_service = single(RAY_SERVICE_TYPE)
    if ray_service is not None and ray_service.get("spec") != plan.ray_service_spec:
        problems.append("the registered RayService spec differs from the plan's ray_service_spec")
    config_map = single(CONFIG_MAP_TYPE)
    if config_map is not None:
        if (config_map.get("metadata") or {}).get("name") != plan.env_config_map_name:
            problems.append("the registered env ConfigMap name differs from the plan's")
        if config_map.get("data") != plan.env_config_map_data:
            problems.append("the registered env ConfigMap data differs from the plan's")
    single(SECRET_TYPE)

    registered = {
        str(((r.inputs.get("nodeConfig") or {}).get("labels") or {}).get(POOL_LABEL)): r.inputs
        for r in run.of_type(NODE_POOL_TYPE)
    }
    planned = {pool.name: pool for pool in plan.node_pools}
    if set(registered) != set(planned):
        problems.append(f"node pools: program {sorted(registered)}, plan {sorted(planned)}")
    for name in sorted(set(registered) & set(planned)):
        program_facts, plan_facts = _pool_facts(registered[name]), _plan_pool_facts(planned[name])
        if program_facts != plan_facts:
            problems.append(f"node pool {name}: program {program_facts}, plan {plan_facts}")

    outputs = run.outputs
    if outputs.get("served_models") != plan.served_model_ids:
        problems.append(
            f"served models: program {outputs.get('served_models')}, plan {plan.served_model_ids}"
        )
    cost = outputs.get("estimated_cost_usd_per_hour") or {}
    expected = {"idle": plan.cost.idle_usd_per_hour, "max": plan.cost.max_usd_per_hour}
    if {key: cost.get(key) for key in expected} != expected:
        problems.append(f"cost: program {cost}, plan {expected}")
    return problems


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
    return lines
