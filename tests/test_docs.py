"""The one-time CI setup in docs/ci.md, run: every shell block of the page, in order, in bash,
with `gcloud`, `gh`, `pulumi`, `kubectl` and `git` replaced by recorders that answer like the
real tools where the page reads an answer. Then:

- every recorded `gcloud` command is checked against gcloud's documented flag grammar (the
  command's positionals and flags, `--flag=value` / `--flag value`, boolean flags without a
  value, dict flags split on commas unless a `^DELIM^` prefix picks another delimiter, the
  `--condition` keys, condition files), and, where the Google Cloud CLI is installed, gcloud
  itself parses each one (with no account, so it stops at "no active account" and changes
  nothing);
- what the commands set up is the trust model the page describes and the workflows assume:
  which identity each GitHub environment reaches, the roles, buckets and keys of each identity,
  the environments' protection rules and variables, the stack names, the cluster bindings.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers.stack_files import STACKS

from infra.components.cluster import NODE_SERVICE_ACCOUNT_ROLES
from serve.paths import REPO_ROOT

CI_DOC = REPO_ROOT / "docs" / "ci.md"
WORKFLOW_DIR = REPO_ROOT / ".github" / "workflows"
RECORDED_TOOLS = ("gcloud", "gh", "pulumi", "kubectl", "git")
DEPLOY_ACCOUNT = "llm-serving-deploy"
PREVIEW_ACCOUNT_PREFIX = "llm-serving-preview-"
NO_ACCOUNT = "You do not currently have an active account selected"

# Answers the page reads from a tool: (tool, words that must all appear in its argv) -> stdout.
ANSWERS: list[tuple[str, tuple[str, ...], str]] = [
    ("gcloud", ("projects", "describe"), "123456789012"),
    ("gh", ("api", "--jq", ".owner.id"), "700000002"),
    ("gh", ("api", "--jq", ".id", "/teams/"), "4242"),
    ("gh", ("api", "--jq", ".id"), "700000001"),
    ("pulumi", ("stack", "output", "kubeconfig"), "apiVersion: v1\nkind: Config\n"),
]

RECORDER = """
import json, os, sys
from pathlib import Path

tool, args = Path(sys.argv[0]).name, sys.argv[1:]
answers = json.loads(os.environ["RECORDER_ANSWERS"])
stdin = None
reads_stdin = (tool == "gh" and "--input" in args and args[args.index("--input") + 1] == "-") or (
    tool == "kubectl" and "-f" in args and args[args.index("-f") + 1] == "-"
)
if reads_stdin:
    stdin = sys.stdin.read()
    if tool == "gh":
        json.loads(stdin)  # a request body that is not JSON fails the page, as gh would
if tool == "pulumi" and args[:2] == ["stack", "export"] and "--file" in args:
    Path(args[args.index("--file") + 1]).write_text("{}")
with open(os.environ["RECORDER_LOG"], "a") as log:
    log.write(json.dumps({"argv": [tool, *args], "stdin": stdin, "cwd": os.getcwd()}) + "\\n")
for answer_tool, words, out in answers:
    joined = " ".join(args)
    if answer_tool == tool and all(word in args or word in joined for word in words):
        print(out)
        break
"""


@dataclass(frozen=True)
class Call:
    argv: list[str]
    stdin: str | None

    @property
    def tool(self) -> str:
        return self.argv[0]

    def flag(self, name: str) -> str | None:
        """The value of `--name=value` or `--name value` (None when absent)."""
        for index, token in enumerate(self.argv):
            if token.startswith(f"--{name}="):
                return token.split("=", 1)[1]
            if token == f"--{name}" and index + 1 < len(self.argv):
                return self.argv[index + 1]
        return None


def shell_blocks(text: str) -> list[str]:
    return re.findall(r"^```bash\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)


def run_page(root: Path, text: str) -> list[Call]:
    """Run the page's shell blocks in order in one bash (-euo pipefail) with recorded tools."""
    bin_dir, work, log = root / "bin", root / "work", root / "calls.jsonl"
    bin_dir.mkdir()
    (root / "home").mkdir()
    shutil.copytree(REPO_ROOT / "ci", work / "ci")
    recorder = bin_dir / "recorder.py"
    recorder.write_text(f"#!{sys.executable}\n{RECORDER}")
    recorder.chmod(0o755)
    for tool in RECORDED_TOOLS:
        (bin_dir / tool).symlink_to(recorder)
    env = {
        "PATH": f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin",
        "HOME": str(root / "home"),
        "RECORDER_LOG": str(log),
        "RECORDER_ANSWERS": json.dumps(ANSWERS),
    }
    script = "\n".join(shell_blocks(text))
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, f"docs/ci.md's shell blocks failed:\n{result.stdout}{result.stderr}"
    return [Call(entry["argv"], entry["stdin"]) for entry in map(json.loads, log.read_text().splitlines())]


