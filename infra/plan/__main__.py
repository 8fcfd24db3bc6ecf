"""`python -m infra.plan STACK [--diff OTHER_STACK]`: the plan's tables, from the pure plan alone.

Placement, node pools and hourly cost of a stack, or what differs between two stacks. The
manifests of every object need the Pulumi program under the mock engine, which this package
never imports: `--out DIR` hands the whole command to `python -m infra.report`.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from configcheck.problems import ConfigError
from infra.report.tables import (
    add_stack_arguments,
    load_plans,
    make_console,
    print_diff_or_plan,
    print_problems,
)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m infra.plan", description=__doc__)
    add_stack_arguments(parser)
    parser.add_argument("--out", type=Path, help="write every manifest here (runs python -m infra.report)")
    args = parser.parse_args(arguments)
    if args.out is not None:
        os.execv(sys.executable, [sys.executable, "-m", "infra.report", *arguments])
    try:
        root, plan, other = load_plans(args)
    except ConfigError as error:
        return print_problems(str(error))
    print_diff_or_plan(make_console(), root, plan, other)
    return 0


if __name__ == "__main__":
    sys.exit(main())
