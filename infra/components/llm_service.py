"""The serving objects in the cluster: namespace, HF token Secret, API keys Secret, env and app
ConfigMaps, NetworkPolicies, the serve Service, KServe-style alias Services, the worker groups'
disruption budgets, the spare GPU nodes' PriorityClass and placeholder Deployments, RayService."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random

from infra.plan.endpoint import (
    GENERATED_KEY_LENGTH,
    KUBERAY_OWNED_SERVICE_FIELDS,
    Alias,
    alias_service,
    api_key_names,
    network_policies,
)
from infra.plan.model_store import (
    WORKLOAD_IDENTITY_ANNOTATION,
    mirror_code_config_map_name,
    mirror_code_files,
)
from infra.plan.ray_service import (
    API_KEYS_SECRET_NAME,
    HF_SECRET_KEY,
    HF_SECRET_NAME,
    RAY_SERVICE_NAME,
    app_code_config_map_name,
    app_code_files,
)

MANAGED_BY: Final = {"app.kubernetes.io/managed-by": "pulumi", "app.kubernetes.io/part-of": "llm-serving"}
# Pulumi waits for a Job to complete (pulumi-kubernetes' Job await); the first mirror of a 32B
# model from the Hub is the longest wait of a first `pulumi up`. Longer than the Job's own deadline
# (MIRROR_DEADLINE_SECONDS), so the Job's failure, not Pulumi's timeout, says what went wrong.
MIRROR_TIMEOUT: Final = "150m"
SERVE_SERVICE_DELETE_TIMEOUT: Final = "20m"


@dataclass(frozen=True)
class LlmServiceArgs:
    namespace: str
    """Namespace created for the Ray cluster and everything it reads."""
    hf_token: pulumi.Input[str]
    """Hugging Face token, stored only in the `hf-token` Secret (a Pulumi secret throughout)."""
    env_config_map_name: str
    """Content-addressed name of the Ray pods' env ConfigMap (the spec's `envFrom` names it)."""
    env: Mapping[str, str]
    """The env ConfigMap's data."""
    ray_service_spec: Mapping[str, Any]
    """The RayService `spec` from the plan: serveConfigV2 and rayClusterConfig."""
    operator: pulumi.Resource
    """The KubeRay operator release: the RayService is created after it and deleted before it,
    while the operator can still clear its finalizer."""
    extra_api_keys: pulumi.Input[Sequence[str]]
    """`llm-serving:apiKeys` (a secret list, possibly empty) besides the generated key."""
    aliases: Sequence[Alias]
    """KServe-style `<id>-predictor` names for the served models."""
    endpoint_address: pulumi.Resource
    """The reserved internal address the serve Service's load balancer takes."""
    serve_service: Mapping[str, Any]
    """The serve Service document (`ServingPlan.serve_service`), created before the RayService."""
    service_accounts: Mapping[str, pulumi.Input[str]]
    """Kubernetes service account -> the Google service account it acts as (Workload Identity)."""
    mirror_jobs: Sequence[Mapping[str, Any]]
    """One mirror Job document per served (Hub repo, revision) (`ServingPlan.mirror_jobs`)."""
    model_store: pulumi.Resource
    """The bucket and its grants: every mirror Job and Ray pod starts after them."""
    disruption_budgets: Sequence[Mapping[str, Any]] = ()
    """One PodDisruptionBudget document per worker group (`ServingPlan.disruption_budgets`)."""
    compute_classes: Sequence[pulumi.Resource] = ()
    """The GPU tiers' ComputeClasses the workers select: created before the RayService, deleted after."""
    spare_priority_class: Mapping[str, Any] | None = None
    """The placeholders' PriorityClass (`ServingPlan.spare_priority_class`); None without spare nodes."""
    spare_deployments: Sequence[Mapping[str, Any]] = ()
    """One placeholder Deployment document per tier with spare nodes (`ServingPlan.spare_deployments`)."""