@pytest.fixture(scope="module")
def calls(tmp_path_factory: pytest.TempPathFactory) -> list[Call]:
    return run_page(tmp_path_factory.mktemp("ci-setup"), CI_DOC.read_text())


def of(calls: list[Call], tool: str, *words: str) -> list[Call]:
    """The calls of `tool` whose leading words are `words`."""
    return [call for call in calls if call.tool == tool and call.argv[1 : 1 + len(words)] == list(words)]


# --- gcloud's flag grammar ---------------------------------------------------------------------
#
# From the command references (https://cloud.google.com/sdk/gcloud/reference/<command>) and
# `gcloud topic escaping`: flag kinds are "value" (`--f=v` or `--f v`), "bool" (no value),
# "dict" (KEY=VALUE pairs split on commas, or on D after a leading ^D^), "condition" (a dict of
# expression/title/description, or the literal None) and "file" (a path that must exist).

GLOBAL_FLAGS = {
    "project": "value",
    "format": "value",
    "quiet": "bool",
    "verbosity": "value",
    "account": "value",
    "impersonate-service-account": "value",
    "configuration": "value",
    "billing-project": "value",
    "log-http": "bool",
}
CONDITION_KEYS = {"expression", "title", "description"}
MEMBER_PREFIXES = ("serviceAccount:", "user:", "group:", "domain:", "principal://", "principalSet://")


@dataclass(frozen=True)
class Command:
    positionals: tuple[int, int]
    flags: dict[str, str]
    required: frozenset[str] = frozenset()
    one_of: tuple[frozenset[str], ...] = ()


BINDING_FLAGS = {"member": "value", "role": "value", "condition": "condition", "condition-from-file": "file"}
GCLOUD_COMMANDS: dict[tuple[str, ...], Command] = {
    ("config", "set"): Command((2, 2), {}),
    ("projects", "describe"): Command((1, 1), {}),
    ("services", "enable"): Command((1, 99), {"async": "bool"}),
    ("iam", "workload-identity-pools", "create"): Command(
        (1, 1),
        {"location": "value", "display-name": "value", "description": "value"},
        frozenset({"location"}),
    ),
    ("iam", "workload-identity-pools", "providers", "create-oidc"): Command(
        (1, 1),
        {
            "location": "value",
            "workload-identity-pool": "value",
            "display-name": "value",
            "description": "value",
            "issuer-uri": "value",
            "allowed-audiences": "value",
            "attribute-mapping": "dict",
            "attribute-condition": "value",
        },
        frozenset({"location", "workload-identity-pool", "issuer-uri"}),
    ),
    ("iam", "service-accounts", "create"): Command((1, 1), {"display-name": "value", "description": "value"}),
    ("iam", "service-accounts", "delete"): Command((1, 1), {}),
    ("iam", "service-accounts", "add-iam-policy-binding"): Command(
        (1, 1), BINDING_FLAGS, frozenset({"member", "role"})
    ),
    # Once the project's policy holds a conditional binding (the deploy account's), gcloud will
    # not add another binding without being told which condition, and cannot ask in a script.
    ("projects", "add-iam-policy-binding"): Command(
        (1, 1),
        BINDING_FLAGS,
        frozenset({"member", "role"}),
        (frozenset({"condition", "condition-from-file"}),),
    ),
    ("storage", "buckets", "create"): Command(
        (1, 1), {"location": "value", "uniform-bucket-level-access": "bool", "default-storage-class": "value"}
    ),
    ("storage", "buckets", "update"): Command((1, 1), {"versioning": "bool", "no-versioning": "bool"}),
    ("storage", "buckets", "add-iam-policy-binding"): Command(
        (1, 1), BINDING_FLAGS, frozenset({"member", "role"})
    ),
    ("kms", "keyrings", "create"): Command((1, 1), {"location": "value"}, frozenset({"location"})),
    ("kms", "keys", "create"): Command(
        (1, 1),
        {"keyring": "value", "location": "value", "purpose": "value"},
        frozenset({"keyring", "location", "purpose"}),
    ),
    ("kms", "keys", "add-iam-policy-binding"): Command(
        (1, 1), {**BINDING_FLAGS, "keyring": "value", "location": "value"}, frozenset({"member", "role"})
    ),
}


