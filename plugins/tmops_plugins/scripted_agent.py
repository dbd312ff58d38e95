"""The scripted local agent: a stand-in for ``claude -p`` with NO AI model behind it.

``tmops demo`` and the tests run it where the real Claude Code CLI would run, so that the whole
workflow (processes, stream, files, commits, checkpoints, gates, retries) can be watched and
tested on a machine with no model and no network. It is a script, not an agent: whatever the
spec says, each role does its fixed part of the demo task of :mod:`tmops_plugins.demo_project`
(``slugify`` in ``slug.py``, tests in ``tests/test_slug.py``), for real, on disk and in git. Its
output says so: the init line has ``"model": "scripted"`` and ``"claude_code_version":
"scripted"``, and every final text starts with ``[tmops scripted agent, no AI model]``.

Command line (the flags of ``claude``, see ``/work/shared/reference/claude-code-cli.md``)::

    python -m tmops_plugins.scripted_agent -p PROMPT --output-format stream-json --verbose \\
        [--append-system-prompt TEXT] [--permission-mode M] [--add-dir DIR ...] \\
        [--resume SESSION_ID] [--max-turns N] [--model M] \\
        [--allowedTools A,B ...] [--disallowedTools C ...] [--dangerously-skip-permissions]

- ``-p/--print`` is required; the prompt is the positional argument, else stdin.
- ``--output-format``: ``text`` (default; the final text), ``json`` (the result object; with
  ``--verbose`` an array of every message) or ``stream-json`` (requires ``--verbose``, as in
  claude): one JSON object per line, flushed as it happens::

      {"type":"system","subtype":"init","session_id":..., "cwd":..., "model":"scripted",
       "tools":["Read","Write","Bash"], "claude_code_version":"scripted", ...}
      {"type":"assistant","message":{"content":[{"type":"tool_use","name":"Write",...}]},...}
      {"type":"user","message":{"content":[{"type":"tool_result",...}]},...}
      ...                                        (one assistant + user pair per action)
      {"type":"assistant","message":{"content":[{"type":"text","text":"[tmops scripted ..."}]}}
      {"type":"result","subtype":"success","is_error":false,"result":"...","session_id":...,
       "num_turns":N,"duration_ms":...,"total_cost_usd":0.0,"usage":{},
       "permission_denials":[],"api_error_status":null}

- Session id: a new uuid4, or the ``--resume`` id, kept (as Claude Code 2.x does). A resume id
  that is not a UUID is refused (exit 1), as claude refuses it.
- ``--max-turns N``: each tool action is one turn; a role needing more ends with a result of
  subtype ``error_max_turns`` (``is_error`` true, ``errors`` listed) and exit 1.
- Permissions are not enforced: ``--permission-mode``, ``--allowedTools``,
  ``--disallowedTools``, ``--add-dir``, ``--model`` and ``--append-system-prompt`` are checked
  and accepted, then ignored (``permission_denials`` is always empty).
- Errors in the command line (an unknown flag, a missing value, no prompt) print a message on
  stderr and exit 1 with nothing on stdout, as claude does. ``--help`` exits 0.

The prompt is read the way tmops writes it (:mod:`tmops_plugins.phases`): ``You are the
TESTER.``, ``Feature: <f> (run <r>)``, ``Spec: <path>``, ``Worktree: <path> (branch ...)``,
``Checkpoint folder: <path>`` and ``... write your checkpoint <folder>/<file>``. The worktree is
the one named in the prompt, else the current directory. A prompt that names no role (say a
resumed session's bare "go on") takes its context from the session it resumes, which the agent
saved at its start in ``$TMOPS_SCRIPTED_STATE_DIR``, else ``$CLAUDE_CONFIG_DIR/tmops-scripted``,
else ``$XDG_STATE_HOME/tmops-scripted`` (default ``~/.local/state/tmops-scripted``). With no
context at all it does nothing and says so in a successful result.

What each role does, each step shown in the stream as a Read, Write or Bash tool call:

- orchestrator: reads the spec; writes ``001-discovery-trigger.md`` (the test plan).
- tester: reads its trigger; writes ``tests/test_slug.py`` (one test per acceptance criterion);
  runs ``<python> -m pytest -q`` (expecting red); ``git add tests/test_slug.py``; ``git commit
  -m "test(slug): ..."``; ``git log -1 --format=%H -- tests/test_slug.py`` for the id; writes
  ``003-tests-complete.md`` (``Tests written: N``, ``Passing: P/N``, the commit id).
- implementer: reads its trigger and ``003``; writes ``slug.py``; runs the tests (expecting
  green); commits ``slug.py`` as ``feat(slug): ...``; writes ``005-impl-complete.md``.
- verifier: reads its trigger, ``003`` and ``005``; ``git log --format=%H %s`` to check that the
  test commit precedes the code commit; runs the tests; writes ``007-verify-complete.md``
  with ``## Quality Score``: ``9/10`` and ``Feature ready for merge: YES`` when the order holds
  and every test passes, else ``4/10`` and ``NO`` with the reasons.

Commands run as argv lists (never a shell) in the worktree; ``git commit`` adds ``-c user.name``
and ``-c user.email`` only when the repository has no identity, and is skipped when nothing
changed (a resumed session redoing committed work). Checkpoints are written atomically (the
text in ``.<name>.tmp`` in the checkpoint folder, fsync, ``os.replace``) with mode 0600. The
agent prints nothing but the stream on stdout; diagnostics go to stderr. On SIGTERM it stops the
command it is running and exits 143, with no result line.

Fault injection, for tests: ``TMOPS_SCRIPTED_FAULT`` holds comma-separated
``<role>:<kind>[:always]`` items, ``<role>`` being one of the four roles or ``*`` (any). A fault
hits the FIRST attempt only, that is a session started without ``--resume``; a resumed session
behaves normally. With the ``:always`` suffix it hits every attempt. Kinds:

- ``tester:passing-tests``: writes (and commits) a trivial test file that already PASSES, and
  reports it honestly (``Passing: 1/1``).
- ``implementer:broken-code``: writes (and commits) a ``slug.py`` that fails some tests, and
  reports the real count; a resumed session fixes it (never with ``:always``).
- ``<role>:no-checkpoint``: does all the work but writes no checkpoint; result success, exit 0.
- ``<role>:crash``: prints the init line, then exits 3 with no result and no work done.
- ``<role>:slow=<seconds>``: sleeps that long after the init line, before working (timeouts,
  no-output watchdogs).
- ``<role>:wrong-feature``: the checkpoint's ``**Feature:**`` names ``<feature>-other``.
- ``<role>:exit-without-result``: does all the work, checkpoint included, then exits 0 without
  the final text and the result line.

A malformed or unknown item is an error (message on stderr, exit 1). ``TMOPS_SCRIPTED_DELAY_S``
(float seconds, default 0) is slept before each action, for live-view demos.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn, TextIO

import attrs

__all__ = [
    "CRASH_EXIT_CODE",
    "DELAY_ENV",
    "FAULT_ENV",
    "FAULT_KINDS",
    "LABEL",
    "ROLES",
    "STATE_ENV",
    "Context",
    "Fault",
    "main",
    "parse_faults",
    "parse_prompt",
    "state_dir",
]

#: How the agent names itself in its output.
LABEL = "tmops scripted agent, no AI model"
FAULT_ENV = "TMOPS_SCRIPTED_FAULT"
DELAY_ENV = "TMOPS_SCRIPTED_DELAY_S"
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
    "wrong-feature": None,
    "exit-without-result": None,
}

_TOOLS = ("Read", "Write", "Bash")
_PERMISSION_MODES = ("acceptEdits", "bypassPermissions", "default", "dontAsk", "plan")
_OUTPUT_FORMATS = ("text", "json", "stream-json")
#: (trigger, completion) checkpoint of each role, when the prompt names none.
_CHECKPOINTS: Mapping[str, tuple[str | None, str]] = {
    "orchestrator": (None, "001-discovery-trigger.md"),
    "tester": ("001-discovery-trigger.md", "003-tests-complete.md"),
    "implementer": ("004-impl-trigger.md", "005-impl-complete.md"),
    "verifier": ("006-verify-trigger.md", "007-verify-complete.md"),
}
_TESTS_REPORT = "003-tests-complete.md"
_IMPL_REPORT = "005-impl-complete.md"
_COMMAND_TIMEOUT_S = 300
_OUTPUT_LIMIT = 4000
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)


# --------------------------------------------------------------------------------------------
# The demo task
# --------------------------------------------------------------------------------------------

TEST_FILE = "tests/test_slug.py"
CODE_FILE = "slug.py"

#: (test name, acceptance criterion, input, expected slug): the plan and the tests.
_CASES = (
    (
        "test_words_are_lowercased_and_joined_by_one_dash",
        "lower case, words joined by one dash",
        "Hello World",
        "hello-world",
    ),
    ("test_punctuation_is_dropped", "punctuation is dropped", "Hello, World!", "hello-world"),
    (
        "test_runs_of_spaces_underscores_and_dashes_become_one_dash",
        "runs of spaces, underscores or dashes become one dash",
        "a  b__c--d",
        "a-b-c-d",
    ),
    (
        "test_leading_and_trailing_separators_are_trimmed",
        "no leading or trailing dash",
        "  -Hello World_ ",
        "hello-world",
    ),
    ("test_empty_string_gives_empty_string", "edge case: empty input", "", ""),
    (
        "test_accented_letters_become_ascii",
        "accented letters become plain ASCII",
        "Crème Brûlée",
        "creme-brulee",
    ),
)

TEST_SOURCE = (
    '"""Tests of slugify (the tmops demo feature), written before the code."""\n\n'
    "from slug import slugify\n"
    + "".join(
        f"\n\ndef {name}() -> None:\n    assert slugify({given!r}) == {expected!r}\n"
        for name, _, given, expected in _CASES
    )
)

#: What the ``passing-tests`` fault commits: a test that passes with no code at all.
PASSING_TEST_SOURCE = '''\
"""Tests of slugify (scripted fault `passing-tests`: they pass without any code)."""


def test_slug_words_are_joined_by_dashes() -> None:
    assert "hello world".replace(" ", "-") == "hello-world"
'''

CODE_SOURCE = '''\
"""Turn titles into URL-safe slugs."""

import re
import unicodedata

_OTHER_CHARACTERS = re.compile(r"[^a-z0-9]+")


def slugify(text: str) -> str:
    """The lower-case ASCII words of ``text``, joined by single dashes."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return _OTHER_CHARACTERS.sub("-", ascii_text.lower()).strip("-")
