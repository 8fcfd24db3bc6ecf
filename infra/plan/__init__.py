"""The serving plan: a pure function of (catalog, stack settings) to everything the stack creates.

No Pulumi and no cloud calls here (a test imports every module of this package and checks
that): `infra.program` turns a plan into resources, the tests check it directly, and
`python -m infra.plan` prints it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from configcheck.problems import ConfigError, Problem
from infra.inputs import load_inputs
from infra.plan.compute_class import compute_class
from infra.plan.cost import CostEstimate, estimate_cost
from infra.plan.disruption import disruption_budgets
from infra.plan.endpoint import serve_address, serve_service, serve_service_object
from infra.plan.model_store import image_via_registry, mirror_job, mirrored_models, model_bucket_name
from infra.plan.network import NetworkSpec
from infra.plan.node_fit import PoolFit, fit_problems, pool_fits
from infra.plan.node_pools import NodePoolSpec, fallback_pool, gpu_pool, system_pool
from infra.plan.packing import packed_gpus, whole_gpus
from infra.plan.ray_service import (
    HF_SECRET_KEY,
    HF_SECRET_NAME,
    NAMESPACE,
    RAY_POD_ENV,
    env_config_map_name,
    ray_cluster_config,
    ray_service_spec,
    worker_container_resources,
)
from infra.plan.spare_capacity import spare_deployments, spare_priority_class
from infra.settings import AUTOSCALING_KEY, TIERS_KEY, EngineConfig, StackSettings
from serve.catalog import Catalog, ModelEntry
from serve.gpu_share import GpuShare, gpu_share, node_exclusive
from serve.memory import MemoryBudget
from serve.paths import REPO_ROOT
from serve.serve_config import document_llm_configs, serve_config
from serve.tiers import TierName

__all__ = ["ServingPlan", "build_plan", "build_plan_for_stack", "packed_tier_gpus"]


class Placement(BaseModel):
    """Where one served model runs and what it costs in GPU memory."""

    model_config = ConfigDict(frozen=True)

    model_id: str
    tier: str
    gpus_per_replica: int
    # The fraction of one GPU a packed replica takes (it shares the card); None for whole GPUs.
    gpu_fraction: float | None
    min_replicas: int
    max_replicas: int
    memory: MemoryBudget


class TierGpus(BaseModel):
    """GPUs a tier's models need with every model at minReplicas and at maxReplicas at once, with
    small models packed onto shared cards (infra/plan/packing.py) and without (whole GPUs each)."""

    model_config = ConfigDict(frozen=True)

    tier: str
    models: int
    packed_models: int
    at_min_packed: int
    at_min_whole: int
    at_max_packed: int
    at_max_whole: int


class SkippedModel(BaseModel):
    model_config = ConfigDict(frozen=True)

    model_id: str
    tier: str
    reason: str


class ServingPlan(BaseModel):
    """Everything a stack creates. Each document is held once; the views of it are properties."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    stack: str
    settings: StackSettings
    # The GCP project the names below carry (None in an offline plan without gcp:project).
    project: str | None
    model_bucket: str
    image: str
    catalog: Catalog
    served: tuple[ModelEntry, ...]
    skipped: tuple[SkippedModel, ...]
    placements: tuple[Placement, ...]
    tier_gpus: tuple[TierGpus, ...]
    serve_config: dict[str, Any]
    system_pool: NodePoolSpec
    # One per enabled tier: its worker group's pool (spot, or on-demand where the stack says so).
    gpu_pools: tuple[NodePoolSpec, ...]
    # The on-demand pools behind spot ones (`onDemandFallback`), scaled up only when theirs cannot be.
    fallback_pools: tuple[NodePoolSpec, ...]
    ray_cluster_config: dict[str, Any]
    network: NetworkSpec
    env_config_map_data: dict[str, str]
    cost: CostEstimate

    @property
    def served_model_ids(self) -> list[str]:
        return [model.id for model in self.served]

    @property
    def node_pools(self) -> tuple[NodePoolSpec, ...]:
        return (self.system_pool, *self.gpu_pools, *self.fallback_pools)

    def tier_pools(self, pool: NodePoolSpec) -> tuple[NodePoolSpec, ...]:
        """A GPU pool and its fallback, in the order the tier's compute class scales them up."""
        return (pool, *(f for f in self.fallback_pools if f.tier == pool.tier))

    @property
    def compute_classes(self) -> list[dict[str, Any]]:
        """One ComputeClass per enabled tier; the tier's workers select it."""
        return [compute_class(pool.tier, self.tier_pools(pool)) for pool in self.gpu_pools if pool.tier]

    @property
    def llm_configs(self) -> list[dict[str, Any]]:
        """Each served model's LLMConfig document, as it appears in the serve config."""
        return document_llm_configs(self.serve_config)

    @property
    def ray_service_spec(self) -> dict[str, Any]:
        return ray_service_spec(
            self.serve_config, self.ray_cluster_config, serve_service(serve_address(self.network.node_cidr))
        )

    @property
    def serve_service(self) -> dict[str, Any]:
        """The serve Service the stack creates before KubeRay could (infra/plan/endpoint.py)."""
        return serve_service_object(serve_address(self.network.node_cidr))

    @property
    def disruption_budgets(self) -> list[dict[str, Any]]:
        """One PodDisruptionBudget per worker group (infra/plan/disruption.py)."""
        return disruption_budgets(
            self.gpu_pools,
            _warm_gpus_by_pool(self.served, self.gpu_pools, self.settings),
        )

    @property
    def spare_nodes(self) -> dict[TierName, int]:
        """`spareNodes` of every enabled tier: nodes of its pool kept free for the next worker."""
        return _spare_nodes(self.settings)

    @property
    def spare_deployments(self) -> list[dict[str, Any]]:
        """One placeholder Deployment per tier with spare nodes (infra/plan/spare_capacity.py)."""
        return spare_deployments(self.gpu_pools, self.spare_nodes, self.ray_cluster_config, NAMESPACE)

    @property
    def spare_priority_class(self) -> dict[str, Any] | None:
        """The placeholders' PriorityClass, only when some tier keeps spare nodes."""
        return spare_priority_class() if any(self.spare_nodes.values()) else None

    @property
    def mirror_jobs(self) -> list[dict[str, Any]]:
        """One Job per served (Hub repo, revision): each copies it into the model bucket once."""
        return [
            mirror_job(
                model,
                bucket=self.model_bucket,
                namespace=NAMESPACE,
                image=self.image,
                system_pool=self.system_pool,
                hf_secret=(HF_SECRET_NAME, HF_SECRET_KEY),
                env_config_map=self.env_config_map_name,
            )
            for model in mirrored_models(self.served)
        ]

    @property
    def node_fits(self) -> tuple[PoolFit, ...]:
        """How each pool's pods fit its nodes (the check build_plan already passed)."""
        return pool_fits(self.ray_cluster_config, self.system_pool, (*self.gpu_pools, *self.fallback_pools))

    @property
    def env_config_map_name(self) -> str:
        return env_config_map_name(self.env_config_map_data)


