"""What a session of the scripted agent starts from: its faults, its context, its saved state.

The command line and the stream are :mod:`tmops_plugins.scripted_agent`'s, the role work is
:mod:`tmops_plugins.scripted_roles`'; the contract of all three is in the docstring of
:mod:`tmops_plugins.scripted_agent`. This module owns:

- fault injection: the ``<role>:<kind>[:always]`` items of :data:`FAULT_ENV`
  (:func:`parse_faults`, :class:`Fault`);
- the prompt: what a tmops role prompt tells the agent (:func:`parse_prompt`,
  :class:`Context`);
- saved sessions, so that a resumed session with a bare prompt knows its role
  (:func:`state_dir`, :func:`save_session`, :func:`load_session`), and the atomic write that
  saves them and the checkpoints (:func:`atomic_write`).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import attrs

__all__ = [
    "CRASH_EXIT_CODE",
    "FAULT_ENV",
    "FAULT_KINDS",
    "ROLES",
    "STATE_ENV",
    "Context",
    "Fault",
    "atomic_write",
    "limited_once",
    "load_session",
    "parse_faults",
    "parse_prompt",
    "save_session",
    "state_dir",
]

FAULT_ENV = "TMOPS_SCRIPTED_FAULT"
STATE_ENV = "TMOPS_SCRIPTED_STATE_DIR"
#: The exit code of the ``crash`` fault.
CRASH_EXIT_CODE = 3
ROLES = ("orchestrator", "tester", "implementer", "verifier")
#: Fault kinds, with the one role they apply to (``None``: any role).
FAULT_KINDS: Mapping[str, str | None] = {
    "passing-tests": "tester",
    "broken-code": "implementer",
    "no-checkpoint": None,
    "crash": None,
    "slow": None,
    "detach": None,
    "wrong-feature": None,
    "exit-without-result": None,
    "refuse": "verifier",
    "leave-artefacts": None,
    "cost": None,
    "tokens": None,
    "usage-limit": None,
    "lost-session": None,
}

#: (trigger, completion) checkpoint of each role, when the prompt names none.
_CHECKPOINTS: Mapping[str, tuple[str | None, str]] = {
    "orchestrator": (None, "001-discovery-trigger.md"),
    "tester": ("001-discovery-trigger.md", "003-tests-complete.md"),
    "implementer": ("004-impl-trigger.md", "005-impl-complete.md"),
    "verifier": ("006-verify-trigger.md", "007-verify-complete.md"),
}


# --------------------------------------------------------------------------------------------
# Faults
# --------------------------------------------------------------------------------------------


@attrs.frozen
class Fault:
    """One ``<role>:<kind>[:always]`` item of :data:`FAULT_ENV`."""

    role: str
    kind: str
    always: bool = False
    #: ``slow``: how long to sleep; ``usage-limit``: in how long the limit resets (None: it
    #: does not say)
    seconds: float | None = 0.0
    #: ``cost``: what each session reports it cost, in USD
    usd: float = 0.0
    #: ``tokens``: the input and output tokens each session reports (and no cost)
    tokens: tuple[int, int] = (0, 0)

    def hits(self, role: str, *, resumed: bool) -> bool:
        """Whether this fault applies to a session of ``role`` (first attempt unless always)."""
        return self.role in (role, "*") and (self.always or not resumed)


def parse_faults(text: str) -> tuple[Fault, ...]:
    """The faults of a :data:`FAULT_ENV` value (empty items are skipped).

    :raises ValueError: naming the first item that is malformed or unknown.
    """
    faults: list[Fault] = []
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        parts = item.split(":")
        always = len(parts) == 3 and parts[2] == "always"
        if len(parts) not in (2, 3) or (len(parts) == 3 and not always):
            raise ValueError(f"fault {item!r}: expected <role>:<kind>[:always]")
        role, kind = parts[0], parts[1]
        if role != "*" and role not in ROLES:
            raise ValueError(f"fault {item!r}: unknown role {role!r}; known: *, {', '.join(ROLES)}")
        kind, _, value = kind.partition("=")
        if kind not in FAULT_KINDS:
            raise ValueError(f"fault {item!r}: unknown kind; known: {', '.join(FAULT_KINDS)}")
        only = FAULT_KINDS[kind]
        if only is not None and role != only:
            raise ValueError(f"fault {item!r}: {kind} applies to the {only} only")
        faults.append(Fault(role=role, kind=kind, always=always, **_fault_value(item, kind, value)))
    return tuple(faults)


_VALUES = {
    "slow": "slow=<seconds>, e.g. slow=30",
    "cost": "cost=<usd>, e.g. cost=0.25",
    "usage-limit": "usage-limit or usage-limit=<seconds until it resets>",
    "tokens": "tokens=<input>/<output>, e.g. tokens=200000/40000",
}


def _number(text: str) -> float:
    try:
        number = float(text)
    except ValueError:
        return -1.0
    return number if math.isfinite(number) else -1.0


def _fault_value(item: str, kind: str, value: str) -> dict[str, Any]:
    """The value of a ``<kind>=<value>`` fault, checked."""
    if kind not in _VALUES:
        if value:
            raise ValueError(f"fault {item!r}: {kind} takes no value")
        return {}
    if kind == "usage-limit" and not value:
        return {"seconds": None}
    if kind == "tokens":
        counts = [part for part in value.split("/") if part.isdigit()]
        if len(counts) != 2 or value.count("/") != 1:
            raise ValueError(f"fault {item!r}: expected {_VALUES[kind]}")
        return {"tokens": (int(counts[0]), int(counts[1]))}
    number = _number(value)
    if number < 0:
        raise ValueError(f"fault {item!r}: expected {_VALUES[kind]}")
    return {"usd": number} if kind == "cost" else {"seconds": number}


# --------------------------------------------------------------------------------------------
# The prompt
# --------------------------------------------------------------------------------------------


def _path_or_none(value: object) -> Path | None:
    return None if value is None else Path(str(value))


@attrs.frozen(kw_only=True)
class Context:
    """What a tmops prompt tells the agent."""

    role: str
    feature: str
    run: str
    worktree: Path = attrs.field(converter=Path)
    checkpoint_dir: Path = attrs.field(converter=Path)
    completion: str
    trigger: str | None = None
    spec: Path | None = attrs.field(default=None, converter=_path_or_none)

    def to_json(self) -> dict[str, Any]:
        return {
            key: (str(value) if isinstance(value, Path) else value)
            for key, value in attrs.asdict(self, recurse=False).items()
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Context:
        fields = {field.name for field in attrs.fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in fields})


_ROLE_LINE = re.compile(r"^You are the (ORCHESTRATOR|TESTER|IMPLEMENTER|VERIFIER)\b", re.M)
_FEATURE_LINE = re.compile(r"^Feature: (\S+) \(run ([^)\s]+)\)", re.M)
_SPEC_LINE = re.compile(r"^Spec: (.+)$", re.M)
_WORKTREE_LINE = re.compile(r"^Worktree: (.+)$", re.M)
_CHECKPOINTS_LINE = re.compile(r"^Checkpoint folder: (.+)$", re.M)


def _absolute(text: str, cwd: Path) -> Path:
    path = Path(text.strip()).expanduser()
    return path if path.is_absolute() else cwd / path


def parse_prompt(prompt: str, cwd: Path) -> Context | None:
    """The context of a tmops role prompt, or None when the prompt names no role."""
    role_match = _ROLE_LINE.search(prompt)
    if role_match is None:
        return None
    role = role_match.group(1).lower()
    feature_match = _FEATURE_LINE.search(prompt)
    spec_match = _SPEC_LINE.search(prompt)
    worktree_match = _WORKTREE_LINE.search(prompt)
    worktree = cwd
    if worktree_match:
        worktree = _absolute(worktree_match.group(1).split(" (branch ")[0].split("; ")[0], cwd)
    checkpoints_match = _CHECKPOINTS_LINE.search(prompt)
    checkpoint_dir = (
        _absolute(checkpoints_match.group(1), cwd)
        if checkpoints_match
        else worktree / ".tmops" / "checkpoints"
    )
    trigger, completion = _CHECKPOINTS[role]
    folder = re.escape(str(checkpoint_dir).rstrip("/"))
    named = re.findall(folder + r"/(\d{3}-[A-Za-z0-9_.-]*?\.md)\b", prompt)
    written = re.search(r"write your checkpoint " + folder + r"/(\S+?\.md)\b", prompt)
    if written:
        completion = written.group(1)
    others = [name for name in named if name != completion]
    if others:
        trigger = others[0]
    return Context(
        role=role,
        feature=feature_match.group(1) if feature_match else "",
        run=feature_match.group(2) if feature_match else "",
        worktree=worktree,
        checkpoint_dir=checkpoint_dir,
        completion=completion,
        trigger=trigger,
        spec=_absolute(spec_match.group(1), cwd) if spec_match else None,
    )


# --------------------------------------------------------------------------------------------
# Saved sessions (so that a resumed session with a bare prompt knows its role)
# --------------------------------------------------------------------------------------------


def state_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where sessions are saved: :data:`STATE_ENV`, else ``$CLAUDE_CONFIG_DIR/tmops-scripted``,
    else ``$XDG_STATE_HOME/tmops-scripted``, else ``~/.local/state/tmops-scripted``."""
    env = os.environ if environ is None else environ
    if env.get(STATE_ENV):
        return Path(env[STATE_ENV])
    if env.get("CLAUDE_CONFIG_DIR"):
        return Path(env["CLAUDE_CONFIG_DIR"]) / "tmops-scripted"
    if env.get("XDG_STATE_HOME"):
        return Path(env["XDG_STATE_HOME"]) / "tmops-scripted"
    return Path.home() / ".local" / "state" / "tmops-scripted"