'''

#: What the ``broken-code`` fault commits: it only gets the simplest case right.
BROKEN_CODE_SOURCE = '''\
"""Turn titles into URL-safe slugs."""


def slugify(text: str) -> str:
    """Lower-case ``text`` with dashes for spaces."""
    return text.lower().replace(" ", "-")
'''


# --------------------------------------------------------------------------------------------
# Faults
# --------------------------------------------------------------------------------------------


@attrs.frozen
class Fault:
    """One ``<role>:<kind>[:always]`` item of :data:`FAULT_ENV`."""

    role: str
    kind: str
    always: bool = False
    seconds: float = 0.0

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
        seconds = 0.0
        if kind == "slow":
            try:
                seconds = float(value)
            except ValueError:
                seconds = -1.0
            if not math.isfinite(seconds) or seconds < 0:
                raise ValueError(f"fault {item!r}: expected slow=<seconds>, e.g. slow=30")
        elif value:
            raise ValueError(f"fault {item!r}: {kind} takes no value")
        faults.append(Fault(role=role, kind=kind, always=always, seconds=seconds))
    return tuple(faults)


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
    """Where sessions are saved (see the module docstring)."""
    env = os.environ if environ is None else environ
    if env.get(STATE_ENV):
        return Path(env[STATE_ENV])
    if env.get("CLAUDE_CONFIG_DIR"):
        return Path(env["CLAUDE_CONFIG_DIR"]) / "tmops-scripted"
    if env.get("XDG_STATE_HOME"):
        return Path(env["XDG_STATE_HOME"]) / "tmops-scripted"
    return Path.home() / ".local" / "state" / "tmops-scripted"


def _atomic_write(path: Path, text: str, mode: int = 0o600) -> None:
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


def _save_session(folder: Path, session_id: str, context: Context, err: TextIO) -> None:
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        _atomic_write(folder / f"{session_id}.json", json.dumps(context.to_json()) + "\n")
    except OSError as exc:
        print(f"scripted agent: cannot save session {session_id}: {exc}", file=err)


def _load_session(folder: Path, session_id: str) -> Context | None:
    try:
        data = json.loads((folder / f"{session_id}.json").read_text(encoding="utf-8"))
        return Context.from_json(data)
    except (OSError, ValueError, TypeError):
        return None


# --------------------------------------------------------------------------------------------
# The command line
# --------------------------------------------------------------------------------------------


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageError(message)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a positive whole number, got {text!r}"
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return value


def _parser() -> _Parser:
    parser = _Parser(
        prog="python -m tmops_plugins.scripted_agent",
        description=(
            f"The {LABEL}: a stand-in for `claude -p` that does the tmops demo task by script, "
            "with no AI model behind it. Same flags as claude."
        ),
        epilog=f"Fault injection: {FAULT_ENV}=<role>:<kind>[:always],...; "
        f"pause before each action: {DELAY_ENV}=<seconds>.",
        allow_abbrev=False,
    )
    parser.add_argument("prompt", nargs="?", help="the prompt (default: read stdin)")
    parser.add_argument("-p", "--print", action="store_true", help="print mode (required)")
    parser.add_argument("--output-format", choices=_OUTPUT_FORMATS, default="text")
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--append-system-prompt", metavar="TEXT")
    parser.add_argument("--permission-mode", choices=_PERMISSION_MODES)
    parser.add_argument("--dangerously-skip-permissions", action="store_true")
    parser.add_argument("--add-dir", action="extend", nargs="+", metavar="DIR")
    parser.add_argument("--resume", "-r", metavar="SESSION_ID")
    parser.add_argument("--max-turns", type=_positive_int, metavar="N")
    parser.add_argument("--model", metavar="MODEL")
    parser.add_argument(
        "--allowedTools", "--allowed-tools", dest="allowed_tools", action="extend", nargs="+"
    )
    parser.add_argument(
        "--disallowedTools",
        "--disallowed-tools",
        dest="disallowed_tools",
        action="extend",
        nargs="+",
    )
    return parser


# --------------------------------------------------------------------------------------------
# The stream and the tools
# --------------------------------------------------------------------------------------------


class _MaxTurns(Exception):
    pass


@attrs.frozen
class _Ran:
    returncode: int
    output: str


def _truncate(text: str) -> str:
    if len(text) <= _OUTPUT_LIMIT:
        return text
    return f"[... {len(text) - _OUTPUT_LIMIT} characters cut ...]\n" + text[-_OUTPUT_LIMIT:]


def _timestamp() -> str:
    return datetime.now().strftime("%Y-%m-%d %H:%M:%S")


class _Agent:
    """Runs the actions of one session and writes the stream."""

    def __init__(
        self,
        *,
        out: TextIO,
        output_format: str,
        verbose: bool,
        session_id: str,
        context: Context,
        delay_s: float,
        max_turns: int | None,
    ) -> None:
        self.out = out
        self.output_format = output_format
        self.verbose = verbose
        self.session_id = session_id
        self.context = context
        self.delay_s = delay_s
        self.max_turns = max_turns
        self.turns = 0
        self.messages: list[dict[str, Any]] = []
        self.env = dict(os.environ, GIT_TERMINAL_PROMPT="0")
        for name in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY"):
            self.env.pop(name, None)

    # -- output -------------------------------------------------------------------------------

    def emit(self, message: dict[str, Any]) -> None:
        self.messages.append(message)
        if self.output_format == "stream-json":
            self.out.write(json.dumps(message) + "\n")
            self.out.flush()

    def finish(self, result: dict[str, Any]) -> None:
        self.emit(result)
        if self.output_format == "json":
            self.out.write(json.dumps(self.messages if self.verbose else result) + "\n")
        elif self.output_format == "text":
            self.out.write(str(result.get("result", "")) + "\n")
        self.out.flush()

    def _assistant(self, block: dict[str, Any]) -> None:
        self.emit(
            {
                "type": "assistant",
                "message": {
                    "id": f"msg_scripted_{uuid.uuid4().hex[:20]}",
                    "type": "message",
                    "role": "assistant",
                    "model": "scripted",
                    "content": [block],
                    "stop_reason": None,
                    "usage": {},
                },
                "parent_tool_use_id": None,
                "session_id": self.session_id,
            }
        )

    def say(self, text: str) -> None:
        self.turns += 1
        self._assistant({"type": "text", "text": text})

    def _tool(self, name: str, tool_input: dict[str, Any]) -> str:
        if self.max_turns is not None and self.turns >= self.max_turns:
            raise _MaxTurns
        if self.delay_s > 0:
            time.sleep(self.delay_s)
        self.turns += 1
        tool_id = f"toolu_scripted_{uuid.uuid4().hex[:20]}"
        self._assistant({"type": "tool_use", "id": tool_id, "name": name, "input": tool_input})
        return tool_id

    def _result(self, tool_id: str, content: str, *, is_error: bool) -> None:
        self.emit(
            {
                "type": "user",
                "message": {
                    "role": "user",
                    "content": [
                        {
                            "tool_use_id": tool_id,
                            "type": "tool_result",
                            "content": content,
                            "is_error": is_error,
                        }
                    ],
                },
                "parent_tool_use_id": None,
                "session_id": self.session_id,
            }
        )

    # -- tools --------------------------------------------------------------------------------

    def read(self, path: Path) -> str | None:
        tool_id = self._tool("Read", {"file_path": str(path)})
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            self._result(tool_id, f"Cannot read {path}: {exc.strerror or exc}", is_error=True)
            return None
        self._result(tool_id, _truncate(text), is_error=False)
        return text

    def write(self, path: Path, text: str, *, checkpoint: bool = False) -> None:
        tool_id = self._tool("Write", {"file_path": str(path), "content": text})
        try:
            if checkpoint:
                path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                _atomic_write(path, text)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text, encoding="utf-8")
        except OSError as exc:
            self._result(tool_id, f"Cannot write {path}: {exc.strerror or exc}", is_error=True)
            raise
        self._result(tool_id, f"File created successfully at: {path}", is_error=False)

    def bash(self, argv: Sequence[str], description: str, *, test_run: bool = False) -> _Ran:
        tool_id = self._tool("Bash", {"command": shlex.join(argv), "description": description})
        ran = self.run(argv, test_run=test_run)
        self._result(tool_id, _truncate(ran.output), is_error=ran.returncode != 0)
        return ran

    def run(self, argv: Sequence[str], *, test_run: bool = False) -> _Ran:
        """Run a command in the worktree, not shown in the stream (for probes)."""
        env = self.env
        if test_run:  # the demo project's tests run under its own pytest settings only
            env = {k: v for k, v in env.items() if k not in ("PYTEST_ADDOPTS", "PYTEST_PLUGINS")}
        try:
            done = subprocess.run(
                list(argv),
                cwd=self.context.worktree,
                env=env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                errors="replace",
                timeout=_COMMAND_TIMEOUT_S,
                check=False,
            )
        except FileNotFoundError as exc:
            return _Ran(127, f"command not found: {exc.filename or argv[0]}")
        except subprocess.TimeoutExpired:
            return _Ran(124, f"timed out after {_COMMAND_TIMEOUT_S} s")
        output = (done.stdout + done.stderr).strip()
        if done.returncode != 0:
            output = f"{output}\nExit code {done.returncode}".strip()
        return _Ran(done.returncode, output)


# --------------------------------------------------------------------------------------------
# The roles
# --------------------------------------------------------------------------------------------


@attrs.frozen
class _Work:
    summary: str


def _header(agent: _Agent, sender: str, feature: str, status: str = "complete") -> str:
    ctx = agent.context
    return (
        f"# Checkpoint: {ctx.completion}\n"
        f"**From:** {sender}\n"
        f"**To:** {'Tester' if sender == 'Orchestrator' else 'Orchestrator'}\n"
        f"**Timestamp:** {_timestamp()}\n"
        f"**Feature:** {feature}\n"
        f"**Run:** {ctx.run}\n"
        f"**Status:** {status}\n"
    )


def _checkpoint(agent: _Agent, faults: Sequence[Fault], sender: str, body: str, status: str) -> str:
    """Write the completion checkpoint (unless the no-checkpoint fault hits); a summary line."""
    ctx = agent.context
    feature = ctx.feature or "unknown"
    if any(f.kind == "wrong-feature" for f in faults):
        feature = f"{feature}-other"
    if any(f.kind == "no-checkpoint" for f in faults):
        return f"no checkpoint written (fault no-checkpoint); {ctx.completion} is missing"
    agent.write(
        ctx.checkpoint_dir / ctx.completion,
        _header(agent, sender, feature, status) + body,
        checkpoint=True,
    )
    return f"checkpoint {ctx.completion} written"


def _read_trigger(agent: _Agent, *extra: str) -> dict[str, str]:
    """Read the trigger and the given checkpoints that exist: {name: text}."""
    ctx = agent.context
    texts: dict[str, str] = {}
    names = [ctx.trigger] if ctx.trigger else []
    for name in [*names, *extra]:
        path = ctx.checkpoint_dir / name
        if name in texts or not path.is_file():
            continue
        text = agent.read(path)
        if text is not None:
            texts[name] = text
    return texts


_COUNT = re.compile(r"(\d+) (passed|failed|errors?)\b")


@attrs.frozen
class _TestRun:
    returncode: int
    passed: int
    failed: int
    errors: int
    first_error: str

    @property
    def total(self) -> int:
        return self.passed + self.failed + self.errors


def _run_tests(agent: _Agent, description: str) -> _TestRun:
    ran = agent.bash([sys.executable, "-m", "pytest", "-q"], description, test_run=True)
    counts = {"passed": 0, "failed": 0, "error": 0}
    summary = [line for line in ran.output.splitlines() if _COUNT.search(line) and " in " in line]
    if summary:
        for number, word in _COUNT.findall(summary[-1]):
            counts[word.rstrip("s") if word.startswith("error") else word] += int(number)
    first_error = next(
        (line.strip() for line in ran.output.splitlines() if line.startswith("E ")),
        summary[-1].strip(" =") if summary else f"exit code {ran.returncode}",
    )
    return _TestRun(
        ran.returncode, counts["passed"], counts["failed"], counts["error"], first_error
    )


def _identity(agent: _Agent) -> list[str]:
    """``-c user.name=... -c user.email=...`` when the repository has no committer identity."""
    missing = any(
        agent.run(["git", "config", "--get", key]).returncode != 0
        for key in ("user.name", "user.email")
    )
    if not missing:
        return []
    return ["-c", "user.name=tmops scripted agent", "-c", "user.email=scripted-agent@tmops.invalid"]


def _commit(agent: _Agent, path: str, message: str) -> tuple[str | None, str]:
    """Stage ``path``, commit it if it changed: (the id of its last commit or None, an error)."""
    added = agent.bash(["git", "add", path], f"Stage {path}")
    if added.returncode != 0:
        return None, added.output
    if agent.run(["git", "diff", "--cached", "--quiet", "--", path]).returncode != 0:
        committed = agent.bash(["git", *_identity(agent), "commit", "-m", message], "Commit")
        if committed.returncode != 0:
            return None, committed.output
    logged = agent.bash(["git", "log", "-1", "--format=%H", "--", path], "The commit id")
    commit = logged.output.strip() if logged.returncode == 0 else ""
    if not re.fullmatch(r"[0-9a-f]{40,64}", commit):
        return None, f"no commit holds {path}: {logged.output}"
    return commit, ""


def _blocked(error: str) -> str:
    lines = error.strip().splitlines()
    return f"## Blockers\n- the commit failed: {lines[-1] if lines else 'no message'}\n"


def _orchestrator(agent: _Agent, faults: Sequence[Fault]) -> _Work:
    ctx = agent.context
    if ctx.spec is not None:
        agent.read(ctx.spec)
    plan = "".join(
        f"- AC{i} {criterion}: `{name}` asserts slugify({given!r}) == {expected!r}\n"
        for i, (name, criterion, given, expected) in enumerate(_CASES, 1)
    )
    body = f"""\
## Work Completed
Planned `slugify`: a function that turns a title into a URL-safe slug. Written by the {LABEL}: \
this is the fixed plan of the tmops demo task, whatever the spec says.
## Action Required
Test `from slug import slugify` (`slugify(text: str) -> str` in `slug.py` at the repository \
root) in `{TEST_FILE}`, one test per acceptance criterion, edge cases included:
{plan}Run them with `python -m pytest -q`; every one must fail while `slug.py` does not exist.
## Expected Response
Failing tests committed on feature/{ctx.feature}, reported in {_TESTS_REPORT}.
## Metrics
- Acceptance criteria: {len(_CASES)}
- Planned tests: {len(_CASES)}
## Git Commit
none
"""
    done = _checkpoint(agent, faults, "Orchestrator", body, "complete")
    return _Work(f"orchestrator: planned {len(_CASES)} tests; {done}.")


def _tester(agent: _Agent, faults: Sequence[Fault]) -> _Work:
    ctx = agent.context
    _read_trigger(agent)
    passing = any(f.kind == "passing-tests" for f in faults)
    source = PASSING_TEST_SOURCE if passing else TEST_SOURCE
    written = source.count("\ndef test_")
    agent.write(ctx.worktree / TEST_FILE, source)
    tests = _run_tests(agent, "Run the tests; the new ones must fail")
    message = (
        "test(slug): add slugify tests"
        if passing
        else "test(slug): slugify lowercases, drops punctuation, joins words, folds accents"
    )
    commit, error = _commit(agent, TEST_FILE, message)
    passed = min(tests.passed, written)
    body = f"""\
## Work Completed
- {TEST_FILE}: {written} test(s) of slugify, one per acceptance criterion of the plan
- Edge cases: empty string, leading and trailing separators, mixed runs of separators, accents
- How the tests fail now: `{tests.first_error}`
## Metrics
- Tests written: {written}
- Passing: {passed}/{written}
## Git Commit
{commit or "none"}
"""
    if commit is None:
        body += _blocked(error)
    done = _checkpoint(agent, faults, "Tester", body, "complete" if commit else "blocked")
    return _Work(
        f"tester: wrote {TEST_FILE} ({written} tests, {passed} passing), "
        f"commit {commit[:12] if commit else 'failed'}; {done}."
    )


def _implementer(agent: _Agent, faults: Sequence[Fault]) -> _Work:
    ctx = agent.context
    _read_trigger(agent, _TESTS_REPORT)
    broken = any(f.kind == "broken-code" for f in faults)
    agent.write(ctx.worktree / CODE_FILE, BROKEN_CODE_SOURCE if broken else CODE_SOURCE)
    tests = _run_tests(agent, "Run the whole test suite")
    commit, error = _commit(agent, CODE_FILE, "feat(slug): add slugify")
    body = f"""\
## Work Completed
- {CODE_FILE}: slugify(text) NFKD-normalises the text, drops what is not ASCII, lower-cases it, \
turns every run of other characters into one dash and trims the dashes (standard library only)
- Written by the {LABEL}
## Metrics
- Files changed: 1
- Passing: {tests.passed}/{tests.total}
## Git Commit
{commit or "none"}
"""
    if commit is None:
        body += _blocked(error)
    done = _checkpoint(agent, faults, "Implementer", body, "complete" if commit else "blocked")
    return _Work(
        f"implementer: wrote {CODE_FILE} ({tests.passed}/{tests.total} tests passing), "
        f"commit {commit[:12] if commit else 'failed'}; {done}."
    )


_GIT_COMMIT = re.compile(r"^## Git Commit[ \t]*\n\s*([0-9a-f]{7,64})\b", re.M)


def _named_commit(
    texts: Mapping[str, str], report: str, log: Sequence[tuple[str, str]], prefix: str
) -> str | None:
    """The commit a report names, else the newest commit whose subject starts with prefix."""
    match = _GIT_COMMIT.search(texts.get(report, ""))
    if match:
        return next((sha for sha, _ in log if sha.startswith(match.group(1))), match.group(1))
    return next((sha for sha, subject in log if subject.startswith(prefix)), None)


def _verifier(agent: _Agent, faults: Sequence[Fault]) -> _Work:
    texts = _read_trigger(agent, _TESTS_REPORT, _IMPL_REPORT)
    logged = agent.bash(["git", "log", "--format=%H %s"], "Check that the tests came first")
    log = [
        (sha, subject)
        for sha, _, subject in (line.partition(" ") for line in logged.output.splitlines())
        if re.fullmatch(r"[0-9a-f]{40,64}", sha)
    ]
    order = [sha for sha, _ in log]
    test_commit = _named_commit(texts, _TESTS_REPORT, log, "test(")
    code_commit = _named_commit(texts, _IMPL_REPORT, log, "feat(")
    reasons: list[str] = []
    if test_commit is None or test_commit not in order:
        reasons.append("no test commit found in the history")
    if code_commit is None or code_commit not in order:
        reasons.append("no code commit found in the history")
    if not reasons and order.index(str(test_commit)) <= order.index(str(code_commit)):
        reasons.append(f"the test commit {test_commit} is not older than the code commit")
    first = (
        f"confirmed (test {test_commit} before code {code_commit})"
        if not reasons
        else "violated or unknown: " + "; ".join(reasons)
    )
    tests = _run_tests(agent, "Run the whole test suite")
    if tests.returncode != 0 or tests.passed == 0 or tests.passed != tests.total:
        reasons.append(
            f"the tests do not all pass ({tests.passed}/{tests.total}: {tests.first_error})"
        )
    ready = not reasons
    criteria = "".join(
        f"- AC{i} {criterion}: {'met' if ready else 'not shown'} (`{name}`)\n"
        for i, (name, criterion, _, _) in enumerate(_CASES, 1)
    )
    findings = (
        "- Findings: none serious; low: slugify drops non-Latin scripts entirely "
        f"({CODE_FILE}:12), document it or transliterate\n"
        if ready
        else "".join(f"- Finding (high): {reason}\n" for reason in reasons)
    )
    body = f"""\
## Work Completed
- Test-first order: {first}
{criteria}{findings}- Review by the {LABEL}: the verdict follows fixed rules, not judgement
## Metrics
- Tests: {tests.total}
- Passing: {tests.passed}/{tests.total}
## Git Commit
{order[0] if order else "none"}
## Quality Score
Quality score: {9 if ready else 4}/10
Feature ready for merge: {"YES" if ready else "NO"}
"""
    done = _checkpoint(agent, faults, "Verifier", body, "complete")
    verdict = "ready for merge" if ready else "NOT ready: " + "; ".join(reasons)
    return _Work(f"verifier: {verdict}; {done}.")


_ROLE_WORK = {
    "orchestrator": _orchestrator,
    "tester": _tester,
    "implementer": _implementer,
    "verifier": _verifier,
}


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------


def _result(agent: _Agent, started: float, text: str, **extra: Any) -> dict[str, Any]:
    result: dict[str, Any] = {
        "type": "result",
        "subtype": "success",
        "is_error": False,
        "api_error_status": None,
        "duration_ms": int((time.monotonic() - started) * 1000),
        "duration_api_ms": 0,
        "num_turns": agent.turns,
        "result": text,
        "session_id": agent.session_id,
        "total_cost_usd": 0.0,
        "usage": {},
        "permission_denials": [],
    }
    result.update(extra)
    return result


@attrs.frozen(kw_only=True)
class _Options:
    prompt: str
    output_format: str
    verbose: bool
    resume: str | None
    max_turns: int | None
    permission_mode: str
    faults: tuple[Fault, ...]
    delay_s: float


def _read_options(argv: Sequence[str] | None, stdin: TextIO | None) -> _Options:
    """The checked command line and environment.

    :raises _UsageError: (or ValueError from the faults) for anything claude would refuse.
    """
    args = _parser().parse_args(argv)
    if not args.print:
        raise _UsageError("the scripted agent runs in print mode only: pass -p/--print")
    if args.output_format == "stream-json" and not args.verbose:
        raise _UsageError("When using --print, --output-format=stream-json requires --verbose")
    if args.resume is not None and not _UUID.match(args.resume):
        raise _UsageError(f"--resume requires a valid session ID, got {args.resume!r}")
    faults = parse_faults(os.environ.get(FAULT_ENV, ""))
    delay_text = os.environ.get(DELAY_ENV, "").strip() or "0"
    try:
        delay_s = float(delay_text)
    except ValueError:
        delay_s = -1.0
    if not math.isfinite(delay_s) or delay_s < 0:
        raise _UsageError(f"{DELAY_ENV} must be a number of seconds >= 0, got {delay_text!r}")
    prompt = args.prompt
    if prompt is None:
        source = sys.stdin if stdin is None else stdin
        prompt = "" if source is None or source.isatty() else source.read()
    if not prompt.strip():
        raise _UsageError(
            "Input must be provided either through stdin or as a prompt argument when using --print"
        )
    return _Options(
        prompt=prompt,
        output_format=args.output_format,
        verbose=args.verbose,
        resume=args.resume,
        max_turns=args.max_turns,
        permission_mode=args.permission_mode or "default",
        faults=faults,
        delay_s=delay_s,
    )


def _do_work(agent: _Agent, options: _Options, hits: Sequence[Fault], started: float) -> int:
    """Run the role's script and end the stream; the exit code."""
    role = agent.context.role
    try:
        work = _ROLE_WORK[role](agent, hits)
    except _MaxTurns:
        message = f"Reached maximum number of turns ({options.max_turns})"
        error = {"subtype": "error_max_turns", "is_error": True, "errors": [message]}
        agent.finish(_result(agent, started, message, **error))
        return 1
    except Exception as exc:
        print(f"scripted agent: {role} failed: {exc!r}", file=sys.stderr)
        message = f"[{LABEL}] {role} failed: {exc}"
        error = {"subtype": "error_during_execution", "is_error": True, "errors": [message]}
        agent.finish(_result(agent, started, message, **error))
        return 1
    if any(f.kind == "exit-without-result" for f in hits):
        print(f"scripted agent: fault {role}:exit-without-result", file=sys.stderr)
        return 0
    text = f"[{LABEL}] {work.summary}"
    agent.say(text)
    agent.finish(_result(agent, started, text))
    return 0


def main(
    argv: Sequence[str] | None = None,
    *,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    cwd: Path | None = None,
) -> int:
    """Run one scripted session; the exit code (0, 1 on errors, 3 for the crash fault).

    ``argv`` defaults to ``sys.argv[1:]``, the streams to ``sys.stdin`` and ``sys.stdout``, and
    ``cwd`` (where the session runs unless the prompt names a worktree) to the current
    directory. Diagnostics go to ``sys.stderr``.
    """
    started = time.monotonic()
    out = sys.stdout if stdout is None else stdout
    try:
        options = _read_options(argv, stdin)
    except (_UsageError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else 0

    here = (Path.cwd() if cwd is None else cwd).absolute()
    resumed = options.resume is not None
    session_id = options.resume or str(uuid.uuid4())
    store = state_dir()
    context = parse_prompt(options.prompt, here)
    if context is None and resumed:
        context = _load_session(store, session_id)
    if context is not None and context.worktree != here:
        print(f"scripted agent: working in {context.worktree} (from the prompt)", file=sys.stderr)
    nowhere = Context(
        role="", feature="", run="", worktree=here, checkpoint_dir=here, completion=""
    )
    agent = _Agent(
        out=out,
        output_format=options.output_format,
        verbose=options.verbose,
        session_id=session_id,
        context=context or nowhere,
        delay_s=options.delay_s,
        max_turns=options.max_turns,
    )
    agent.emit(
        {
            "type": "system",
            "subtype": "init",
            "session_id": session_id,
            "cwd": str(here),
            "model": "scripted",
            "tools": list(_TOOLS),
            "mcp_servers": [],
            "permissionMode": options.permission_mode,
            "apiKeySource": "none",
            "claude_code_version": "scripted",
            "agent": LABEL,
        }
    )
    if context is None:
        agent.say(f"[{LABEL}] The prompt names no tmops role; nothing to do.")
        agent.finish(
            _result(agent, started, f"[{LABEL}] no tmops role in the prompt; did nothing.")
        )
        return 0
    _save_session(store, session_id, context, sys.stderr)

    hits = [f for f in options.faults if f.hits(context.role, resumed=resumed)]
    if any(f.kind == "crash" for f in hits):
        print(
            f"scripted agent: fault {context.role}:crash, exit {CRASH_EXIT_CODE}", file=sys.stderr
        )
        return CRASH_EXIT_CODE
    for fault in hits:
        if fault.kind == "slow":
            time.sleep(fault.seconds)
    return _do_work(agent, options, hits, started)


def _terminated(signum: int, frame: object) -> NoReturn:
    # Unwinding kills the running command (subprocess.run kills its child on any exception),
    # as claude ends its children on SIGTERM.
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _terminated)
    sys.exit(main())
