"""`python -m serve.catalog add SOURCE`: one command from a model to a checked catalog entry.

SOURCE is a Hugging Face repo id or a local model directory. The command pins the revision to
its commit, reads the architecture facts from config.json (serve/model_facts.py), chooses the
cheapest tier and tensor parallelism the model fits (serve/tier_choice.py), appends the entry to
the catalog keeping its layout (serve/catalog_append.py), and prints the memory estimate and
the monthly cost. Every refusal is one sentence on stderr with exit status 1, and the catalog
file is then left exactly as it was: the new document is validated as a whole before the one
atomic write.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from configcheck.problems import ConfigError
from configcheck.yaml_lines import load_file, load_text
from serve.catalog import COMMIT_SHA, DEFAULT_CATALOG, DNS_LABEL, Catalog, Task, is_hf_repo_id, parse_catalog
from serve.catalog_append import appended_text, write_atomically
from serve.model_facts import TASKS, FactsError, ModelFacts, TensorInfo, check_task, read_facts
from serve.model_source import HuggingFaceHub, LocalModel, ModelHub, SourceError
from serve.tier_choice import HOURS_PER_MONTH, Choice, NoFitError, Request, choose
from serve.tiers import PRICES_READ_ON, PRICES_REGION, TierName

DEFAULT_REVISION: Final = "main"


class AddError(Exception):
    """A refusal of the command's own (ids, options); str() is one sentence."""


@dataclass(frozen=True)
class ReadModel:
    """What the source gave: the catalog's source and pinned revision, and the facts."""

    repo: str
    revision: str
    facts: ModelFacts
    read_from: str  # for the report: "Qwen/X@1a2b3c4d" or the directory


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "source", metavar="SOURCE", help="a model directory, or else a Hugging Face repo id (owner/name)"
    )
    parser.add_argument("--tier", help="t4, l4 or a100 (default: the cheapest the model fits)")
    parser.add_argument("--tensor-parallel-size", type=int, help="GPUs per replica (default: chosen)")
    parser.add_argument("--max-model-len", type=int, help="longest sequence served (default: up to 8192)")
    parser.add_argument("--concurrency", type=int, help="full-length sequences at once (default: up to 8)")
    parser.add_argument("--id", dest="model_id", help="the OpenAI model name (default: from the repo name)")
    parser.add_argument(
        "--revision", help=f"branch, tag or commit to pin (default {DEFAULT_REVISION}), stored as its commit"
    )
    parser.add_argument(
        "--repo",
        help="with a local directory: the Hugging Face repo the cluster downloads (default: read from "
        "a Hugging Face cache path .../models--OWNER--NAME/snapshots/COMMIT)",
    )
    parser.add_argument(
        "--task", default=TASKS[0], help=f"what the model serves: {', '.join(TASKS)} (default {TASKS[0]})"
    )
    parser.add_argument("--catalog", type=Path, default=DEFAULT_CATALOG, help="the catalog file to extend")
    parser.add_argument("--dry-run", action="store_true", help="print the entry, leave the catalog alone")


def model_id_for(repo: str) -> str:
    """A DNS label from the repo's name: Qwen/Qwen2.5-7B-Instruct -> qwen2-5-7b-instruct."""
    name = repo.rsplit("/", 1)[-1].lower()
    return re.sub(r"[^a-z0-9]+", "-", name).strip("-")[:63].rstrip("-")


def _tier(value: str | None) -> TierName | None:
    if value is None:
        return None
    names = [tier.value for tier in TierName]
    if value not in names:
        raise AddError(f"unknown tier {value!r}; use one of: {', '.join(names)}")
    return TierName(value)


