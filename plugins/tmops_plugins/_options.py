"""Strict reading of a plugin's options mapping (unknown keys and wrong types are errors)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, TypeVar
from urllib.parse import urlsplit

from tmops_hookspecs import ConfigError

T = TypeVar("T")

#: an environment variable's name
VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: an HTTP header's name (the token characters people use)
HEADER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")


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


def seconds(plugin: str, options: Mapping[str, Any], key: str, default: float) -> float:
    """Read a duration in seconds: a number above 0 (``true`` is not one)."""
    value = options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigError(f"'{plugin}.{key}' must be a number of seconds above 0, got {value!r}")
    return float(value)


def http_url(plugin: str, key: str, url: str, *, example: str) -> str:
    """Refuse anything but an http(s) URL with a host, and one that holds credentials (they
    belong in an environment variable, not in the config)."""
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ConfigError(
            f"'{plugin}.{key}' must be an http:// or https:// URL with a host, got {url!r}",
            hint=f"e.g. {example}",
        )
    if parts.username or parts.password:
        raise ConfigError(
            f"'{plugin}.{key}' holds credentials",
            hint="put the secret in an environment variable and name it in the options made "
            "for it, so the config holds none",
        )
    return url
