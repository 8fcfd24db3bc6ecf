"""Stack settings: the only things a stack (dev, prod) may change are GPU tiers and autoscaling.

Settings come from a `Pulumi.<stack>.yaml` file (offline: tests, the plan report) or from
the Pulumi engine's config (inside `pulumi up/preview`); both go through
`parse_stack_config`, so a mistake reads the same either way: `FILE:LINE: key: message`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Final

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, field_validator, model_validator

from serve.autoscaling import CamelStrict, ReplicaAutoscaling
from serve.located_yaml import load_file
from serve.problems import ConfigError, LineMap, Path_, Problem, locate
from serve.tiers import PRICES_REGION, TIERS, TierName
from serve.validation import unknown_key_message, validation_problems

PROJECT: Final = "llm-serving"
TIERS_KEY: Final = f"{PROJECT}:tiers"
AUTOSCALING_KEY: Final = f"{PROJECT}:autoscaling"
HF_TOKEN_KEY: Final = f"{PROJECT}:hfToken"
GCP_PROJECT_KEY: Final = "gcp:project"
GCP_REGION_KEY: Final = "gcp:region"
ALLOWED_KEYS: Final = (GCP_PROJECT_KEY, GCP_REGION_KEY, TIERS_KEY, AUTOSCALING_KEY, HF_TOKEN_KEY)
# Top-level keys Pulumi itself writes into stack files besides `config`.
PULUMI_STACK_FILE_KEYS: Final = ("config", "secretsprovider", "encryptedkey", "encryptionsalt", "environment")

MAX_NODES_PER_TIER: Final = 32
_ZONE: Final = re.compile(r"^[a-z]+-[a-z]+\d+-[a-z]$")
_REGION: Final = re.compile(r"^[a-z]+-[a-z]+\d+$")
_HF_TOKEN_TEXT: Final = re.compile(r"hf_[A-Za-z0-9]{20,}")


def set_secret_command(stack: str) -> str:
    return f"pulumi config set --secret {HF_TOKEN_KEY} <token> -s {stack}"


class TierSettings(CamelStrict):
    enabled: StrictBool
    spot: StrictBool
    gpus_per_node: Annotated[StrictInt, Field(ge=1, le=16)]
    min_nodes: Annotated[StrictInt, Field(ge=0, le=MAX_NODES_PER_TIER)]
    max_nodes: Annotated[StrictInt, Field(ge=1, le=MAX_NODES_PER_TIER)]
    zones: Annotated[list[str], Field(min_length=1, max_length=6)]

    @field_validator("zones")
    @classmethod
    def _zone_names(cls, zones: list[str]) -> list[str]:
        for zone in zones:
            if not _ZONE.match(zone):
                raise ValueError(f"{zone!r} is not a GCP zone name like 'us-central1-a'")
        if len(set(zones)) != len(zones):
            raise ValueError("zones are listed twice; list each zone once")
        return zones

    @model_validator(mode="after")
    def _ordered(self) -> TierSettings:
        if self.min_nodes > self.max_nodes:
            raise ValueError(
                f"minNodes {self.min_nodes} is above maxNodes {self.max_nodes}; make minNodes <= maxNodes"
            )
        return self


class StackSettings(BaseModel):
    """A stack's validated settings, plus where they were read (for located plan errors)."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    stack: str
    file: str
    lines: LineMap
    project: str | None
    region: str
    tiers: dict[TierName, TierSettings]
    autoscaling: ReplicaAutoscaling
    has_hf_token: bool

    def enabled_tiers(self) -> list[TierName]:
        return [name for name in TierName if self.tiers[name].enabled]

    def problem(self, path: Path_, message: str) -> Problem:
        return locate(self.file, self.lines, ("config", *path), message)


