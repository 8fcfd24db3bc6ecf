"""The KubeRay operator from its Helm chart, pinned in infra/versions.py, on the system pool."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from infra.versions import KUBERAY_CHART, KUBERAY_CHART_REPO, KUBERAY_NAMESPACE, KUBERAY_VERSION


@dataclass(frozen=True)
class KubeRayOperatorArgs:
    node_selector: Mapping[str, str]
    """Labels of the nodes the operator runs on (the on-demand system pool: a spot reclaim
    must not take the controller of every Ray cluster with it)."""


class KubeRayOperator(pulumi.ComponentResource):
    """A real Helm release (`helm.v3.Release`): hooks run, `helm list` sees it, and it previews
    as a plain create while the cluster does not exist yet. Pass the cluster's Kubernetes
    provider in `opts`.

    Helm installs the chart's CRDs on first install only and never upgrades them: a KubeRay
    bump needs the new CRDs applied first (README, "Upgrading KubeRay").
    """

    def __init__(
        self, name: str, args: KubeRayOperatorArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("llm-serving:infra:KubeRayOperator", name, None, opts)
        self.release = k8s.helm.v3.Release(
            name,
            # A fixed release name (Pulumi would add a random suffix): `helm list`, the operator's
            # Deployment name and the docs all say kuberay-operator.
            name=KUBERAY_CHART,
            chart=KUBERAY_CHART,
            version=KUBERAY_VERSION,
            repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=KUBERAY_CHART_REPO),
            namespace=KUBERAY_NAMESPACE,
            create_namespace=True,
            values={"nodeSelector": dict(args.node_selector)},
            # Wait for the operator to be ready, so the RayService is created against a
            # running controller (and on destroy is deleted while it still runs).
            skip_await=False,
            atomic=True,
            cleanup_on_fail=True,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.register_outputs({"release_status": self.release.status})
