"""Where the registered program and the pure plan could disagree: the check the plan report used
to run at run time, kept as a test oracle. Empty when they agree."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from helpers.mock_runs import serve_services
from infra import resource_types
from infra.plan import ServingPlan
from infra.plan.endpoint import kserve_aliases
from infra.plan.model_store import mirror_code_config_map_name
from infra.plan.node_pools import POOL_LABEL, NodePoolSpec
from infra.plan.ray_service import (
    API_KEYS_SECRET_NAME,
    HF_SECRET_NAME,
    app_code_config_map_name,
    app_code_files,
)
from infra.report.mock_engine import ProgramRun


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
        "labels": dict(config.get("labels") or {}),
        "taints": sorted((t.get("key"), t.get("value"), t.get("effect")) for t in config.get("taints") or []),
    }


def _plan_pool_facts(pool: NodePoolSpec) -> dict[str, Any]:
    return {
        "machine": pool.machine.machine_type,
        "spot": pool.spot,
        "zones": list(pool.zones),
        "accelerator": (pool.gke_accelerator, pool.accelerator_count) if pool.gke_accelerator else None,
        "min": pool.min_nodes,
        "max": pool.max_nodes,
        "labels": dict(pool.labels),
        "taints": sorted((t.key, t.value, t.gke_effect) for t in pool.taints),
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

    ray_service = single(resource_types.RAY_SERVICE)
    if ray_service is not None and ray_service.get("spec") != plan.ray_service_spec:
        problems.append("the registered RayService spec differs from the plan's ray_service_spec")
    budgets = {
        (r.inputs.get("metadata") or {}).get("name"): r.inputs.get("spec")
        for r in run.of_type(resource_types.POD_DISRUPTION_BUDGET)
    }
    if budgets != {b["metadata"]["name"]: b["spec"] for b in plan.disruption_budgets}:
        problems.append(f"disruption budgets: program {sorted(budgets)} differ from the plan's")
    config_maps = {
        (r.inputs.get("metadata") or {}).get("name"): r.inputs for r in run.of_type(resource_types.CONFIG_MAP)
    }
    if set(config_maps) != {
        plan.env_config_map_name,
        app_code_config_map_name(),
        mirror_code_config_map_name(),
    }:
        problems.append(f"ConfigMaps: program {sorted(config_maps)}, plan env, app code and mirror code")
    jobs = {(r.inputs.get("metadata") or {}).get("name"): r.inputs for r in run.of_type(resource_types.JOB)}
    planned_jobs = {job["metadata"]["name"]: job for job in plan.mirror_jobs}
    if set(jobs) != set(planned_jobs) or any(
        jobs[name]["spec"] != planned_jobs[name]["spec"] for name in jobs
    ):
        problems.append(
            f"mirror Jobs: program {sorted(jobs)}, plan {sorted(planned_jobs)} (or their specs differ)"
        )
    else:
        if config_maps[plan.env_config_map_name].get("data") != plan.env_config_map_data:
            problems.append("the registered env ConfigMap data differs from the plan's")
        if config_maps[app_code_config_map_name()].get("data") != app_code_files():
            problems.append("the registered app code ConfigMap differs from serve/openai_app.py")
    deployments = {
        (r.inputs.get("metadata") or {}).get("name"): r.inputs for r in run.of_type(resource_types.DEPLOYMENT)
    }
    planned_deployments = {d["metadata"]["name"]: d for d in plan.spare_deployments}
    if set(deployments) != set(planned_deployments) or any(
        deployments[name].get("spec") != planned_deployments[name]["spec"]
        or (deployments[name].get("metadata") or {}).get("annotations")
        != planned_deployments[name]["metadata"]["annotations"]
        for name in deployments
    ):
        problems.append(
            f"spare Deployments: program {sorted(deployments)}, plan {sorted(planned_deployments)} "
            "(or their specs differ)"
        )
    classes_ = [_priority_class_fields(r.inputs) for r in run.of_type(resource_types.PRIORITY_CLASS)]
    planned_class = plan.spare_priority_class
    expected_classes = [] if planned_class is None else [_priority_class_fields(planned_class)]
    if classes_ != expected_classes:
        problems.append(f"spare PriorityClass: program {classes_}, plan {expected_classes}")
    secrets = sorted((r.inputs.get("metadata") or {}).get("name") for r in run.of_type(resource_types.SECRET))
    if secrets != sorted([HF_SECRET_NAME, API_KEYS_SECRET_NAME]):
        problems.append(f"Secrets: program {secrets}")
    aliases = sorted(
        (r.inputs.get("metadata") or {}).get("name")
        for r in run.of_type(resource_types.SERVICE)
        if (r.inputs.get("spec") or {}).get("type") == "ExternalName"
    )
    planned_aliases = sorted(a.service for a in kserve_aliases(plan.served_model_ids) if a.service)
    if aliases != planned_aliases:
        problems.append(f"KServe aliases: program {aliases}, plan {planned_aliases}")
    registered_serve_services = [
        {
            "name": (r.inputs.get("metadata") or {}).get("name"),
            "annotations": (r.inputs.get("metadata") or {}).get("annotations"),
            "spec": r.inputs.get("spec"),
        }
        for r in serve_services(run)
    ]
    planned_service = plan.serve_service
    if registered_serve_services != [{**planned_service["metadata"], "spec": planned_service["spec"]}]:
        problems.append(f"serve Service: program {registered_serve_services}, plan {planned_service}")

    registered = {
        str(((r.inputs.get("nodeConfig") or {}).get("labels") or {}).get(POOL_LABEL)): r.inputs
        for r in run.of_type(resource_types.NODE_POOL)
    }
    planned = {pool.name: pool for pool in plan.node_pools}
    if set(registered) != set(planned):
        problems.append(f"node pools: program {sorted(registered)}, plan {sorted(planned)}")
    for name in sorted(set(registered) & set(planned)):
        program_facts, plan_facts = _pool_facts(registered[name]), _plan_pool_facts(planned[name])
        if program_facts != plan_facts:
            problems.append(f"node pool {name}: program {program_facts}, plan {plan_facts}")

    # The program names each class's pools by their GKE names; map them back to the plan's.
    plan_names = {
        r.outputs.get("name"): ((r.inputs.get("nodeConfig") or {}).get("labels") or {}).get(POOL_LABEL)
        for r in run.of_type(resource_types.NODE_POOL)
    }
    classes = []
    for r in run.of_type(resource_types.COMPUTE_CLASS):
        document = dict(r.inputs)
        spec = dict(document.get("spec") or {})
        spec["priorities"] = [
            {**priority, "nodepools": [plan_names.get(name, name) for name in priority.get("nodepools", [])]}
            for priority in spec.get("priorities", [])
        ]
        classes.append({**document, "spec": spec})
    if sorted(classes, key=repr) != sorted(plan.compute_classes, key=repr):
        problems.append("the registered ComputeClasses differ from the plan's compute_classes")

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


def _priority_class_fields(document: Mapping[str, Any]) -> dict[str, Any]:
    """What a PriorityClass decides, from a registered resource's inputs or a planned document."""
    fields = {key: document.get(key) for key in ("value", "preemptionPolicy", "globalDefault", "description")}
    return fields | {"name": (document.get("metadata") or {}).get("name")}
