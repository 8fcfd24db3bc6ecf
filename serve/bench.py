"""A bounded local load benchmark of the OpenAI-compatible endpoint.

Sends N chat requests, at most C at a time, over loopback with the official `openai` client,
checks that every one succeeded, and writes requests/s, output tokens/s and latency percentiles
with the machine's facts to a JSON file.

    python -m serve.bench --base-url http://127.0.0.1:8000 --model qwen2-5-1-5b-instruct \\
        --requests 64 --concurrency 8 --out build/bench.json

Without `--base-url` it starts a LocalService itself for one catalog model (the first one, or
`--model`) on the tiny local model, benchmarks it and stops it again.

Every request asks for exactly `--max-tokens` tokens (`ignore_eos`), so runs compare. The run
is bounded: at most `--requests` requests, each with `--request-timeout`, and the whole run
with `--timeout`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import sys
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from serve.localize import API_KEY_ENV

MAX_REQUESTS: Final = 10_000
MAX_CONCURRENCY: Final = 256
PROMPTS: Final = (
    "Write one sentence about the weather.",
    "Count from one to ten.",
    "What is a GPU?",
    "Say hello in three languages.",
    "Name a colour and a number.",
)


@dataclass(frozen=True)
class RequestResult:
    ok: bool
    latency_s: float
    completion_tokens: int
    error: str = ""


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (`fraction` in [0, 1]) of a non-empty sequence."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def machine_info() -> dict[str, Any]:
    cpu_model = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_gib = round(int(line.split()[1]) / 1024**2, 1)
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model,
        "memory_gib": memory_gib,
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


async def _one(client: Any, model: str, prompt: str, max_tokens: int) -> RequestResult:
    started = time.perf_counter()
    try:
        response = await client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": prompt}],
            max_tokens=max_tokens,
            temperature=0.0,
            extra_body={"ignore_eos": True},
        )
    except Exception as error:
        return RequestResult(False, time.perf_counter() - started, 0, f"{type(error).__name__}: {error}")
    elapsed = time.perf_counter() - started
    tokens = response.usage.completion_tokens if response.usage is not None else 0
    if not response.choices:
        return RequestResult(False, elapsed, tokens, "response has no choices")
    return RequestResult(True, elapsed, tokens)


async def run_benchmark(
    base_url: str,
    model: str,
    *,
    requests: int,
    concurrency: int,
    max_tokens: int,
    request_timeout_s: float,
    api_key: str,
    warmup: int = 1,
) -> dict[str, Any]:
    """Run the load and return the report (without machine info); raises on a bad argument."""
    from openai import AsyncOpenAI

    if not 1 <= requests <= MAX_REQUESTS:
        raise ValueError(f"requests must be in 1..{MAX_REQUESTS}")
    if not 1 <= concurrency <= MAX_CONCURRENCY:
        raise ValueError(f"concurrency must be in 1..{MAX_CONCURRENCY}")
    client = AsyncOpenAI(
        base_url=base_url.rstrip("/") + "/v1", api_key=api_key, timeout=request_timeout_s, max_retries=0
    )
    try:
        for i in range(warmup):
            result = await _one(client, model, PROMPTS[i % len(PROMPTS)], max_tokens)
            if not result.ok:
                raise RuntimeError(f"warm-up request to {model} failed: {result.error}")
        gate = asyncio.Semaphore(concurrency)

        async def limited(i: int) -> RequestResult:
            async with gate:
                return await _one(client, model, PROMPTS[i % len(PROMPTS)], max_tokens)

        started = time.perf_counter()
        results = await asyncio.gather(*(limited(i) for i in range(requests)))
        duration = time.perf_counter() - started
    finally:
        await client.close()

    ok = [r for r in results if r.ok]
    latencies = [r.latency_s for r in ok] or [float("nan")]
    tokens = sum(r.completion_tokens for r in ok)
    errors = sorted({r.error for r in results if not r.ok})
    return {
        "base_url": base_url,
        "model": model,
        "requests": requests,
        "concurrency": concurrency,
        "max_tokens": max_tokens,
        "succeeded": len(ok),
        "failed": requests - len(ok),
        "errors": errors[:10],
        "duration_s": round(duration, 3),
        "requests_per_s": round(len(ok) / duration, 3),
        "output_tokens_per_s": round(tokens / duration, 1),
        "latency_s": {
            "p50": round(percentile(latencies, 0.50), 4),
            "p95": round(percentile(latencies, 0.95), 4),
            "mean": round(sum(latencies) / len(latencies), 4),
            "max": round(max(latencies), 4),
        },
    }


def _local_serve_config(model: str | None) -> tuple[dict[str, Any], str]:
    """A one-model deploy document from the catalog, localized onto the tiny model."""
    from serve.autoscaling import ReplicaAutoscaling
    from serve.catalog import load_catalog
    from serve.localize import localize_serve_config
    from serve.paths import CATALOG_FILE_NAME, REPO_ROOT
    from serve.serve_config import serve_config
    from serve.tiny_model import ensure_tiny_model

    catalog = load_catalog(REPO_ROOT / CATALOG_FILE_NAME)
    entry = catalog.by_id(model) if model else catalog.models[0]
    # One replica from the start: the benchmark measures serving, not scale-up from zero.
    scaling = ReplicaAutoscaling(
        min_replicas=1,
        max_replicas=1,
        target_ongoing_requests=8,
        max_ongoing_requests=64,
        upscale_delay_seconds=30,
        downscale_delay_seconds=600,
    )
    return localize_serve_config(serve_config([entry], scaling), ensure_tiny_model()), entry.id


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serve.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--base-url", help="service root, e.g. http://127.0.0.1:8000 (default: start one)")
    parser.add_argument("--model", help="model id (default: the first catalog model)")
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--request-timeout", type=float, default=120.0, help="seconds per request")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds for the whole run")
    parser.add_argument("--port", type=int, default=8000, help="port of a service this command starts")
    parser.add_argument("--out", type=Path, help="write the JSON report here")
    parser.add_argument(
        "--api-key",
        default=os.environ.get(API_KEY_ENV),
        help=f"the endpoint's key with --base-url (default: ${API_KEY_ENV})",
    )
    args = parser.parse_args(argv)
    if args.base_url is None and args.model is not None and "/" in args.model:
        parser.error("--model is a catalog id, not a Hugging Face repo")
    if args.base_url is not None and args.model is None:
        parser.error("--model is required with --base-url")
    if args.base_url is not None and not args.api_key:
        parser.error(f"--api-key (or ${API_KEY_ENV}) is required with --base-url")

    started_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    with ExitStack() as stack:
        base_url, model = args.base_url, args.model
        if base_url is None:
            from serve.supervisor import LocalService

            config, model = _local_serve_config(args.model)
            print(f"starting a local service for {model} (tiny local model)", file=sys.stderr)
            service = stack.enter_context(
                LocalService(
                    config, port=args.port, on_progress=lambda p: print(p, file=sys.stderr, flush=True)
                )
            )
            base_url, args.api_key = service.base_url, service.api_key
        try:
            report = asyncio.run(
                asyncio.wait_for(
                    run_benchmark(
                        base_url,
                        model,
                        requests=args.requests,
                        concurrency=args.concurrency,
                        max_tokens=args.max_tokens,
                        request_timeout_s=args.request_timeout,
                        api_key=args.api_key,
                    ),
                    timeout=args.timeout,
                )
            )
        except TimeoutError:
            print(f"error: the benchmark did not finish within {args.timeout:.0f} s", file=sys.stderr)
            return 1
        except (RuntimeError, ValueError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
    report = {"started_at": started_at, **report, "machine": machine_info()}
    text = json.dumps(report, indent=2)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)
    if report["failed"]:
        print(f"error: {report['failed']} of {report['requests']} requests failed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