def atomic_write(path: Path, text: str, mode: int = 0o600) -> None:
    """Write ``text`` to ``path`` through ``.<name>.tmp`` in the same folder, fsync, replace."""
    temp = path.with_name(f".{path.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        temp.unlink()  # a leftover of an earlier, interrupted write
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
        raise


def save_session(folder: Path, session_id: str, context: Context, err: TextIO) -> None:
    """Save ``context`` as ``<folder>/<session_id>.json``; a failure is told on ``err``."""
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        atomic_write(folder / f"{session_id}.json", json.dumps(context.to_json()) + "\n")
    except OSError as exc:
        print(f"scripted agent: cannot save session {session_id}: {exc}", file=err)


def load_session(folder: Path, session_id: str) -> Context | None:
    """The context saved for a session, or None when there is none (or it cannot be read)."""
    try:
        data = json.loads((folder / f"{session_id}.json").read_text(encoding="utf-8"))
        return Context.from_json(data)
    except (OSError, ValueError, TypeError):
        return None


# --------------------------------------------------------------------------------------------
# The usage limit, once per run
# --------------------------------------------------------------------------------------------


def limited_once(context: Context, faults: Sequence[Fault]) -> str | None:
    """The ``usage-limit`` fault: what the agent says when its usage limit is reached (with
    the reset, when the fault names one), once per run and role (a marker file in the
    checkpoint folder remembers it) unless ``:always``; None when the session goes on."""
    fault = next((f for f in faults if f.kind == "usage-limit"), None)
    if fault is None:
        return None
    marker = context.checkpoint_dir / f".scripted-usage-limit-{context.role}"
    if marker.exists() and not fault.always:
        return None
    with contextlib.suppress(OSError):
        marker.touch()
    reset = "" if fault.seconds is None else f" · resets in {math.ceil(fault.seconds)}s"
    return f"You've hit your usage limit{reset}"
