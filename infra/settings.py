"""Stack settings: the only things a stack (dev, prod) may change are GPU tiers and autoscaling
(and, optionally, the email address alerts notify).

Settings come from a `Pulumi.<stack>.yaml` file (offline: tests, the plan report) or from
the Pulumi engine's config (inside `pulumi up/preview`); both go through
`parse_stack_config`, so a mistake reads the same either way: `FILE:LINE: key: message`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Final

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationInfo,
    field_validator,
)

from configcheck.models import CamelStrict, not_above, not_below
from configcheck.problems import ConfigError, LineMap, Path_, Problem, locate
from configcheck.pydantic_errors import (
    allowed_keys,
    closest_key,
    describe,
    unknown_key_message,
    validation_problems,
)
from configcheck.secrets import HF_TOKEN_PATTERN, looks_like_secret
from configcheck.yaml_lines import load_file
from serve.autoscaling import ReplicaAutoscaling
from serve.paths import REPO_ROOT
from serve.tiers import PRICES_REGION, TIERS, TierName

PROJECT: Final = "llm-serving"
TIERS_KEY: Final = f"{PROJECT}:tiers"
AUTOSCALING_KEY: Final = f"{PROJECT}:autoscaling"
HF_TOKEN_KEY: Final = f"{PROJECT}:hfToken"
# Optional: where alert notifications go (one email channel). Absent: alerts open incidents in
# Cloud Monitoring and notify no one. Not a tier or autoscaling setting, but it changes no
# serving resource, only who hears about an alert; tests/test_program.py allows exactly that.
ALERT_EMAIL_KEY: Final = f"{PROJECT}:alertEmail"
# Optional: more keys for the OpenAI endpoint besides the one the stack generates, as a secret
# list (one per consumer; add and remove them to rotate). Like the token, never plain text.
API_KEYS_KEY: Final = f"{PROJECT}:apiKeys"
GCP_PROJECT_KEY: Final = "gcp:project"
GCP_REGION_KEY: Final = "gcp:region"
ALLOWED_KEYS: Final = (
    GCP_PROJECT_KEY,
    GCP_REGION_KEY,
    TIERS_KEY,
    AUTOSCALING_KEY,
    HF_TOKEN_KEY,
    ALERT_EMAIL_KEY,
    API_KEYS_KEY,
)
# Top-level keys Pulumi itself writes into stack files besides `config`.
PULUMI_STACK_FILE_KEYS: Final = ("config", "secretsprovider", "encryptedkey", "encryptionsalt", "environment")

MAX_NODES_PER_TIER: Final = 32
_TIER_FIELDS: Final = (
    "enabled, spot, gpusPerNode, minNodes, maxNodes and zones (onDemandFallback and spareNodes optional)"
)
_ZONE: Final = re.compile(r"^[a-z]+-[a-z]+\d+-[a-z]$")
_REGION: Final = re.compile(r"^[a-z]+-[a-z]+\d+$")
_PROJECT: Final = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")
# One address, the shape Cloud Monitoring's email channel takes (local@domain.tld); not RFC 5322.
_EMAIL: Final = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$"
)


def _zone_name(zone: str) -> str:
    if not _ZONE.match(zone):
        raise ValueError(f"{zone!r} is not a GCP zone name; write it like 'us-central1-a'")
    return zone


def set_secret_command(stack: str) -> str:
    return f"pulumi config set --secret {HF_TOKEN_KEY} <token> -s {stack}"


class TierSettings(CamelStrict):
    """One GPU tier's node pool in a stack (`llm-serving:tiers.<tier>`)."""

    enabled: StrictBool = Field(description="Create the tier's pool and serve its catalog models.")
    spot: StrictBool = Field(description="Spot VMs (about a third of the price, 30 s reclaim notice).")
    gpus_per_node: Annotated[
        StrictInt,
        Field(ge=1, le=16, description="GPUs per node; picks the machine shape from the tier table."),
    ]
    min_nodes: Annotated[
        StrictInt, Field(ge=0, le=MAX_NODES_PER_TIER, description="Nodes kept running with no traffic.")
    ]
    max_nodes: Annotated[
        StrictInt,
        Field(ge=1, le=MAX_NODES_PER_TIER, description="Most nodes the pool and its worker group grow to."),
    ]
    # Each zone is checked as an item, so a bad one is reported on its own line.
    zones: Annotated[
        list[Annotated[str, AfterValidator(_zone_name)]],
        Field(min_length=1, max_length=6, description="Zones of the stack's region the pool may use."),
    ]

    @field_validator("zones")
    @classmethod
    def _zone_names(cls, zones: list[str]) -> list[str]:
        twice = sorted({zone for zone in zones if zones.count(zone) > 1})
        if twice:
            raise ValueError(f"{', '.join(twice)} listed twice; list each zone once")
        return zones

    on_demand_fallback: StrictBool = Field(
        default=False,
        description=(
            "Add an on-demand pool (same machine, zones and maxNodes, scaling from zero) that GKE "
            "scales up only when the spot pool cannot (no spot capacity, or at maxNodes); needs spot: true."
        ),
    )

    spare_nodes: Annotated[
        StrictInt,
        Field(
            default=0,
            ge=0,
            le=MAX_NODES_PER_TIER,
            description=(
                "Nodes of the tier's own pool (never the on-demand fallback) kept free for the next "
                "worker: placeholder pods at the "
                "lowest priority that still makes GKE add a node, preempted by any worker (a new "
                "replica skips node creation and the driver install); each costs a node around the clock."
            ),
        ),
    ]

    _nodes_ordered = not_below("max_nodes", "min_nodes", fix="make minNodes <= maxNodes")
    # On spareNodes' own line: the spare nodes are nodes of the pool, which never grows past maxNodes.
    _spare_within_pool = not_above(
        "spare_nodes", "max_nodes", fix="set spareNodes <= maxNodes (or raise maxNodes)"
    )

    @field_validator("on_demand_fallback")
    @classmethod
    def _fallback_backs_spot(cls, fallback: bool, info: ValidationInfo) -> bool:
        # On the fallback's own line: that is the setting to remove, or spot the one to turn on.
        if fallback and info.data.get("spot") is False:
            raise ValueError(
                "an on-demand fallback backs a spot pool, but this tier's pool is already on-demand "
                "(spot: false); set spot: true or remove onDemandFallback"
            )
        return fallback


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
    alert_email: str | None = None
    extra_api_keys: int = 0
    """How many keys `llm-serving:apiKeys` adds (their values reach the program only as secrets)."""

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
        counts = ", ".join(map(str, facts.gpu_counts_per_node))
        found.append(
            (
                ("gpusPerNode",),
                f"{name} nodes come with {counts} GPUs, not {settings.gpus_per_node}; "
                f"set gpusPerNode to one of {counts}",
            )
        )
    for index, zone in enumerate(settings.zones):
        if not zone.startswith(f"{region}-"):
            found.append(
                (
                    ("zones", index),
                    f"{zone} is not in the stack's region {region}; use zones named {region}-<letter> "
                    f"or change {GCP_REGION_KEY}",
                )
            )
        elif region == PRICES_REGION and zone not in facts.zones_in_price_region:
            found.append(
                (
                    ("zones", index),
                    f"{zone} offers no {facts.gpu_model}; use {', '.join(facts.zones_in_price_region)}",
                )
            )
    return found


