"""`../shared` next to the repo: the KubeRay release files and Managed Prometheus CRDs the checks read.

Missing reference files fail the test that needs them (never a skip): a check that quietly
does not run is worse than no check.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import pytest

from infra.versions import KUBERAY_VERSION
from serve.paths import REPO_ROOT

KUBERAY_DIR_NAME: Final = f"kuberay-v{KUBERAY_VERSION}"


def shared_dir() -> Path:
    path = REPO_ROOT.parent / "shared"
    if not path.is_dir():
        pytest.fail(f"shared reference directory {path} is missing: check out ../shared next to the repo")
    return path


def kuberay_dir() -> Path:
    path = shared_dir() / KUBERAY_DIR_NAME
    crds = path / "crds"
    if not crds.is_dir():
        pytest.fail(
            f"KubeRay CRDs not found at {crds}: copy the {KUBERAY_DIR_NAME} release's crds/ there "
            "(ray.io_rayservices.yaml, ray.io_rayclusters.yaml)"
        )
    return path


GMP_CRDS_DIR_NAME: Final = "gmp-crds"


def gmp_crds_dir() -> Path:
    """Google Cloud Managed Service for Prometheus' CRDs (PodMonitoring, ...), from its release."""
    path = shared_dir() / GMP_CRDS_DIR_NAME
    if not (path / "monitoring.googleapis.com_podmonitorings.yaml").is_file():
        pytest.fail(f"Managed Prometheus CRDs not found at {path}: copy them there")
    return path