class LlmService(pulumi.ComponentResource):
    """Pass the cluster's Kubernetes provider in `opts`."""

    def __init__(self, name: str, args: LlmServiceArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("llm-serving:infra:LlmService", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        # After the reserved address on create, before it on destroy: deleting the namespace waits
        # for the serve Service's load balancer to be cleaned up (GKE's Service finalizer), and
        # only then is the address free to release.
        self.namespace = k8s.core.v1.Namespace(
            f"{name}-namespace",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=args.namespace, labels=MANAGED_BY),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[args.endpoint_address]),
        )
        # Children take the namespace from the Namespace's output: created after it, deleted before it.
        namespace = self.namespace.metadata.name

        self.hf_token_secret = k8s.core.v1.Secret(
            f"{name}-hf-token",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=HF_SECRET_NAME, namespace=namespace, labels=MANAGED_BY),
            type="Opaque",
            string_data={HF_SECRET_KEY: pulumi.Output.secret(args.hf_token)},
            opts=child,
        )
        # Immutable and named by its content: a change creates a new ConfigMap and a new pod
        # template, never an in-place edit that running pods would not see. The old one is kept
        # (retain_on_delete): during the NewCluster upgrade that the new template starts, the old
        # Ray cluster keeps serving and keeps creating worker pods that read it by name.
        # Destroy removes it with the namespace.
        self.env_config_map = k8s.core.v1.ConfigMap(
            f"{name}-ray-env",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=args.env_config_map_name, namespace=namespace, labels=MANAGED_BY
            ),
            data=dict(args.env),
            immutable=True,
            opts=pulumi.ResourceOptions(parent=self, retain_on_delete=True, deleted_with=self.namespace),
        )
        # Keys: one generated here (kept in the state as a secret, stable across runs) and the
        # stack's extra ones. The head mounts the Secret by its fixed name, so a change to the keys
        # is a Secret update the ingress picks up, never a new pod template.
        self.generated_api_key = random.RandomPassword(
            f"{name}-api-key", length=GENERATED_KEY_LENGTH, special=False, opts=child
        )

        def key_data(values: list[Any]) -> dict[str, str]:
            generated, extra = values[0], list(values[1] or [])
            return dict(zip(api_key_names(len(extra)), [generated, *extra], strict=True))

        keys: pulumi.Output[dict[str, str]] = pulumi.Output.all(
            self.generated_api_key.result, args.extra_api_keys
        ).apply(key_data)
        self.api_keys_secret = k8s.core.v1.Secret(
            f"{name}-api-keys",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=API_KEYS_SECRET_NAME, namespace=namespace, labels=MANAGED_BY
            ),
            type="Opaque",
            string_data=pulumi.Output.secret(keys),  # type: ignore[arg-type]  # the SDK's Never
            opts=child,
        )
        # The app builder's source (serve/openai_app.py), mounted into every Ray pod; named by
        # content and kept like the env ConfigMap, for the same reason.
        app_files = app_code_files()
        self.app_code_config_map = k8s.core.v1.ConfigMap(
            f"{name}-ray-app",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=app_code_config_map_name(app_files), namespace=namespace, labels=MANAGED_BY
            ),
            data=app_files,
            immutable=True,
            opts=pulumi.ResourceOptions(parent=self, retain_on_delete=True, deleted_with=self.namespace),
        )
        self.service_accounts = [
            k8s.core.v1.ServiceAccount(
                f"{name}-sa-{ksa}",
                metadata=k8s.meta.v1.ObjectMetaArgs(
                    name=ksa,
                    namespace=namespace,
                    labels=MANAGED_BY,
                    annotations={WORKLOAD_IDENTITY_ANNOTATION: email},
                ),
                opts=child,
            )
            for ksa, email in sorted(args.service_accounts.items())
        ]
        mirror_files = mirror_code_files()
        self.mirror_code_config_map = k8s.core.v1.ConfigMap(
            f"{name}-model-mirror",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=mirror_code_config_map_name(mirror_files), namespace=namespace, labels=MANAGED_BY
            ),
            data=mirror_files,
            immutable=True,
            # Kept like the other content-named ConfigMaps: a replaced Job may still be running on it.
            opts=pulumi.ResourceOptions(parent=self, retain_on_delete=True, deleted_with=self.namespace),
        )
        # The only pods with the HF token. Named by (repo, revision): a revision bump is a new Job;
        # a Job that must change otherwise is replaced (Jobs are immutable), runs again and finds
        # the revision mirrored. The RayService waits for every Job to complete.
        self.mirror_jobs = [
            k8s.batch.v1.Job(
                f"{name}-{job['metadata']['name']}",
                metadata=k8s.meta.v1.ObjectMetaArgs(
                    name=job["metadata"]["name"],
                    namespace=namespace,
                    labels={**MANAGED_BY, **job["metadata"]["labels"]},
                    annotations=job["metadata"]["annotations"],
                ),
                spec=job["spec"],
                opts=pulumi.ResourceOptions(
                    parent=self,
                    depends_on=[
                        self.hf_token_secret,
                        self.env_config_map,
                        self.mirror_code_config_map,
                        *self.service_accounts,
                        args.model_store,
                    ],
                    delete_before_replace=True,
                    custom_timeouts=pulumi.CustomTimeouts(create=MIRROR_TIMEOUT, update=MIRROR_TIMEOUT),
                ),
            )
            for job in args.mirror_jobs
        ]
        self.network_policies = [
            k8s.networking.v1.NetworkPolicy(
                f"{name}-netpol-{policy['metadata']['name']}",
                metadata=k8s.meta.v1.ObjectMetaArgs(
                    name=policy["metadata"]["name"], namespace=namespace, labels=MANAGED_BY
                ),
                spec=policy["spec"],
                opts=child,
            )
            for policy in network_policies()
        ]
        # Select pods by labels only: they exist before the RayService's pods and outlive a cluster.
        self.disruption_budgets = [
            k8s.policy.v1.PodDisruptionBudget(
                f"{name}-pdb-{budget['metadata']['name']}",
                metadata=k8s.meta.v1.ObjectMetaArgs(
                    name=budget["metadata"]["name"], namespace=namespace, labels=MANAGED_BY
                ),
                spec=budget["spec"],
                opts=child,
            )
            for budget in args.disruption_budgets
        ]
        self.aliases = [
            k8s.core.v1.Service(
                f"{name}-alias-{alias.service}",
                metadata=k8s.meta.v1.ObjectMetaArgs(
                    name=alias.service,
                    namespace=namespace,
                    labels={**MANAGED_BY, **document["metadata"]["labels"]},
                ),
                spec=document["spec"],
                opts=child,
            )
            for alias in args.aliases
            if alias.service is not None
            for document in [alias_service(alias)]
        ]
        # Cluster-scoped, so not under the namespace; only when some tier keeps spare nodes.
        self.spare_priority_class = (
            k8s.scheduling.v1.PriorityClass(
                f"{name}-spare-priority-class",
                metadata=k8s.meta.v1.ObjectMetaArgs(
                    name=args.spare_priority_class["metadata"]["name"], labels=MANAGED_BY
                ),
                value=args.spare_priority_class["value"],
                preemption_policy=args.spare_priority_class["preemptionPolicy"],
                global_default=args.spare_priority_class["globalDefault"],
                description=args.spare_priority_class["description"],
                # The API server refuses to change a PriorityClass's value or preemption policy
                # (both immutable: kubernetes pkg/apis/scheduling/validation
                # ValidatePriorityClassUpdate), so a change replaces it, the old one first (the
                # name is fixed; running placeholders keep their priority meanwhile).
                opts=pulumi.ResourceOptions.merge(
                    child,
                    pulumi.ResourceOptions(
                        replace_on_changes=["value", "preemptionPolicy"], delete_before_replace=True
                    ),
                ),
            )
            if args.spare_priority_class is not None
            else None
        )
        # The placeholders need nothing from the RayService: they hold nodes before any worker asks.
        # The API server refuses a pod whose PriorityClass does not exist, so the class comes first
        # (and goes last).
        self.spare_deployments = [
            k8s.apps.v1.Deployment(
                f"{name}-{deployment['metadata']['name']}",
                metadata=k8s.meta.v1.ObjectMetaArgs(
                    name=deployment["metadata"]["name"],
                    namespace=namespace,
                    labels={**MANAGED_BY, **deployment["metadata"]["labels"]},
                    annotations=deployment["metadata"]["annotations"],
                ),
                spec=deployment["spec"],
                opts=pulumi.ResourceOptions(
                    parent=self,
                    depends_on=[self.spare_priority_class] if self.spare_priority_class else [],
                ),
            )
            for deployment in args.spare_deployments
        ]
        # Before the RayService, under KubeRay's name, so the endpoint exists while a model still
        # deploys; KubeRay takes its selector over at the first readiness (infra/plan/endpoint.py).
        # After the RayService on destroy: its deletion waits for the load balancer's cleanup.
        self.serve_service = k8s.core.v1.Service(
            f"{name}-serve-service",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=args.serve_service["metadata"]["name"],
                namespace=namespace,
                labels=MANAGED_BY,
                annotations=args.serve_service["metadata"]["annotations"],
            ),
            spec=args.serve_service["spec"],
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=[args.endpoint_address],
                ignore_changes=list(KUBERAY_OWNED_SERVICE_FIELDS),
                # Deleting waits for GKE's finalizer to remove the load balancer (Pulumi's default
                # wait is 10 minutes).
                custom_timeouts=pulumi.CustomTimeouts(delete=SERVE_SERVICE_DELETE_TIMEOUT),
            ),
        )
        self.ray_service = k8s.apiextensions.CustomResource(
            f"{name}-rayservice",
            api_version="ray.io/v1",
            kind="RayService",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=RAY_SERVICE_NAME, namespace=namespace, labels=MANAGED_BY
            ),
            spec=dict(args.ray_service_spec),
            # The pods read the Secrets and ConfigMaps by name, which Pulumi cannot see; KubeRay must
            # find the serve Service rather than create it; the policies are in place first.
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=[
                    args.operator,
                    self.hf_token_secret,
                    self.api_keys_secret,
                    self.env_config_map,
                    self.app_code_config_map,
                    self.serve_service,
                    *self.network_policies,
                    *self.service_accounts,
                    *self.mirror_jobs,
                    args.model_store,
                    *args.compute_classes,
                ],
            ),
        )
        self.register_outputs({"namespace": namespace})