def _cross_problems(catalog: Catalog, settings: StackSettings, served: list[ModelEntry]) -> list[Problem]:
    problems: list[Problem] = []
    for model in served:
        gpus = settings.tiers[model.tier].gpus_per_node
        if model.tensor_parallel_size > gpus:
            problems.append(
                settings.problem(
                    (TIERS_KEY, model.tier.value, "gpusPerNode"),
                    f"{model.id} needs {model.tensor_parallel_size} GPUs on one node (tensor_parallel_size) "
                    f"but {model.tier.value} nodes have {gpus}; set gpusPerNode to at least "
                    f"{model.tensor_parallel_size} or disable the tier",
                )
            )
    problems += _capacity_problems(settings, served)
    if not served:
        tiers = sorted({m.tier.value for m in catalog.models})
        problems.append(
            settings.problem(
                (TIERS_KEY,),
                f"no catalog model is served: enable a tier that has models ({', '.join(tiers)})",
            )
        )
    return problems


def stack_gpu_share(model: ModelEntry, settings: StackSettings) -> GpuShare | None:
    """The model's share of a card in this stack: its tier's node size and the stack's warm
    replicas decide whether it is packed (serve/gpu_share.py)."""
    return gpu_share(model, settings.tiers[model.tier].gpus_per_node, settings.autoscaling.min_replicas)


def stack_node_exclusive(model: ModelEntry, settings: StackSettings) -> bool:
    """Whether each replica of the model keeps its node in this stack (serve/gpu_share.py)."""
    return node_exclusive(model, settings.tiers[model.tier].gpus_per_node, settings.autoscaling.min_replicas)


def _replica_memory(model: ModelEntry, settings: StackSettings) -> MemoryBudget:
    """The model's estimate against what its replica may use: its share of a card when packed."""
    memory, share = model.memory(), stack_gpu_share(model, settings)
    if share is None:
        return memory
    return memory.model_copy(update={"budget_gib": share.gpu_memory_utilization * model.gpu_tier.vram_gib})


