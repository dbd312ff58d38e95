"""The scripted local agent: a stand-in for ``claude -p`` with NO AI model behind it.

``tmops demo`` and the tests run it where the real Claude Code CLI would run, so that the whole
workflow (processes, stream, files, commits, checkpoints, gates, retries) can be watched and
tested on a machine with no model and no network. It is a script, not an agent: whatever the
spec says, each role does its fixed part of the demo task of :mod:`tmops_core.service.demo_project`
(``slugify`` in ``slug.py``, tests in ``tests/test_slug.py``), for real, on disk and in git. Its
output says so: the init line has ``"model": "scripted"`` and ``"claude_code_version":
"scripted"``, and every final text starts with ``[tmops scripted agent, no AI model]``.

Command line (the flags of ``claude -p``, as Claude Code's headless mode documents them)::

    python -m tmops_plugins.scripted_agent -p PROMPT --output-format stream-json --verbose \\
        [--append-system-prompt TEXT] [--permission-mode M] [--add-dir DIR ...] \\
        [--resume SESSION_ID] [--max-turns N] [--max-budget-usd AMOUNT] [--model M] \\
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
- ``--max-budget-usd AMOUNT``: a session whose cost (the ``cost`` fault; 0 otherwise) is that
  much or more does no work and ends with a result of subtype ``error_max_budget_usd``
  (``is_error`` true) and exit 1, as claude stops at its budget.
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
- ``<role>:lost-session``: a RESUMED session of the role cannot be continued: it says so on
  stderr as ``claude --resume`` does for an unknown session and exits 1 (fresh sessions work).
- ``<role>:slow=<seconds>``: sleeps that long after the init line, before working (timeouts,
  no-output watchdogs).
- ``<role>:detach``: after the init line, starts a daemon the way a dev server does (a new
  session, then a second fork, so it is re-parented away from the agent, with its standard
  streams on ``/dev/null``); it writes its pid to ``detached-<role>-<agent pid>.pid`` in the
  state folder and sleeps ``scripted_detach.DETACHED_LIFETIME_S`` unless it is killed. Then
  the session goes on (with ``slow``, it sleeps first). Tests use it to prove that nothing of
  an agent is left behind.
- ``<role>:wrong-feature``: the checkpoint's ``**Feature:**`` names ``<feature>-other``.
- ``<role>:exit-without-result``: does all the work, checkpoint included, then exits 0 without
  the final text and the result line.
- ``verifier:refuse``: the review says ``Feature ready for merge: NO`` (score 4/10), once per
  run (a marker in the checkpoint folder remembers it); ``:always`` refuses every review.
- ``<role>:leave-artefacts``: before its checkpoint, leaves behind, uncommitted, what an agent's
  tools leave: a virtual environment ``tools-env/`` (``<python> -m venv --without-pip``), byte
  code (``<python> -m compileall -q tests``) and a ``.coverage`` file.
- ``<role>:cost=<usd>``: the result reports ``total_cost_usd`` <usd> (0 otherwise); with
  ``:always`` every session of the role costs that much.
- ``<role>:tokens=<input>/<output>``: the result reports those tokens in ``usage`` and no cost
  (``total_cost_usd`` null), as an agent that counts tokens only.
- ``<role>:usage-limit[=<seconds>]``: prints the init line, then ends with the usage-limit
  error Claude Code gives (``You've hit your usage limit · resets in <seconds>s``, without the
  reset when no seconds are given; ``is_error`` true, HTTP 429) and exit 1, before any work;
  once per run and role (a marker in the checkpoint folder remembers it) unless ``:always``.

A malformed or unknown item is an error (message on stderr, exit 1). ``TMOPS_SCRIPTED_DELAY_S``
(float seconds, default 0) is slept before each action, for live-view demos.

Journal, for the kill harness and the soak: with ``TMOPS_SCRIPTED_JOURNAL=<folder>`` every
session that knows its role writes a ``start`` line (pid, role, feature, session, agent mark,
time, and the other live agents of its feature) and, unless it is killed, an ``end`` line to
``<folder>/journal.jsonl``, and holds a lock in ``<folder>/live/`` while it lives
(:mod:`tmops_plugins.scripted_journal`).

This module is the entry (``tmops-scripted-agent``, ``python -m tmops_plugins.scripted_agent``):
it owns :func:`main` (the command line is :mod:`tmops_plugins.scripted_cli`'s), the stream
(and the Read, Write and Bash tools that show in it) and the faults that end a session
(``crash``, ``slow``, ``exit-without-result``, ``usage-limit``, the budget) or outlive it
(``detach``).
The role work and the demo task's files are :mod:`tmops_plugins.scripted_roles`'; the faults,
the prompt's context and the saved sessions are :mod:`tmops_plugins.scripted_session`'s; the
journal is :mod:`tmops_plugins.scripted_journal`'s.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn, TextIO

from .scripted_cli import DELAY_ENV, Options, UsageError, read_options
from .scripted_detach import detach_daemon
from .scripted_journal import open_journal
from .scripted_roles import LABEL, ROLE_WORK, Ran
from .scripted_session import (
    CRASH_EXIT_CODE,
    Context,
    Fault,
    atomic_write,
    limited_once,
    load_session,
    parse_prompt,
    save_session,
    state_dir,
)

__all__ = ["DELAY_ENV", "main"]

_TOOLS = ("Read", "Write", "Bash")
_COMMAND_TIMEOUT_S = 300
_OUTPUT_LIMIT = 4000


# --------------------------------------------------------------------------------------------
# The stream and the tools
# --------------------------------------------------------------------------------------------


class _MaxTurns(Exception):
    pass


def _truncate(text: str) -> str:
    if len(text) <= _OUTPUT_LIMIT:
        return text
    return f"[... {len(text) - _OUTPUT_LIMIT} characters cut ...]\n" + text[-_OUTPUT_LIMIT:]


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
        #: what the result reports it cost (the ``cost`` and ``tokens`` faults change both)
        self.cost_usd: float | None = 0.0
        self.usage: dict[str, int] = {}
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
                atomic_write(path, text)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text, encoding="utf-8")
        except OSError as exc:
            self._result(tool_id, f"Cannot write {path}: {exc.strerror or exc}", is_error=True)
            raise
        self._result(tool_id, f"File created successfully at: {path}", is_error=False)

    def bash(self, argv: Sequence[str], description: str, *, test_run: bool = False) -> Ran:
        tool_id = self._tool("Bash", {"command": shlex.join(argv), "description": description})
        ran = self.run(argv, test_run=test_run)
        self._result(tool_id, _truncate(ran.output), is_error=ran.returncode != 0)
        return ran

    def run(self, argv: Sequence[str], *, test_run: bool = False) -> Ran:
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
            return Ran(127, f"command not found: {exc.filename or argv[0]}")
        except subprocess.TimeoutExpired:
            return Ran(124, f"timed out after {_COMMAND_TIMEOUT_S} s")
        output = (done.stdout + done.stderr).strip()
        if done.returncode != 0:
            output = f"{output}\nExit code {done.returncode}".strip()
        return Ran(done.returncode, output)


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
        "total_cost_usd": agent.cost_usd,
        "usage": agent.usage,
        "permission_denials": [],
    }
    result.update(extra)
    return result


def _stopped(
    agent: _Agent, started: float, message: str, *, subtype: str, status: int | None = None
) -> int:
    """End the stream with an error result, as claude does; exit code 1."""
    error = {"subtype": subtype, "is_error": True, "errors": [message], "api_error_status": status}
    agent.finish(_result(agent, started, message, **error))
    return 1


def _do_work(agent: _Agent, options: Options, hits: Sequence[Fault], started: float) -> int:
    """Run the role's script and end the stream; the exit code."""
    role = agent.context.role
    try:
        work = ROLE_WORK[role](agent, hits)
    except _MaxTurns:
        message = f"Reached maximum number of turns ({options.max_turns})"
        return _stopped(agent, started, message, subtype="error_max_turns")
    except Exception as exc:
        print(f"scripted agent: {role} failed: {exc!r}", file=sys.stderr)
        message = f"[{LABEL}] {role} failed: {exc}"
        return _stopped(agent, started, message, subtype="error_during_execution")
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
        options = read_options(argv, stdin)
    except (UsageError, ValueError) as exc:
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
        context = load_session(store, session_id)
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
    save_session(store, session_id, context, sys.stderr)
    journal = open_journal(context, session_id=session_id, resumed=resumed, err=sys.stderr)
    code = 1
    try:
        code = _session(agent, options, resumed, started)
    except SystemExit as exc:  # SIGTERM: the journal still gets its end line
        code = exc.code if isinstance(exc.code, int) else 1
        raise
    finally:
        if journal is not None:
            journal.close(code)
    return code