def split_dict_flag(value: str) -> list[str]:
    """gcloud's list/dict splitting: on commas, or on D when the value starts with ^D^."""
    match = re.match(r"\^(.+?)\^(.*)", value, flags=re.DOTALL)
    if match:
        return match.group(2).split(match.group(1))
    return value.split(",")


def condition_problems(value: str) -> list[str]:
    if value == "None":
        return []
    problems = []
    keys = []
    for item in split_dict_flag(value):
        key = item.split("=", 1)[0] if "=" in item else item
        if "=" not in item or key not in CONDITION_KEYS:
            valid = "[None, description, expression, title]"
            problems.append(f"argument --condition: valid keys are {valid}; received: {item}")
        keys.append(key)
    missing = {"expression", "title"} - set(keys)
    if not problems and missing:
        problems.append(f"argument --condition: missing {sorted(missing)}")
    return problems


def condition_file_problems(path: Path) -> list[str]:
    """The shape gcloud accepts for --condition-from-file: a YAML/JSON mapping with `title` and
    `expression` (strings) and optionally `description`, nothing else; IAM's length limits."""
    if not path.is_file():
        return [f"--condition-from-file: {path} does not exist"]
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict):
        return [f"{path.name}: not a mapping"]
    problems = [f"{path.name}: unknown key {key!r}" for key in sorted(set(data) - CONDITION_KEYS)]
    for key in ("title", "expression"):
        if not isinstance(data.get(key), str) or not data[key].strip():
            problems.append(f"{path.name}: `{key}` is required and must be a string")
    if "description" in data and not isinstance(data["description"], str):
        problems.append(f"{path.name}: `description` must be a string")
    if len(str(data.get("title", ""))) > 100:
        problems.append(f"{path.name}: title longer than 100 characters")
    if len(str(data.get("description", ""))) > 256:
        problems.append(f"{path.name}: description longer than 256 characters")
    return problems


def command_path(argv: list[str]) -> tuple[str, ...] | None:
    """The known gcloud command an argv runs (the longest matching group/command words)."""
    words = tuple(argv[1:])
    return next(
        (key for key in sorted(GCLOUD_COMMANDS, key=len, reverse=True) if words[: len(key)] == key), None
    )


def gcloud_problems(argv: list[str], cwd: Path = REPO_ROOT) -> list[str]:
    """What gcloud's grammar rejects in one command line (argv[0] == "gcloud")."""
    words = argv[1:]
    path = command_path(argv)
    if path is None:
        return [f"unknown command: gcloud {' '.join(w for w in words if not w.startswith('-'))}"]
    command = GCLOUD_COMMANDS[path]
    kinds = {**GLOBAL_FLAGS, **command.flags}
    problems: list[str] = []
    positionals: list[str] = []
    given: dict[str, str | None] = {}
    rest = words[len(path) :]
    index = 0
    while index < len(rest):
        token = rest[index]
        index += 1
        if not token.startswith("--"):
            positionals.append(token)
            continue
        name, has_value, value = token[2:].partition("=")
        kind = kinds.get(name)
        if kind is None:
            problems.append(f"unrecognized arguments: --{name}")
            continue
        if kind == "bool":
            if has_value:
                problems.append(f"argument --{name}: ignored explicit argument {value!r}")
            given[name] = None
            continue
        if not has_value:
            if index >= len(rest):
                problems.append(f"argument --{name}: expected one argument")
                continue
            value = rest[index]
            index += 1
        given[name] = value
        if kind == "dict" and any(
            "=" not in item or not item.split("=")[0] for item in split_dict_flag(value)
        ):
            problems.append(f"argument --{name}: bad syntax for dict arg: {value!r}")
        if kind == "condition":
            problems += condition_problems(value)
        if kind == "file":
            problems += condition_file_problems(cwd / value)
        if name == "member" and not value.startswith(MEMBER_PREFIXES):
            problems.append(f"argument --member: {value!r} names no principal type")
        if name == "role" and not value.startswith(("roles/", "projects/", "organizations/")):
            problems.append(f"argument --role: {value!r} is not a role")
    low, high = command.positionals
    if not low <= len(positionals) <= high:
        problems.append(f"expected {low}..{high} positional arguments, got {positionals}")
    problems += [f"argument --{name} is required" for name in sorted(command.required - set(given))]
    for group in command.one_of:
        if len(group & set(given)) != 1:
            problems.append(f"exactly one of {sorted(group)} must be given")
    return problems


