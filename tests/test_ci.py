"""The CI configuration under ci/: what a preview identity may do in a cluster
(ci/k8s/preview-access.yaml) and the pinned Pulumi CLI (ci/pulumi.version).

The IAM condition file (ci/gcp/) is checked where docs/ci.md uses it, in tests/test_docs.py.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable
from typing import Any

import pytest
import yaml
from helpers.stack_files import STACKS
from packaging.requirements import Requirement
from packaging.version import Version

from infra import resource_types
from infra.plan.ray_service import NAMESPACE
from infra.report.mock_engine import ProgramRun
from infra.versions import KUBERAY_NAMESPACE
from serve.paths import REPO_ROOT

PREVIEW_ACCESS = REPO_ROOT / "ci" / "k8s" / "preview-access.yaml"
PULUMI_VERSION_FILE = REPO_ROOT / "ci" / "pulumi.version"
READ_VERBS = frozenset({"get", "list", "watch"})
# A preview's writes are dry runs of creating or changing an object (server-side apply of a new
# object is authorized as both); nothing that deletes, replaces wholesale or widens access.
DRY_RUN_WRITE_VERBS = frozenset({"create", "patch"})
# Kubernetes types the program registers that the preview identity never touches in the cluster:
# the Helm release is previewed client-side (a rendered template), the provider is no object.
NOT_CLUSTER_OBJECTS = frozenset({resource_types.HELM_RELEASE, resource_types.KUBERNETES_PROVIDER})
# The cluster-scoped objects the program creates: the only ones a preview may dry-run outside the
# program's namespace.
CLUSTER_SCOPED = frozenset(
    {resource_types.NAMESPACE, resource_types.COMPUTE_CLASS, resource_types.PRIORITY_CLASS}
)
CLUSTER_SCOPED_WRITES = (
    ([""], ["namespaces"]),
    (["cloud.google.com"], ["computeclasses"]),
    (["scheduling.k8s.io"], ["priorityclasses"]),
)


def documents() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(PREVIEW_ACCESS.read_text()) if d]


def one(kind: str) -> dict[str, Any]:
    (found,) = [d for d in documents() if d["kind"] == kind]
    return found


def roles() -> dict[str, dict[str, Any]]:
    """The Roles by namespace: the program's namespace and the KubeRay operator's."""
    return {d["metadata"]["namespace"]: d for d in documents() if d["kind"] == "Role"}


def rules() -> Iterable[tuple[str | None, dict[str, Any]]]:
    """(namespace or None for cluster-wide, rule) of the ClusterRole and the Roles."""
    for rule in one("ClusterRole")["rules"]:
        yield None, rule
    for namespace, role in roles().items():
        for rule in role["rules"]:
            yield namespace, rule


def allowed(verb: str, group: str, resource: str, namespace: str | None) -> bool:
    """Whether the rules allow `verb` on `group`/`resource` (in `namespace`; None = cluster-scoped)."""
    return any(
        verb in rule["verbs"]
        and group in rule["apiGroups"]
        and resource in rule["resources"]
        and (scope is None or scope == namespace)
        for scope, rule in rules()
    )


def group_and_plural(type_token: str) -> tuple[str, str]:
    """`kubernetes:core/v1:ConfigMap` -> ("", "configmaps"); `kubernetes:ray.io/v1:RayService`
    -> ("ray.io", "rayservices")."""
    _, group_version, kind = type_token.split(":")
    group = group_version.rsplit("/", 1)[0]
    # Kubernetes' own plural of a kind (apimachinery meta.UnsafeGuessKindToResource):
    # NetworkPolicy -> networkpolicies, ComputeClass -> computeclasses.
    lower = kind.lower()
    if lower.endswith("y"):
        plural = lower[:-1] + "ies"
    elif lower.endswith("s"):
        plural = lower + "es"
    else:
        plural = lower + "s"
    return ("" if group == "core" else group), plural


def test_the_file_holds_the_roles_and_the_dry_run_policy() -> None:
    assert sorted(d["kind"] for d in documents()) == [
        "ClusterRole",
        "Role",
        "Role",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    ]
    assert set(roles()) == {NAMESPACE, KUBERAY_NAMESPACE}
    names = {one("ClusterRole")["metadata"]["name"], *(r["metadata"]["name"] for r in roles().values())}
    assert names == {"llm-serving-preview"}


def test_no_verb_beyond_reads_and_dry_run_writes() -> None:
    for scope, rule in rules():
        assert set(rule["verbs"]) <= READ_VERBS | DRY_RUN_WRITE_VERBS, (scope, rule)
        assert "*" not in rule["apiGroups"] and "*" not in rule["resources"], (scope, rule)
        # Subresources (pods/exec, */status, serviceaccounts/token, ...) are never granted.
        assert not any("/" in resource for resource in rule["resources"]), (scope, rule)


def test_a_preview_never_reads_a_secret() -> None:
    for scope, rule in rules():
        if "" in rule["apiGroups"] and "secrets" in rule["resources"]:
            assert not set(rule["verbs"]) & READ_VERBS, (scope, rule)
            assert scope == NAMESPACE, "secret writes (dry runs) only in the program's namespace"


def test_writes_only_in_the_programs_namespace_except_its_cluster_scoped_objects() -> None:
    for scope, rule in rules():
        if set(rule["verbs"]) & DRY_RUN_WRITE_VERBS and scope is None:
            assert (rule["apiGroups"], rule["resources"]) in CLUSTER_SCOPED_WRITES, rule


@pytest.mark.parametrize("stack", STACKS)
def test_the_rules_cover_every_kubernetes_object_the_program_creates(
    stack: str, program_runs: dict[str, ProgramRun]
) -> None:
    """A preview that adds any of the program's objects is a dry-run create (and, with
    server-side apply, a patch) of it: pulumi-kubernetes#2521 fails the preview otherwise."""
    objects = {
        (r.type_, None if r.type_ in CLUSTER_SCOPED else r.inputs["metadata"]["namespace"])
        for r in program_runs[stack].resources
        if r.type_.startswith("kubernetes:") and r.type_ not in NOT_CLUSTER_OBJECTS
    }
    types = {type_ for type_, _ in objects}
    assert {resource_types.NAMESPACE, resource_types.SECRET, resource_types.RAY_SERVICE} <= types
    assert {namespace for _, namespace in objects} == {None, NAMESPACE, KUBERAY_NAMESPACE}
    for type_, namespace in sorted(objects, key=str):
        group, plural = group_and_plural(type_)
        for verb in sorted(DRY_RUN_WRITE_VERBS):
            assert allowed(verb, group, plural, namespace), (
                f"{type_} in {namespace}: no `{verb}` on {group}/{plural}"
            )


