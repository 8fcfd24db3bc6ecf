"""The GPU tiers' ComputeClasses (infra/plan/compute_class.py) against GKE's own CRD, vendored in
tests/fixtures/crds, and the one promise the design rests on: toggling `onDemandFallback` changes
the class and the pools, never the RayService's pod templates (so never a NewCluster upgrade)."""

from __future__ import annotations

import copy
import re
import subprocess
from typing import Any

import pytest
import yaml
from helpers.crd_schema import VENDORED_CRDS_DIR, crd_errors, crd_json_schema
from helpers.stack_files import STACKS

from infra.plan import ServingPlan, build_plan
from infra.plan.compute_class import compute_class
from infra.plan.node_pools import COMPUTE_CLASS_KEY, compute_class_name, fallback_pool_name, gpu_pool_name
from serve.tiers import TierName

CRD_FILE = VENDORED_CRDS_DIR / "cloud.google.com_computeclasses.yaml"
# The blob of cloud.google.com_computeclasses.yaml at the commit tests/fixtures/crds/README.md names.
CRD_BLOB = "d558f975cf482d24e808a684ef740a7114a1a847"
# The CRD's CEL rule on each priority (x-kubernetes-validations of spec.priorities.items): a
# `nodepools` priority may carry only allocationStrategy and priorityScore besides.
NODEPOOLS_RULE = (
    "has(self.nodepools) ? (size(dyn(self)) == 1 + (has(self.allocationStrategy) ? 1 : 0) + "
    "(has(self.priorityScore) ? 1 : 0)) : true"
)
NODEPOOLS_RULE_MESSAGE = "Nodepool field cannot be set along with other nodepool configuration fields"


