"""Stack settings from the Pulumi engine's config, validated exactly like the stack file.

Values come from the engine (`pulumi config`); lines come from `Pulumi.<stack>.yaml` when it
exists, so a bad value is reported at the line a person edits. Every problem becomes one
line of a `pulumi.RunError`: no traceback, nothing created.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import pulumi
from pulumi.runtime import config as runtime_config

from infra.settings import AUTOSCALING_KEY, HF_TOKEN_KEY, TIERS_KEY, StackSettings, parse_stack_config
from serve.located_yaml import load_file
from serve.problems import ConfigError, LineMap

REPO_ROOT: Final = Path(__file__).resolve().parents[1]
_OBJECT_KEYS: Final = (TIERS_KEY, AUTOSCALING_KEY)


def engine_config() -> tuple[dict[str, Any], frozenset[str]]:
    """Every config value the engine passed to this program, and which keys are secret."""
    raw: dict[str, Any] = {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}
    config: dict[str, Any] = {}
    for key, value in raw.items():
        if key in _OBJECT_KEYS and isinstance(value, str):
            # A value that is not JSON stays a string; parse_stack_config reports it with its line.
            with contextlib.suppress(json.JSONDecodeError):
                value = json.loads(value)
        config[key] = value
    secret_keys = {key for key in raw if runtime_config.is_config_secret(key)}
    secret_keys |= set(runtime_config.get_config_secret_keys_env())
    return config, frozenset(secret_keys)


def _stack_file_lines(path: Path) -> tuple[Mapping[str, Any], LineMap]:
    if not path.exists():
        return {}, LineMap()
    data, lines = load_file(path)
    config = data.get("config") if isinstance(data, Mapping) else None
    return (config if isinstance(config, Mapping) else {}), lines


def load_settings(stack: str | None = None, root: Path = REPO_ROOT) -> StackSettings:
    """The validated settings of the running stack, or a RunError naming file, line and key."""
    stack = stack or pulumi.get_stack()
    path = root / f"Pulumi.{stack}.yaml"
    file = path.name if path.exists() else f"Pulumi.{stack}.yaml (engine config)"
    try:
        file_config, lines = _stack_file_lines(path)
        engine_values, secret_keys = engine_config()
        # Under `pulumi up` the engine passes every key of the stack file, so the file adds
        # nothing; a harness or automation that passes only some keys still gets the stack's
        # tiers and autoscaling from the file, and its own values win.
        config = {**file_config, **engine_values}
        # A token the engine holds as a secret but the file has in plain text is still a
        # leak in git: judge the file's own value, not the decrypted one.
        file_token = file_config.get(HF_TOKEN_KEY)
        if isinstance(file_token, str):
            config[HF_TOKEN_KEY] = file_token
            secret_keys = secret_keys - {HF_TOKEN_KEY}
        elif HF_TOKEN_KEY in config:
            # Encrypted in the file (`secure:`) or injected by the engine: it is a secret.
            secret_keys = secret_keys | {HF_TOKEN_KEY}
        return parse_stack_config(
            config, stack=stack, file=file, lines=lines, secret_keys=secret_keys, require_hf_token=True
        )
    except ConfigError as error:
        raise pulumi.RunError(str(error)) from None


def hf_token() -> pulumi.Output[str]:
    return pulumi.Config("llm-serving").require_secret("hfToken")