def _strings(value: Any, path: Path_) -> Iterator[tuple[Path_, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _strings(item, (*path, str(key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(item, (*path, index))


def _tier_problems(name: TierName, settings: TierSettings, region: str) -> list[tuple[Path_, str]]:
    facts = TIERS[name]
    found: list[tuple[Path_, str]] = []
    if settings.gpus_per_node not in facts.gpu_counts_per_node:
        found.append(
            (
                ("gpusPerNode",),
                f"{name} nodes come with {', '.join(map(str, facts.gpu_counts_per_node))} GPUs, "
                f"not {settings.gpus_per_node}",
            )
        )
    for index, zone in enumerate(settings.zones):
        if not zone.startswith(f"{region}-"):
            found.append((("zones", index), f"{zone} is not in the stack's region {region}"))
        elif region == PRICES_REGION and zone not in facts.zones_in_price_region:
            found.append(
                (
                    ("zones", index),
                    f"{zone} offers no {facts.gpu_model}; use {', '.join(facts.zones_in_price_region)}",
                )
            )
    return found


def parse_stack_config(
    config: Mapping[str, Any],
    *,
    stack: str,
    file: str,
    lines: LineMap,
    secret_keys: frozenset[str] = frozenset(),
) -> StackSettings:
    """Validate a stack's config map (`project:key` -> value), reporting every problem."""
    problems: list[Problem] = []

    def add(path: Path_, message: str) -> None:
        problems.append(locate(file, lines, ("config", *path), message))

    for key in config:
        if key not in ALLOWED_KEYS:
            add(
                (key,),
                unknown_key_message(key, list(ALLOWED_KEYS)).replace("; allowed keys", "; stacks may only set")
                + " (stacks differ only in tier and autoscaling settings)",
            )
    for path, text in _strings(config, ()):
        if _HF_TOKEN_TEXT.search(text) and not (path == (HF_TOKEN_KEY,) and HF_TOKEN_KEY in secret_keys):
            add(
                path,
                f"a Hugging Face token is written in plain text; delete it and run `{set_secret_command(stack)}`",
            )

    token = config.get(HF_TOKEN_KEY)
    has_hf_token = token is not None
    if isinstance(token, str) and HF_TOKEN_KEY not in secret_keys and not _HF_TOKEN_TEXT.search(token):
        add((HF_TOKEN_KEY,), f"the token must be a secret; run `{set_secret_command(stack)}`")
    elif isinstance(token, Mapping) and set(token) != {"secure"}:
        add((HF_TOKEN_KEY,), f"expected an encrypted `secure:` value; run `{set_secret_command(stack)}`")

    region = config.get(GCP_REGION_KEY)
    if region is None:
        add((GCP_REGION_KEY,), f"required: run `pulumi config set {GCP_REGION_KEY} us-central1 -s {stack}`")
    elif not isinstance(region, str) or not _REGION.match(region):
        add((GCP_REGION_KEY,), f"{region!r} is not a GCP region name like 'us-central1'")
        region = None
    project = config.get(GCP_PROJECT_KEY)
    if project is not None and not isinstance(project, str):
        add((GCP_PROJECT_KEY,), "must be a GCP project id (a string)")
        project = None

    tiers: dict[TierName, TierSettings] = {}
    raw_tiers = config.get(TIERS_KEY)
    if raw_tiers is None:
        add((TIERS_KEY,), f"required: set every tier ({', '.join(TierName)}) with enabled/spot/nodes/zones")
    elif not isinstance(raw_tiers, Mapping):
        add((TIERS_KEY,), "must be a mapping from tier name to its settings")
    else:
        for name in raw_tiers:
            if name not in {t.value for t in TierName}:
                add((TIERS_KEY, name), unknown_key_message(str(name), [t.value for t in TierName]))
        for name in TierName:
            if name.value not in raw_tiers:
                add((TIERS_KEY,), f"tier {name.value!r} is missing: every stack lists every tier")
                continue
            prefix = ("config", TIERS_KEY, name.value)
            tier, tier_problems = validation_problems(TierSettings, raw_tiers[name.value], file, lines, prefix)
            problems += tier_problems
            if tier is not None:
                tiers[name] = tier
                if region is not None:
                    for path, message in _tier_problems(name, tier, region):
                        add((TIERS_KEY, name.value, *path), message)

    raw_autoscaling = config.get(AUTOSCALING_KEY)
    autoscaling = None
    if raw_autoscaling is None:
        add((AUTOSCALING_KEY,), "required: set minReplicas, maxReplicas and the other replica settings")
    else:
        autoscaling, scaling_problems = validation_problems(
            ReplicaAutoscaling, raw_autoscaling, file, lines, ("config", AUTOSCALING_KEY)
        )
        problems += scaling_problems

    if problems or autoscaling is None or region is None:
        raise ConfigError(problems)
    return StackSettings(
        stack=stack,
        file=file,
        lines=lines,
        project=project,
        region=region,
        tiers=tiers,
        autoscaling=autoscaling,
        has_hf_token=has_hf_token,
    )


def stack_file(stack: str, root: Path = Path(".")) -> Path:
    return root / f"Pulumi.{stack}.yaml"


def load_stack_file(path: Path, stack: str | None = None) -> StackSettings:
    """Settings straight from a `Pulumi.<stack>.yaml` file, without the Pulumi engine."""
    stack = stack or path.name.removeprefix("Pulumi.").removesuffix(".yaml")
    data, lines = load_file(path)
    file = str(path)
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError([locate(file, lines, (), "a stack file is a mapping with a `config:` key")])
    problems = [
        locate(file, lines, (key,), unknown_key_message(str(key), list(PULUMI_STACK_FILE_KEYS)))
        for key in data
        if key not in PULUMI_STACK_FILE_KEYS
    ]
    config = data.get("config") or {}
    if not isinstance(config, Mapping):
        problems.append(locate(file, lines, ("config",), "must be a mapping of `project:key: value`"))
        config = {}
    try:
        settings = parse_stack_config(config, stack=stack, file=file, lines=lines)
    except ConfigError as error:
        raise ConfigError(problems + error.problems) from None
    if problems:
        raise ConfigError(problems)
    return settings


def load_stack(stack: str, root: Path = Path(".")) -> StackSettings:
    return load_stack_file(stack_file(stack, root), stack)