def _read_local(directory: Path, repo: str | None, revision: str | None, task: str) -> ReadModel:
    model = LocalModel(directory)
    config = model.config()  # first: a directory without config.json is the likelier mistake
    origin = model.origin()
    repo = repo or (origin[0] if origin else None)
    revision = revision or (origin[1] if origin else None)
    if repo is None or revision is None:
        raise AddError(
            f"{directory} does not say which Hugging Face repo and commit it holds: pass --repo OWNER/NAME "
            "and --revision with the full 40-character commit the cluster should download"
        )
    if not COMMIT_SHA.match(revision):
        raise AddError(
            f"--revision {revision!r} is not a full commit: with a local directory pass the 40-character "
            "lowercase commit hash it holds (a branch or tag would need the Hub to resolve)"
        )
    facts = read_facts(config, model.tensors, where=str(directory), task=task)
    return ReadModel(repo=repo, revision=revision, facts=facts, read_from=str(directory))


def _read_hub(hub: ModelHub, repo: str, revision: str | None, task: str) -> ReadModel:
    commit = hub.resolve(repo, revision or DEFAULT_REVISION)
    config = hub.config(repo, commit)

    def tensors() -> list[TensorInfo]:
        return hub.tensors(repo, commit)

    facts = read_facts(config, tensors, where=f"{repo}@{commit[:8]}", task=task)
    return ReadModel(repo=repo, revision=commit, facts=facts, read_from=f"{repo}@{commit[:8]}")