def _snake_case_problems(
    model: type[BaseModel], raw: Any, file: str, lines: LineMap, prefix: Path_
) -> list[Problem]:
    """Keys written by their Python name (`gpus_per_node`): pydantic would take them, but stack
    keys are camelCase, and a file holding both spellings would silently use only one."""
    if not isinstance(raw, Mapping):
        return []
    camel = {
        name: field.alias for name, field in model.model_fields.items() if field.alias not in (None, name)
    }
    return [
        locate(
            file,
            lines,
            (*prefix, key),
            f"unknown key {key!r}; did you mean {camel[key]!r}? (stack keys are camelCase)",
        )
        for key in raw
        if key in camel
    ]


def _unknown_config_key_message(key: str) -> str:
    """An unknown `namespace:name` key: a near spelling of an allowed key, or what a stack may set."""
    close = closest_key(key, list(ALLOWED_KEYS), cutoff=0.8)
    namespace, _, name = key.rpartition(":")
    if close is None and namespace:
        same_namespace = {k.rpartition(":")[2]: k for k in ALLOWED_KEYS if k.startswith(f"{namespace}:")}
        near = closest_key(name, list(same_namespace))
        close = same_namespace[near] if near is not None else None
    if close is not None:
        return f"unknown key {key!r}; did you mean {close!r}?"
    where = ""
    if key == "gcp:zone":
        where = f"; zones are set per tier in {TIERS_KEY}.<tier>.zones"
    return (
        f"unknown key {key!r}: a stack may only set {', '.join(ALLOWED_KEYS)} "
        f"(stacks differ only in tier and autoscaling settings); remove it{where}"
    )