def test_the_page_runs_end_to_end(calls: list[Call]) -> None:
    assert {call.tool for call in calls} == set(RECORDED_TOOLS)
    assert len(of(calls, "gcloud")) >= 25


def test_every_gcloud_command_follows_the_flag_grammar(calls: list[Call]) -> None:
    found = {" ".join(call.argv): gcloud_problems(call.argv) for call in of(calls, "gcloud")}
    assert {line: problems for line, problems in found.items() if problems} == {}


SA_MEMBER = "--member=serviceAccount:d@p.iam.gserviceaccount.com"
# The previous page's binding: a condition expression with commas, passed as --condition=.
COMMA_CONDITION = "--condition=expression=api.getAttribute('x', []).hasOnly(['a', 'b']),title=t"
PROJECT_BINDING = ["gcloud", "projects", "add-iam-policy-binding", "p"]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            [*PROJECT_BINDING, SA_MEMBER, "--role=roles/resourcemanager.projectIamAdmin", COMMA_CONDITION],
            "argument --condition: valid keys are [None, description, expression, title]; received:  [])",
        ),
        (
            [*PROJECT_BINDING, "--member=user:a@b.c", "--role=roles/viewer"],
            "exactly one of ['condition', 'condition-from-file'] must be given",
        ),
        (
            ["gcloud", "storage", "buckets", "update", "gs://b", "--versioning=true"],
            "ignored explicit argument",
        ),
        (
            ["gcloud", "kms", "keys", "create", "k", "--keyring=r", "--location=global"],
            "--purpose is required",
        ),
        (["gcloud", "services", "enable", "x", "--bogus"], "unrecognized arguments: --bogus"),
        (
            [*PROJECT_BINDING, "--member=a@b.c", "--role=roles/x", "--condition=None"],
            "names no principal type",
        ),
        (
            [
                *PROJECT_BINDING,
                "--member=user:a@b.c",
                "--role=roles/x",
                "--condition-from-file=ci/missing.yaml",
            ],
            "does not exist",
        ),
    ],
)
def test_the_grammar_check_rejects_what_gcloud_rejects(argv: list[str], expected: str) -> None:
    assert any(expected in problem for problem in gcloud_problems(argv)), gcloud_problems(argv)


def test_a_custom_delimiter_keeps_commas_in_a_condition() -> None:
    value = "^:^expression=a.hasOnly(['x', 'y']):title=t"
    assert condition_problems(value) == []
    assert condition_problems(value.removeprefix("^:^").replace(":", ",")) != []


def test_the_condition_file_has_gclouds_shape_and_the_node_roles() -> None:
    """The deploy account may grant exactly the roles the program grants the node account."""
    path = REPO_ROOT / "ci" / "gcp" / "node-roles-only.condition.yaml"
    assert condition_file_problems(path) == []
    expression = yaml.safe_load(path.read_text())["expression"]
    (granted,) = re.findall(r"\.hasOnly\(\[([^\]]*)\]\)", expression)
    assert re.findall(r"'([^']+)'", granted) == list(NODE_SERVICE_ACCOUNT_ROLES)
    assert expression.startswith("api.getAttribute('iam.googleapis.com/modifiedGrantsByRole', [])")


