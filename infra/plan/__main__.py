"""`python -m infra.plan STACK [--out DIR] [--diff OTHER_STACK]`: the offline plan report.

Without cloud credentials, the Pulumi CLI or a cluster: the placement, node pools and hourly
cost of a stack (from the pure plan), and every object the Pulumi program registers (from
the real program under Pulumi's mock engine), written as YAML files to DIR.

Exit status: 0 report printed; 1 problems in the catalog or the stack file (one
`FILE:LINE: field: message` line each on stderr); 2 bad arguments; 3 the program and the
plan disagree, or a secret would have been written (a bug in this repository).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import pulumi

from infra.plan import ServingPlan, build_plan_for_stack
from infra.plan.manifests import SecretLeakError, build_manifests, write_manifests
from infra.plan.report import agreement_problems, diff_lines, make_console, print_plan
from infra.pulumi_config import REPO_ROOT
from infra.settings import HF_TOKEN_KEY
from infra.testing import TEST_GCP_PROJECT, TEST_HF_TOKEN, ProgramRun, run_program, stack_config
from serve.problems import ConfigError

EXIT_PROBLEMS = 1
EXIT_INCONSISTENT = 3


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m infra.plan",
        description="Offline plan report: placement, node pools, cost and every manifest of a stack.",
    )
    parser.add_argument("stack", help="stack name: reads Pulumi.<stack>.yaml")
    parser.add_argument("--out", type=Path, help="write one YAML file per object the program registers here")
    parser.add_argument(
        "--diff",
        metavar="OTHER_STACK",
        help="print only what differs from OTHER_STACK (settings, models, cost)",
    )
    parser.add_argument(
        "--root",
        type=Path,
        default=None,
        help="repository root with the catalog and stack files (default: this repo)",
    )
    return parser


def _display_root(root: Path) -> Path:
    """The root as a path relative to the working directory when it is below it (shorter messages)."""
    resolved, cwd = root.resolve(), Path.cwd().resolve()
    if resolved == cwd:
        return Path(".")
    if resolved.is_relative_to(cwd):
        return Path(os.path.relpath(resolved, cwd))
    return resolved


def _problems(lines: str) -> int:
    for line in lines.splitlines():
        if line.strip():
            print(line, file=sys.stderr)
    return EXIT_PROBLEMS


def _run(plan: ServingPlan, root: Path) -> tuple[ProgramRun, dict[str, object]]:
    config = stack_config(plan.stack, root, with_token=True)
    return run_program(plan.stack, config=config, root=root), config


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    root = _display_root(args.root or REPO_ROOT)
    console = make_console()
    try:
        plan = build_plan_for_stack(args.stack, root)
        other = build_plan_for_stack(args.diff, root) if args.diff else None
    except ConfigError as error:
        return _problems(str(error))

    run: ProgramRun | None = None
    config: dict[str, object] = {}
    if args.out is not None or other is None:
        try:
            run, config = _run(plan, root)
        except (pulumi.RunError, ConfigError) as error:
            # The program reports bad input as a RunError of located lines, like `pulumi up`.
            return _problems(str(error))
        disagreements = agreement_problems(plan, run)
        if disagreements:
            for line in disagreements:
                print(f"plan and program disagree: {line}", file=sys.stderr)
            return EXIT_INCONSISTENT

    if other is not None:
        for line in diff_lines(root, plan, other):
            console.print(line, markup=False, soft_wrap=True)
    else:
        print_plan(console, plan)

    if run is None:
        return 0
    tokens = {TEST_HF_TOKEN, str(config.get(HF_TOKEN_KEY, TEST_HF_TOKEN))}
    project = TEST_GCP_PROJECT if not plan.settings.project else None
    manifests = build_manifests(run, hf_tokens=tokens, gcp_project_placeholder=project)
    if args.out is None:
        console.print(f"\n{len(manifests)} objects (write them as YAML with --out DIR):", markup=False)
        for manifest in manifests:
            console.print(f"  {manifest.path.as_posix()}", markup=False, soft_wrap=True)
        return 0
    try:
        written = write_manifests(manifests, args.out, secrets=tokens)
    except SecretLeakError as error:
        print(str(error), file=sys.stderr)
        return EXIT_INCONSISTENT
    console.print(f"\nWrote {len(written)} files to {args.out}:", markup=False, soft_wrap=True)
    for path in written:
        console.print(f"  {path.as_posix()}", markup=False, soft_wrap=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