def test_every_write_of_a_preview_identity_must_be_a_dry_run() -> None:
    policy, binding = one("ValidatingAdmissionPolicy"), one("ValidatingAdmissionPolicyBinding")
    assert binding["spec"] == {"policyName": policy["metadata"]["name"], "validationActions": ["Deny"]}
    spec = policy["spec"]
    assert spec["failurePolicy"] == "Fail"
    (rule,) = spec["matchConstraints"]["resourceRules"]
    assert rule["apiGroups"] == ["*"] and rule["apiVersions"] == ["*"]
    assert set(rule["operations"]) == {"CREATE", "UPDATE", "DELETE", "CONNECT"}
    assert rule["resources"] == ["*/*"]  # objects and their subresources
    # Only access reviews (creates that store nothing) are left out.
    for excluded in spec["matchConstraints"].get("excludeResourceRules", []):
        assert set(excluded["apiGroups"]) <= {"authorization.k8s.io", "authentication.k8s.io"}
        assert excluded["operations"] == ["CREATE"]
    (condition,) = spec["matchConditions"]
    assert "request.userInfo.username" in condition["expression"]
    (validation,) = spec["validations"]
    assert re.fullmatch(r"has\(request\.dryRun\) && request\.dryRun", validation["expression"])


def resource_list_problems(resources: list[str]) -> list[str]:
    """The API server's checks of an admission rule's `resources` (admissionregistration
    validation, `validateResources`): `*/*` only alone, `*` not beside plain resources."""
    problems = []
    if "*/*" in resources and len(resources) > 1:
        problems.append("if '*/*' is present, must not specify other resources")
    if "*" in resources and any("/" not in r and r != "*" for r in resources):
        problems.append("if '*' is present, must not specify other resources without subresources")
    return problems


def test_the_admission_rules_are_ones_the_api_server_accepts() -> None:
    assert resource_list_problems(["*", "*/*"]) != []  # what the check is for
    spec = one("ValidatingAdmissionPolicy")["spec"]["matchConstraints"]
    for rule in spec["resourceRules"] + spec.get("excludeResourceRules", []):
        assert resource_list_problems(rule["resources"]) == [], rule
        for key in ("apiGroups", "apiVersions"):
            assert "*" not in rule[key] or rule[key] == ["*"], rule


def test_the_pulumi_cli_is_pinned_to_one_exact_version_the_sdk_accepts() -> None:
    text = PULUMI_VERSION_FILE.read_text()
    assert re.fullmatch(r"\d+\.\d+\.\d+\n", text), f"ci/pulumi.version must be X.Y.Z, not {text!r}"
    cli = Version(text.strip())
    dependencies = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (requirement,) = [r for r in map(Requirement, dependencies) if r.name == "pulumi"]
    assert requirement.specifier.contains(cli), f"CLI {cli} outside the SDK's range {requirement.specifier}"
