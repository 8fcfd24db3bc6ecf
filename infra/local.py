"""`make serve-local`: a stack's real serve application on this machine's CPU.

The deploy document is the plan's serveConfigV2, byte for byte what the RayService carries;
`serve.local.localize_serve_config` swaps only each model's weights (the tiny model, or
`--model-dir`) and its accelerator (CPU), keeping model ids and Serve settings. No cloud
credentials and no Pulumi engine are needed: the plan is a pure function of the catalog and
the stack file.

    python -m infra.local [--stack dev] [--models ID[,ID...]] [--model-dir DIR] [--port 8000]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from configcheck.problems import ConfigError
from infra.plan import build_plan_for_stack
from serve.local import DEFAULT_KV_CACHE_GIB, DEFAULT_NUM_CPUS, localize_serve_config, run_local
from serve.paths import REPO_ROOT
from serve.tiny_model import ensure_tiny_model


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m infra.local",
        description="Serve a stack's catalog models on this CPU with a tiny local model (OpenAI API).",
    )
    parser.add_argument("--stack", default="dev", help="stack whose plan to serve (default: dev)")
    parser.add_argument(
        "--models",
        action="append",
        default=None,
        metavar="ID[,ID...]",
        help="serve only these catalog model ids (repeatable or comma-separated; default: all served)",
    )
    parser.add_argument(
        "--model-dir",
        type=Path,
        help="a local Hugging Face model directory to use instead of the generated tiny model",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--kv-cache-gib",
        type=int,
        default=DEFAULT_KV_CACHE_GIB,
        help=f"KV cache per replica in GiB (default: {DEFAULT_KV_CACHE_GIB})",
    )
    parser.add_argument(
        "--num-cpus",
        type=int,
        default=DEFAULT_NUM_CPUS,
        help=f"logical CPUs the local Ray head advertises (default: {DEFAULT_NUM_CPUS})",
    )
    parser.add_argument("--echo-logs", action="store_true", help="print Serve's logs to the console")
    return parser


def _selected_models(values: Sequence[str] | None) -> list[str] | None:
    if values is None:
        return None
    return [model.strip() for value in values for model in value.split(",") if model.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        plan = build_plan_for_stack(args.stack, REPO_ROOT)
    except ConfigError as error:
        print(str(error), file=sys.stderr)
        return 2
    if args.model_dir is not None and not (args.model_dir / "config.json").is_file():
        print(f"error: {args.model_dir} is not a model directory (no config.json)", file=sys.stderr)
        return 2
    model_dir = args.model_dir or ensure_tiny_model()
    try:
        config = localize_serve_config(
            plan.serve_config, model_dir, _selected_models(args.models), kv_cache_gib=args.kv_cache_gib
        )
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    skipped = ", ".join(f"{s.model_id} ({s.reason})" for s in plan.skipped)
    if skipped:
        print(f"not served in stack {args.stack}: {skipped}", file=sys.stderr)
    return run_local(config, host=args.host, port=args.port, num_cpus=args.num_cpus, echo_logs=args.echo_logs)


if __name__ == "__main__":
    raise SystemExit(main())
