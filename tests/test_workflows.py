"""The GitHub workflows: actionlint finds nothing, and the security-relevant properties hold.

actionlint comes from the dev extra (a wheel that ships the binary into the virtualenv's bin);
a missing actionlint fails these tests rather than skipping them.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers.stack_files import STACKS

from infra.settings import stack_file
from serve.paths import REPO_ROOT

WORKFLOW_DIR = REPO_ROOT / ".github" / "workflows"
WORKFLOWS = sorted(WORKFLOW_DIR.glob("*.yml"))
# The stacks the workflows must offer: every stack file in the repository.
STACK_FILES = sorted(path.name.split(".")[1] for path in REPO_ROOT.glob(stack_file("*").name))
AUTH_ACTION = "google-github-actions/auth@"
PULUMI_ACTION = "pulumi/actions@"
PERMISSION_LEVELS = {"read", "write", "none"}


def actionlint() -> str:
    """The actionlint binary of this virtualenv (then PATH); fails when there is none."""
    venv_bin = sysconfig.get_path("scripts")
    found = shutil.which("actionlint", path=venv_bin) or shutil.which("actionlint")
    if found is None:
        pytest.fail(
            f"actionlint not found in {venv_bin} or on PATH: `make install` installs it with the dev extra "
            f"(python: {sys.executable})"
        )
    return found


def load(path: Path) -> dict[Any, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), f"{path.name}: not a mapping"
    return data


def triggers(workflow: dict[Any, Any]) -> dict[Any, Any]:
    # YAML 1.1 (PyYAML) reads the bare key `on` as the boolean True.
    on = workflow.get("on", workflow.get(True))
    if isinstance(on, str):
        return {on: None}
    if isinstance(on, list):
        return dict.fromkeys(on)
    assert isinstance(on, dict), f"unexpected `on`: {on!r}"
    return on


def jobs(workflow: dict[Any, Any]) -> Iterator[tuple[str, dict[Any, Any]]]:
    yield from workflow["jobs"].items()


def steps_using(job: dict[Any, Any], action: str) -> list[dict[Any, Any]]:
    return [step for step in job.get("steps", []) if str(step.get("uses", "")).startswith(action)]


def effective_permissions(workflow: dict[Any, Any], job: dict[Any, Any]) -> Any:
    return job["permissions"] if "permissions" in job else workflow.get("permissions")


@pytest.fixture(scope="module", params=WORKFLOWS, ids=[path.name for path in WORKFLOWS])
def workflow(request: pytest.FixtureRequest) -> dict[Any, Any]:
    return load(request.param)


def test_the_workflows_exist() -> None:
    assert {path.name for path in WORKFLOWS} >= {"preview.yml", "deploy.yml"}
    assert sorted(STACKS) == STACK_FILES


def test_actionlint_finds_nothing() -> None:
    result = subprocess.run(
        [actionlint(), "-no-color", *[str(path.relative_to(REPO_ROOT)) for path in WORKFLOWS]],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, f"actionlint exit {result.returncode}:\n{result.stdout}{result.stderr}"


def test_actionlint_would_catch_a_mistake(tmp_path: Path) -> None:
    """The linter really reads action inputs: a misspelt pulumi/actions input is reported."""
    text = (WORKFLOW_DIR / "preview.yml").read_text().replace("policyPacks:", "policy-packs:")
    broken = tmp_path / ".github" / "workflows" / "preview.yml"
    broken.parent.mkdir(parents=True)
    broken.write_text(text)
    result = subprocess.run(
        [actionlint(), "-no-color", str(broken.relative_to(tmp_path))],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert 'input "policy-packs" is not defined in action "pulumi/actions@v7"' in result.stdout


def test_no_pull_request_target(workflow: dict[Any, Any]) -> None:
    # pull_request_target runs with the base repository's secrets on a fork's code.
    assert "pull_request_target" not in triggers(workflow)


def test_permissions_are_declared_and_never_write_all(workflow: dict[Any, Any]) -> None:
    assert "permissions" in workflow, "declare workflow permissions (`{}` for none): no job inherits defaults"
    declared = [("workflow", workflow["permissions"])]
    declared += [(f"job {name}", job["permissions"]) for name, job in jobs(workflow) if "permissions" in job]
    for where, permissions in declared:
        assert permissions != "write-all", f"{where}: write-all"
    for name, job in jobs(workflow):
        permissions = effective_permissions(workflow, job)
        assert isinstance(permissions, dict), (
            f"job {name}: permissions must be a scope map, not {permissions!r}"
        )
        for scope, level in permissions.items():
            assert level in PERMISSION_LEVELS, f"job {name}: {scope}: {level!r}"


def test_id_token_write_only_where_google_auth_runs(workflow: dict[Any, Any]) -> None:
    assert workflow["permissions"].get("id-token") in (None, "none"), "id-token: write belongs to jobs"
    for name, job in jobs(workflow):
        grants = effective_permissions(workflow, job).get("id-token") == "write"
        assert grants == bool(steps_using(job, AUTH_ACTION)), f"job {name}: id-token: write iff it calls auth"


def test_pull_request_write_only_where_a_comment_is_posted(workflow: dict[Any, Any]) -> None:
    for name, job in jobs(workflow):
        grants = effective_permissions(workflow, job).get("pull-requests") == "write"
        comments = any(
            str(step.get("with", {}).get("comment-on-pr")).lower() == "true"
            for step in steps_using(job, PULUMI_ACTION)
        )
        assert grants == comments, f"job {name}: pull-requests: write iff it comments on the pull request"


def test_google_auth_is_keyless(workflow: dict[Any, Any]) -> None:
    for name, job in jobs(workflow):
        for step in steps_using(job, AUTH_ACTION):
            inputs = step["with"]
            assert "credentials_json" not in inputs, f"job {name}: no service-account keys"
            assert inputs["workload_identity_provider"].startswith("${{ vars.")
            assert inputs["service_account"].startswith("${{ vars.")


def test_pulumi_runs_are_serialised_per_stack_and_use_the_policy_pack(workflow: dict[Any, Any]) -> None:
    for name, job in jobs(workflow):
        for step in steps_using(job, PULUMI_ACTION):
            inputs = step["with"]
            stack = inputs["stack-name"]
            assert stack.startswith("${{") and stack.endswith("}}"), f"job {name}: stack-name {stack!r}"
            expression = stack.removeprefix("${{").removesuffix("}}").strip()
            assert expression in job["concurrency"]["group"], f"job {name}: concurrency group per stack"
            assert step["env"]["PULUMI_ACCESS_TOKEN"] == "${{ secrets.PULUMI_ACCESS_TOKEN }}"
            if inputs["command"] in ("preview", "up"):
                assert inputs["policyPacks"] == "infra/policy"
                assert (REPO_ROOT / "infra" / "policy" / "PulumiPolicy.yaml").is_file()
            if inputs["command"] in ("up", "destroy"):
                assert job["concurrency"].get("cancel-in-progress") is not True, f"job {name}: never cancel"


def test_preview_comments_once_per_stack_and_edits_it() -> None:
    workflow = load(WORKFLOW_DIR / "preview.yml")
    assert set(triggers(workflow)) == {"pull_request"}
    job = workflow["jobs"]["preview"]
    assert job["strategy"]["matrix"]["stack"] == STACK_FILES
    (step,) = steps_using(job, PULUMI_ACTION)
    assert step["with"]["command"] == "preview"
    assert step["with"]["stack-name"] == "${{ matrix.stack }}"
    assert step["with"]["comment-on-pr"] is True
    assert step["with"]["edit-pr-comment"] is True
    setup_gcloud = [
        s for s in job["steps"] if str(s.get("uses", "")).startswith("google-github-actions/setup-gcloud@")
    ]
    assert setup_gcloud and setup_gcloud[0]["with"]["install_components"] == "gke-gcloud-auth-plugin"
    assert any(step.get("run") == "make test" for step in workflow["jobs"]["test"]["steps"])


def test_deploy_runs_in_the_stacks_environment() -> None:
    workflow = load(WORKFLOW_DIR / "deploy.yml")
    assert set(triggers(workflow)) == {"workflow_dispatch"}
    inputs = triggers(workflow)["workflow_dispatch"]["inputs"]
    assert inputs["stack"]["type"] == "choice" and inputs["stack"]["options"] == STACK_FILES
    assert inputs["action"]["type"] == "choice" and inputs["action"]["options"] == ["up", "destroy"]
    for name, job in jobs(workflow):
        commands = {step["with"]["command"] for step in steps_using(job, PULUMI_ACTION)}
        assert commands == {"up", "destroy"}, f"job {name}: {commands}"
        # `prod` is an environment with required reviewers: a prod run waits for approval.
        assert job["environment"] == "${{ inputs.stack }}", f"job {name}: environment"
        for step in steps_using(job, PULUMI_ACTION):
            assert step["with"]["stack-name"] == "${{ inputs.stack }}"
            assert step["if"] == f"inputs.action == '{step['with']['command']}'"
