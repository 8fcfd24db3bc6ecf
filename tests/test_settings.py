"""Stack settings (infra/settings.py): the shipped stack files, and every way a broken
`Pulumi.<stack>.yaml` is refused with located, actionable problems.

Each bad-input case copies the shipped files, breaks the stack file and builds the plan as
the report and the program do (`helpers.located_cases`); the Hugging Face token rules are
checked on `parse_stack_config` directly, the way the Pulumi program calls it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

import pytest
import yaml
from helpers.located_cases import MISSING, SCALING, TIERS, Case, E, S, assert_distinct, check_case, ids
from helpers.stack_files import (
    STACKS,
    chain,
    const,
    drop_block,
    drop_line,
    edit,
    find_line,
    scaling,
    sub,
    tier_block,
)

from configcheck.problems import ConfigError
from configcheck.yaml_lines import load_file
from infra.plan import build_plan_for_stack
from infra.settings import load_stack, parse_stack_config, stack_file
from serve.paths import REPO_ROOT

TOKEN: Final = "hf_" + "A1b2C3d4E5" * 3 + "xy"  # looks like a real token to the detector; it is not one
SET_SECRET: Final = "pulumi config set --secret llm-serving:hfToken"

STACK_CASES: list[Case] = [
    # YAML syntax.
    S(
        "stack-yaml-unclosed-bracket",
        sub("zones: [us-central1-a, us-central1-b, us-central1-c]", "zones: [us-central1-a, us-central1-b"),
        E("(yaml)", "invalid YAML", "close the '['", at="zones: [us-central1-a, us-central1-b", nth=2),
    ),
    S(
        "stack-yaml-tab-indentation",
        sub("      spot: true", "\tspot: true"),
        E("(yaml)", "spaces, not tabs", at="\tspot"),
    ),
    S(
        "stack-yaml-duplicate-key",
        tier_block("l4", "maxNodes", "maxNodes: 2\n      maxNodes: 3"),
        E(f"{TIERS}.l4.maxNodes", "duplicate key 'maxNodes'", at="maxNodes: 3"),
    ),
    # Keys a stack may not set.
    S(
        "stack-key-cluster-name",
        sub("  gcp:region: us-central1\n", "  gcp:region: us-central1\n  llm-serving:clusterName: llm\n"),
        E("config.llm-serving:clusterName", "a stack may only set", "remove it", at="clusterName"),
    ),
    S(
        "stack-key-gcp-zone",
        sub("  gcp:region: us-central1\n", "  gcp:region: us-central1\n  gcp:zone: us-central1-a\n"),
        E("config.gcp:zone", "a stack may only set", "llm-serving:tiers.<tier>.zones", at="  gcp:zone:"),
    ),
    S(
        "stack-key-aws-region",
        sub("  gcp:region: us-central1\n", "  gcp:region: us-central1\n  aws:region: us-east-1\n"),
        E("config.aws:region", "a stack may only set", "gcp:region", at="  aws:region:"),
    ),
    S(
        "stack-key-misspelt",
        sub("  llm-serving:autoscaling:", "  llm-serving:autoscalling:"),
        E("config.llm-serving:autoscalling", "did you mean 'llm-serving:autoscaling'?", at="autoscalling"),
        E("config.llm-serving:autoscaling", "required", "minReplicas", line=4),
        min_problems=2,
    ),
    S(
        "stack-top-level-key-misspelt",
        sub("config:\n", "confg:\n"),
        E("confg", "unknown key 'confg'", "did you mean 'config'?", at="confg:"),
        min_problems=2,
    ),
    S(
        "stack-tier-key-misspelt",
        tier_block("t4", "maxNodes", "maxNode: 2"),
        E(f"{TIERS}.t4.maxNode", "did you mean 'maxNodes'?", at="maxNode: 2"),
        E(f"{TIERS}.t4.maxNodes", *MISSING, at="    t4:"),
        min_problems=2,
    ),
    S(
        "stack-tier-key-snake-case",
        tier_block("l4", "gpusPerNode", "gpus_per_node: 1"),
        E(f"{TIERS}.l4.gpus_per_node", "did you mean 'gpusPerNode'?", "camelCase", at="gpus_per_node"),
    ),
    S(
        "stack-tier-name-wrong-case",
        sub("    t4:\n", "    T4:\n"),
        E(f"{TIERS}.T4", "unknown tier 'T4'", "did you mean 't4'?", at="    T4:"),
        E(TIERS, "tier 't4' is missing", "add `t4:`", at="llm-serving:tiers:"),
        min_problems=2,
    ),
    S(
        "stack-autoscaling-key-misspelt",
        scaling("minReplicas", "minReplica: 0"),
        E(f"{SCALING}.minReplica", "did you mean 'minReplicas'?", at="minReplica: 0"),
        min_problems=2,
    ),
    S(
        "stack-autoscaling-key-snake-case",
        scaling("targetOngoingRequests", "target_ongoing_requests: 8"),
        E(f"{SCALING}.target_ongoing_requests", "did you mean 'targetOngoingRequests'?", at="target_ongoing"),
    ),
    # The Hugging Face token.
    S(
        "stack-hf-token-plain-text",
        sub("  gcp:region: us-central1\n", f"  gcp:region: us-central1\n  llm-serving:hfToken: {TOKEN}\n"),
        E(
            "config.llm-serving:hfToken",
            "plain text",
            f"`{SET_SECRET} <token> -s dev`",
            at="  llm-serving:hfToken:",
        ),
    ),
    S(
        "stack-hf-token-hidden-in-another-value",
        sub("  gcp:region: us-central1\n", f"  gcp:region: us-central1\n  gcp:project: {TOKEN}\n"),
        E("config.gcp:project", "plain text", f"`{SET_SECRET} <token> -s dev`", at="  gcp:project:"),
    ),
    S(
        "stack-hf-token-not-secret",
        sub("  gcp:region: us-central1\n", "  gcp:region: us-central1\n  llm-serving:hfToken: my-token\n"),
        E(
            "config.llm-serving:hfToken",
            "not a secret",
            f"`{SET_SECRET} <token> -s dev`",
            at="  llm-serving:hfToken:",
        ),
    ),
    S(
        "stack-hf-token-number",
        sub("  gcp:region: us-central1\n", "  gcp:region: us-central1\n  llm-serving:hfToken: 12345\n"),
        E("config.llm-serving:hfToken", "encrypted secret", "12345", SET_SECRET, at="  llm-serving:hfToken:"),
    ),
    S(
        "stack-hf-token-bad-secure-value",
        sub(
            "  gcp:region: us-central1\n",
            "  gcp:region: us-central1\n  llm-serving:hfToken:\n    secure: abc\n    plain: def\n",
        ),
        E("config.llm-serving:hfToken", "encrypted `secure:` value", SET_SECRET, at="  llm-serving:hfToken:"),
    ),
    # Region, project and zones.
    S(
        "stack-missing-region",
        drop_line("  gcp:region: us-central1"),
        E("config.gcp:region", "required", "pulumi config set gcp:region", at="config:"),
    ),
    S(
        "stack-bad-region",
        sub("gcp:region: us-central1", "gcp:region: US Central"),
        E("config.gcp:region", "not a GCP region name", "pulumi config set gcp:region", at="  gcp:region:"),
    ),
    S(
        "stack-bad-project",
        sub("  gcp:region: us-central1\n", "  gcp:region: us-central1\n  gcp:project: My_Project\n"),
        E("config.gcp:project", "not a GCP project id", "pulumi config set gcp:project", at="  gcp:project:"),
    ),
    S(
        "stack-zone-not-in-region",
        sub(
            "[us-central1-a, us-central1-b, us-central1-c]", "[us-central1-a, europe-west4-b, us-central1-c]"
        ),
        E(f"{TIERS}.l4.zones[1]", "not in the stack's region us-central1", "gcp:region", at="europe-west4-b"),
    ),
    S(
        "stack-zone-without-the-gpu",
        sub("[us-central1-a, us-central1-b, us-central1-c]", "[us-central1-a, us-central1-f]"),
        E(f"{TIERS}.l4.zones[1]", "offers no NVIDIA L4", "use us-central1-a", at="us-central1-f]", nth=2),
    ),
    S(
        "stack-zone-malformed",
        sub("[us-central1-a, us-central1-c]", "[us-central1-a, uscentral1c]"),
        E(f"{TIERS}.a100.zones[1]", "not a GCP zone name", "'us-central1-a'", at="uscentral1c"),
    ),
    S(
        "stack-zone-twice",
        sub("[us-central1-a, us-central1-c]", "[us-central1-a, us-central1-a]"),
        E(f"{TIERS}.a100.zones", "listed twice", at="[us-central1-a, us-central1-a]"),
    ),
    S(
        "stack-zones-empty",
        sub("[us-central1-a, us-central1-c]", "[]"),
        E(f"{TIERS}.a100.zones", "at least 1 item", at="zones: []"),
    ),
    S(
        "stack-zones-string",
        sub("[us-central1-a, us-central1-c]", "us-central1-a"),
        E(f"{TIERS}.a100.zones", "expected a list", "'us-central1-a'", at="zones: us-central1-a"),
    ),
    # Tier settings: types, bounds, order, GPU counts.
    S(
        "stack-spot-yes-string",
        tier_block("t4", "spot", 'spot: "yes"'),
        E(f"{TIERS}.t4.spot", "true or false", at='spot: "yes"'),
    ),
    S(
        "stack-fallback-behind-on-demand",
        chain(
            tier_block("t4", "spot", "spot: false"),
            tier_block("t4", "onDemandFallback", "onDemandFallback: true"),
        ),
        E(
            f"{TIERS}.t4.onDemandFallback",
            "already on-demand",
            "set spot: true or remove onDemandFallback",
            at="onDemandFallback: true",
        ),
    ),
    S(
        "stack-fallback-yes-string",
        tier_block("l4", "onDemandFallback", 'onDemandFallback: "yes"'),
        E(f"{TIERS}.l4.onDemandFallback", "true or false", at='onDemandFallback: "yes"'),
    ),
    S(
        "stack-spare-nodes-above-max-nodes",
        tier_block("l4", "spareNodes", "spareNodes: 3"),
        E(
            f"{TIERS}.l4.spareNodes",
            "spareNodes 3 is above maxNodes 2",
            "set spareNodes <= maxNodes",
            at="spareNodes: 3",
        ),
    ),
    S(
        "stack-spare-nodes-above-max-nodes-in-prod",
        tier_block("l4", "spareNodes", "spareNodes: 7"),
        E(f"{TIERS}.l4.spareNodes", "spareNodes 7 is above maxNodes 6", at="spareNodes: 7"),
        stack="prod",
    ),
    S(
        "stack-negative-spare-nodes",
        tier_block("t4", "spareNodes", "spareNodes: -1"),
        E(f"{TIERS}.t4.spareNodes", "greater than or equal to 0", "-1", at="spareNodes: -1"),
    ),
    S(
        "stack-spare-nodes-string",
        tier_block("a100", "spareNodes", 'spareNodes: "1"'),
        E(f"{TIERS}.a100.spareNodes", "whole number", "remove the quotes", at='spareNodes: "1"'),
    ),
    S(
        "stack-spare-nodes-fraction",
        tier_block("t4", "spareNodes", "spareNodes: 1.5"),
        E(f"{TIERS}.t4.spareNodes", "whole number", at="spareNodes: 1.5"),
    ),
    S(
        "stack-spare-nodes-empty",
        tier_block("l4", "spareNodes", "spareNodes:"),
        E(f"{TIERS}.l4.spareNodes", "whole number", "got nothing", at="spareNodes:", nth=2),
    ),
    S(
        "stack-max-nodes-string",
        tier_block("t4", "maxNodes", 'maxNodes: "2"'),
        E(f"{TIERS}.t4.maxNodes", "whole number", "remove the quotes", at='maxNodes: "2"'),
    ),
    S(
        "stack-min-above-max-nodes",
        chain(tier_block("l4", "maxNodes", "maxNodes: 1"), tier_block("l4", "minNodes", "minNodes: 2")),
        E(f"{TIERS}.l4.maxNodes", "below minNodes 2", "minNodes <= maxNodes", at="maxNodes: 1"),
    ),
    S(
        "stack-negative-min-nodes",
        tier_block("t4", "minNodes", "minNodes: -1"),
        E(f"{TIERS}.t4.minNodes", "greater than or equal to 0", "-1", at="minNodes: -1"),
    ),
    S(
        "stack-zero-max-nodes",
        tier_block("t4", "maxNodes", "maxNodes: 0"),
        E(f"{TIERS}.t4.maxNodes", "greater than or equal to 1", at="maxNodes: 0"),
    ),
    S(
        "stack-max-nodes-above-bound",
        tier_block("l4", "maxNodes", "maxNodes: 33"),
        E(f"{TIERS}.l4.maxNodes", "less than or equal to 32", "33", at="maxNodes: 33"),
    ),
    S(
        "stack-max-nodes-absurd",
        tier_block("a100", "maxNodes", "maxNodes: 100000"),
        E(f"{TIERS}.a100.maxNodes", "less than or equal to 32", at="maxNodes: 100000"),
    ),
    S(
        "stack-gpus-per-node-not-offered",
        tier_block("l4", "gpusPerNode", "gpusPerNode: 3"),
        E(f"{TIERS}.l4.gpusPerNode", "1, 2, 4, 8 GPUs, not 3", "set gpusPerNode", at="gpusPerNode: 3"),
    ),
    S(
        "stack-gpus-per-node-zero",
        tier_block("t4", "gpusPerNode", "gpusPerNode: 0"),
        E(f"{TIERS}.t4.gpusPerNode", "greater than or equal to 1", at="gpusPerNode: 0"),
    ),
    S(
        "stack-missing-tier",
        drop_block("    a100:"),
        E(TIERS, "tier 'a100' is missing", "enabled: false", at="llm-serving:tiers:"),
    ),
    S(
        "stack-extra-tier",
        sub(
            "  llm-serving:autoscaling:",
            "    h100:\n      enabled: false\n  llm-serving:autoscaling:",
        ),
        E(f"{TIERS}.h100", "unknown tier 'h100'", "the tiers are t4, l4, a100", at="h100:"),
    ),
    S(
        "stack-tier-missing-field",
        drop_line("zones: [us-central1-a, us-central1-b, us-central1-c, us-central1-f]"),
        E(f"{TIERS}.t4.zones", *MISSING, at="    t4:"),
    ),
    S(
        "stack-tiers-is-a-list",
        edit(lambda data: data["config"].update({"llm-serving:tiers": ["t4", "l4", "a100"]})),
        E(TIERS, "expected a mapping from tier name", "got a list", at="llm-serving:tiers:"),
    ),
    S(
        "stack-tier-is-a-list",
        edit(lambda data: data["config"]["llm-serving:tiers"].update(t4=["enabled", "spot"])),
        E(f"{TIERS}.t4", "expected a mapping", "got a list", at="t4:"),
    ),
    # Autoscaling.
    S(
        "stack-min-above-max-replicas",
        scaling("minReplicas", "minReplicas: 3"),
        E(
            f"{SCALING}.maxReplicas",
            "maxReplicas 2 is below minReplicas 3",
            "minReplicas <= maxReplicas",
            at="maxReplicas: 2",
        ),
    ),
    S(
        "stack-zero-max-replicas",
        scaling("maxReplicas", "maxReplicas: 0"),
        E(f"{SCALING}.maxReplicas", "greater than or equal to 1", at="maxReplicas: 0"),
    ),
    S(
        "stack-absurd-max-replicas",
        scaling("maxReplicas", "maxReplicas: 1000"),
        E(f"{SCALING}.maxReplicas", "less than or equal to 64", at="maxReplicas: 1000"),
    ),
    S(
        "stack-negative-min-replicas",
        scaling("minReplicas", "minReplicas: -1"),
        E(f"{SCALING}.minReplicas", "greater than or equal to 0", at="minReplicas: -1"),
    ),
    S(
        "stack-zero-target-ongoing-requests",
        scaling("targetOngoingRequests", "targetOngoingRequests: 0"),
        E(f"{SCALING}.targetOngoingRequests", "greater than 0", at="targetOngoingRequests: 0"),
    ),
    S(
        "stack-target-above-max-ongoing",
        scaling("targetOngoingRequests", "targetOngoingRequests: 64"),
        E(
            f"{SCALING}.maxOngoingRequests",
            "maxOngoingRequests 32 is below targetOngoingRequests 64",
            at="maxOngoingRequests: 32",
        ),
    ),
    S(
        "stack-negative-delay",
        scaling("upscaleDelaySeconds", "upscaleDelaySeconds: -5"),
        E(f"{SCALING}.upscaleDelaySeconds", "greater than or equal to 0", at="upscaleDelaySeconds: -5"),
    ),
    S(
        "stack-quoted-float",
        scaling("targetOngoingRequests", 'targetOngoingRequests: "8"'),
        E(f"{SCALING}.targetOngoingRequests", "expected a number", "without quotes", at='"8"'),
    ),
    S(
        "stack-missing-autoscaling-field",
        drop_line("    downscaleDelaySeconds:"),
        E(f"{SCALING}.downscaleDelaySeconds", *MISSING, at="llm-serving:autoscaling:"),
    ),
    S(
        "stack-missing-autoscaling",
        drop_block("  llm-serving:autoscaling:"),
        E(SCALING, "required", "minReplicas, maxReplicas", at="config:"),
    ),
    # Whole-file problems.
    S(
        "stack-config-is-a-list",
        const("config:\n  - gcp:region\n"),
        E("config", "expected a mapping", "got a list", line=1),
    ),
    S(
        "stack-file-is-a-list",
        const("- config\n- gcp:region: us-central1\n"),
        E("(document)", "a stack file is a mapping", "config:", line=1),
    ),
    S(
        "stack-empty-file",
        const(""),
        E("config.gcp:region", "required", line=1),
        E(TIERS, "required", line=1),
        E(SCALING, "required", line=1),
        min_problems=3,
    ),
    S(
        "stack-not-utf8",
        lambda text: text.replace("# Stacks may", "# St\xe4cks may").encode("latin-1"),
        E("(file)", "not UTF-8", line=2),
    ),
    S("stack-missing-file", None, E("(file)", "file not found", line=1)),
    # Several independent problems at once.
    S(
        "stack-many-problems-at-once",
        chain(
            tier_block("t4", "maxNodes", "maxNodes: 99"),
            tier_block("l4", "gpusPerNode", "gpusPerNode: 3"),
            scaling("minReplicas", "minReplica: 0"),
            sub("  gcp:region: us-central1\n", "  gcp:region: us-central1\n  gcp:zone: us-central1-a\n"),
        ),
        E("config.gcp:zone", "a stack may only set", at="  gcp:zone:"),
        E(f"{TIERS}.t4.maxNodes", "less than or equal to 32", at="maxNodes: 99"),
        E(f"{TIERS}.l4.gpusPerNode", "not 3", at="gpusPerNode: 3"),
        E(f"{SCALING}.minReplica", "did you mean 'minReplicas'?", at="minReplica: 0"),
        E(f"{SCALING}.minReplicas", *MISSING, at="llm-serving:autoscaling:"),
        min_problems=5,
    ),
]


@pytest.mark.parametrize("case", STACK_CASES, ids=ids(STACK_CASES))
def test_bad_stack_file_is_refused_with_located_actionable_messages(
    case: Case, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    check_case(case, tmp_path, capsys)


def test_cases_are_distinct_and_many() -> None:
    assert_distinct(STACK_CASES, at_least=30)


# --- the shipped stack files -------------------------------------------------------------------


@pytest.mark.parametrize("stack", STACKS)
def test_shipped_stack_file_plans(stack: str) -> None:
    """The baseline every case mutates is valid: each case's problem comes from its mutation."""
    settings = load_stack(stack, REPO_ROOT)
    assert (settings.stack, settings.file) == (stack, str(stack_file(stack, REPO_ROOT)))
    assert build_plan_for_stack(stack, root=REPO_ROOT).settings == settings