def gcloud_binary() -> str:
    found = shutil.which("gcloud")
    if found is None:
        pytest.skip("the Google Cloud CLI is not installed here; the grammar check above still ran")
    return found


def test_gcloud_itself_parses_every_command(calls: list[Call], tmp_path: Path) -> None:
    """Each command through the real gcloud with an empty configuration: parsing, flag and
    condition-file validation happen before the first API call, which then stops at "no active
    account" (and `config set` succeeds in the throwaway configuration)."""
    binary = gcloud_binary()
    # One command line per command and set of flags: the loops' dev/prod twins parse alike, and
    # each gcloud start costs about a second of CPU.
    shapes = {
        (
            command_path(call.argv),
            tuple(t.split("=", 1)[0] for t in call.argv if t.startswith("--")),
        ): call.argv
        for call in of(calls, "gcloud")
    }
    commands = list(shapes.values())
    assert len(commands) >= 15

    def run(numbered: tuple[int, list[str]]) -> tuple[list[str], subprocess.CompletedProcess[str]]:
        number, argv = numbered
        config = tmp_path / f"gcloud-{number}"
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(tmp_path),
            "CLOUDSDK_CONFIG": str(config),
            "CLOUDSDK_CORE_PROJECT": "my-llm-project",
            "CLOUDSDK_CORE_DISABLE_PROMPTS": "1",
            "CLOUDSDK_CORE_CHECK_GCE_METADATA": "false",
            "CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK": "1",
            "CLOUDSDK_CORE_DISABLE_USAGE_REPORTING": "1",
        }
        result = subprocess.run(
            [binary, *argv[1:]], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120
        )
        return argv, result

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(run, enumerate(commands)))
    rejected = {
        " ".join(argv): result.stderr.strip()[-600:]
        for argv, result in results
        if not (result.returncode == 0 or NO_ACCOUNT in result.stderr)
    }
    assert rejected == {}


