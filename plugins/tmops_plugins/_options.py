"""Strict reading of a plugin's options mapping (unknown keys and wrong types are errors)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from tmops_hookspecs import ConfigError

T = TypeVar("T")


def check_keys(plugin: str, options: Mapping[str, Any], allowed: set[str]) -> None:
    """Refuse option keys the plugin does not know, naming every one of them."""
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ConfigError(
            f"unknown option(s) for '{plugin}': {', '.join(unknown)}",
            hint=f"'{plugin}' accepts: {', '.join(sorted(allowed)) or 'no options'}",
        )


def get(plugin: str, options: Mapping[str, Any], key: str, kind: type[T], default: T) -> T:
    """Read one option, refusing a value of the wrong type (``"5"`` is not an int)."""
    value = options.get(key, default)
    # bool is an int subclass; an int option given `true` is a mistake, not 1.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(
            f"option '{key}' of '{plugin}' must be {kind.__name__}, "
            f"got {type(value).__name__} {value!r}"
        )
    return value