def _key_paths(value: Any, path: str = "") -> set[str]:
    if isinstance(value, dict):
        return set().union(*(_key_paths(v, f"{path}.{k}") for k, v in value.items())) | {path}
    return {path}


def test_stack_files_use_the_same_keys() -> None:
    dev, prod = (yaml.safe_load(stack_file(stack).read_text()) for stack in STACKS)
    assert _key_paths(dev) == _key_paths(prod)


# --- the Pulumi-side settings path: the token is required there ------------------------------


def dev_config(tmp_path: Path, extra: str = "") -> tuple[dict[str, Any], Any, str, str]:
    """The dev stack file's config (plus `extra` config lines), its line map, its path and text."""
    text = stack_file("dev").read_text(encoding="utf-8")
    text = text.replace("  gcp:region: us-central1\n", f"  gcp:region: us-central1\n{extra}")
    path = stack_file("dev", tmp_path)
    path.write_text(text, encoding="utf-8")
    data, lines = load_file(path)
    return dict(data["config"]), lines, str(path), text


def test_missing_token_is_allowed_offline_but_required_by_the_program(tmp_path: Path) -> None:
    config, lines, file, text = dev_config(tmp_path)
    settings = parse_stack_config(config, stack="dev", file=file, lines=lines)
    assert settings.has_hf_token is False

    with pytest.raises(ConfigError) as raised:
        parse_stack_config(config, stack="dev", file=file, lines=lines, require_hf_token=True)
    (problem,) = raised.value.problems
    assert problem.field == "config.llm-serving:hfToken"
    assert problem.file == file
    assert problem.line == find_line(text, "config:")  # the key is absent: its parent's line
    assert f"`{SET_SECRET} <token> -s dev`" in problem.message
    assert "missing" in problem.message


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (TOKEN, ("plain text", "delete it")),
        ("my-token", ("plain text", "not a secret")),
        (12345, ("encrypted secret", "12345")),
        ("", ("encrypted secret",)),
    ],
    ids=["hf-token-text", "other-text", "number", "empty"],
)
def test_required_token_must_be_a_secret(tmp_path: Path, value: Any, words: tuple[str, ...]) -> None:
    config, lines, file, text = dev_config(tmp_path, f"  llm-serving:hfToken: {value!r}\n")
    for secret_keys in (frozenset(), frozenset({"llm-serving:other"})):
        with pytest.raises(ConfigError) as raised:
            parse_stack_config(
                config, stack="dev", file=file, lines=lines, secret_keys=secret_keys, require_hf_token=True
            )
        problems = [p for p in raised.value.problems if p.field == "config.llm-serving:hfToken"]
        assert problems, str(raised.value)
        assert all(p.line == find_line(text, "  llm-serving:hfToken:") for p in problems)
        assert any(all(word in p.message for word in words) for p in problems), str(raised.value)
        assert all(f"`{SET_SECRET} <token> -s dev`" in p.message for p in problems)