API_KEY_PATTERN: Final = re.compile(r"^[\x21-\x7e]{16,256}$")


def set_api_key_command(stack: str, index: int = 0) -> str:
    return f"pulumi config set --secret --path '{API_KEYS_KEY}[{index}]' <key> -s {stack}"


def _is_secure(value: Any) -> bool:
    return isinstance(value, Mapping) and set(value) == {"secure"} and isinstance(value.get("secure"), str)


def _api_key_count(value: Any, is_secret: bool, stack: str, add: Callable[[Path_, str], None]) -> int:
    """How many extra API keys `llm-serving:apiKeys` holds, reporting any that is not a secret.

    In a stack file: the whole list encrypted (`secure:`: its length is unknown offline, counted as
    one or more) or a list of encrypted items (`--path '...[0]'`). From the engine, where the
    values are decrypted: a list of strings (or its JSON text) the engine holds as a secret."""
    if value is None:
        return 0
    how = f"set each key with `{set_api_key_command(stack)}` (then [1], [2], ...)"
    if _is_secure(value):
        return 1
    if isinstance(value, str) and is_secret:
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            add((API_KEYS_KEY,), f"expected a list of keys, got text that is not JSON; {how}")
            return 0
    if not isinstance(value, list) or not value:
        got = "an empty list" if value == [] else describe(value)
        add((API_KEYS_KEY,), f"expected a non-empty list of secret keys, got {got}; {how}")
        return 0
    for index, item in enumerate(value):
        if _is_secure(item):
            continue
        if not isinstance(item, str):
            add((API_KEYS_KEY, index), f"expected an encrypted key, got {describe(item)}; {how}")
        elif not is_secret:
            add(
                (API_KEYS_KEY, index),
                "an API key is written in plain text; delete it from the file, stop using it, "
                f"and {how.replace('set each key with', 'run')}",
            )
        elif not API_KEY_PATTERN.match(item):
            add(
                (API_KEYS_KEY, index),
                "is not a usable key: 16 to 256 visible ASCII characters, no spaces (it goes into an "
                f"`Authorization: Bearer` header); {how}",
            )
    return len(value)


