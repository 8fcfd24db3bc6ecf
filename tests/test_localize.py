"""The local run serves the plan's own serve application; only weights and accelerator change.

Fast checks without starting Ray: what `localize_serve_config` keeps and changes, that its output
is still a valid Serve deploy document with valid LLM configs (Ray is imported only by that test),
and the command line's refusals. Running it is tests/test_supervisor.py and tests/test_e2e_local.py.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from helpers.stack_files import STACKS

from infra import local as local_cli
from infra.plan import build_plan_for_stack
from serve.localize import (
    CPU_DTYPE,
    DROPPED_ENGINE_KWARGS,
    KV_CACHE_ENV,
    LOCAL_MAX_REPLICAS,
    custom_resources,
    local_cpus_needed,
    localize_serve_config,
    models_not_on_cpu,
    served_model_ids,
)
from serve.openai_app import model_deployment_name, task_of
from serve.paths import REPO_ROOT
from serve.serve_config import (
    document_llm_configs,
    model_applications,
    model_deployment_config,
    router_applications,
)

MODEL_DIR = Path("/models/tiny")
RERANKER_DIR = Path("/models/tiny-reranker")


def localize(serve_config: Any, models: list[str] | None = None, **kwargs: Any) -> dict[str, Any]:
    """The shipped catalog has a reranker: every localized config here gets a cross-encoder dir."""
    return localize_serve_config(serve_config, MODEL_DIR, models, reranker_dir=RERANKER_DIR, **kwargs)


@pytest.mark.parametrize("stack", STACKS)
def test_localized_config_keeps_ids_and_serve_settings(stack: str) -> None:
    plan = build_plan_for_stack(stack, REPO_ROOT)
    local = localize(plan.serve_config)
    assert served_model_ids(local) == plan.served_model_ids
    for app, original in zip(local["applications"], plan.serve_config["applications"], strict=True):
        assert {k: app[k] for k in ("name", "route_prefix", "import_path")} == {
            k: original[k] for k in ("name", "route_prefix", "import_path")
        }
    for app, original_app in zip(
        model_applications(local), model_applications(plan.serve_config), strict=True
    ):
        llm, original = app["args"]["llm_config"], original_app["args"]["llm_config"]
        weights = RERANKER_DIR if task_of(original["engine_kwargs"]) == "rerank" else MODEL_DIR
        assert llm["model_loading_config"] == {
            "model_id": original["model_loading_config"]["model_id"],
            "model_source": str(weights),
        }
        assert llm["accelerator_config"] == {"kind": "cpu"} and "accelerator_type" not in llm
        assert llm["runtime_env"]["env_vars"][KV_CACHE_ENV] == "1"
        engine = llm["engine_kwargs"]
        assert engine["dtype"] == CPU_DTYPE and engine["tensor_parallel_size"] == 1
        assert not DROPPED_ENGINE_KWARGS & engine.keys()
        kept = {k: v for k, v in original["engine_kwargs"].items() if k not in DROPPED_ENGINE_KWARGS}
        for key in kept.keys() - {"dtype", "tensor_parallel_size", "max_model_len"}:
            assert engine[key] == kept[key], key
        deployment, original_deployment = model_deployment_config(app), model_deployment_config(original_app)
        scaling, original_scaling = (
            deployment["autoscaling_config"],
            original_deployment["autoscaling_config"],
        )
        assert scaling["max_replicas"] == min(original_scaling["max_replicas"], LOCAL_MAX_REPLICAS)
        assert scaling["min_replicas"] == min(original_scaling["min_replicas"], LOCAL_MAX_REPLICAS)
        for key in ("target_ongoing_requests", "upscale_delay_s", "downscale_delay_s"):
            assert scaling[key] == original_scaling[key]
        assert deployment["max_ongoing_requests"] == original_deployment["max_ongoing_requests"]
        # The stack's settings stay per-deployment overrides: nothing of them enters the args.
        assert app["deployments"][0]["name"] == original_app["deployments"][0]["name"]
        assert "autoscaling_config" not in llm["deployment_config"]


@pytest.mark.parametrize("stack", STACKS)
def test_localized_config_is_still_valid_for_ray(stack: str) -> None:
    # Imported here: Ray takes seconds to import and the other checks do not need it.
    from ray.serve.llm import LLMConfig
    from ray.serve.schema import ServeDeploySchema

    local = localize(build_plan_for_stack(stack, REPO_ROOT).serve_config)
    ServeDeploySchema.model_validate(copy.deepcopy(local))
    for llm in document_llm_configs(local):
        LLMConfig(**copy.deepcopy(llm))


def test_the_plan_is_not_modified() -> None:
    plan = build_plan_for_stack("dev", REPO_ROOT)
    before = json.dumps(plan.serve_config, sort_keys=True)
    localize(plan.serve_config)
    assert json.dumps(plan.serve_config, sort_keys=True) == before


def test_a_subset_of_models_is_served_in_catalog_order() -> None:
    plan = build_plan_for_stack("prod", REPO_ROOT)
    wanted = list(reversed(plan.served_model_ids[:2]))
    local = localize(plan.serve_config, wanted)
    assert served_model_ids(local) == plan.served_model_ids[:2]


def test_an_unknown_model_is_refused_with_the_ids_served() -> None:
    plan = build_plan_for_stack("dev", REPO_ROOT)
    with pytest.raises(ValueError, match="unknown model id") as raised:
        localize(plan.serve_config, ["gpt-5"])
    assert all(model in str(raised.value) for model in plan.served_model_ids)


def test_the_command_refuses_unknown_models_and_missing_model_dirs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert local_cli.main(["--models", "gpt-5", "--model-dir", str(tmp_path)]) == 2
    assert "no config.json" in capsys.readouterr().err
    (tmp_path / "config.json").write_text("{}")
    assert local_cli.main(["--models", "gpt-5", "--model-dir", str(tmp_path)]) == 2
    assert "unknown model id(s) 'gpt-5'" in capsys.readouterr().err


def test_the_command_reports_a_broken_stack_as_located_lines(capsys: pytest.CaptureFixture[str]) -> None:
    assert local_cli.main(["--stack", "staging"]) == 2
    assert "Pulumi.staging.yaml" in capsys.readouterr().err


def test_models_option_takes_repeats_and_commas() -> None:
    assert local_cli._selected_models(["a,b", " c "]) == ["a", "b", "c"]
    assert local_cli._selected_models(None) is None


def test_every_localized_model_runs_on_the_cpu() -> None:
    plan = build_plan_for_stack("prod", REPO_ROOT)
    assert models_not_on_cpu(plan.serve_config) == plan.served_model_ids
    assert models_not_on_cpu(localize(plan.serve_config)) == []


def test_a_kv_cache_below_one_gib_is_refused() -> None:
    with pytest.raises(ValueError, match="whole GiB"):
        localize(build_plan_for_stack("dev", REPO_ROOT).serve_config, kv_cache_gib=0)


def test_custom_resources_are_found_wherever_a_deployment_asks_for_them() -> None:
    engine_options = {"ray_actor_options": {"num_cpus": 1, "resources": {"gpu-x": 1}}}
    document = {
        "applications": [
            {
                "args": {
                    "ingress_deployment_config": {"ray_actor_options": {"resources": {"head": 0.001}}},
                    "llm_configs": [{"deployment_config": engine_options}],
                }
            }
        ]
    }
    assert custom_resources(document) == {"head", "gpu-x"}


@pytest.mark.parametrize("stack", STACKS)
def test_localizing_keeps_the_custom_resources_deployments_ask_for(stack: str) -> None:
    config = build_plan_for_stack(stack, REPO_ROOT).serve_config
    assert custom_resources(localize(config)) == custom_resources(config)


def test_the_local_head_advertises_a_cpu_for_every_replica_bundle(ray_oracles: ModuleType) -> None:
    """Ray places a local replica only where its whole bundle fits: the head's logical CPUs must
    cover every replica (Ray's own bundles, as LLMServer asks for them) and the ingress at once.
    The dev stack's four models need 9: a fixed 8 left the fourth replica unscheduled."""
    config = localize(build_plan_for_stack("dev", REPO_ROOT).serve_config)
    demand = 0.0
    for app in model_applications(config):
        bundles, _ = ray_oracles.replica_bundles(app["args"]["llm_config"])
        replicas = model_deployment_config(app)["autoscaling_config"]["max_replicas"]
        demand += replicas * sum(bundle.get("CPU", 0) for bundle in bundles)
    (app,) = router_applications(config)
    demand += app["args"]["ingress_deployment_config"]["ray_actor_options"]["num_cpus"]
    assert demand == 9
    assert local_cpus_needed(config) >= demand


def test_the_local_head_also_holds_the_replacements_of_a_rollout(ray_oracles: ModuleType) -> None:
    """A rolling restart starts each deployment's surge replicas before stopping old ones, as
    Serve applies the document's options (`max_surge_percent`, rounded up as Serve rounds it)."""
    config = localize(build_plan_for_stack("dev", REPO_ROOT).serve_config)
    options = ray_oracles.document_deployment_options(config)
    demand = 0.0
    for app in model_applications(config):
        llm = app["args"]["llm_config"]
        bundles, _ = ray_oracles.replica_bundles(llm)
        applied = options[model_deployment_name(llm["model_loading_config"]["model_id"])]["config"]
        replicas = applied["autoscaling_config"]["max_replicas"]
        surge = -(-applied["max_surge_percent"] * replicas // 100)
        assert surge >= 1
        demand += (replicas + surge) * sum(bundle.get("CPU", 0) for bundle in bundles)
    ingress = options["OpenAiIngress"]
    replicas = ingress["config"]["autoscaling_config"]["max_replicas"]
    surge = -(-ingress["config"]["max_surge_percent"] * replicas // 100)
    demand += (replicas + surge) * ingress["ray_actor_options"]["num_cpus"]
    assert demand > 9
    assert local_cpus_needed(config) >= demand