def test_required_token_held_as_a_secret_is_accepted(tmp_path: Path) -> None:
    config, lines, file, _ = dev_config(tmp_path)
    secret = {**config, "llm-serving:hfToken": TOKEN}
    settings = parse_stack_config(
        secret,
        stack="dev",
        file=file,
        lines=lines,
        secret_keys=frozenset({"llm-serving:hfToken"}),
        require_hf_token=True,
    )
    assert settings.has_hf_token is True
    encrypted = {**config, "llm-serving:hfToken": {"secure": "v1:AAAABBBBCCCC"}}
    assert parse_stack_config(
        encrypted, stack="dev", file=file, lines=lines, require_hf_token=True
    ).has_hf_token


# --- the optional alert email -------------------------------------------------------------------


def test_alert_email_is_optional_and_taken_when_it_is_an_address(tmp_path: Path) -> None:
    config, lines, file, _ = dev_config(tmp_path)
    assert parse_stack_config(config, stack="dev", file=file, lines=lines).alert_email is None
    config, lines, file, _ = dev_config(tmp_path, "  llm-serving:alertEmail: oncall+llm@example.com\n")
    settings = parse_stack_config(config, stack="dev", file=file, lines=lines)
    assert settings.alert_email == "oncall+llm@example.com"


@pytest.mark.parametrize("value", ["oncall", "oncall@localhost", "a@b@example.com", "[a@example.com]", "42"])
def test_a_bad_alert_email_is_refused_at_its_line(tmp_path: Path, value: str) -> None:
    config, lines, file, text = dev_config(tmp_path, f"  llm-serving:alertEmail: {value}\n")
    with pytest.raises(ConfigError) as raised:
        parse_stack_config(config, stack="dev", file=file, lines=lines)
    (problem,) = raised.value.problems
    assert problem.field == "config.llm-serving:alertEmail"
    assert problem.line == find_line(text, "  llm-serving:alertEmail:")
    assert "is not an email address" in problem.message and "oncall@example.com" in problem.message


