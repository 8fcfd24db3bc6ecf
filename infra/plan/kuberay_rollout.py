"""What KubeRay v1.7.0 does with a RayService spec change: the part of its decision this stack
depends on, ported as a small model so that tests (and `python -m infra.plan --diff`) can say,
for any change of the catalog or a stack file, which path the operator takes.

Read from ray-project/kuberay at tag v1.7.0 (ray-operator/, read 2026-11-26):
- controllers/ray/utils/util.go `GenerateHashWithoutReplicasAndWorkersToDelete` (l. 645-668):
  the spec is hashed with, per worker group, `replicas`, `minReplicas`, `maxReplicas`,
  `scaleStrategy.workersToDelete` and the pod template's `tolerations` and `schedulingGates`
  blanked; the head template's `tolerations` and `schedulingGates` too; and the RayCluster
  `upgradeStrategy`. controllers/ray/rayservice_controller.go `rayClusterSpecForHashing`
  (l. 1498-1502) also blanks `suspend`. Everything else in rayClusterConfig is hashed.
- rayservice_controller.go `shouldUpdateCluster` (l. 1351-1377) and `isClusterSpecHashEqual`
  (l. 1379-1407): a cluster whose hash equals the new spec's is left alone; when the only
  difference is worker groups appended at the end (`ray.io/num-worker-groups` annotation), the
  running cluster's spec is replaced in place and only the new groups get pods.
- `shouldPrepareNewCluster` (l. 1409-1437) with `isZeroDowntimeUpgradeEnabled` (l. 868-896):
  any other hashed difference prepares a new cluster when `upgradeStrategy.type` is NewCluster
  (or NewClusterWithIncrementalUpgrade); with `None` the change is silently ignored.
- `checkIfNeedSubmitServeApplications` (l. 1551-1570): serveConfigV2 is re-submitted to the
  running cluster when its text differs from the cached copy, but only while no new cluster is
  being prepared (l. 243-244): with a new cluster, the new config goes only to the new one.
The operator-version check in `shouldUpdateCluster` (an operator upgrade rewrites the spec in
place) is not modelled: this stack pins the operator version.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

# Fields KubeRay blanks before hashing, by where they sit in rayClusterConfig.
IGNORED_WORKER_GROUP_FIELDS: Final = ("replicas", "minReplicas", "maxReplicas")
IGNORED_POD_SPEC_FIELDS: Final = ("tolerations", "schedulingGates")
IGNORED_CLUSTER_FIELDS: Final = ("upgradeStrategy", "suspend")
ZERO_DOWNTIME_STRATEGIES: Final = ("NewCluster", "NewClusterWithIncrementalUpgrade")


class ClusterAction(StrEnum):
    NOTHING = "nothing changes on the cluster"
    UPDATE_SERVE_APPS = "Serve applications updated in place on the running cluster"
    UPDATE_CLUSTER_IN_PLACE = "new worker groups added to the running cluster"
    NEW_CLUSTER = "a new Ray cluster is built beside the running one, then traffic switches"
    IGNORED = "the change is ignored: the running cluster keeps its old spec"


@dataclass(frozen=True)
class Rollout:
    action: ClusterAction
    # rayClusterConfig paths that differ but that KubeRay does not look at (never applied).
    unapplied: tuple[str, ...] = ()

    @property
    def reaches_ray(self) -> bool:
        """Every difference in the spec takes effect on the cluster that serves."""
        return self.action is not ClusterAction.IGNORED and not self.unapplied


def _blank_ignored(cluster_config: Mapping[str, Any]) -> dict[str, Any]:
    spec = copy.deepcopy(dict(cluster_config))
    for field in IGNORED_CLUSTER_FIELDS:
        spec.pop(field, None)
    pod_templates = [spec.get("headGroupSpec", {}).get("template", {})]
    for group in spec.get("workerGroupSpecs", []):
        for field in IGNORED_WORKER_GROUP_FIELDS:
            group.pop(field, None)
        group.get("scaleStrategy", {}).pop("workersToDelete", None)
        pod_templates.append(group.get("template", {}))
    for template in pod_templates:
        for field in IGNORED_POD_SPEC_FIELDS:
            template.get("spec", {}).pop(field, None)
    return spec


def cluster_hash(cluster_config: Mapping[str, Any], worker_groups: int | None = None) -> str:
    """The hash KubeRay compares (SHA-1 of the JSON with the ignored fields blanked); with
    `worker_groups`, of the spec truncated to its first that many groups (the append check)."""
    spec = _blank_ignored(cluster_config)
    if worker_groups is not None:
        spec["workerGroupSpecs"] = spec.get("workerGroupSpecs", [])[:worker_groups]
    return hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def _differences(before: Any, after: Any, path: str) -> Iterator[str]:
    if isinstance(before, Mapping) and isinstance(after, Mapping):
        for key in sorted(set(before) | set(after)):
            yield from _differences(before.get(key), after.get(key), f"{path}.{key}" if path else key)
    elif isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        for index, (one, other) in enumerate(zip(before, after, strict=True)):
            yield from _differences(one, other, f"{path}[{index}]")
    elif before != after:
        yield path


def rollout(before: Mapping[str, Any], after: Mapping[str, Any]) -> Rollout:
    """What KubeRay does when a RayService spec changes from `before` to `after` (both `spec`s)."""
    old_cluster, new_cluster = before["rayClusterConfig"], after["rayClusterConfig"]
    if cluster_hash(old_cluster) != cluster_hash(new_cluster):
        old_groups = len(old_cluster.get("workerGroupSpecs", []))
        appended = len(new_cluster.get("workerGroupSpecs", [])) >= old_groups and cluster_hash(
            old_cluster
        ) == cluster_hash(new_cluster, worker_groups=old_groups)
        if appended:
            return Rollout(ClusterAction.UPDATE_CLUSTER_IN_PLACE)
        if after.get("upgradeStrategy", {}).get("type") in ZERO_DOWNTIME_STRATEGIES:
            return Rollout(ClusterAction.NEW_CLUSTER)
        return Rollout(ClusterAction.IGNORED)
    unapplied = tuple(_differences(old_cluster, new_cluster, ""))
    if before.get("serveConfigV2") != after.get("serveConfigV2"):
        return Rollout(ClusterAction.UPDATE_SERVE_APPS, unapplied)
    return Rollout(ClusterAction.NOTHING, unapplied)
