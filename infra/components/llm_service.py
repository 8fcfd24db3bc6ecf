"""The serving objects in the cluster: namespace, HF token Secret, env ConfigMap, RayService."""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from infra.plan import ServingPlan
from infra.plan.ray_service import HF_SECRET_KEY, HF_SECRET_NAME, NAMESPACE, RAY_SERVICE_NAME

MANAGED_BY = {"app.kubernetes.io/managed-by": "pulumi", "app.kubernetes.io/part-of": "llm-serving"}


class LlmService(pulumi.ComponentResource):
    def __init__(
        self,
        name: str,
        *,
        plan: ServingPlan,
        hf_token: pulumi.Input[str],
        provider: k8s.Provider,
        operator: pulumi.Resource,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("llm-serving:infra:LlmService", name, None, opts)
        in_cluster = pulumi.ResourceOptions(parent=self, provider=provider)

        self.namespace = k8s.core.v1.Namespace(
            f"{name}-namespace",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=NAMESPACE, labels=MANAGED_BY),
            opts=in_cluster,
        )
        namespaced = in_cluster.merge(pulumi.ResourceOptions(depends_on=[self.namespace]))

        self.hf_token_secret = k8s.core.v1.Secret(
            f"{name}-hf-token",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=HF_SECRET_NAME, namespace=NAMESPACE, labels=MANAGED_BY),
            type="Opaque",
            string_data={HF_SECRET_KEY: pulumi.Output.secret(hf_token)},
            opts=namespaced,
        )
        # Immutable and named by its content: a change creates a new ConfigMap and a new pod
        # template, never an in-place edit that running pods would not see.
        self.env_config_map = k8s.core.v1.ConfigMap(
            f"{name}-ray-env",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=plan.env_config_map_name, namespace=NAMESPACE, labels=MANAGED_BY
            ),
            data=plan.env_config_map_data,
            immutable=True,
            opts=namespaced,
        )
        spec: dict[str, Any] = plan.ray_service_spec
        self.ray_service = k8s.apiextensions.CustomResource(
            f"{name}-rayservice",
            api_version="ray.io/v1",
            kind="RayService",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=RAY_SERVICE_NAME, namespace=NAMESPACE, labels=MANAGED_BY
            ),
            spec=spec,
            # Deleted before the operator, so the operator can still clear its finalizer.
            opts=namespaced.merge(
                pulumi.ResourceOptions(depends_on=[operator, self.hf_token_secret, self.env_config_map])
            ),
        )
        self.register_outputs({"namespace": self.namespace.metadata.name})