def test_a_token_pasted_as_alert_email_is_never_printed(tmp_path: Path) -> None:
    config, lines, file, text = dev_config(tmp_path, f"  llm-serving:alertEmail: {TOKEN}\n")
    with pytest.raises(ConfigError) as raised:
        parse_stack_config(config, stack="dev", file=file, lines=lines)
    assert TOKEN not in str(raised.value)
    fields = {p.field for p in raised.value.problems}
    assert fields == {"config.llm-serving:alertEmail"}
    assert all(p.line == find_line(text, "  llm-serving:alertEmail:") for p in raised.value.problems)


# --- extra API keys (secrets only) ---------------------------------------------------------------

SECURE_ITEMS = "  llm-serving:apiKeys:\n    - secure: v1:AAAA\n    - secure: v1:BBBB\n"
SECURE_WHOLE = "  llm-serving:apiKeys:\n    secure: v1:CCCC\n"


@pytest.mark.parametrize(("extra", "count"), [("", 0), (SECURE_ITEMS, 2), (SECURE_WHOLE, 1)])
def test_encrypted_api_keys_are_taken(tmp_path: Path, extra: str, count: int) -> None:
    config, lines, file, _ = dev_config(tmp_path, extra)
    assert parse_stack_config(config, stack="dev", file=file, lines=lines).extra_api_keys == count


