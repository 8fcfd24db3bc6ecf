"""The KubeRay operator from its Helm chart, pinned in infra/versions.py, on the system pool."""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s

from infra.versions import KUBERAY_CHART, KUBERAY_CHART_REPO, KUBERAY_NAMESPACE, KUBERAY_VERSION


class KubeRayOperator(pulumi.ComponentResource):
    """A real Helm release (`helm.v3.Release`): hooks run, `helm list` sees it, and it previews
    as a plain create while the cluster does not exist yet.

    Helm installs the chart's CRDs on first install only and never upgrades them: a KubeRay
    bump needs the new CRDs applied first (README, "Upgrading KubeRay").
    """

    def __init__(
        self,
        name: str,
        *,
        provider: k8s.Provider,
        node_selector: dict[str, str],
        opts: pulumi.ResourceOptions | None = None,
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
            values={"nodeSelector": node_selector},
            # Wait for the operator to be ready, so the RayService is created against a
            # running controller (and on destroy is deleted while it still runs).
            skip_await=False,
            atomic=True,
            cleanup_on_fail=True,
            opts=pulumi.ResourceOptions(parent=self, provider=provider),
        )
        self.register_outputs({"release_status": self.release.status})
