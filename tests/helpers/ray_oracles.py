"""Ray's and vLLM's own definitions, used as test oracles, run without starting Ray.

Importing this module imports Ray Serve LLM, vLLM and PyTorch (about 11 s): test modules reach
it only through the `ray_oracles` fixture (conftest.py), so collecting the tests stays fast and
a test that does not need Ray never pays for it.

- Serve config: `LLMConfig`, `ServeDeploySchema`, and `strict_key_problems`
  for the keys Serve's deploy schema would silently ignore;
- the engine: Ray's translation of an LLM config's engine kwargs into vLLM's
  `AsyncEngineArgs`, exactly as a replica does before loading weights;
- the application: Ray's real `build_openai_app` and `LLMServer.get_deployment_options`.
  Both read `ray.get_runtime_context().runtime_env`, which starts a local Ray instance;
  `offline_runtime_context()` answers that one question with an empty runtime env (what a
  fresh driver reports), so the real code runs and nothing is started;
- scale from zero: the node types the KubeRay autoscaler derives from a RayCluster CR, and
  autoscaler v2's scheduler deciding which nodes to launch for a set of placement groups.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
from collections import Counter
from collections.abc import Iterator, Mapping
from typing import Any, Final
from unittest import mock

import ray
import ray.serve
import ray.serve.llm
import vllm.engine.arg_utils
from ray._common.utils import import_attr
from ray.autoscaler._private.kuberay.autoscaling_config import _derive_autoscaling_config_from_ray_cr
from ray.autoscaler.v2.instance_manager.config import AutoscalingConfig as AutoscalerConfig
from ray.autoscaler.v2.scheduler import ResourceDemandScheduler, SchedulingRequest
from ray.core.generated.autoscaler_pb2 import GangResourceRequest, ResourceRequest
from ray.llm._internal.serve.core.server.llm_server import LLMServer
from ray.llm._internal.serve.engines.vllm.vllm_engine import _normalize_vllm_engine_kwargs
from ray.serve._private.application_state import override_deployment_info
from ray.serve._private.build_app import build_app as flatten_app
from ray.serve._private.config import DeploymentConfig
from ray.serve._private.deploy_utils import get_app_code_version
from ray.serve._private.deployment_info import DeploymentInfo
from ray.serve._private.version import DeploymentVersion
from ray.serve.config import AutoscalingConfig
from ray.serve.deployment import Application
from ray.serve.llm import LLMConfig
from ray.serve.schema import DeploymentSchema, ServeApplicationSchema, ServeDeploySchema

from helpers.documents import ray_cluster_document

__all__ = [
    "SERVE_DEPLOYMENT_OPTIONS",
    "Application",
    "AutoscalingConfig",
    "DeploymentConfig",
    "LLMConfig",
    "ServeDeploySchema",
    "autoscaler_node_types",
    "build_document",
    "build_openai_app",
    "build_serve_app",
    "deployment_names",
    "deployment_options",
    "document_deployment_options",
    "document_deployment_versions",
    "document_overrides",
    "fits",
    "flatten_app",
    "gang",
    "import_attr",
    "offline_runtime_context",
    "ray",
    "ray_vllm_kwargs",
    "replica_bundles",
    "schedule_from_zero",
    "strict_key_problems",
    "total",
    "vllm",
    "vllm_engine_args",
]

Bundle = dict[str, float]

# Keys `ray.serve.deployment(...)` accepts: LLMConfig.deployment_config is passed to it as **kwargs.
SERVE_DEPLOYMENT_OPTIONS: Final = frozenset(inspect.signature(ray.serve.deployment).parameters) - {
    "_func_or_class"
}


# --- the Serve config ------------------------------------------------------------------------


def strict_key_problems(document: Mapping[str, Any]) -> list[str]:
    """Keys of a Serve deploy document that Ray would silently ignore (misspellings).

    Ray's pydantic models forbid unknown keys in `LLMConfig`, but Serve's deploy schema and
    `DeploymentConfig` ignore unknown keys (forward compatibility), so a misspelt key there
    would vanish; this compares every such key with the fields of Ray's own models and with
    `ray.serve.deployment`'s parameters.
    """
    problems: list[str] = []

    def unknown(where: str, keys: Any, allowed: Any) -> None:
        problems.extend(f"{where}.{key}" for key in sorted(set(keys) - set(allowed)))

    unknown("(document)", document, ServeDeploySchema.model_fields)
    for a, app in enumerate(document.get("applications", [])):
        unknown(f"applications[{a}]", app, ServeApplicationSchema.model_fields)
        args = app.get("args", {})
        configs = [(f"llm_configs[{c}]", config) for c, config in enumerate(args.get("llm_configs", []))]
        if "llm_config" in args:
            configs.append(("llm_config", args["llm_config"]))
        for name, config in configs:
            where = f"applications[{a}].args.{name}.deployment_config"
            deployment = config.get("deployment_config", {})
            unknown(where, deployment, SERVE_DEPLOYMENT_OPTIONS)
            unknown(
                f"{where}.autoscaling_config",
                deployment.get("autoscaling_config", {}),
                AutoscalingConfig.model_fields,
            )
        for d, override in enumerate(app.get("deployments") or []):
            where = f"applications[{a}].deployments[{d}]"
            unknown(where, override, DeploymentSchema.model_fields)
            scaling = override.get("autoscaling_config")
            if isinstance(scaling, Mapping):
                unknown(f"{where}.autoscaling_config", scaling, AutoscalingConfig.model_fields)
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


# --- Ray's builders, offline -------------------------------------------------------------------


class _FreshDriverContext:
    @property
    def runtime_env(self) -> dict[str, Any]:
        return {}


@contextlib.contextmanager
def offline_runtime_context() -> Iterator[None]:
    """`ray.get_runtime_context()` answers with an empty runtime env instead of starting Ray."""
    with mock.patch.object(ray, "get_runtime_context", _FreshDriverContext):
        yield
    assert not ray.is_initialized(), "Ray was started although its runtime context was stubbed"


def build_openai_app(args: dict[str, Any]) -> Application:
    """Ray's own `ray.serve.llm.build_openai_app(args)`, run offline (the project's builder is
    `build_serve_app`; they must build the same deployments)."""
    with offline_runtime_context():
        return ray.serve.llm.build_openai_app(copy.deepcopy(args))


def build_serve_app(import_path: str, args: dict[str, Any]) -> Application:
    """What Serve builds for an application: its import path called with its args, run offline."""
    with offline_runtime_context():
        builder = import_attr(import_path)
        app: Application = builder(copy.deepcopy(args))
        return app


def build_document(document: Mapping[str, Any]) -> dict[str, Application]:
    """Every application of a Serve deploy document, built as Serve builds it, by name."""
    return {
        app["name"]: build_serve_app(app["import_path"], app.get("args", {}))
        for app in document.get("applications", [])
    }


def document_deployment_options(document: Mapping[str, Any]) -> dict[str, Any]:
    """`deployment_options` of every application of the document as Serve deploys it (each
    application's `deployments` overrides applied by Serve's own `override_deployment_info`),
    merged (names are unique: each model's deployment is named after its id)."""
    merged: dict[str, Any] = {}
    for spec in document.get("applications", []):
        app = build_serve_app(spec["import_path"], spec.get("args", {}))
        options = deployment_options(app, ServeApplicationSchema.model_validate(spec))
        assert not set(options) & set(merged), f"deployment named twice: {set(options) & set(merged)}"
        merged.update(options)
    return merged


def document_overrides(document: Mapping[str, Any]) -> ServeApplicationSchema:
    """Every application's per-deployment overrides of a deploy document, as one application's:
    to apply them to another builder's deployments of the same names."""
    deployments = [
        override for app in document.get("applications", []) for override in app.get("deployments") or []
    ]
    return ServeApplicationSchema.model_validate({"import_path": "check:app", "deployments": deployments})


def deployment_names(app: Application) -> list[str]:
    """The deployments of an application, flattened as `serve deploy` does (`build_app`)."""
    return sorted(deployment.name for deployment in flatten_app(app, name="check").deployments)


def deployment_infos(
    app: Application, overrides: ServeApplicationSchema | None = None
) -> dict[str, DeploymentInfo]:
    """Each deployment of an application as Serve's controller holds it, by name. `overrides`: the
    application's entry in a deploy document, whose `deployments` Serve applies over the code's
    options (`override_deployment_info`)."""
    infos = {
        deployment.name: DeploymentInfo(
            deployment_config=deployment._deployment_config,
            replica_config=deployment._replica_config,
            start_time_ms=0,
            deployer_job_id="",
        )
        for deployment in flatten_app(app, name="check").deployments
    }
    if overrides is not None and overrides.deployments:
        # Serve deep-copies every deployment it is given, which for an ingress bound to handles
        # (Ray's own builder's) connects to a running Serve: only the named ones go through it
        # (a name that is not a deployment is still refused, as Serve refuses it).
        named = {override.name for override in overrides.deployments}
        infos |= override_deployment_info({n: info for n, info in infos.items() if n in named}, overrides)
    return infos


def deployment_options(app: Application, overrides: ServeApplicationSchema | None = None) -> dict[str, Any]:
    """Each deployment's Serve options (config, actor options, placement), keyed by name: what
    two builders must agree on when their classes differ."""
    options = {}
    for name, info in deployment_infos(app, overrides).items():
        replica = info.replica_config
        options[name] = {
            "config": info.deployment_config.model_dump(
                exclude={"user_config", "user_configured_option_names"}
            ),
            "ray_actor_options": replica.ray_actor_options,
            "placement_group_bundles": replica.placement_group_bundles,
            "placement_group_strategy": replica.placement_group_strategy,
        }
    return options


def document_deployment_versions(document: Mapping[str, Any]) -> dict[str, DeploymentVersion]:
    """The version Serve's controller gives each deployment of a deploy document: the
    application's code version (its import path and args, `get_app_code_version`) and the
    deployment's options after the overrides (deployment_state.py `DeploymentTargetState`).
    Comparing two with `requires_actor_restart` says whether Serve replaces the replicas."""
    versions: dict[str, DeploymentVersion] = {}
    for spec in document.get("applications", []):
        schema = ServeApplicationSchema.model_validate(spec)
        code_version = get_app_code_version(schema)
        app = build_serve_app(spec["import_path"], spec.get("args", {}))
        for name, info in deployment_infos(app, schema).items():
            replica = info.replica_config
            versions[name] = DeploymentVersion(
                code_version,
                deployment_config=info.deployment_config,
                ray_actor_options=replica.ray_actor_options,
                placement_group_bundles=replica.placement_group_bundles,
                placement_group_strategy=replica.placement_group_strategy,
                max_replicas_per_node=replica.max_replicas_per_node,
                route_prefix=info.route_prefix,
            )
    return versions


def replica_bundles(raw: dict[str, Any]) -> tuple[list[Bundle], str]:
    """A replica's placement-group bundles and strategy, from Ray's `LLMServer.get_deployment_options`."""
    with offline_runtime_context():
        options = LLMServer.get_deployment_options(LLMConfig(**copy.deepcopy(raw)))
    return options["placement_group_bundles"], options["placement_group_strategy"]


# --- the KubeRay autoscaler --------------------------------------------------------------------


def autoscaling_config(cluster_spec: dict[str, Any]) -> dict[str, Any]:
    """What the KubeRay autoscaler derives from the RayCluster CR, with Ray's own function."""
    config: dict[str, Any] = _derive_autoscaling_config_from_ray_cr(ray_cluster_document(cluster_spec))
    return config


def autoscaler_node_types(cluster_spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    types: dict[str, dict[str, Any]] = autoscaling_config(cluster_spec)["available_node_types"]
    return types


def fits(node: Mapping[str, float], demand: Bundle) -> bool:
    return all(node.get(key, 0) >= amount for key, amount in demand.items() if amount > 0)


def total(bundles: list[Bundle]) -> Bundle:
    summed: Counter[str] = Counter()
    for bundle in bundles:
        summed.update(bundle)
    return dict(summed)


def gang(bundles: list[Bundle], strategy: str) -> GangResourceRequest:
    """A replica's placement group as the GCS reports it to autoscaler v2."""
    if strategy == "STRICT_PACK":  # one node: the scheduler combines affinity bundles into one request
        bundles = [total(bundles)]
    return GangResourceRequest(
        requests=[ResourceRequest(resources_bundle=bundle) for bundle in bundles], details=strategy
    )


def schedule_from_zero(
    cluster_spec: dict[str, Any], gangs: list[GangResourceRequest]
) -> tuple[Counter[str], int]:
    """Nodes autoscaler v2 launches for `gangs` with no worker node running, and the infeasible gang count."""
    config = AutoscalerConfig(autoscaling_config(cluster_spec), skip_content_hash=True)
    reply = ResourceDemandScheduler().schedule(
        SchedulingRequest(
            disable_launch_config_check=True,
            node_type_configs=config.get_node_type_configs(),
            max_num_nodes=config.get_max_num_nodes(),
            gang_resource_requests=gangs,
        )
    )
    launched: Counter[str] = Counter()
    for launch in reply.to_launch:
        launched[launch.instance_type] += launch.count
    return launched, len(reply.infeasible_gang_resource_requests)
