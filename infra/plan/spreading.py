"""Can two replicas of one model land on one node? Pure.

A second replica only protects a model from a reclaim or a drain if it runs on another node.
Ray Serve 2.60 cannot be told so for Ray Serve LLM replicas: its SPREAD scheduling covers replicas
without placement groups only (serve/_private/deployment_scheduler.py `_schedule_replica`, l.761-795),
LLMServer always gives its replicas placement-group bundles
(llm/_internal/serve/core/server/llm_server.py `get_deployment_options`), and
`max_replicas_per_node` is refused next to them ("Setting max_replicas_per_node is not allowed
when placement_group_bundles is provided", serve/_private/config.py l.770-778). A custom
resource every worker declares once and every replica's bundle asks for would force it, but for
every model at once: two different models could no longer share a node or a card either, which
undoes packing (infra/plan/packing.py), so it is not built.

What is built: a stack that keeps two or more replicas of each model warm (`minReplicas` >= 2:
it buys them for availability) packs nothing (serve/gpu_share.py `SPREAD_WARM_REPLICAS`). Each
replica then takes whole GPUs, and on one-GPU nodes (T4, L4) a node holds one replica, so warm
replicas of a model are on separate nodes. On nodes of several GPUs, where a whole-GPU replica
leaves GPUs free, one custom resource per node does it: each worker of such a group declares one
unit of `SPREAD_RESOURCE`, and each replica that leaves GPUs free asks for it (`node_exclusive`),
so such a replica, of any model, keeps its node to itself and the node's other GPUs stay idle
(the plan counts whole nodes; a replica that fills its node asks for nothing and needs nothing).
Sharing those GPUs with other models would take one unit per GPU and a stable slot per model.
Below two warm replicas, replicas may share a node: with one warm replica there is nothing to
spread, and replicas added for load are throughput.

What does separate them is the nodes themselves: one Ray worker pod takes a whole node
(infra/plan/ray_service.py `worker_container_resources`), so two replicas share a node only if
the node's GPUs (and the worker's CPUs, one per replica) hold both. A replica on all of a
node's GPUs (a full-GPU model on a 1-GPU node, tensor parallel 2 on a 2-GPU node) is alone on its
node; packed fractional replicas, or whole-GPU replicas on a node with GPUs to spare (a tier set
to more GPUs per node than a replica uses, whatever `minReplicas` is), can share one, where a
single node loss takes both. The count uses the plan's own packing rule.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from infra.plan import ServingPlan, packed_tier_gpus

REPLICAS_THAT_MATTER = 2


class SpreadRow(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    model_id: str
    tier: str
    min_replicas: int
    max_replicas: int
    gpus_per_node: int
    two_fit_one_node: bool

    @property
    def may_share_a_node(self) -> bool:
        """Two replicas can exist and nothing keeps them on separate nodes."""
        return self.max_replicas >= REPLICAS_THAT_MATTER and self.two_fit_one_node


def spread_table(plan: ServingPlan) -> list[SpreadRow]:
    scaling = plan.settings.autoscaling
    rows = []
    for model in plan.served:
        per_node = plan.settings.tiers[model.tier].gpus_per_node
        two = packed_tier_gpus([model], REPLICAS_THAT_MATTER, plan.settings, model.tier)
        rows.append(
            SpreadRow(
                model_id=model.id,
                tier=model.tier.value,
                min_replicas=scaling.min_replicas,
                max_replicas=scaling.max_replicas,
                gpus_per_node=per_node,
                two_fit_one_node=two <= per_node,
            )
        )
    return rows


def may_share_a_node(plan: ServingPlan) -> list[str]:
    """Models of which two replicas can run on one node: a node loss can take both."""
    return [row.model_id for row in spread_table(plan) if row.may_share_a_node]
