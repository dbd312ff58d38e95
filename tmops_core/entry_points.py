"""The entry points of one group in the installed distributions, found the way
:mod:`importlib.metadata` finds them but without importing it.

Every command loads the plugins, and ``importlib.metadata`` costs about as much to import as
click itself (it pulls in email, zipfile and csv), so a read command such as ``tmops status``
would spend more on finding the plugins than on its work. What is read is what
``importlib.metadata.entry_points(group=...)`` reads: the ``*.dist-info`` and ``*.egg-info``
folders of every ``sys.path`` folder, in order, the first distribution of a name winning, and
their ``entry_points.txt``. Zipped path entries (eggs) are not searched.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

__all__ = ["Distribution", "EntryPoint", "entry_points"]

_INFO_SUFFIXES = (".dist-info", ".egg-info")
_NAME_SEPARATORS = re.compile(r"[-_.]+")


class Distribution(NamedTuple):
    """The installed distribution an entry point comes from."""

    name: str | None
    version: str | None


class EntryPoint(NamedTuple):
    """``name = module:attribute`` in the group, and where it is declared."""

    name: str
    value: str
    group: str
    dist: Distribution | None

    def load(self) -> Any:
        """Import the module and return the attribute (the module itself if none is named)."""
        module, _, attribute = self.value.partition(":")
        loaded: Any = importlib.import_module(module.strip())
        for part in filter(None, attribute.strip().split(".")):
            loaded = getattr(loaded, part)
        return loaded


def entry_points(group: str) -> list[EntryPoint]:
    """Every entry point of ``group``, in ``sys.path`` order (a distribution's first copy)."""
    found: list[EntryPoint] = []
    seen: set[str] = set()
    for folder, stem in _info_folders():
        key = _NAME_SEPARATORS.sub("_", stem.partition("-")[0]).lower()
        if key in seen:
            continue
        seen.add(key)
        declared = _read(os.path.join(folder, "entry_points.txt"))
        if declared is None or f"[{group}]" not in declared:
            continue
        dist = _distribution(folder)
        found += [EntryPoint(name, value, group, dist) for name, value in _group(declared, group)]
    return found


def _info_folders() -> Iterator[tuple[str, str]]:
    for entry in sys.path:
        root = entry or "."
        try:
            names = sorted(os.listdir(root))
        except OSError:  # a zip, or a folder that is gone
            continue
        for name in names:
            if name.endswith(_INFO_SUFFIXES):
                yield os.path.join(root, name), name.rsplit(".", 1)[0]


def _read(path: str) -> str | None:
    # Installed metadata, outside any project: read as importlib.metadata reads it.
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def _group(text: str, group: str) -> Iterator[tuple[str, str]]:
    """The ``name = value`` lines of the section ``[group]`` of an entry_points.txt."""
    section = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip()
        elif section == group and "=" in line:
            name, _, value = line.partition("=")
            yield name.strip(), value.strip()


def _distribution(folder: str) -> Distribution:
    """Name and version from the metadata's headers (METADATA, or PKG-INFO for an egg)."""
    text = _read(os.path.join(folder, "METADATA")) or _read(os.path.join(folder, "PKG-INFO"))
    headers: dict[str, str] = {}
    for line in (text or "").splitlines():
        if not line.strip():
            break  # the headers end at the first blank line; the description follows
        key, _, value = line.partition(":")
        headers.setdefault(key.strip().lower(), value.strip())
    return Distribution(headers.get("name"), headers.get("version"))
