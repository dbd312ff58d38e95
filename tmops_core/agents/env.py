"""The environment an agent starts with: an allowlist of tmops' own, plus what is asked for.

This module owns :data:`BASE_ENV_ALLOWLIST`, :data:`BASE_ENV_PREFIXES` and :func:`build_env`,
which filters an environment down to them (plus a config's extra names and what the provider's
spec declares, see :func:`provider_allow`) and validates the variables a provider or config
adds. The core names no agent's variables: each provider declares its own.

It must never pass a variable that is not allowlisted by name or prefix (credentials such as
``AWS_SECRET_ACCESS_KEY`` or ``GITHUB_TOKEN`` stay behind unless a config names them), never
change ``os.environ``, and never start a process.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

from tmops_hookspecs import ProviderError, ProviderSpec

__all__ = ["BASE_ENV_ALLOWLIST", "BASE_ENV_PREFIXES", "build_env", "provider_allow"]

#: Variables passed from tmops' own environment to every agent, by exact name.
BASE_ENV_ALLOWLIST: tuple[str, ...] = (
    "HOME",
    "PATH",
    "USER",
    "LOGNAME",
    "SHELL",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TERM",
    "TMPDIR",
    "TZ",
    "IS_SANDBOX",
    "NO_COLOR",
)
#: Variables passed to every agent by prefix (locale); an agent's own come from its provider.
BASE_ENV_PREFIXES: tuple[str, ...] = ("LC_",)


def provider_allow(spec: ProviderSpec | None, config_allow: Iterable[str] = ()) -> tuple[str, ...]:
    """The ``allow`` of :func:`build_env` for an agent of ``spec``: the config's entries, then
    the spec's ``env_names`` and its ``env_prefixes`` (as ``PREFIX*``)."""
    declared: tuple[str, ...] = ()
    if spec is not None:
        declared = (*spec.env_names, *(f"{prefix}*" for prefix in spec.env_prefixes))
    return (*config_allow, *declared)


def build_env(
    extra: Mapping[str, str],
    *,
    allow: Iterable[str] = (),
    environ: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment of an agent: the allowlisted part of ``environ``, then ``extra`` on top.

    ``environ`` defaults to ``os.environ``. A variable passes if its name is in
    :data:`BASE_ENV_ALLOWLIST` or in ``allow``, or starts with one of
    :data:`BASE_ENV_PREFIXES`; an ``allow`` entry ending in ``*`` is a prefix (``NODE_*``).
    ``extra`` (the provider's ``Invocation.env``, then the config's env) always wins. Nothing
    else leaks: credentials such as ``AWS_SECRET_ACCESS_KEY`` or ``GITHUB_TOKEN`` stay behind
    unless a config names them.
    """
    source = os.environ if environ is None else environ
    names = set(BASE_ENV_ALLOWLIST)
    prefixes = list(BASE_ENV_PREFIXES)
    for entry in allow:
        if entry.endswith("*"):
            if entry[:-1]:
                prefixes.append(entry[:-1])
        else:
            names.add(entry)
    prefix_tuple = tuple(prefixes)
    env = {
        name: value
        for name, value in source.items()
        if name in names or name.startswith(prefix_tuple)
    }
    for name, value in extra.items():
        if not isinstance(name, str) or not name or "=" in name or "\0" in name:
            raise ProviderError(f"invalid environment variable name {name!r} for the agent")
        if not isinstance(value, str) or "\0" in value:
            raise ProviderError(f"environment variable {name} for the agent must be a string")
        env[name] = value
    return env
