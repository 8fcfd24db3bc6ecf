"""The running stack's config, read from the Pulumi engine.

Only the reading lives here; `infra.settings.settings_from_engine` validates it exactly like
the stack file, so a mistake reads `FILE:LINE: key: message` under `pulumi up` too.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any, Final

import pulumi
from pulumi.runtime import config as runtime_config

from infra.settings import API_KEYS_KEY, AUTOSCALING_KEY, HF_TOKEN_KEY, PROJECT, TIERS_KEY, EngineConfig

# Structured values the engine hands over as JSON text.
_OBJECT_KEYS: Final = (TIERS_KEY, AUTOSCALING_KEY, API_KEYS_KEY)


def engine_config() -> EngineConfig:
    """Every config value the engine passed to this program, and which keys are secret."""
    raw: dict[str, Any] = {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key in _OBJECT_KEYS and isinstance(value, str):
            # A value that is not JSON stays a string; the settings check reports it with its line.
            with contextlib.suppress(json.JSONDecodeError):
                value = json.loads(value)
        values[key] = value
    secret_keys = {key for key in raw if runtime_config.is_config_secret(key)}
    secret_keys |= set(runtime_config.get_config_secret_keys_env())
    return EngineConfig(values=values, secret_keys=frozenset(secret_keys))


def hf_token() -> pulumi.Output[str]:
    return pulumi.Config(PROJECT).require_secret(HF_TOKEN_KEY.removeprefix(f"{PROJECT}:"))


def extra_api_keys() -> pulumi.Output[list[str]]:
    """`llm-serving:apiKeys` as a secret list; empty when unset (settings validated it already)."""
    keys = pulumi.Config(PROJECT).get_secret_object(API_KEYS_KEY.removeprefix(f"{PROJECT}:"))
    if keys is None:
        return pulumi.Output.secret([])
    return keys.apply(lambda value: [str(key) for key in value] if isinstance(value, list) else [])