def _session(agent: _Agent, options: Options, resumed: bool, started: float) -> int:
    """The faults that end or delay a session, then the role's work; the exit code."""
    role = agent.context.role
    hits = [f for f in options.faults if f.hits(role, resumed=resumed)]
    if resumed and any(f.kind == "lost-session" and f.role in (role, "*") for f in options.faults):
        print(f"No conversation found with session ID: {options.resume}", file=sys.stderr)
        return 1
    if any(f.kind == "crash" for f in hits):
        print(f"scripted agent: fault {role}:crash, exit {CRASH_EXIT_CODE}", file=sys.stderr)
        return CRASH_EXIT_CODE
    if any(f.kind == "detach" for f in hits):
        detach_daemon(state_dir() / f"detached-{role}-{os.getpid()}.pid")
    for fault in hits:
        if fault.kind == "slow":
            time.sleep(fault.seconds or 0.0)
        elif fault.kind == "cost":
            agent.cost_usd = fault.usd
        elif fault.kind == "tokens":
            agent.cost_usd = None
            agent.usage = {"input_tokens": fault.tokens[0], "output_tokens": fault.tokens[1]}
    limit = limited_once(agent.context, hits)
    if limit is not None:
        return _stopped(agent, started, limit, subtype="success", status=429)
    budget = options.max_budget_usd
    if budget is not None and (agent.cost_usd or 0.0) >= budget:
        return _stopped(agent, started, f"Reached maximum budget (${budget})",
                        subtype="error_max_budget_usd")  # fmt: skip
    return _do_work(agent, options, hits, started)


def _terminated(signum: int, frame: object) -> NoReturn:
    # Unwinding kills the running command (subprocess.run kills its child on any exception),
    # as claude ends its children on SIGTERM.
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _terminated)
    sys.exit(main())