def _source_kind(source: str, repo: str | None) -> Path | str:
    """The directory to read, or the repo id to ask the Hub for."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise AddError(f"{source} is a file: pass the model's directory or a Hugging Face repo id")
    if repo is not None:
        raise AddError(f"--repo is for local directories, and {source} is not one: pass the directory")
    if not is_hf_repo_id(source):
        raise AddError(
            f"{source!r} is neither a model directory nor a Hugging Face repo id "
            "(owner/name, e.g. Qwen/Qwen2.5-7B-Instruct)"
        )
    return source


def _check_id(model_id: str, catalog: Catalog, derived: bool) -> None:
    if not DNS_LABEL.match(model_id):
        raise AddError(
            f"{model_id!r} is not a DNS label: pass --id with 1-63 lowercase letters, digits and '-', "
            "starting and ending with a letter or digit (e.g. 'qwen2-5-7b-instruct')"
        )
    taken = [index for index, model in enumerate(catalog.models) if model.id == model_id]
    if taken:
        how = "the id derived from the repo name" if derived else "that id"
        raise AddError(
            f"{catalog.file} already serves {model_id!r} (models[{taken[0]}]); "
            f"{how} is taken, so pass --id with another name"
        )


def _report(read: ReadModel, choice: Choice, path: Path, line: int, dry_run: bool) -> list[str]:
    entry, placement, arch = choice.entry, choice.placement, choice.entry.architecture
    budget = entry.memory()
    facts = read.facts
    quantization = f", {facts.quantization}" if facts.quantization else ""
    as_served = ""
    if facts.checkpoint_dtype != entry.dtype:
        why = "" if entry.gpu_tier.supports_bf16 else f"; {entry.tier.value} has no bfloat16"
        as_served = f" ({facts.checkpoint_dtype or 'unstated'} weights served in {entry.dtype}{why})"
    machine = placement.machine
    where = "would add" if dry_run else "added"
    return [
        f"read {read.read_from}: {facts.model_class}, {facts.checkpoint_dtype or 'no dtype'}{quantization}, "
        f"{arch.parameters_billion}B parameters, {arch.num_layers} layers, {arch.num_attention_heads} "
        f"attention heads ({arch.num_kv_heads} KV), head_dim {arch.head_dim}, "
        f"{arch.max_position_embeddings} positions",
        f"placement: {entry.tier.value}, tensor_parallel_size {entry.tensor_parallel_size}, {entry.dtype}"
        f"{as_served}, max_model_len {entry.max_model_len}, concurrency {entry.concurrency} "
        f"(the cheapest of {choice.fitting_placements} placements that fit)",
        f"memory: weights {budget.weights_gib:.2f} + KV cache {budget.kv_cache_gib:.2f} + overhead "
        f"{budget.overhead_gib:.2f} = {budget.required_gib:.2f} GiB of a {budget.budget_gib:.2f} GiB budget "
        f"({entry.tensor_parallel_size} x {entry.gpu_tier.vram_gib} GiB x "
        f"{entry.engine.gpu_memory_utilization:.2f}), {budget.headroom_gib:.2f} GiB to spare",
        f"cost: ${placement.usd_per_month:,.2f} a month for one replica ({HOURS_PER_MONTH} h x "
        f"${placement.usd_per_hour:.4f}/h, one spot {machine.machine_type}; {PRICES_REGION} prices "
        f"read on {PRICES_READ_ON})",
        f"{where} {entry.id} to {path} (line {line})",
    ]


def add(args: argparse.Namespace, hub: ModelHub) -> list[str]:
    """Do the whole command; the report lines. Raises the one-sentence errors."""
    check_task(args.task)
    request = Request(
        tier=_tier(args.tier),
        tensor_parallel_size=args.tensor_parallel_size,
        max_model_len=args.max_model_len,
        concurrency=args.concurrency,
    )
    path: Path = args.catalog
    data, lines = load_file(path)
    catalog = parse_catalog(data, str(path), lines)
    kind = _source_kind(args.source, args.repo)
    repo = args.repo or (kind if isinstance(kind, str) else None)
    if repo is not None and not is_hf_repo_id(repo):
        raise AddError(f"--repo {repo!r} is not a Hugging Face repo id: write it as owner/name")
    # The id is checked before anything is downloaded: a clash is the cheapest refusal.
    if args.model_id is not None or repo is not None:
        _check_id(args.model_id or model_id_for(str(repo)), catalog, derived=args.model_id is None)
    read = (
        _read_local(kind, args.repo, args.revision, args.task)
        if isinstance(kind, Path)
        else _read_hub(hub, kind, args.revision, args.task)
    )
    model_id = args.model_id or model_id_for(read.repo)
    _check_id(model_id, catalog, derived=args.model_id is None)
    base: dict[str, Any] = {"id": model_id, "source": read.repo, "revision": read.revision}
    if args.task != Task.GENERATE.value:
        base["task"] = args.task
    choice = choose(base, read.facts, request)
    comment = (
        f"{read.repo} at {read.revision[:12]}: facts from its config.json (python -m serve.catalog add)."
    )
    old_text = path.read_bytes().decode("utf-8")
    new_text = appended_text(old_text, choice.entry, comment)
    # The whole new document through the catalog's own validation: written only if it passes.
    try:
        new_data, new_lines = load_text(new_text, str(path))
        parse_catalog(new_data, str(path), new_lines)
    except ConfigError as error:
        first = error.problems[0]
        raise AddError(
            f"the new entry would not pass the catalog check ({first.field}: {first.message}); "
            f"nothing was written to {path}"
        ) from None
    line = new_lines.line_of(("models", len(catalog.models)))
    if not args.dry_run:
        try:
            write_atomically(path, new_text)
        except OSError as error:
            reason = error.strerror or str(error)
            raise AddError(
                f"cannot write {path} ({reason}); it is unchanged: check the permissions"
            ) from None
    report = _report(read, choice, path, line, args.dry_run)
    if args.dry_run:
        report += ["", *new_text.splitlines()[line - 2 :]]  # from the comment line above the entry
    return report


def run(args: argparse.Namespace, hub: ModelHub | None = None) -> int:
    try:
        lines = add(args, hub if hub is not None else HuggingFaceHub())
    except ConfigError as error:
        print(error, file=sys.stderr)
        print(
            f"{args.catalog}: fix these problems first (python -m serve.catalog check); nothing was added",
            file=sys.stderr,
        )
        return 1
    except (AddError, SourceError, FactsError, NoFitError) as error:
        print(error, file=sys.stderr)
        return 1
    for line in lines:
        print(line)
    return 0