def _packing_limits(settings: StackSettings, tier: TierName) -> tuple[int, int]:
    """(GPUs per node, replicas per card) of a tier's pool: a card's replicas each hold one of the
    worker's CPUs in Ray."""
    pool = gpu_pool(tier, settings)
    cpus, _ = worker_container_resources(pool)
    return pool.accelerator_count, max(1, cpus // pool.accelerator_count)


def packed_tier_gpus(
    models: Sequence[ModelEntry], replicas: int, settings: StackSettings, tier: TierName
) -> int:
    """GPUs `replicas` replicas of each of `models` take on `tier`'s pool, packed within its limits."""
    return packed_gpus(
        models, replicas, *_packing_limits(settings, tier), warm_replicas=settings.autoscaling.min_replicas
    )


def whole_tier_gpus(
    models: Sequence[ModelEntry], replicas: int, settings: StackSettings, tier: TierName
) -> int:
    """GPUs `replicas` replicas of each of `models` take on `tier`'s pool without packing."""
    return whole_gpus(
        models, replicas, settings.tiers[tier].gpus_per_node, warm_replicas=settings.autoscaling.min_replicas
    )


def _warm_gpus(served: Sequence[ModelEntry], tier: TierName | None, settings: StackSettings) -> int:
    """GPUs the warm replicas (minReplicas of every model on `tier`) hold with no traffic, packed."""
    if tier is None:
        return 0
    on_tier = [model for model in served if model.tier == tier]
    return packed_tier_gpus(on_tier, settings.autoscaling.min_replicas, settings, tier)


def _spare_nodes(settings: StackSettings) -> dict[TierName, int]:
    """`spareNodes` of every enabled tier: nodes of its pool kept free for the next worker."""
    return {tier: settings.tiers[tier].spare_nodes for tier in settings.enabled_tiers()}


def _warm_gpus_by_pool(
    served: Sequence[ModelEntry], pools: Sequence[NodePoolSpec], settings: StackSettings
) -> dict[str, int]:
    """`_warm_gpus` of each pool's tier, by pool name: what the cost and the disruption budgets use."""
    return {pool.name: _warm_gpus(served, pool.tier, settings) for pool in pools}


def tier_gpus(served: Sequence[ModelEntry], settings: StackSettings) -> tuple[TierGpus, ...]:
    scaling = settings.autoscaling
    found = []
    for tier in settings.enabled_tiers():
        on_tier = [model for model in served if model.tier == tier]
        if on_tier:
            found.append(
                TierGpus(
                    tier=tier.value,
                    models=len(on_tier),
                    packed_models=sum(stack_gpu_share(model, settings) is not None for model in on_tier),
                    at_min_packed=packed_tier_gpus(on_tier, scaling.min_replicas, settings, tier),
                    at_min_whole=whole_tier_gpus(on_tier, scaling.min_replicas, settings, tier),
                    at_max_packed=packed_tier_gpus(on_tier, scaling.max_replicas, settings, tier),
                    at_max_whole=whole_tier_gpus(on_tier, scaling.max_replicas, settings, tier),
                )
            )
    return tuple(found)


def _capacity_problems(settings: StackSettings, served: list[ModelEntry]) -> list[Problem]:
    """A tier's pool at maxNodes must be able to hold what the autoscaling settings promise.

    Three rules, all about GPUs, counted with small models packed onto shared cards
    (infra/plan/packing.py; a necessary condition: mixed tensor-parallel sizes and the order
    replicas arrive in can still fragment nodes):
    - each model alone at maxReplicas: otherwise its upper replicas stay pending forever and the
      plan's replica range and cost at max are fiction. Models that scale to zero share the pool,
      so they need not all fit at maxReplicas together;
    - every model on the tier at minReplicas at once: otherwise the Serve application never
      becomes RUNNING, because some always-on replica can never be placed;
    - twice that, in whole nodes: a NewCluster upgrade starts the new cluster's warm replicas
      while the old cluster's still serve, in the same pool, and KubeRay switches traffic only once
      every application of the new cluster is RUNNING; without room for both it never finishes.
      Each cluster's worker pods take whole nodes, so packed replicas of the two never share one.
    """
    problems: list[Problem] = []
    scaling = settings.autoscaling
    for tier in settings.enabled_tiers():
        on_tier = [model for model in served if model.tier == tier]
        if not on_tier:
            continue
        pool = settings.tiers[tier]
        available = pool.max_nodes * pool.gpus_per_node
        if max(model.tensor_parallel_size for model in on_tier) > pool.gpus_per_node:
            continue  # reported against gpusPerNode already
        largest = max(
            on_tier,
            key=lambda model: (packed_tier_gpus([model], scaling.max_replicas, settings, tier), model.id),
        )
        at_max = packed_tier_gpus([largest], scaling.max_replicas, settings, tier)
        share = stack_gpu_share(largest, settings)
        if share is not None:
            each = f"{share.bundle_gpus} GPU"
        elif stack_node_exclusive(largest, settings):
            each = f"a whole {pool.gpus_per_node}-GPU node"
        else:
            each = f"{largest.tensor_parallel_size} GPUs"
        warm = packed_tier_gpus(on_tier, scaling.min_replicas, settings, tier)
        # Each cluster's worker pods take whole nodes: the two clusters of an upgrade never share one.
        warm_nodes_gpus = -(-warm // pool.gpus_per_node) * pool.gpus_per_node
        for needed, what in (
            (at_max, f"{largest.id} at maxReplicas {scaling.max_replicas} x {each}"),
            (warm, f"the {len(on_tier)} {tier.value} model(s) at minReplicas {scaling.min_replicas}"),
            (
                2 * warm_nodes_gpus,
                f"an upgrade's two Ray clusters, each with the {len(on_tier)} {tier.value} model(s) at "
                f"minReplicas {scaling.min_replicas},",
            ),
        ):
            if needed > available:
                problems.append(
                    settings.problem(
                        (TIERS_KEY, tier.value, "maxNodes"),
                        f"{what} need {needed} GPUs but maxNodes {pool.max_nodes} x gpusPerNode "
                        f"{pool.gpus_per_node} gives {available}; set maxNodes to at least "
                        f"{-(-needed // pool.gpus_per_node)} or lower {AUTOSCALING_KEY} replicas",
                    )
                )
                break
    return problems


def build_plan(catalog: Catalog, settings: StackSettings, *, project: str | None = None) -> ServingPlan:
    """Everything a stack creates, derived from the catalog and the stack's settings. `project`:
    the provider's project when the stack's config has no gcp:project (the program passes it)."""
    enabled = set(settings.enabled_tiers())
    served = [model for model in catalog.models if model.tier in enabled]
    skipped = tuple(
        SkippedModel(
            model_id=model.id,
            tier=model.tier.value,
            reason=f"tier {model.tier.value} is disabled in stack {settings.stack}",
        )
        for model in catalog.models
        if model.tier not in enabled
    )
    problems = _cross_problems(catalog, settings, served)
    if problems:
        raise ConfigError(problems)

    scaling = settings.autoscaling
    system = system_pool(settings)
    gpu_pools = tuple(gpu_pool(tier, settings) for tier in settings.enabled_tiers())
    spare = _spare_nodes(settings)
    fallback_pools = tuple(
        pool for tier in settings.enabled_tiers() if (pool := fallback_pool(tier, settings)) is not None
    )
    project = settings.project or project
    bucket = model_bucket_name(project, settings.stack)
    image = image_via_registry(settings.region, project, settings.stack)
    cluster_config = ray_cluster_config(system, gpu_pools, image)
    problems = fit_problems(settings, pool_fits(cluster_config, system, (*gpu_pools, *fallback_pools)))
    if problems:
        raise ConfigError(problems)
    return ServingPlan(
        stack=settings.stack,
        settings=settings,
        project=project,
        model_bucket=bucket,
        image=image,
        catalog=catalog,
        served=tuple(served),
        skipped=skipped,
        placements=tuple(
            Placement(
                model_id=model.id,
                tier=model.tier.value,
                gpus_per_replica=model.tensor_parallel_size,
                gpu_fraction=(share.bundle_gpus if (share := stack_gpu_share(model, settings)) else None),
                min_replicas=scaling.min_replicas,
                max_replicas=scaling.max_replicas,
                memory=_replica_memory(model, settings),
            )
            for model in served
        ),
        tier_gpus=tier_gpus(served, settings),
        serve_config=serve_config(
            served,
            scaling,
            {tier: settings.tiers[tier].gpus_per_node for tier in settings.enabled_tiers()},
            model_bucket=bucket,
        ),
        system_pool=system,
        gpu_pools=gpu_pools,
        fallback_pools=fallback_pools,
        ray_cluster_config=cluster_config,
        network=NetworkSpec(region=settings.region),
        env_config_map_data=dict(RAY_POD_ENV),
        cost=estimate_cost(
            (system, *gpu_pools, *fallback_pools),
            warm_gpus=_warm_gpus_by_pool(served, gpu_pools, settings),
            spare_nodes={pool.name: spare[pool.tier] for pool in gpu_pools if pool.tier},
        ),
    )


def build_plan_for_stack(
    stack: str, root: Path = REPO_ROOT, *, engine: EngineConfig | None = None, project: str | None = None
) -> ServingPlan:
    """Load and validate the catalog and the stack's settings under `root`, then plan them.

    Both files are validated before planning, so every problem in either is reported at once.
    """
    inputs = load_inputs(stack, root, engine=engine)
    return build_plan(inputs.catalog, inputs.settings, project=project)
