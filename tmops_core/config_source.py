"""Reading a config file: the file's ownership and mode checked and never through a link, a
strict YAML loader (no duplicate keys, no tags that build objects), and ``${VAR}`` expansion
of the values. :mod:`tmops_core.config` structures the result into the config model.
"""

from __future__ import annotations

import functools
import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tmops_hookspecs import ConfigError

__all__ = ["MAX_CONFIG_BYTES", "expand", "parse_yaml", "read_config_file"]

#: a config file bigger than this is refused unread (a config is a few KiB)
MAX_CONFIG_BYTES = 1024 * 1024
_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

# --------------------------------------------------------------------------------------------
# Reading a file safely
# --------------------------------------------------------------------------------------------


@functools.cache
def _strict_loader() -> type[Any]:
    """The YAML loader, built on first use: a command that reads no config file (the defaults)
    never imports PyYAML."""
    import yaml

    class _StrictLoader(yaml.SafeLoader):
        """SafeLoader without aliases (billion-laughs bombs) or duplicate keys."""

        def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
            if self.check_event(yaml.AliasEvent):
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise ConfigError(
                    f"YAML aliases are not allowed in a tmops config (line {mark.line + 1})",
                    hint="write the repeated value out where it is needed",
                )
            return super().compose_node(parent, index)

        def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
            seen: set[Any] = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if not isinstance(key, str | int | float | bool | None):
                    raise ConfigError(
                        f"a mapping key must be plain text (line {key_node.start_mark.line + 1})"
                    )
                if key in seen:
                    raise ConfigError(
                        f"key {key!r} appears twice in one mapping "
                        f"(line {key_node.start_mark.line + 1})",
                        hint="keep one of them",
                    )
                seen.add(key)
            return super().construct_mapping(node, deep=deep)

    return _StrictLoader


def read_config_file(path: Path) -> str:
    try:
        # O_NONBLOCK: a FIFO planted as the config must not hang tmops in open()
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        raise ConfigError(
            f"cannot read config file {path}: {exc.strerror}",
            hint="check the path given by --config or $TMOPS_CONFIG",
        ) from exc
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise ConfigError(f"config {path} is not a regular file")
    with os.fdopen(fd, "rb") as handle:
        if info.st_mode & stat.S_IWOTH:
            raise ConfigError(
                f"config {path} is writable by every user, so anyone could change what tmops runs",
                hint=f"chmod o-w {path}",
            )
        if info.st_uid not in (os.getuid(), 0):
            raise ConfigError(
                f"config {path} belongs to another user (uid {info.st_uid})",
                hint="use a config file you own",
            )
        data = handle.read(MAX_CONFIG_BYTES + 1)
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"config {path} is larger than 1 MiB; a tmops config is a few KiB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config {path} is not UTF-8 text (byte {exc.start})") from exc


def parse_yaml(text: str, source: str) -> Any:
    import yaml

    try:
        # nosemgrep: tmops-yaml-safe-load-only -- _StrictLoader is a SafeLoader, no aliases
        return yaml.load(text, Loader=_strict_loader())  # noqa: S506 - _StrictLoader is a SafeLoader  # nosec B506
    except yaml.YAMLError as exc:
        raise ConfigError(f"config {source} is not valid YAML: {exc}") from exc
    except RecursionError as exc:
        raise ConfigError(f"config {source} is nested too deeply to be a tmops config") from exc


# --------------------------------------------------------------------------------------------
# ${VAR} expansion
# --------------------------------------------------------------------------------------------


def expand(node: Any, env: Mapping[str, str], path: str, problems: list[str]) -> Any:
    if isinstance(node, str):
        return _expand_string(node, env, path, problems)
    if isinstance(node, dict):
        return {key: expand(value, env, f"{path}.{key}", problems) for key, value in node.items()}
    if isinstance(node, list):
        return [expand(item, env, f"{path}[{i}]", problems) for i, item in enumerate(node)]
    return node


def _expand_string(text: str, env: Mapping[str, str], path: str, problems: list[str]) -> str:
    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, default = match.group(1), match.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        problems.append(
            f"environment variable {name} is not set (write ${{{name}:-default}} for a default)"
            f" @ {path}"
        )
        return ""

    # One pass: a value that itself contains ${...} is taken literally, never expanded again.
    return _VAR.sub(substitute, text)
