"""The supervisor with real processes: small Python scripts run by this interpreter."""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tmops_core.agents import supervisor
from tmops_core.agents.env import build_env
from tmops_core.agents.processes import MARK_ENV, process_alive
from tmops_core.agents.supervisor import AgentProcess, Limits, ProcessOutcome
from tmops_hookspecs import ProviderError, WorkspaceError

FAST = Limits(wall_clock_s=20, idle_s=20, term_grace_s=2)


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _state(pid: int) -> str | None:
    """The /proc state letter of ``pid``, None if it does not exist."""
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    return data[data.rfind(b")") + 2 :].split()[0].decode()


def gone(pid: int, timeout: float = 5.0) -> bool:
    """Whether ``pid`` disappears (or is a zombie nobody reaped yet) within ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        if _state(pid) in (None, "Z", "X"):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def script_writer(tmp_path: Path) -> Callable[[str], list[str]]:
    """Write a Python script; return the argv that runs it (unbuffered, no site)."""
    counter = iter(range(1000))

    def make(body: str) -> list[str]:
        path = tmp_path / f"child_{next(counter)}.py"
        path.write_text(textwrap.dedent(body))
        return [sys.executable, "-S", "-u", str(path)]

    return make


@pytest.fixture
def script(tmp_path: Path) -> Callable[[str], list[str]]:
    return script_writer(tmp_path)


class Agent:
    """Builds AgentProcess objects and makes sure none outlives its test."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.created: list[AgentProcess] = []
        self.lines: list[str] = []

    def __call__(
        self,
        argv: list[str],
        *,
        limits: Limits = FAST,
        on_line: Callable[[str], None] | None = None,
        env: dict[str, str] | None = None,
        stdin: str | None = None,
        log_name: str = "agent.log",
    ) -> AgentProcess:
        agent = AgentProcess(
            argv,
            cwd=self.tmp_path,
            env=build_env({}) if env is None else env,
            log_path=self.tmp_path / "logs" / log_name,
            limits=limits,
            on_line=self.lines.append if on_line is None else on_line,
            stdin=stdin,
        )
        self.created.append(agent)
        return agent

    def cleanup(self) -> None:
        for agent in self.created:
            with contextlib.suppress(RuntimeError):  # never started
                agent.stop()


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Agent]:
    factory = Agent(tmp_path)
    yield factory
    factory.cleanup()


def run(agent: AgentProcess, timeout: float = 10.0) -> ProcessOutcome:
    agent.start()
    outcome = agent.wait(timeout)
    assert outcome is not None, "the agent did not finish in time"
    return outcome


def read_line(stream: object, timeout: float = 10.0) -> str:
    """One line from a pipe, failing instead of hanging."""
    assert hasattr(stream, "readline")
    assert hasattr(stream, "fileno")
    ready, _, _ = select.select([stream], [], [], timeout)
    assert ready, "no line in time"
    line: str = stream.readline()
    return line.strip()


# --------------------------------------------------------------------------------------------
# environment
# --------------------------------------------------------------------------------------------


