"""How many GPUs a set of replicas needs when small models share cards: a deterministic bin-packing.

Each replica is either packed (a fraction of one card, in serve.gpu_share's BUNDLE_STEPs) or takes
whole GPUs (tensor_parallel_size of them). First-fit decreasing over cards:

1. whole-GPU replicas take their own cards;
2. packed replicas, largest share first (ties by model id, so the result never depends on the
   catalog's order), go onto the first card, in the order cards were opened, with room; a new card
   is opened when none has.

The sum of the shares on a card never exceeds one card (STEPS_PER_GPU steps), which is Ray's own
rule for fractional GPU bundles and, through serve.gpu_share, the memory rule; and a card holds
no more replicas than the node's worker has CPUs, since each replica's bundle holds one (Ray's
autoscaler counts them too). First-fit
decreasing needs at most 11/9 of the optimal number of cards plus one (Johnson, 1973).

What it is not: Ray's placement. Ray places each replica when it starts, in the order replicas
scale up, on cards with room; arriving in another order can fragment cards more than this packing
does, and a replica that finds no room makes the autoscaler add a node (up to maxNodes). So the
plan's figures are what a tier needs when replicas are placed well: a necessary condition, like
the whole-GPU count before it, not a promise about every order of arrival.

The plan counts cards this way for its capacity rule, its idle cost and the GPUs it reports with
and without packing. A card here is one GPU; nodes are cards over gpusPerNode, rounded up.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from pydantic import BaseModel, ConfigDict

from serve.catalog import ModelEntry
from serve.gpu_share import STEPS_PER_GPU, gpu_share, node_exclusive


class Card(BaseModel):
    """One GPU and the replicas on it: model ids, a model once per replica."""

    model_config = ConfigDict(frozen=True)

    replicas: tuple[str, ...]
    used_steps: int

    @property
    def shared(self) -> bool:
        return len(self.replicas) > 1


class Packing(BaseModel):
    model_config = ConfigDict(frozen=True)

    cards: tuple[Card, ...]

    @property
    def gpus(self) -> int:
        return len(self.cards)


def whole_gpus(
    models: Iterable[ModelEntry], replicas: int, gpus_per_node: int = 1, warm_replicas: int = 0
) -> int:
    """GPUs without packing: every replica on whole GPUs of its own (a whole node where it keeps
    one to itself, serve.gpu_share `node_exclusive`)."""
    return sum(replicas * _replica_cards(model, gpus_per_node, warm_replicas) for model in models)


def _replica_cards(model: ModelEntry, gpus_per_node: int, warm_replicas: int) -> int:
    """Cards one whole-GPU replica is counted as: its tensor-parallel GPUs, or its node's GPUs
    where it keeps the node to itself. The node's other GPUs stay idle: every replica there that
    leaves GPUs free asks for the node's one spread unit, so no other such replica joins it."""
    if node_exclusive(model, gpus_per_node, warm_replicas):
        return gpus_per_node
    return model.tensor_parallel_size


def pack(
    demands: Sequence[tuple[ModelEntry, int]],
    gpus_per_node: int = 1,
    replicas_per_card: int | None = None,
    warm_replicas: int = 0,
) -> Packing:
    """The cards `demands` (model, replica count) take on nodes of `gpus_per_node` GPUs, small
    models sharing cards, at most `replicas_per_card` replicas on one (each holds one of the node's
    CPUs in Ray: the worker's CPUs bound how many engines a one-GPU node runs), in a stack that
    keeps `warm_replicas` of each model warm (serve.gpu_share: two or more stop packing)."""
    whole: list[Card] = []
    shared: list[tuple[int, str]] = []
    for model, count in demands:
        share = gpu_share(model, gpus_per_node, warm_replicas)
        cards = _replica_cards(model, gpus_per_node, warm_replicas)
        for _ in range(count):
            if share is None:
                whole += [Card(replicas=(model.id,), used_steps=STEPS_PER_GPU)] * cards
            else:
                shared.append((share.steps, model.id))
    open_cards: list[list[str]] = []
    used: list[int] = []
    for steps, model_id in sorted(shared, key=lambda item: (-item[0], item[1])):
        index = next(
            (
                i
                for i, taken in enumerate(used)
                if taken + steps <= STEPS_PER_GPU
                and (replicas_per_card is None or len(open_cards[i]) < replicas_per_card)
            ),
            None,
        )
        if index is None:
            open_cards.append([])
            used.append(0)
            index = len(used) - 1
        open_cards[index].append(model_id)
        used[index] += steps
    packed = [
        Card(replicas=tuple(ids), used_steps=steps) for ids, steps in zip(open_cards, used, strict=True)
    ]
    return Packing(cards=(*whole, *packed))


def packed_gpus(
    models: Iterable[ModelEntry],
    replicas: int,
    gpus_per_node: int = 1,
    replicas_per_card: int | None = None,
    warm_replicas: int = 0,
) -> int:
    """GPUs with packing when every model in `models` runs `replicas` replicas."""
    demands = [(model, replicas) for model in models]
    return pack(demands, gpus_per_node, replicas_per_card, warm_replicas).gpus
