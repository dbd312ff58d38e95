"""Reading a checkpoint file: safely (never through a symlink, nor through a linked folder
under ``.tmops/``, never blocking on a FIFO, at most 1 MiB) and in every body format: the
upstream Markdown header block and KEY=VALUE lines, plus YAML front matter; its fields, its
sections, and why a part could not be read. It never judges the content (validators do), never
writes checkpoints and never calls git.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable
from pathlib import Path

import attrs
import yaml

from tmops_core.log import logger
from tmops_core.workspace.layout import open_file
from tmops_hookspecs import (
    Checkpoint,
    CheckpointFormat,
    WorkspaceError,
)

__all__ = ["MAX_CHECKPOINT_BYTES", "parse_checkpoint"]

MAX_CHECKPOINT_BYTES = 1024 * 1024

# --------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------

_FRONT_MATTER = re.compile(r"\A---[ \t]*\r?\n(.*?)^(?:---|\.\.\.)[ \t]*\r?$\n?", re.M | re.S)
_KEY_VALUE_LINE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)=(.*)")
_KEY_VALUE_FIRST = re.compile(r"[A-Z][A-Z0-9_]*=")
_TITLE = re.compile(r"#[ \t]*Checkpoint[ \t]*:[ \t]*(.*?)[ \t]*", re.I)
_BULLET = r"(?:[-*+][ \t]+)?"
# **Key:** value, **Key**: value and **Key: value** (a whole line in bold)
_BOLD_KEY = re.compile(
    rf"[ \t]*{_BULLET}(?:\*\*([^*:\n]{{1,60}}?):\*\*|\*\*([^*:\n]{{1,60}}?)\*\*[ \t]*:)[ \t]*(.*?)"
)
_BOLD_LINE = re.compile(rf"[ \t]*{_BULLET}\*\*([^*:\n]{{1,60}}?):[ \t]*([^*\n]*?)[ \t]*\*\*[ \t]*")
_PLAIN_KEY = re.compile(rf"[ \t]*{_BULLET}([A-Za-z][A-Za-z0-9 _-]{{0,59}}?)[ \t]*:[ \t]*(.*?)")
_SECTION = re.compile(r"(#{1,2})[ \t]+(.*?)[ \t#]*")
_OUT_OF_TEN = re.compile(r"([0-9]+(?:\.[0-9]+)?|[A-Za-z])[ \t]*/[ \t]*10\b")
_PERCENT = re.compile(r"([0-9]+(?:\.[0-9]+)?)[ \t]*%")
_FENCE = re.compile(r"[ \t]*(?:```|~~~)")

# Plain "Key: value" lines recognised anywhere in a Markdown body, by normalised key.
_ANYWHERE_KEYS = {
    "feature_ready_for_merge": "ready_for_merge",
    "ready_for_merge": "ready_for_merge",
    "quality_score": "quality_score",
}
# Sections whose first non-empty line is a field.
_FIRST_LINE_SECTIONS = {
    "git_commit": "git_commit",
    "blockers": "blockers",
    "gate_status": "gate_status",
}


def parse_checkpoint(path: Path) -> Checkpoint:
    """Read and parse the checkpoint at ``path``; the content never makes this raise.

    A symlink, FIFO, directory or other non-regular file, or one that cannot be opened, gives a
    :class:`~tmops_hookspecs.Checkpoint` with format ``PLAIN``, an empty body and the size from
    ``lstat``, so that validators can refuse it with a reason. At most
    :data:`MAX_CHECKPOINT_BYTES` are parsed; ``size`` is always the size on disk.

    :raises OSError: only when ``path`` itself cannot be looked at (it does not exist).
    """
    info = os.lstat(path)
    empty = Checkpoint(name=path.name, path=path, format=CheckpointFormat.PLAIN, size=info.st_size)
    if not stat.S_ISREG(info.st_mode):
        return empty
    try:
        data, size = _read_regular(path)
    except (OSError, WorkspaceError) as exc:
        logger.debug("cannot read checkpoint {}: {}", path, exc)
        return empty
    text = data[:MAX_CHECKPOINT_BYTES].decode("utf-8", errors="replace")
    parsed = _parse_text(text)
    return Checkpoint(
        name=path.name,
        path=path,
        format=parsed.format,
        fields=parsed.fields,
        body=text,
        size=size,
        sections=parsed.sections,
        parse_error=parsed.error,
    )


def _read_regular(path: Path) -> tuple[bytes, int]:
    """The first ``MAX_CHECKPOINT_BYTES + 1`` bytes of a regular file, opened without following
    a symlink (under ``.tmops/``, in no folder on the way either) or blocking on a FIFO.

    :raises WorkspaceError: what was opened is not a regular file (swapped since the lstat).
    """
    fd = open_file(path, os.O_RDONLY)
    with os.fdopen(fd, "rb") as handle:
        return handle.read(MAX_CHECKPOINT_BYTES + 1), os.fstat(fd).st_size


@attrs.frozen
class _Parsed:
    format: CheckpointFormat
    fields: dict[str, str]
    sections: dict[str, str] = attrs.field(factory=dict)
    error: str | None = None


def _parse_text(text: str) -> _Parsed:
    text = text.removeprefix("\ufeff")
    front = _FRONT_MATTER.match(text)
    if front is not None:
        header, error = _front_matter_fields(front.group(1))
        if header is None:
            # Read what can be read, as plain Markdown, and say why the front matter could not
            # be: a validator refuses it rather than tmops guessing what was meant.
            lines = text.splitlines()
            return _Parsed(
                CheckpointFormat.PLAIN, _markdown_fields(lines)[0], _sections(lines), error
            )
        lines = text[front.end() :].splitlines()
        fields = _markdown_fields(lines)[0]
        fields.update(header)
        return _Parsed(CheckpointFormat.FRONT_MATTER, fields, _sections(lines))
    lines = text.splitlines()
    first = next((line.strip() for line in lines if line.strip()), "")
    if _KEY_VALUE_FIRST.match(first):
        return _Parsed(CheckpointFormat.KEY_VALUE, _key_value_fields(lines))
    fields, header_block = _markdown_fields(lines)
    checkpoint_format = CheckpointFormat.HEADER_BLOCK if header_block else CheckpointFormat.PLAIN
    return _Parsed(checkpoint_format, fields, _sections(lines))


def _normalize_key(key: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", key.strip().lower()).strip("_")


def _normalize_value(key: str, value: str) -> str:
    value = value.strip()
    if key == "quality_score":
        match = _OUT_OF_TEN.match(value)
        if match:
            return match.group(1)
    elif key == "coverage":
        match = _PERCENT.fullmatch(value) or _PERCENT.match(value)
        if match:
            return match.group(1)
    return value


def _set(fields: dict[str, str], key: str, value: str) -> None:
    """Record ``key`` unless an earlier line already did: the header comes first and wins."""
    if key and key not in fields:
        fields[key] = _normalize_value(key, value)


class _NoAliasLoader(yaml.SafeLoader):
    """SafeLoader that refuses aliases (billion-laughs bombs), as tmops_core.config does."""

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            raise yaml.YAMLError("YAML aliases are not allowed in a checkpoint")
        return super().compose_node(parent, index)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """One line saying what is wrong with front matter, and where (lines of the file)."""
    if isinstance(exc, yaml.MarkedYAMLError):
        what = exc.problem or exc.context or "it is not valid YAML"
        mark = exc.problem_mark or exc.context_mark
        # +2: marks count from 0, and the front matter starts after the opening '---' line
        return f"{what} (line {mark.line + 2})" if mark is not None else what
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _front_matter_fields(source: str) -> tuple[dict[str, str] | None, str | None]:
    """Top-level scalar entries of a YAML mapping, as written (``YES`` stays ``YES``), or None
    and why the front matter is not one.

    The node tree is read instead of constructed objects so that YAML 1.1 does not turn
    ``YES`` into ``True`` or ``08`` into a number; nothing is ever constructed.
    """
    why = "its front matter (between the '---' lines) "
    try:
        node = yaml.compose(
            source, Loader=_NoAliasLoader
        )  # a SafeLoader: composes, never constructs
    except yaml.YAMLError as exc:
        return None, why + f"is not valid YAML: {_yaml_problem(exc)}"
    except RecursionError:
        return None, why + "nests too deeply to be read"
    if node is None:
        return None, why + "is empty; write 'key: value' lines there, or drop the '---' lines"
    if not isinstance(node, yaml.MappingNode):
        kind = "a list" if isinstance(node, yaml.SequenceNode) else "a single value"
        return None, why + f"is {kind}, not a mapping of 'key: value' lines"
    fields: dict[str, str] = {}
    for key_node, value_node in node.value:
        if isinstance(key_node, yaml.ScalarNode) and isinstance(value_node, yaml.ScalarNode):
            key = _normalize_key(str(key_node.value))
            if key:
                fields[key] = _normalize_value(key, str(value_node.value))
    return fields, None


def _key_value_fields(lines: Iterable[str]) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in lines:
        match = _KEY_VALUE_LINE.fullmatch(line.strip())
        if match is None:
            continue
        value = match.group(2).strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        _set(fields, _normalize_key(match.group(1)), value)
    return fields


def _markdown_fields(lines: Iterable[str]) -> tuple[dict[str, str], bool]:
    """Fields of a Markdown body, and whether it has a header block (title or bold keys)."""
    fields: dict[str, str] = {}
    header_block = False
    section = ""
    section_first_line_done = False
    for raw in lines:
        line = raw.rstrip()
        title = _TITLE.fullmatch(line)
        if title:
            _set(fields, "checkpoint", title.group(1))
            header_block = True
            section = ""
            continue
        heading = _SECTION.fullmatch(line)
        if heading:
            section = _normalize_key(heading.group(2))
            section_first_line_done = False
            continue
        if not line.strip() or _FENCE.match(line):
            continue
        if section in _FIRST_LINE_SECTIONS and not section_first_line_done:
            section_first_line_done = True
            value = re.sub(rf"\A{_BULLET}", "", line.strip()).replace("`", "").strip()
            _set(fields, _FIRST_LINE_SECTIONS[section], value)
            continue
        key, value, bold = _key_and_value(line)
        if key:
            header_block = header_block or bold
            if section == "metrics":
                _set(fields, key, value)
            elif key in _ANYWHERE_KEYS:
                _set(fields, _ANYWHERE_KEYS[key], value)
            elif bold:
                _set(fields, key, value)
        if section == "quality_score" and "quality_score" not in fields:
            score = _OUT_OF_TEN.search(line)
            if score and score.group(1)[0].isdigit():
                _set(fields, "quality_score", score.group(1))
    return fields, header_block


def _sections(lines: Iterable[str]) -> dict[str, str]:
    """The text under each ``#``/``##`` heading (``###`` and deeper stay inside), stripped,
    by normalised heading; a heading written twice gets both texts. Headings inside a code
    fence are text."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    fence = False
    for raw in lines:
        line = raw.rstrip()
        if _FENCE.match(line):
            fence = not fence
        elif not fence and _TITLE.fullmatch(line):
            current = None
            continue
        elif not fence and (heading := _SECTION.fullmatch(line)):
            key = _normalize_key(heading.group(2))
            current = sections.setdefault(key, []) if key else None
            continue
        if current is not None:
            current.append(line)
    return {key: "\n".join(text).strip() for key, text in sections.items()}


def _key_and_value(line: str) -> tuple[str, str, bool]:
    """``(normalised key, value, written in bold)`` of a ``Key: value`` line, else ``""``."""
    for pattern in (_BOLD_KEY, _BOLD_LINE):
        match = pattern.fullmatch(line)
        if match:
            groups = [g for g in match.groups() if g is not None]
            return _normalize_key(groups[0]), groups[-1], True
    match = _PLAIN_KEY.fullmatch(line)
    if match:
        return _normalize_key(match.group(1)), match.group(2).strip("*").strip(), False
    return "", "", False