def test_env_reaches_the_child_through_the_allowlist(
    agent: Agent, script: Callable[[str], list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_secret")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("TEAM_PROXY", "http://proxy")
    monkeypatch.setenv("CLAUDE_CODE_MAX_RETRIES", "5")
    argv = script("import json, os\nprint(json.dumps(dict(os.environ)))\n")
    # what the claude-code provider's spec declares, as the executor passes it
    allow = ["TEAM_PROXY", "ANTHROPIC_*", "CLAUDE_CODE_*"]
    env = build_env({"CLAUDE_CODE_MAX_RETRIES": "0"}, allow=allow)
    proc = agent(argv, env=env)
    outcome = run(proc)
    assert outcome.returncode == 0
    seen = json.loads(agent.lines[0])
    assert "AWS_SECRET_ACCESS_KEY" not in seen
    assert "GITHUB_TOKEN" not in seen
    assert seen["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:1"
    assert seen["TEAM_PROXY"] == "http://proxy"
    assert seen["CLAUDE_CODE_MAX_RETRIES"] == "0"
    assert seen[MARK_ENV] == proc.mark
    assert set(seen) <= set(env) | {MARK_ENV, "LC_CTYPE"}  # nothing else (the C runtime may
    # set LC_CTYPE in a -S interpreter)


# --------------------------------------------------------------------------------------------
# running and output
# --------------------------------------------------------------------------------------------


def test_exit_code_and_lines_in_order(agent: Agent, script: Callable[[str], list[str]]) -> None:
    argv = script("""
        import sys
        for i in range(500):
            print(f"line {i}")
        sys.stdout.write("no newline at the end")
        sys.exit(3)
    """)
    proc = agent(argv)
    pid = proc.start()
    assert proc.pid == pid
    outcome = proc.wait(10)
    assert outcome is not None
    assert outcome.returncode == 3
    assert outcome.stop_reason is None
    assert not outcome.timed_out
    assert outcome.pid == pid
    assert outcome.start_time == proc.start_time
    assert outcome.lines == 501
    assert agent.lines == [*(f"line {i}" for i in range(500)), "no newline at the end"]
    assert 0 < outcome.duration_s < 10
    assert not proc.running
    assert proc.wait(0) == outcome
    assert proc.stop() == outcome  # idempotent after an exit by itself
    assert not [t for t in threading.enumerate() if t.name.endswith(f"-{pid}")]


# --------------------------------------------------------------------------------------------
# start-up errors
# --------------------------------------------------------------------------------------------


def test_missing_program_is_a_provider_error(agent: Agent) -> None:
    with pytest.raises(ProviderError, match="not found on PATH"):
        agent(["tmops-no-such-agent-program", "-p"]).start()
    with pytest.raises(ProviderError, match="does not exist"):
        agent(["/nonexistent/claude"]).start()


def test_non_executable_program_is_a_provider_error(agent: Agent, tmp_path: Path) -> None:
    program = tmp_path / "bin" / "claude"
    program.parent.mkdir()
    program.write_text("#!/bin/sh\necho hi\n")
    program.chmod(0o644)
    with pytest.raises(ProviderError, match="not executable"):
        agent([str(program)]).start()
    env = build_env({"PATH": str(program.parent)})
    with pytest.raises(ProviderError, match="not executable"):
        agent(["claude"], env=env).start()
    program.write_text("no interpreter line\n")
    program.chmod(0o755)
    with pytest.raises(ProviderError, match="exec format error"):
        agent([str(program)]).start()


def test_missing_working_directory_is_refused(tmp_path: Path) -> None:
    proc = AgentProcess(
        [sys.executable, "-c", "pass"],
        cwd=tmp_path / "gone",
        env=build_env({}),
        log_path=tmp_path / "agent.log",
        limits=FAST,
        on_line=print,
    )
    with pytest.raises(WorkspaceError, match="working directory"):
        proc.start()
    with pytest.raises(RuntimeError, match="not been started"):
        proc.wait()


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    kwargs = {
        "cwd": tmp_path,
        "env": {},
        "log_path": tmp_path / "x.log",
        "limits": FAST,
        "on_line": print,
    }
    with pytest.raises(ProviderError):
        AgentProcess([], **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ProviderError):
        AgentProcess("claude -p", **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="wall_clock_s"):
        Limits(wall_clock_s=0, idle_s=1)
    with pytest.raises(ValueError, match="term_grace_s"):
        Limits(wall_clock_s=1, idle_s=1, term_grace_s=-1)


# --------------------------------------------------------------------------------------------
# limits
# --------------------------------------------------------------------------------------------


def test_wall_clock_limit_kills(agent: Agent, script: Callable[[str], list[str]]) -> None:
    argv = script("""
        import time
        while True:
            print("busy")
            time.sleep(0.02)
    """)
    outcome = run(agent(argv, limits=Limits(wall_clock_s=0.4, idle_s=5, term_grace_s=1)))
    assert outcome.stop_reason == "wall_clock"
    assert outcome.timed_out
    assert outcome.returncode == -signal.SIGTERM
    assert 0.4 <= outcome.duration_s < 2
    assert outcome.lines > 3


def test_idle_limit_fires_when_silent(agent: Agent, script: Callable[[str], list[str]]) -> None:
    argv = script("import time\nprint('started')\ntime.sleep(30)\n")
    outcome = run(agent(argv, limits=Limits(wall_clock_s=20, idle_s=0.3, term_grace_s=1)))
    assert outcome.stop_reason == "idle"
    assert outcome.returncode == -signal.SIGTERM
    assert 0.3 <= outcome.duration_s < 2
    assert agent.lines == ["started"]


def test_idle_limit_waits_while_output_keeps_coming(
    agent: Agent, script: Callable[[str], list[str]]
) -> None:
    # Output only on stderr for half the time: any stream counts as a sign of life.
    argv = script("""
        import sys, time
        for i in range(8):
            print("tick")
            time.sleep(0.06)
        for i in range(8):
            sys.stderr.write("tock\\n")
            time.sleep(0.06)
    """)
    outcome = run(agent(argv, limits=Limits(wall_clock_s=20, idle_s=0.3, term_grace_s=1)))
    assert outcome.stop_reason is None
    assert outcome.returncode == 0
    assert outcome.duration_s > 0.6


# --------------------------------------------------------------------------------------------
# stopping
# --------------------------------------------------------------------------------------------

GRANDCHILD_IN_OWN_SESSION = """
    import subprocess, sys, time
    grandchild = subprocess.Popen(
        [sys.executable, "-S", "-u", "-c",
         "import os, signal, sys, time\\n"
         "os.setsid()\\n"
         "if sys.argv[1] == 'stubborn': signal.signal(signal.SIGTERM, signal.SIG_IGN)\\n"
         "print(os.getsid(0), flush=True)\\n"
         "time.sleep(60)\\n",
         sys.argv[1]],
        stdout=subprocess.PIPE, text=True,
    )
    sid = grandchild.stdout.readline().strip()
    print(grandchild.pid, sid, flush=True)
    time.sleep(60)
"""


@pytest.mark.parametrize("kind", ["polite", "stubborn"])
def test_stop_kills_a_grandchild_in_its_own_session(
    agent: Agent, script: Callable[[str], list[str]], kind: str
) -> None:
    argv = [*script(GRANDCHILD_IN_OWN_SESSION), kind]
    proc = agent(argv, limits=Limits(wall_clock_s=20, idle_s=20, term_grace_s=0.3))
    proc.start()
    assert wait_for(lambda: bool(agent.lines))
    grandchild, sid = map(int, agent.lines[0].split())
    assert sid == grandchild != proc.pid  # really in a session of its own
    assert proc.running
    outcome = proc.stop()
    assert outcome.stop_reason == "stopped"
    assert outcome.returncode == -signal.SIGTERM
    assert gone(grandchild, timeout=2)
    assert not proc.running
    if kind == "stubborn":
        assert outcome.duration_s >= 0.3  # the grandchild needed SIGKILL after the grace


def test_a_child_ignoring_sigterm_is_killed_after_the_grace(
    agent: Agent, script: Callable[[str], list[str]]
) -> None:
    argv = script("""
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("ready")
        time.sleep(60)
    """)
    proc = agent(argv, limits=Limits(wall_clock_s=20, idle_s=20, term_grace_s=0.3))
    proc.start()
    assert wait_for(lambda: agent.lines == ["ready"])
    started = time.monotonic()
    outcome = proc.stop("cancelled")
    assert outcome.returncode == -signal.SIGKILL
    assert outcome.stop_reason == "cancelled"
    assert 0.3 <= time.monotonic() - started < 3


def test_stop_is_thread_safe_and_idempotent(
    agent: Agent, script: Callable[[str], list[str]]
) -> None:
    argv = script("import time\nprint('ready')\ntime.sleep(60)\n")
    proc = agent(argv)
    proc.start()
    assert proc.wait(0.05) is None
    results: list[ProcessOutcome | None] = []
    waiter = threading.Thread(target=lambda: results.append(proc.wait()))
    waiter.start()
    stoppers = [
        threading.Thread(target=lambda r=reason: results.append(proc.stop(r)))
        for reason in ("cancelled", "cancelled", "cancelled")
    ]
    for thread in stoppers:
        thread.start()
    for thread in [waiter, *stoppers]:
        thread.join(10)
    assert len(results) == 4
    assert all(result == results[0] for result in results)
    assert results[0] is not None
    assert results[0].stop_reason == "cancelled"
    assert proc.stop("stopped") == results[0]


def test_request_stop_from_on_line(agent: Agent, script: Callable[[str], list[str]]) -> None:
    argv = script("import time\nprint('result')\ntime.sleep(60)\n")
    holder: list[AgentProcess] = []
    errors: list[Exception] = []

    def on_line(line: str) -> None:
        try:
            holder[0].stop()
        except RuntimeError as exc:
            errors.append(exc)
        holder[0].request_stop("cancelled")

    proc = agent(argv, on_line=on_line)
    holder.append(proc)
    outcome = run(proc)
    assert outcome.stop_reason == "cancelled"
    assert errors
    assert "request_stop" in str(errors[0])


def test_exit_by_itself_cleans_up_what_the_agent_left(
    agent: Agent, script: Callable[[str], list[str]]
) -> None:
    # One leftover in the agent's group holding the output pipe, one in a session of its own
    # (found by the agent's mark, as its parent is gone by then).
    argv = script("""
        import subprocess, sys
        code = "import time; time.sleep(60)"
        same_group = subprocess.Popen([sys.executable, "-S", "-c", code])
        own_session = subprocess.Popen(
            [sys.executable, "-S", "-c", code], start_new_session=True,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        print(same_group.pid, own_session.pid)
    """)
    started = time.monotonic()
    outcome = run(agent(argv))
    assert time.monotonic() - started < 3
    assert outcome.returncode == 0
    assert outcome.stop_reason is None
    for pid in map(int, agent.lines[0].split()):
        assert gone(pid, timeout=2)


def test_start_from_a_short_lived_thread_keeps_the_agent_alive(
    agent: Agent, script: Callable[[str], list[str]]
) -> None:
    # PR_SET_PDEATHSIG follows the forking THREAD: the supervisor forks from its own thread.
    proc = agent(script("import time\nprint('alive')\ntime.sleep(60)\n"))
    starter = threading.Thread(target=proc.start)
    starter.start()
    starter.join()
    assert wait_for(lambda: agent.lines == ["alive"])
    time.sleep(0.1)
    assert proc.running
    assert proc.stop().stop_reason == "stopped"


def test_the_agent_dies_with_its_parent(script: Callable[[str], list[str]], tmp_path: Path) -> None:
    middle_argv = script(f"""
        import sys, time
        from pathlib import Path
        from tmops_core.agents.env import build_env
        from tmops_core.agents.supervisor import AgentProcess, Limits
        agent = AgentProcess(
            [sys.executable, "-S", "-c", "import time; time.sleep(60)"],
            cwd=Path.cwd(), env=build_env({{}}), log_path=Path({str(tmp_path / "m.log")!r}),
            limits=Limits(60, 60), on_line=print,
        )
        print(agent.start(), agent.start_time, flush=True)
        time.sleep(60)
    """)
    middle_argv.remove("-S")  # the middle process imports tmops
    middle = subprocess.Popen(middle_argv, stdout=subprocess.PIPE, text=True, cwd=tmp_path)
    pid = start_time = 0
    try:
        pid, start_time = map(int, read_line(middle.stdout).split())
        assert process_alive(pid, start_time)
        middle.kill()
        middle.wait(5)
        assert gone(pid, timeout=3)
        assert not process_alive(pid, start_time)
    finally:
        middle.kill()
        middle.wait(5)
        if middle.stdout is not None:
            middle.stdout.close()
        if pid and process_alive(pid, start_time):
            os.kill(pid, signal.SIGKILL)


def test_an_orderly_exit_of_tmops_stops_its_agents_gracefully(
    script: Callable[[str], list[str]], tmp_path: Path
) -> None:
    # atexit -> stop_all(): SIGTERM and a grace period, not PDEATHSIG's SIGKILL.
    marker = tmp_path / "terminated"
    agent_argv = script(f"""
        import signal, sys, time
        from pathlib import Path
        def bye(signum, frame):
            Path({str(marker)!r}).write_text("SIGTERM")
            sys.exit(0)
        signal.signal(signal.SIGTERM, bye)
        print("ready")
        time.sleep(60)
    """)
    middle_argv = script(f"""
        import sys, time
        from pathlib import Path
        from tmops_core.agents.env import build_env
        from tmops_core.agents.supervisor import AgentProcess, Limits
        lines = []
        agent = AgentProcess(
            {agent_argv!r}, cwd=Path.cwd(), env=build_env({{}}),
            log_path=Path({str(tmp_path / "m.log")!r}), limits=Limits(60, 60),
            on_line=lines.append,
        )
        agent.start()
        deadline = time.monotonic() + 10
        while not lines and time.monotonic() < deadline:
            time.sleep(0.005)
        print(agent.pid, flush=True)
    """)
    middle_argv.remove("-S")
    result = subprocess.run(middle_argv, capture_output=True, text=True, timeout=20, check=False)
    assert result.returncode == 0, result.stderr
    assert marker.read_text() == "SIGTERM"
    assert gone(int(result.stdout))


def test_context_manager_and_stop_all(agent: Agent, script: Callable[[str], list[str]]) -> None:
    argv = script("import time\nprint('up')\ntime.sleep(60)\n")
    with agent(argv) as first:
        first.start()
        second = agent(argv)
        second.start()
        outcomes = supervisor.stop_all("cancelled")
        assert {o.pid for o in outcomes} >= {first.pid, second.pid}
        assert all(o.stop_reason == "cancelled" for o in outcomes)
    assert not first.running
    assert supervisor.stop_all() == []