def test_the_vendored_crd_is_the_pinned_upstream_file() -> None:
    blob = subprocess.run(
        ["git", "hash-object", str(CRD_FILE)], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert blob == CRD_BLOB
    readme = (VENDORED_CRDS_DIR / "README.md").read_text(encoding="utf-8")
    assert "GoogleCloudPlatform/compute-class-api" in readme and "Apache-2.0" in readme
    assert re.search(r"`[0-9a-f]{40}`", readme), "the README pins a full commit hash"


def _priority_rules() -> list[dict[str, str]]:
    crd = yaml.safe_load(CRD_FILE.read_text(encoding="utf-8"))
    (version,) = crd["spec"]["versions"]
    items = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["priorities"]["items"]
    rules: list[dict[str, str]] = items["x-kubernetes-validations"]
    return rules


def nodepools_rule_holds(priority: dict[str, Any]) -> bool:
    """NODEPOOLS_RULE in Python: `size(dyn(self))` is the number of fields the priority sets."""
    if "nodepools" not in priority:
        return True
    return len(priority) == 1 + ("allocationStrategy" in priority) + ("priorityScore" in priority)


def test_the_modelled_cel_rule_is_the_crds() -> None:
    by_message = {rule["message"]: " ".join(rule["rule"].split()) for rule in _priority_rules()}
    assert by_message[NODEPOOLS_RULE_MESSAGE] == NODEPOOLS_RULE


@pytest.mark.parametrize("stack", STACKS)
def test_each_tier_has_one_valid_class_ordering_its_pools(plans: dict[str, ServingPlan], stack: str) -> None:
    plan = plans[stack]
    classes = {document["metadata"]["name"]: document for document in plan.compute_classes}
    assert set(classes) == {compute_class_name(pool.tier) for pool in plan.gpu_pools if pool.tier}
    for pool in plan.gpu_pools:
        assert pool.tier is not None
        document = classes[compute_class_name(pool.tier)]
        assert crd_errors("ComputeClass", document) == []
        priorities = document["spec"]["priorities"]
        assert all(nodepools_rule_holds(priority) for priority in priorities)
        expected = [gpu_pool_name(pool.tier)]
        if plan.settings.tiers[pool.tier].on_demand_fallback:
            expected.append(fallback_pool_name(pool.tier))
        assert [priority["nodepools"] for priority in priorities] == [[name] for name in expected]
        # Only our pools, and pods wait rather than land elsewhere.
        assert document["spec"]["nodePoolAutoCreation"] == {"enabled": False}
        assert document["spec"]["whenUnsatisfiable"] == "DoNotScaleUp"
        for tier_pool in plan.tier_pools(pool):
            assert tier_pool.labels[COMPUTE_CLASS_KEY] == document["metadata"]["name"]
    assert any(len(d["spec"]["priorities"]) == 2 for d in classes.values()) is (stack == "prod")


def test_the_crd_checks_have_teeth(plans: dict[str, ServingPlan]) -> None:
    document = copy.deepcopy(plans["prod"].compute_classes[0])
    # The API server would default it; an offline validator must see it written.
    del document["spec"]["whenUnsatisfiable"]
    assert any("whenUnsatisfiable" in error for error in crd_errors("ComputeClass", document))
    document = copy.deepcopy(plans["prod"].compute_classes[0])
    document["spec"]["priorities"][0]["nodePools"] = ["misspelt"]
    assert crd_errors("ComputeClass", document), "an unknown field would be pruned: it must be refused"
    document = copy.deepcopy(plans["prod"].compute_classes[0])
    document["metadata"]["namespace"] = "llm-serving"
    assert crd_errors("ComputeClass", document), "a ComputeClass is cluster-scoped"
    # The CEL rule the schema alone cannot check: spot-ness belongs to the pool, not the priority.
    assert not nodepools_rule_holds({"nodepools": ["gpu-l4"], "spot": True})
    assert nodepools_rule_holds({"nodepools": ["gpu-l4"], "priorityScore": 2})


@pytest.mark.parametrize("stack", STACKS)
def test_the_class_sets_no_field_other_cel_rules_guard(plans: dict[str, ServingPlan], stack: str) -> None:
    """Every other CEL rule of the CRD sits on a field the classes leave unset, or (on `spec` and
    on each priority) tests fields the classes leave unset; those were read, none is modelled."""
    _, cel = crd_json_schema("ComputeClass")
    for document in plans[stack].compute_classes:
        spec = document["spec"]
        set_paths = {f".spec.{key}" for key in spec} | {
            f".spec.priorities[].{key}" for priority in spec["priorities"] for key in priority
        }
        guarded = {path for path in cel if path not in (".spec", ".spec.priorities[]")}
        assert not set_paths & guarded, set_paths & guarded
        assert set(spec) == {"priorities", "whenUnsatisfiable", "nodePoolAutoCreation", "activeMigration"}
        assert {key for priority in spec["priorities"] for key in priority} == {"nodepools"}


def test_a_class_orders_only_its_own_tiers_pools(plans: dict[str, ServingPlan]) -> None:
    plan = plans["prod"]
    t4, l4 = (next(p for p in plan.gpu_pools if p.tier is tier) for tier in (TierName.T4, TierName.L4))
    with pytest.raises(AssertionError):
        compute_class(TierName.T4, [t4, l4])


def test_toggling_the_fallback_changes_no_pod_template(plans: dict[str, ServingPlan]) -> None:
    """The worker nodeSelector is in KubeRay's hash: it must be the same with the fallback on and
    off, so only the ComputeClass and the extra pool change (no NewCluster upgrade)."""
    on = plans["prod"]
    tiers = {
        name: tier.model_copy(update={"on_demand_fallback": False})
        for name, tier in on.settings.tiers.items()
    }
    off = build_plan(on.catalog, on.settings.model_copy(update={"tiers": tiers}), project=on.project)
    assert off.fallback_pools == () and on.fallback_pools
    assert off.ray_service_spec == on.ray_service_spec
    assert off.gpu_pools == on.gpu_pools
    assert off.compute_classes != on.compute_classes
    assert off.cost.max_usd_per_hour < on.cost.max_usd_per_hour
    assert off.cost.idle_usd_per_hour == on.cost.idle_usd_per_hour