def parse_stack_config(
    config: Mapping[str, Any],
    *,
    stack: str,
    file: str,
    lines: LineMap,
    secret_keys: frozenset[str] = frozenset(),
    require_hf_token: bool = False,
) -> StackSettings:
    """Validate a stack's config map (`project:key` -> value), reporting every problem.

    `require_hf_token`: the Pulumi program needs the token, so it asks for it to be present
    (and a secret). The offline file path leaves it optional: a committed stack file holds
    the token only in encrypted form, which needs the Pulumi CLI to write.
    """
    problems: list[Problem] = []
    set_secret = set_secret_command(stack)

    def add(path: Path_, message: str) -> None:
        problems.append(locate(file, lines, ("config", *path), message))

    for key in config:
        if key not in ALLOWED_KEYS:
            add((str(key),), _unknown_config_key_message(str(key)))
    for path, text in _strings(config, ()):
        if HF_TOKEN_PATTERN.search(text) and not (path == (HF_TOKEN_KEY,) and HF_TOKEN_KEY in secret_keys):
            add(
                path,
                "a Hugging Face token is written in plain text; delete it from the file, revoke it on "
                f"huggingface.co if it was committed, and run `{set_secret}`",
            )

    token = config.get(HF_TOKEN_KEY)
    has_hf_token = token is not None
    if token is None:
        if require_hf_token:
            add((HF_TOKEN_KEY,), f"the Hugging Face token is missing; run `{set_secret}`")
    elif isinstance(token, Mapping):
        if set(token) != {"secure"} or not isinstance(token.get("secure"), str):
            add((HF_TOKEN_KEY,), f"expected an encrypted `secure:` value; run `{set_secret}`")
    elif not isinstance(token, str) or not token.strip():
        add(
            (HF_TOKEN_KEY,),
            f"expected the token as an encrypted secret, got {describe(token)}; run `{set_secret}`",
        )
    elif HF_TOKEN_KEY not in secret_keys and not HF_TOKEN_PATTERN.search(token):
        add((HF_TOKEN_KEY,), f"the token is plain text, not a secret; run `{set_secret}`")

    region = config.get(GCP_REGION_KEY)
    if region is None:
        add((GCP_REGION_KEY,), f"required: run `pulumi config set {GCP_REGION_KEY} us-central1 -s {stack}`")
    elif not isinstance(region, str) or not _REGION.match(region):
        add(
            (GCP_REGION_KEY,),
            f"{region!r} is not a GCP region name like 'us-central1'; "
            f"run `pulumi config set {GCP_REGION_KEY} <region> -s {stack}`",
        )
        region = None
    project = config.get(GCP_PROJECT_KEY)
    if project is not None and (not isinstance(project, str) or not _PROJECT.match(project)):
        add(
            (GCP_PROJECT_KEY,),
            f"{project!r} is not a GCP project id (6-30 lowercase letters, digits and '-', starting "
            f"with a letter); run `pulumi config set {GCP_PROJECT_KEY} <project-id> -s {stack}`",
        )
        project = None

    alert_email = config.get(ALERT_EMAIL_KEY)
    if alert_email is not None and not (isinstance(alert_email, str) and _EMAIL.match(alert_email)):
        shown = "" if isinstance(alert_email, str) and looks_like_secret(alert_email) else f"{alert_email!r} "
        add(
            (ALERT_EMAIL_KEY,),
            f"{shown}is not an email address; write one address like oncall@example.com, or remove the "
            f"key to send alerts nowhere (`pulumi config set {ALERT_EMAIL_KEY} <address> -s {stack}`)",
        )
        alert_email = None

    extra_api_keys = _api_key_count(config.get(API_KEYS_KEY), API_KEYS_KEY in secret_keys, stack, add)

    tiers: dict[TierName, TierSettings] = {}
    raw_tiers = config.get(TIERS_KEY)
    tier_names = [t.value for t in TierName]
    if raw_tiers is None:
        add(
            (TIERS_KEY,),
            f"required: add `{TIERS_KEY}:` with every tier ({', '.join(tier_names)}), "
            f"each with {_TIER_FIELDS}",
        )
    elif not isinstance(raw_tiers, Mapping):
        add(
            (TIERS_KEY,),
            f"expected a mapping from tier name ({', '.join(tier_names)}) to its settings, "
            f"got {describe(raw_tiers)}",
        )
    else:
        for name in raw_tiers:
            if name not in tier_names:
                add(
                    (TIERS_KEY, str(name)),
                    unknown_key_message(str(name), tier_names).replace("unknown key", "unknown tier")
                    + f" (the tiers are {', '.join(tier_names)})",
                )
        for tier_name in TierName:
            if tier_name.value not in raw_tiers:
                add(
                    (TIERS_KEY,),
                    f"tier {tier_name.value!r} is missing: add `{tier_name.value}:` with {_TIER_FIELDS} "
                    "(every stack lists every tier; `enabled: false` turns one off)",
                )
                continue
            prefix = ("config", TIERS_KEY, tier_name.value)
            problems += _snake_case_problems(TierSettings, raw_tiers[tier_name.value], file, lines, prefix)
            tier, tier_problems = validation_problems(
                TierSettings, raw_tiers[tier_name.value], file, lines, prefix
            )
            problems += tier_problems
            if tier is not None:
                tiers[tier_name] = tier
                if region is not None:
                    for path, message in _tier_problems(tier_name, tier, region):
                        add((TIERS_KEY, tier_name.value, *path), message)

    raw_autoscaling = config.get(AUTOSCALING_KEY)
    autoscaling = None
    if raw_autoscaling is None:
        fields = ", ".join(allowed_keys(ReplicaAutoscaling))
        add((AUTOSCALING_KEY,), f"required: add `{AUTOSCALING_KEY}:` with {fields}")
    else:
        problems += _snake_case_problems(
            ReplicaAutoscaling, raw_autoscaling, file, lines, ("config", AUTOSCALING_KEY)
        )
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
        alert_email=alert_email,
        extra_api_keys=extra_api_keys,
    )


