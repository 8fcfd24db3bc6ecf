"""`python -m infra.report STACK [--out DIR] [--diff OTHER_STACK]`: the offline plan report.

Without cloud credentials, the Pulumi CLI or a cluster: the placement, node pools and hourly
cost of a stack (from the pure plan), and every object the Pulumi program registers (from
the real program under Pulumi's mock engine), written as YAML files to DIR.
`python -m infra.plan` prints the same tables without running the program.

Exit status: 0 report printed; 1 problems in the catalog or the stack file (one
`FILE:LINE: field: message` line each on stderr); 2 bad arguments; 3 a secret would have
been written (a bug in this repository; nothing was written).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import pulumi

from configcheck.problems import ConfigError
from infra.plan import ServingPlan
from infra.report.manifests import SecretLeakError, build_manifests, write_manifests
from infra.report.mock_engine import TEST_GCP_PROJECT, TEST_HF_TOKEN, ProgramRun, run_program, stack_config
from infra.report.tables import (
    add_stack_arguments,
    load_plans,
    make_console,
    print_diff_or_plan,
    print_problems,
)
from infra.settings import HF_TOKEN_KEY

EXIT_SECRET_LEAK = 3


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m infra.report",
        description="Offline plan report: placement, node pools, cost and every manifest of a stack.",
    )
    add_stack_arguments(parser)
    parser.add_argument("--out", type=Path, help="write one YAML file per object the program registers here")
    return parser


def _run(plan: ServingPlan, root: Path) -> tuple[ProgramRun, dict[str, object]]:
    config = stack_config(plan.stack, root, with_token=True)
    return run_program(plan.stack, config=config, root=root), config


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    console = make_console()
    try:
        root, plan, other = load_plans(args)
    except ConfigError as error:
        return print_problems(str(error))

    run: ProgramRun | None = None
    config: dict[str, object] = {}
    if args.out is not None or other is None:
        try:
            run, config = _run(plan, root)
        except (pulumi.RunError, ConfigError) as error:
            # The program reports bad input as a RunError of located lines, like `pulumi up`.
            return print_problems(str(error))

    print_diff_or_plan(console, root, plan, other)
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
        return EXIT_SECRET_LEAK
    console.print(f"\nWrote {len(written)} files to {args.out}:", markup=False, soft_wrap=True)
    for path in written:
        console.print(f"  {path.as_posix()}", markup=False, soft_wrap=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