def test_gcloud_itself_rejects_the_comma_condition(tmp_path: Path) -> None:
    binary = gcloud_binary()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "CLOUDSDK_CONFIG": str(tmp_path / "gcloud"),
        "CLOUDSDK_CORE_DISABLE_PROMPTS": "1",
    }
    argv = [*PROJECT_BINDING, SA_MEMBER, "--role=roles/resourcemanager.projectIamAdmin", COMMA_CONDITION]
    result = subprocess.run([binary, *argv[1:]], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "argument --condition: valid keys are" in result.stderr


# --- what the page sets up -----------------------------------------------------------------------


@dataclass
class Setup:
    """The recorded calls, read as the grants and settings they make."""

    accounts: set[str] = field(default_factory=set)
    project_roles: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    conditions: dict[tuple[str, str], str] = field(default_factory=dict)
    trusted_subjects: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    bucket_roles: dict[str, set[tuple[str, str]]] = field(default_factory=lambda: defaultdict(set))
    key_roles: dict[str, set[tuple[str, str]]] = field(default_factory=lambda: defaultdict(set))
    stack_inits: list[tuple[str, str | None]] = field(default_factory=list)
    repo_vars: dict[str, str] = field(default_factory=dict)
    env_vars: dict[str, dict[str, str]] = field(default_factory=lambda: defaultdict(dict))
    environments: dict[str, dict[str, Any]] = field(default_factory=dict)
    branch_policies: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    deleted: set[str] = field(default_factory=set)


def account_of(member: str) -> str:
    return member.removeprefix("serviceAccount:").split("@")[0]


def read_setup(calls: list[Call]) -> Setup:
    setup = Setup()
    for call in of(calls, "gcloud", "iam", "service-accounts", "create"):
        setup.accounts.add(call.argv[4])
    for call in of(calls, "gcloud", "iam", "service-accounts", "delete"):
        setup.deleted.add(account_of(call.argv[4]))
    for call in of(calls, "gcloud", "projects", "add-iam-policy-binding"):
        account, role = account_of(call.flag("member") or ""), call.flag("role") or ""
        setup.project_roles[account].add(role)
        condition = call.flag("condition-from-file")
        if condition:
            setup.conditions[account, role] = condition
    for call in of(calls, "gcloud", "iam", "service-accounts", "add-iam-policy-binding"):
        assert call.flag("role") == "roles/iam.workloadIdentityUser", call.argv
        setup.trusted_subjects[account_of(call.argv[4])].add(call.flag("member") or "")
    for call in of(calls, "gcloud", "storage", "buckets", "add-iam-policy-binding"):
        setup.bucket_roles[call.argv[4]].add((account_of(call.flag("member") or ""), call.flag("role") or ""))
    for call in of(calls, "gcloud", "kms", "keys", "add-iam-policy-binding"):
        assert call.flag("keyring") == "pulumi" and call.flag("location") == "global", call.argv
        setup.key_roles[call.argv[4]].add((account_of(call.flag("member") or ""), call.flag("role") or ""))
    for call in of(calls, "pulumi", "stack", "init"):
        setup.stack_inits.append((call.argv[3], call.flag("secrets-provider")))
    for call in of(calls, "gh", "variable", "set"):
        name, body, env = call.argv[3], call.flag("body") or "", call.flag("env")
        if env is None:
            setup.repo_vars[name] = body
        else:
            setup.env_vars[env][name] = body
    for call in of(calls, "gh", "api"):
        target = next(arg for arg in call.argv[2:] if arg.startswith("repos/") or arg.startswith("orgs/"))
        environment = re.fullmatch(r"repos/[^/]+/[^/]+/environments/([^/]+)", target)
        policy = re.fullmatch(r"repos/[^/]+/[^/]+/environments/([^/]+)/deployment-branch-policies", target)
        if environment:
            setup.environments[environment.group(1)] = json.loads(call.stdin or "{}")
        elif policy:
            setup.branch_policies[policy.group(1)].add(call.argv[call.argv.index("-f") + 1])
    return setup


@pytest.fixture(scope="module")
def setup(calls: list[Call]) -> Setup:
    return read_setup(calls)


def preview_account(stack: str) -> str:
    return f"{PREVIEW_ACCOUNT_PREFIX}{stack}"


def subject(environment: str) -> str:
    return f"repo:my-org/llm-serving:environment:{environment}"


def load_workflow(name: str) -> dict[Any, Any]:
    data = yaml.safe_load((WORKFLOW_DIR / name).read_text())
    assert isinstance(data, dict)
    return data


def pulumi_steps(workflow: dict[Any, Any]) -> Iterator[tuple[dict[Any, Any], dict[Any, Any]]]:
    for job in workflow["jobs"].values():
        for step in job.get("steps", []):
            if str(step.get("uses", "")).startswith("pulumi/actions@"):
                yield job, step


def render(template: str, values: dict[str, str]) -> str:
    """A workflow expression string with `${{ name }}` placeholders filled from `values`."""
    return re.sub(r"\$\{\{\s*([\w.-]+)\s*\}\}", lambda m: values[m.group(1)], template)


def test_the_identities_are_one_deploy_account_and_one_preview_account_per_stack(setup: Setup) -> None:
    assert setup.accounts == {DEPLOY_ACCOUNT, *map(preview_account, STACKS)}
    # The previous page's single preview account, bound to every pull request, is removed.
    assert setup.deleted == {"llm-serving-preview"}


def test_each_identity_trusts_only_its_github_environments(setup: Setup) -> None:
    members = {
        account: {member.rsplit("/subject/", 1)[-1] for member in found}
        for account, found in setup.trusted_subjects.items()
    }
    assert members == {
        DEPLOY_ACCOUNT: {subject(stack) for stack in STACKS},
        **{preview_account(stack): {subject(f"{stack}-preview")} for stack in STACKS},
    }
    for found in setup.trusted_subjects.values():
        for member in found:
            assert member.startswith("principal://iam.googleapis.com/projects/123456789012/"), member
            assert not member.endswith(":pull_request") and "principalSet://" not in member


def test_project_roles_per_identity(setup: Setup) -> None:
    assert dict(setup.project_roles) == {
        DEPLOY_ACCOUNT: {
            "roles/container.admin",
            "roles/compute.networkAdmin",
            "roles/iam.serviceAccountAdmin",
            "roles/iam.serviceAccountUser",
            # The dashboard, alert policies, notification channel and log-based metric.
            "roles/monitoring.editor",
            "roles/logging.configWriter",
            # The model bucket and its grants; the Docker Hub remote repository.
            "roles/storage.admin",
            "roles/artifactregistry.admin",
            "roles/viewer",
            "roles/resourcemanager.projectIamAdmin",
        },
        # Find the cluster and authenticate to it: no Kubernetes objects, no project-wide reads.
        **{preview_account(stack): {"roles/container.clusterViewer"} for stack in STACKS},
    }
    # The one role that could grant roles is conditioned by the file in the repository.
    assert setup.conditions == {
        (DEPLOY_ACCOUNT, "roles/resourcemanager.projectIamAdmin"): "ci/gcp/node-roles-only.condition.yaml"
    }


def test_each_stack_has_its_own_state_bucket_and_key(setup: Setup) -> None:
    for stack in STACKS:
        assert setup.bucket_roles[f"gs://my-llm-project-pulumi-{stack}"] == {
            (preview_account(stack), "roles/storage.objectViewer"),  # read state; a preview takes no lock
            (DEPLOY_ACCOUNT, "roles/storage.objectAdmin"),
        }
        assert setup.key_roles[stack] == {
            (preview_account(stack), "roles/cloudkms.cryptoKeyDecrypter"),
            (DEPLOY_ACCOUNT, "roles/cloudkms.cryptoKeyEncrypterDecrypter"),
        }
    assert set(setup.bucket_roles) == {f"gs://my-llm-project-pulumi-{stack}" for stack in STACKS}
    assert set(setup.key_roles) == set(STACKS)


def stack_option(call: Call) -> str | None:
    return call.argv[call.argv.index("-s") + 1] if "-s" in call.argv else None


def test_stacks_are_created_as_org_slash_stack_with_their_own_key(setup: Setup) -> None:
    org = setup.repo_vars["PULUMI_ORG"]
    assert org == "organization"  # the gs:// backend's only organization
    key = "gcpkms://projects/my-llm-project/locations/global/keyRings/pulumi/cryptoKeys/{}"
    # The gs:// backend with a KMS key per stack, and the Pulumi Cloud alternative (its own
    # encryption): the same names either way.
    assert sorted(setup.stack_inits, key=str) == sorted(
        [(f"{org}/{stack}", key.format(stack)) for stack in STACKS]
        + [(f"{org}/{stack}", None) for stack in STACKS],
        key=str,
    )


def test_the_workflows_stack_names_are_the_stacks_the_page_creates(setup: Setup, calls: list[Call]) -> None:
    """`stack-name` of every pulumi/actions step, with the page's PULUMI_ORG and each stack the
    step can run for, names exactly the stacks the page's `pulumi stack init` lines create."""
    created = {name for name, _ in setup.stack_inits}
    org = setup.repo_vars["PULUMI_ORG"]
    for name in ("preview.yml", "deploy.yml"):
        for _, step in pulumi_steps(load_workflow(name)):
            template = step["with"]["stack-name"]
            named = {
                render(template, {"vars.PULUMI_ORG": org, "matrix.stack": stack, "inputs.stack": stack})
                for stack in STACKS
            }
            assert named == created, f"{name}: {template}"
    # The page's other stack commands name the same stacks (the upgrade's export reads the old
    # backend, whose stacks had the same names).
    selected = {stack_option(call) for call in of(calls, "pulumi") if stack_option(call)}
    assert selected == created


def test_environments_guard_the_identities(setup: Setup) -> None:
    assert set(setup.environments) == {*STACKS, *(f"{stack}-preview" for stack in STACKS)}
    approved = {"reviewers": [{"type": "Team", "id": 4242}], "prevent_self_review": True}
    main_only = {"protected_branches": False, "custom_branch_policies": True}
    # Previews run from pull-request branches; prod's waits for someone other than its author.
    assert setup.environments["dev-preview"] == {"deployment_branch_policy": None}
    assert setup.environments["prod-preview"] == {**approved, "deployment_branch_policy": None}
    # Deploys: main only, prod approved too.
    assert setup.environments["dev"] == {"deployment_branch_policy": main_only}
    assert setup.environments["prod"] == {**approved, "deployment_branch_policy": main_only}
    assert dict(setup.branch_policies) == {stack: {"name=main"} for stack in STACKS}


def test_each_environment_names_its_identity_and_backend(setup: Setup) -> None:
    for stack in STACKS:
        bucket = f"gs://my-llm-project-pulumi-{stack}"
        assert setup.env_vars[f"{stack}-preview"] == {
            "GCP_SERVICE_ACCOUNT": f"{preview_account(stack)}@my-llm-project.iam.gserviceaccount.com",
            "PULUMI_BACKEND_URL": bucket,
        }
        assert setup.env_vars[stack] == {
            "GCP_SERVICE_ACCOUNT": f"{DEPLOY_ACCOUNT}@my-llm-project.iam.gserviceaccount.com",
            "PULUMI_BACKEND_URL": bucket,
        }
    # Nothing that grants access is repository-wide, where a job without an environment reads it.
    assert set(setup.repo_vars) == {"GCP_PROJECT_ID", "GCP_WORKLOAD_IDENTITY_PROVIDER", "PULUMI_ORG"}


def test_the_workflows_read_only_variables_the_page_sets(setup: Setup) -> None:
    for name in ("preview.yml", "deploy.yml"):
        text = (WORKFLOW_DIR / name).read_text()
        for variable in set(re.findall(r"vars\.(\w+)", text)):
            everywhere = variable in setup.repo_vars
            per_environment = all(variable in found for found in setup.env_vars.values())
            assert everywhere or per_environment, f"{name}: vars.{variable} is not set by docs/ci.md"


def test_each_cluster_binds_its_own_preview_identity(calls: list[Call]) -> None:
    applied = [call for call in of(calls, "kubectl") if "apply" in call.argv and "-f" in call.argv]
    files = {call.argv[call.argv.index("-f") + 1] for call in applied}
    assert files == {"ci/k8s/preview-access.yaml", "-"}
    bindings = {
        (
            call.flag("kubeconfig"),
            call.argv[call.argv.index("-n") + 1] if "-n" in call.argv else None,
            call.argv[call.argv.index("create") + 1],
            call.flag("user"),
        )
        for call in of(calls, "kubectl")
        if "create" in call.argv
    }
    # Every Role of the file is bound in its namespace, the ClusterRole cluster-wide.
    role_namespaces = [
        d["metadata"]["namespace"]
        for d in yaml.safe_load_all((REPO_ROOT / "ci" / "k8s" / "preview-access.yaml").read_text())
        if d and d["kind"] == "Role"
    ]
    assert len(role_namespaces) == 2
    assert bindings == {
        (
            f"kubeconfig-{stack}",
            namespace,
            kind,
            f"{preview_account(stack)}@my-llm-project.iam.gserviceaccount.com",
        )
        for stack in STACKS
        for namespace, kind in [(None, "clusterrolebinding"), *((n, "rolebinding") for n in role_namespaces)]
    }


def test_the_admission_policy_matches_the_preview_identities_only(setup: Setup) -> None:
    documents = list(yaml.safe_load_all((REPO_ROOT / "ci" / "k8s" / "preview-access.yaml").read_text()))
    (policy,) = [d for d in documents if d["kind"] == "ValidatingAdmissionPolicy"]
    (condition,) = policy["spec"]["matchConditions"]
    prefix, suffix = re.findall(r"(?:startsWith|endsWith)\('([^']+)'\)", condition["expression"])
    emails = {f"{account}@my-llm-project.iam.gserviceaccount.com" for account in setup.accounts}
    matched = {email for email in emails if email.startswith(prefix) and email.endswith(suffix)}
    assert matched == {f"{preview_account(stack)}@my-llm-project.iam.gserviceaccount.com" for stack in STACKS}


def test_files_the_page_names_exist() -> None:
    text = CI_DOC.read_text()
    for path in set(
        re.findall(r"\b((?:ci|infra/policy|\.github)/[\w./-]+\.(?:yaml|yml|json|version))", text)
    ):
        if "<" in path:
            continue
        assert (REPO_ROOT / path).is_file(), path
    for link in re.findall(r"\]\((\.\./[^)]+)\)", text):
        assert (CI_DOC.parent / link).resolve().is_file(), link