def stack_file(stack: str, root: Path = REPO_ROOT) -> Path:
    """`Pulumi.<stack>.yaml` under `root`: the one place the stack-file name is spelled."""
    return root / f"Pulumi.{stack}.yaml"


def _read_stack_file(path: Path) -> tuple[Any, LineMap]:
    data, lines = load_file(path)
    return ({} if data is None else data), lines


def _stack_file_problems(
    data: Any, file: str, lines: LineMap
) -> tuple[Mapping[str, Any] | None, list[Problem]]:
    """The file's `config:` mapping (None if there is none to read) and its top-level problems."""
    if not isinstance(data, Mapping):
        return None, [
            locate(
                file,
                lines,
                (),
                f"a stack file is a mapping with a `config:` key, got {describe(data)}: "
                "put the settings under `config:`",
            )
        ]
    problems = [
        locate(file, lines, (str(key),), unknown_key_message(str(key), list(PULUMI_STACK_FILE_KEYS)))
        for key in data
        if key not in PULUMI_STACK_FILE_KEYS
    ]
    config = data.get("config") or {}
    if not isinstance(config, Mapping):
        problems.append(
            locate(
                file,
                lines,
                ("config",),
                f"expected a mapping of `project:key: value` lines, got {describe(config)}",
            )
        )
        return None, problems
    return config, problems


def load_stack_file(path: Path, stack: str | None = None) -> StackSettings:
    """Settings straight from a `Pulumi.<stack>.yaml` file, without the Pulumi engine."""
    stack = stack or path.name.removeprefix("Pulumi.").removesuffix(".yaml")
    data, lines = _read_stack_file(path)
    file = str(path)
    config, problems = _stack_file_problems(data, file, lines)
    if config is None:
        raise ConfigError(problems)
    try:
        settings = parse_stack_config(config, stack=stack, file=file, lines=lines)
    except ConfigError as error:
        raise ConfigError(problems + error.problems) from None
    if problems:
        raise ConfigError(problems)
    return settings


def load_stack(stack: str, root: Path = REPO_ROOT) -> StackSettings:
    return load_stack_file(stack_file(stack, root), stack)


@dataclass(frozen=True)
class EngineConfig:
    """What the Pulumi engine passed to a running program: every `project:key` value, and which
    of those keys it holds as secrets."""

    values: Mapping[str, Any]
    secret_keys: frozenset[str] = frozenset()


def settings_from_engine(stack: str, engine: EngineConfig, root: Path = REPO_ROOT) -> StackSettings:
    """The running stack's settings: the engine's values, validated like the stack file.

    Lines come from `Pulumi.<stack>.yaml` when it exists, so a bad value is reported at the line
    a person edits. Under `pulumi up` the engine passes every key of the stack file, so the file
    adds nothing; a harness or the Automation API that passes only some keys still gets the
    stack's tiers and autoscaling from the file, and its own values win.
    """
    path = stack_file(stack, root)
    file_config: Mapping[str, Any] = {}
    lines = LineMap()
    if path.exists():
        data, lines = _read_stack_file(path)
        found = data.get("config") if isinstance(data, Mapping) else None
        file_config = found if isinstance(found, Mapping) else {}
    file = path.name if path.exists() else f"{path.name} (engine config)"
    config = {**file_config, **engine.values}
    secret_keys = engine.secret_keys
    # A token the engine holds as a secret but the file has in plain text is still a leak in
    # git: judge the file's own value, not the decrypted one.
    file_token = file_config.get(HF_TOKEN_KEY)
    if isinstance(file_token, str):
        config[HF_TOKEN_KEY] = file_token
        secret_keys = secret_keys - {HF_TOKEN_KEY}
    elif HF_TOKEN_KEY in config:
        # Encrypted in the file (`secure:`) or injected by the engine: it is a secret.
        secret_keys = secret_keys | {HF_TOKEN_KEY}
    # The same for API keys: a plain-text key in the file is judged as written there.
    file_keys = file_config.get(API_KEYS_KEY)
    if isinstance(file_keys, list) and any(isinstance(item, str) for item in file_keys):
        config[API_KEYS_KEY] = file_keys
        secret_keys = secret_keys - {API_KEYS_KEY}
    return parse_stack_config(
        config, stack=stack, file=file, lines=lines, secret_keys=secret_keys, require_hf_token=True
    )
