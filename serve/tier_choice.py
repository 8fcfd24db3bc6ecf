"""Choose where a new catalog model runs: the cheapest tier and tensor parallelism that fit it.

A placement is a tier and a tensor-parallel size its nodes offer. Placements are tried from the
cheapest (the spot price of the node one replica needs, serve/tiers.py) up; the first on which
the model fits with a useful context and concurrency wins. "Fits" is exactly what
`python -m serve.catalog check` accepts (serve.catalog.fit_problems: GPU counts, heads divisible
over the GPUs, bf16/fp8 support, the memory estimate), so a chosen entry always passes the check.

On each placement the context is tried at min(max_position_embeddings, 8192), then 4096, then
2048, and at each context the highest concurrency up to 8 that fits: a longer context before
more concurrent sequences, because a request longer than max_model_len is refused while more
sequences only queue. Whatever the person passed (tier, tensor parallelism, context,
concurrency) is kept fixed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from pydantic import ValidationError

from serve.catalog import ENCODER_UNSUPPORTED_ENGINE, ModelEntry, fit_problems
from serve.model_facts import ModelFacts
from serve.tiers import TIERS, GpuTier, MachineShape, TierName

HOURS_PER_MONTH: Final = 730  # 8760 hours a year / 12, the month cloud price lists use
CONTEXT_STEPS: Final = (8192, 4096, 2048)
MAX_CONCURRENCY: Final = 8
# The engine settings every shipped entry starts from; vLLM's defaults for the rest.
DEFAULT_ENGINE: Final[Mapping[str, Any]] = {"gpu_memory_utilization": 0.90, "enable_prefix_caching": True}


class NoFitError(Exception):
    """No placement fits the model; str() is one sentence naming the biggest budget tried."""


@dataclass(frozen=True)
class Placement:
    tier: GpuTier
    tensor_parallel_size: int

    @property
    def machine(self) -> MachineShape:
        return self.tier.machine_for(self.tensor_parallel_size)

    @property
    def usd_per_hour(self) -> float:
        """Spot price of the node one replica occupies (its GPUs all on one node)."""
        return self.machine.spot_usd_per_hour

    @property
    def usd_per_month(self) -> float:
        return self.usd_per_hour * HOURS_PER_MONTH

    @property
    def label(self) -> str:
        return f"{self.tensor_parallel_size} x {self.tier.gpu_model} ({self.tier.name.value})"


@dataclass(frozen=True)
class Request:
    """What the person fixed on the command line; None: choose it."""

    tier: TierName | None = None
    tensor_parallel_size: int | None = None
    max_model_len: int | None = None
    concurrency: int | None = None


@dataclass(frozen=True)
class Choice:
    entry: ModelEntry
    placement: Placement
    fitting_placements: int  # how many placements fit at all (the chosen one is the cheapest)


def serving_dtype(checkpoint_dtype: str | None, tier: GpuTier) -> str:
    """What vLLM's `dtype: auto` picks: the checkpoint's 16-bit dtype, bfloat16 for a float32 (or
    unstated) one, and float16 where the GPU has no bfloat16 (T4)."""
    wanted = "float16" if checkpoint_dtype == "float16" else "bfloat16"
    return wanted if wanted != "bfloat16" or tier.supports_bf16 else "float16"


def placements(request: Request) -> list[Placement]:
    """Every placement the request allows, cheapest first."""
    tiers = [TIERS[request.tier]] if request.tier is not None else list(TIERS.values())
    found = [
        Placement(tier, gpus)
        for tier in tiers
        for gpus in tier.gpu_counts_per_node
        if request.tensor_parallel_size in (None, gpus)
    ]
    if not found:
        offered = "; ".join(f"{t.name.value}: {', '.join(map(str, t.gpu_counts_per_node))}" for t in tiers)
        raise NoFitError(
            f"no node offers {request.tensor_parallel_size} GPUs for tensor_parallel_size "
            f"(GPUs per node, {offered}); pass --tensor-parallel-size with one of those"
        )
    return sorted(found, key=lambda p: (p.usd_per_hour, p.tensor_parallel_size))


def _contexts(facts: ModelFacts, request: Request) -> list[int]:
    if request.max_model_len is not None:
        return [request.max_model_len]
    longest = facts.architecture.max_position_embeddings
    return sorted({min(step, longest) for step in CONTEXT_STEPS}, reverse=True)


def _concurrencies(request: Request) -> list[int]:
    if request.concurrency is not None:
        return [request.concurrency]
    return list(range(MAX_CONCURRENCY, 0, -1))


def entry_for(
    base: Mapping[str, Any], facts: ModelFacts, placement: Placement, max_model_len: int, concurrency: int
) -> ModelEntry:
    """The catalog entry for `base` (id, source, revision) on `placement`; NoFitError if it is invalid."""
    encoder = facts.architecture.encoder_only
    # Neither an encoder nor a speech encoder-decoder takes prefix caching or chunked prefill.
    plain_engine = encoder or facts.architecture.encoder_positions > 0
    data = {
        **base,
        "tier": placement.tier.name.value,
        "tensor_parallel_size": placement.tensor_parallel_size,
        "dtype": serving_dtype(facts.checkpoint_dtype, placement.tier),
        "quantization": facts.quantization,
        "max_model_len": max_model_len,
        "concurrency": concurrency,
        "architecture": facts.architecture.model_dump(exclude_defaults=True),
        "engine": {
            key: value
            for key, value in DEFAULT_ENGINE.items()
            if not (plain_engine and key in ENCODER_UNSUPPORTED_ENGINE)
        },
    }
    if encoder:
        del data["concurrency"]  # an encoder keeps no KV cache for it to size
    try:
        return ModelEntry.model_validate(data, strict=True)
    except ValidationError as error:
        first = error.errors(include_url=False)[0]
        field = ".".join(str(part) for part in first["loc"])
        reason = str(first["msg"]).removeprefix("Value error, ")
        raise NoFitError(f"{field} {first.get('input')!r} is not accepted: {reason}") from None


def _best_on(
    base: Mapping[str, Any], facts: ModelFacts, placement: Placement, request: Request
) -> ModelEntry | None:
    for length in _contexts(facts, request):
        for concurrency in _concurrencies(request):
            entry = entry_for(base, facts, placement, length, concurrency)
            if not fit_problems(entry):
                return entry
    return None


def _no_fit(base: Mapping[str, Any], facts: ModelFacts, tried: list[Placement], request: Request) -> str:
    """Why nothing fits, said about the biggest placement at the most lenient context and concurrency."""
    length, concurrency = _contexts(facts, request)[-1], _concurrencies(request)[-1]
    source = base["source"]
    at = f"at max_model_len {length} and concurrency {concurrency}"
    entries = [(p, entry_for(base, facts, p, length, concurrency)) for p in tried]
    # Placements the model could use if it were smaller: memory (reported on `tier`) is the only problem.
    usable = [(p, e) for p, e in entries if all(path == ("tier",) for path, _ in fit_problems(e))]
    if not usable:
        # A problem every placement has is about the request itself (a context above the model's
        # limit), not about any one placement: say it without naming one.
        messages = [[message for _, message in fit_problems(e)] for _, e in entries]
        common = [message for message in messages[0] if all(message in other for other in messages)]
        if common:
            return f"{source} cannot be served {at}: {common[0]}"
        placement, entry = min(entries, key=lambda pe: (len(fit_problems(pe[1])), -pe[1].memory().budget_gib))
        return f"{source} cannot run on {placement.label} {at}: {fit_problems(entry)[0][1]}"
    placement, entry = max(usable, key=lambda pe: pe[1].memory().budget_gib)
    budget = entry.memory()
    scope = "any tier" if request.tier is None else f"the {request.tier.value} tier"
    return (
        f"{source} does not fit {scope}: even on the biggest, {placement.label} with a budget of "
        f"{budget.budget_gib:.1f} GiB, it needs {budget.required_gib:.1f} GiB {at} "
        f"(weights {budget.weights_gib:.1f} + KV cache {budget.kv_cache_gib:.1f} + overhead "
        f"{budget.overhead_gib:.1f}); use a quantized (AWQ/GPTQ) checkpoint or a smaller model"
    )


def choose(base: Mapping[str, Any], facts: ModelFacts, request: Request) -> Choice:
    """The cheapest placement the model fits with the longest context, then the most concurrency."""
    tried = placements(request)
    fitting = [
        (placement, entry)
        for placement in tried
        if (entry := _best_on(base, facts, placement, request)) is not None
    ]
    if not fitting:
        raise NoFitError(_no_fit(base, facts, tried, request))
    placement, entry = fitting[0]
    return Choice(entry=entry, placement=placement, fitting_placements=len(fitting))
