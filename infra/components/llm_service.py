"""The serving objects in the cluster: namespace, HF token Secret, env ConfigMap, RayService."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import pulumi
import pulumi_kubernetes as k8s

from infra.plan.ray_service import HF_SECRET_KEY, HF_SECRET_NAME, RAY_SERVICE_NAME

MANAGED_BY: Final = {"app.kubernetes.io/managed-by": "pulumi", "app.kubernetes.io/part-of": "llm-serving"}


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


class LlmService(pulumi.ComponentResource):
    """Pass the cluster's Kubernetes provider in `opts`."""

    def __init__(self, name: str, args: LlmServiceArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("llm-serving:infra:LlmService", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        self.namespace = k8s.core.v1.Namespace(
            f"{name}-namespace",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=args.namespace, labels=MANAGED_BY),
            opts=child,
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
        self.ray_service = k8s.apiextensions.CustomResource(
            f"{name}-rayservice",
            api_version="ray.io/v1",
            kind="RayService",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=RAY_SERVICE_NAME, namespace=namespace, labels=MANAGED_BY
            ),
            spec=dict(args.ray_service_spec),
            # The pods read the Secret and the ConfigMap by name, which Pulumi cannot see.
            opts=pulumi.ResourceOptions(
                parent=self, depends_on=[args.operator, self.hf_token_secret, self.env_config_map]
            ),
        )
        self.register_outputs({"namespace": namespace})
