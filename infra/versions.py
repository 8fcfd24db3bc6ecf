"""The KubeRay operator chart: one pin, next to the CRDs the tests validate against."""

from typing import Final

KUBERAY_VERSION: Final = "1.7.0"
KUBERAY_CHART: Final = "kuberay-operator"
KUBERAY_CHART_REPO: Final = "https://ray-project.github.io/kuberay-helm/"
KUBERAY_NAMESPACE: Final = "kuberay-system"
