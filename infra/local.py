"""`make serve-local`: a stack's real serve application on this machine's CPU.

The deploy document is the plan's serveConfigV2, byte for byte what the RayService carries;
`serve.localize.localize_serve_config` swaps only each model's weights (the tiny model, or
`--model-dir`) and its accelerator (CPU), keeping model ids and Serve settings. No cloud
credentials and no Pulumi engine are needed: the plan is a pure function of the catalog and
the stack file. `serve.supervisor.LocalService` runs it.

Stopping: SIGINT (Ctrl-C, also when started as a background job with SIGINT ignored), SIGTERM,
SIGHUP and the parent process exiting all stop Serve and the local Ray cluster; a second one
during the stop skips the grace periods. If this process is killed outright, the run's guard
process cleans up; what a killed guard leaves is removed by the next start.

    python -m infra.local [--stack dev] [--models ID[,ID...]] [--model-dir DIR] [--port 8000]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any, Final

from configcheck.problems import ConfigError
from infra.plan import build_plan_for_stack
from serve.localize import (
    API_KEY_ENV,
    DEFAULT_KV_CACHE_GIB,
    MIN_LOCAL_CPUS,
    localize_serve_config,
    needs_reranker,
    needs_transcriber,
    warmup_request,
)
from serve.paths import REPO_ROOT
from serve.serve_config import document_llm_configs
from serve.supervisor import (
    LocalService,
    LocalServiceError,
    Progress,
    StopRequest,
    StopRequested,
)
from serve.tiny_model import ensure_tiny_model, ensure_tiny_reranker, ensure_tiny_whisper

STOP_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


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
        default=None,
        help="logical CPUs the local Ray head advertises (default: what every replica needs, at least "
        f"{MIN_LOCAL_CPUS})",
    )
    parser.add_argument("--echo-logs", action="store_true", help="print Serve's logs to the console")
    return parser


def _selected_models(values: Sequence[str] | None) -> list[str] | None:
    if values is None:
        return None
    return [model.strip() for value in values for model in value.split(",") if model.strip()]


def _progress(progress: Progress | str) -> None:
    # The terminal or pipe may be gone (a killed parent took it along): stopping matters more.
    with contextlib.suppress(OSError):
        print(progress, file=sys.stderr, flush=True)


@contextmanager
def _stop_signals(stop: StopRequest) -> Iterator[None]:
    """Turn SIGINT, SIGTERM and SIGHUP into stop requests for as long as the service runs.

    Installed explicitly, whatever was inherited: a background job of a script starts with
    SIGINT ignored, and Python then leaves it ignored.
    """

    def handler(signum: int, _frame: FrameType | None) -> None:
        stop.request(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _example_curl(base_url: str, model_id: str, task: str = "generate") -> str:
    """A request the model answers: a chat for a chat model, else its task's (serve.localize)."""
    if task == "generate":
        path = "/v1/chat/completions"
        body = {"model": model_id, "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 32}
    else:
        route, request = warmup_request(model_id, task)
        path = f"/v1{route}"
        if "json" not in request:  # a transcription: a form with an audio file
            return (
                f'curl {base_url}{path} -H "Authorization: Bearer ${API_KEY_ENV}" '
                f"-F model={model_id} -F file=@speech.wav"
            )
        body = request["json"]
    return (
        f'curl {base_url}{path} -H "Authorization: Bearer ${API_KEY_ENV}" '
        f"-H 'Content-Type: application/json' -d '{json.dumps(body)}'"
    )


def _ready_message(
    service: LocalService, serve_config: Mapping[str, Any], echo_logs: bool, key_from_env: bool
) -> str:
    sources = sorted(
        {str(llm["model_loading_config"].get("model_source")) for llm in document_llm_configs(serve_config)}
    )
    logs = "the console" if echo_logs else str(service.log_path)
    serving = service.serving_model_ids
    chat = [model for model in serving if service.model_tasks.get(model) == "generate"]
    first = (chat or serving or service.model_ids)[0]
    failed = [
        f"  NOT serving {model}: its application is {summary['status']} (503 until fixed; see the Serve logs)"
        for model, summary in service.failed_models.items()
    ]
    return "\n".join(
        [
            "",
            f"Serving {', '.join(serving)} at {service.openai_base_url} (OpenAI API)",
            *failed,
            f"  weights: {', '.join(sources)}",
            f"  API key ({'from ' + API_KEY_ENV if key_from_env else 'made up for this run'}): "
            f"{service.api_key}",
            "  try:",
            *([] if key_from_env else [f"    export {API_KEY_ENV}={service.api_key}"]),
            f"    {_example_curl(service.base_url, first, service.model_tasks.get(first, 'generate'))}",
            f"  metrics (Prometheus text, what Managed Prometheus scrapes on GKE): {service.metrics_url}",
            f"  Serve logs: {logs}",
            "Ctrl-C stops Serve and the local Ray cluster.",
            "",
        ]
    )


def run_local(
    serve_config: Mapping[str, Any],
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    num_cpus: int | None = None,
    echo_logs: bool = False,
    stop: StopRequest | None = None,
) -> int:
    """Serve a localized deploy document until a stop signal or the parent's exit; exit code.

    Prints progress to stderr, and the URL and an example request once every model answers.
    """
    stop = stop or StopRequest(watch_parent=True)
    service = LocalService(
        serve_config,
        host=host,
        port=port,
        num_cpus=num_cpus,
        echo_logs=echo_logs,
        api_key=os.environ.get(API_KEY_ENV) or None,
        on_progress=_progress,
        stop_request=stop,
        # As on the cluster, a model that cannot start is reported and the others are served.
        tolerate_failed_models=True,
    )
    with _stop_signals(stop):
        try:
            with service:
                with contextlib.suppress(OSError):
                    print(
                        _ready_message(
                            service, serve_config, echo_logs, key_from_env=bool(os.environ.get(API_KEY_ENV))
                        ),
                        flush=True,
                    )
                service.serve_until_stopped()
        except StopRequested as request:
            _progress(f"stopped during start: {request}")
        except LocalServiceError as error:
            _progress(f"error: {error}")
            return 1
    _progress("stopped")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    stop = StopRequest(watch_parent=True)  # first: the parent may exit while the plan is built
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
        selected = _selected_models(args.models)
        reranker = ensure_tiny_reranker() if needs_reranker(plan.serve_config, selected) else None
        transcriber = ensure_tiny_whisper() if needs_transcriber(plan.serve_config, selected) else None
        config = localize_serve_config(
            plan.serve_config,
            model_dir,
            selected,
            kv_cache_gib=args.kv_cache_gib,
            reranker_dir=reranker,
            transcriber_dir=transcriber,
        )
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    skipped = ", ".join(f"{s.model_id} ({s.reason})" for s in plan.skipped)
    if skipped:
        print(f"not served in stack {args.stack}: {skipped}", file=sys.stderr)
    return run_local(
        config, host=args.host, port=args.port, num_cpus=args.num_cpus, echo_logs=args.echo_logs, stop=stop
    )


if __name__ == "__main__":
    raise SystemExit(main())
