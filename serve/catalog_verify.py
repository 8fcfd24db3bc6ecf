"""`python -m serve.catalog check --verify`: the catalog's architecture facts against config.json.

Each model's config.json (and, for the parameter count, its safetensors headers) is read again
at the pinned revision, from the Hugging Face Hub or from a local directory given as
`--local SOURCE=DIR`, and every fact that differs is a located problem on the line of that
fact: the line to edit. A model that cannot be read (unknown repo, gated without a token,
revision gone) is a problem on its `source` or `revision` line; an unreachable Hub stops the
whole check with one sentence, since no model could be verified.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import partial
from pathlib import Path

from configcheck.problems import LineMap, Problem, locate
from serve.catalog import Catalog, ModelEntry
from serve.model_facts import FACT_SOURCES, FactsError, ModelFacts, read_facts
from serve.model_source import HubUnreachable, LocalModel, ModelHub, SourceError


def parse_local(values: Iterable[str], catalog: Catalog) -> dict[str, Path]:
    """`--local SOURCE=DIR` options as {source: directory}; SourceError on a malformed one."""
    sources = sorted({model.source for model in catalog.models})
    local: dict[str, Path] = {}
    for value in values:
        source, separator, directory = value.partition("=")
        if not separator or not source or not directory:
            raise SourceError(
                f"--local {value!r} is not SOURCE=DIR: write e.g. --local Qwen/Qwen2.5-1.5B-Instruct=DIR"
            )
        if source not in sources:
            raise SourceError(
                f"--local names {source}, which no catalog model uses; use one of: {', '.join(sources)}"
            )
        local[source] = Path(directory).expanduser()
    return local


def _read(
    model: ModelEntry, hub: ModelHub, local: Mapping[str, Path]
) -> tuple[ModelFacts, list[tuple[str, str]]]:
    """The facts at the model's pinned revision, and (field, message) problems about where they came from."""
    directory = local.get(model.source)
    if directory is not None:
        source = LocalModel(directory)
        found: list[tuple[str, str]] = []
        origin = source.origin()
        if origin is not None and origin[1] != model.revision:
            found.append(
                (
                    "revision",
                    f"{directory} holds commit {origin[1][:12]}, not the pinned {model.revision[:12]}",
                )
            )
        return read_facts(source.config(), source.tensors, where=str(directory), task=model.task.value), found
    hub.resolve(model.source, model.revision)  # the pinned commit still exists
    config = hub.config(model.source, model.revision)
    tensors = partial(hub.tensors, model.source, model.revision)
    return read_facts(
        config, tensors, where=f"{model.source}@{model.revision[:8]}", task=model.task.value
    ), []


def differences(model: ModelEntry, facts: ModelFacts) -> list[tuple[tuple[str, ...], str]]:
    """(path within the model, message) for every fact the catalog states differently."""
    found: list[tuple[tuple[str, ...], str]] = []
    have, read = model.architecture.model_dump(), facts.architecture.model_dump()
    at = model.revision[:8]
    for field, value in read.items():
        if have[field] != value:
            found.append(
                (
                    ("architecture", field),
                    f"{model.source} at {at} has {value} ({FACT_SOURCES[field]}), the catalog says "
                    f"{have[field]}: write {value}",
                )
            )
    # vLLM quantizes a 16-bit checkpoint to fp8 as it loads it, so only that pair may differ.
    online_fp8 = facts.quantization is None and model.quantization == "fp8"
    if facts.quantization != model.quantization and not online_fp8:
        fix = f"set quantization: {facts.quantization}" if facts.quantization else "remove quantization"
        found.append(
            (
                ("quantization",),
                f"{model.source} at {at} is quantized with {facts.quantization or 'nothing'} (config.json "
                f"quantization_config), the catalog says {model.quantization or 'none'}: {fix}",
            )
        )
    return found


def verify(catalog: Catalog, lines: LineMap, hub: ModelHub, local: Mapping[str, Path]) -> list[Problem]:
    """Located problems for every fact that differs; HubUnreachable if the Hub cannot be asked."""
    problems: list[Problem] = []
    for index, model in enumerate(catalog.models):
        try:
            facts, found = _read(model, hub, local)
        except HubUnreachable:
            raise
        except SourceError as error:
            problems.append(
                locate(catalog.file, lines, ("models", index, error.field), f"cannot verify: {error}")
            )
            continue
        except FactsError as error:
            problems.append(
                locate(catalog.file, lines, ("models", index, "source"), f"cannot verify: {error}")
            )
            continue
        problems += [
            locate(catalog.file, lines, ("models", index, field), message) for field, message in found
        ]
        problems += [
            locate(catalog.file, lines, ("models", index, *path), message)
            for path, message in differences(model, facts)
        ]
    return problems