def test_a_plain_text_api_key_is_refused_at_its_line_and_never_printed(tmp_path: Path) -> None:
    key = "sk-team-a-0123456789abcdef"
    config, lines, file, text = dev_config(
        tmp_path, f"  llm-serving:apiKeys:\n    - secure: v1:AAAA\n    - {key}\n"
    )
    with pytest.raises(ConfigError) as raised:
        parse_stack_config(config, stack="dev", file=file, lines=lines)
    (problem,) = raised.value.problems
    assert problem.field == "config.llm-serving:apiKeys[1]"
    assert problem.line == find_line(text, f"    - {key}")
    assert "plain text" in problem.message and "pulumi config set --secret --path" in problem.message
    assert key not in str(raised.value)


@pytest.mark.parametrize(
    ("value", "wanted"),
    [
        ("[]", "an empty list"),
        ('["short"]', "16 to 256 visible ASCII"),
        ("not json", "not JSON"),
        ("7", "the number 7"),
    ],
)
def test_bad_api_keys_from_the_engine_are_refused(tmp_path: Path, value: str, wanted: str) -> None:
    config, lines, file, _ = dev_config(tmp_path)
    config["llm-serving:apiKeys"] = value
    with pytest.raises(ConfigError) as raised:
        parse_stack_config(
            config, stack="dev", file=file, lines=lines, secret_keys=frozenset({"llm-serving:apiKeys"})
        )
    assert wanted in str(raised.value)
