"""Gates: checks that must hold before a phase hands off.

``tests-fail`` (after the tester: the new tests are red) and ``tests-pass`` (after the
implementer and the verifier: green) run the configured test command in the feature's
worktree, as an argv list through the supervisor, with the agents' environment allowlist.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import attrs

from tmops_core.agents.supervisor import AgentProcess, Limits
from tmops_hookspecs import Gate

__all__ = ["GateResult", "run_gates"]

# pytest's exit codes: 1 tests failed, 2 interrupted (a collection error such as importing a
# module that does not exist yet: red for a reason the tester intends), 5 no tests collected.
_PYTEST_RED = {1, 2}
_PYTEST_NO_TESTS = 5


@attrs.frozen
class GateResult:
    gate: Gate
    passed: bool
    reason: str
    returncode: int
    output_tail: str


def _is_pytest(command: Sequence[str]) -> bool:
    return any(Path(part).name in {"pytest", "py.test"} or part == "pytest" for part in command)


def _judge(gate: Gate, command: Sequence[str], returncode: int, tail: str) -> GateResult:
    shown = " ".join(command)
    if gate is Gate.TESTS_PASS:
        if returncode == 0:
            return GateResult(gate, True, f"`{shown}` passed", returncode, tail)
        return GateResult(
            gate, False, f"the tests must pass, but `{shown}` exited {returncode}", returncode, tail
        )
    if returncode == 0:
        return GateResult(
            gate,
            False,
            f"the new tests must fail before the code exists, but `{shown}` passed",
            returncode,
            tail,
        )
    if _is_pytest(command):
        if "No module named pytest" in tail:
            return GateResult(
                gate, False, "pytest is not installed where the test command runs", returncode,
                tail,
            )  # fmt: skip
        if returncode == _PYTEST_NO_TESTS:
            return GateResult(gate, False, "pytest collected no tests", returncode, tail)
        if returncode not in _PYTEST_RED:
            return GateResult(
                gate, False, f"pytest could not run the tests (exit {returncode})", returncode, tail
            )
    return GateResult(
        gate, True, f"`{shown}` failed as it should (exit {returncode})", returncode, tail
    )


def run_gates(
    gates: Iterable[Gate],
    *,
    command: Sequence[str],
    cwd: Path,
    env: Mapping[str, str],
    timeout_s: float,
    log_path: Path,
) -> list[GateResult]:
    """Run the test command once if any gate needs it and judge every gate against it."""
    gates = list(gates)
    if not gates:
        return []
    tail: list[str] = []

    def keep(line: str) -> None:
        tail.append(line)
        del tail[:-40]

    process = AgentProcess(
        list(command),
        cwd=cwd,
        env=env,
        log_path=log_path,
        limits=Limits(wall_clock_s=timeout_s, idle_s=timeout_s),
        on_line=keep,
    )
    process.start()
    outcome = process.wait()
    assert outcome is not None  # noqa: S101 - wait() without a timeout returns the outcome
    text = "\n".join([*tail, outcome.stderr_tail])
    if outcome.stop_reason is not None:
        return [
            GateResult(g, False, f"the test command ran over {timeout_s:.0f} s", -1, text)
            for g in gates
        ]
    return [_judge(gate, command, outcome.returncode, text) for gate in gates]
