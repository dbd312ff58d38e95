"""Gates: the test command must fail after the tester and pass after the implementer."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tmops_core.orchestration.gates import run_gates
from tmops_hookspecs import Gate


def _gate(gate: Gate, command: list[str], cwd: Path) -> tuple[bool, str]:
    [result] = run_gates(
        [gate],
        command=command,
        cwd=cwd,
        env={"PATH": os.environ["PATH"]},
        timeout_s=60,
        log_path=cwd / "gate.log",
    )
    return result.passed, result.reason


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "tests").mkdir()
    return tmp_path


PYTEST = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]


def test_tests_fail_gate_passes_on_failing_tests(project: Path) -> None:
    (project / "tests" / "test_a.py").write_text("def test_a():\n    assert False\n")
    assert _gate(Gate.TESTS_FAIL, PYTEST, project)[0]


def test_tests_fail_gate_accepts_importing_code_that_does_not_exist_yet(project: Path) -> None:
    (project / "tests" / "test_a.py").write_text("from missing import thing\n")
    assert _gate(Gate.TESTS_FAIL, PYTEST, project)[0]


def test_tests_fail_gate_rejects_tests_that_already_pass(project: Path) -> None:
    (project / "tests" / "test_a.py").write_text("def test_a():\n    assert True\n")
    passed, reason = _gate(Gate.TESTS_FAIL, PYTEST, project)
    assert not passed
    assert "must fail" in reason


def test_tests_fail_gate_rejects_no_tests_at_all(project: Path) -> None:
    passed, reason = _gate(Gate.TESTS_FAIL, PYTEST, project)
    assert not passed
    assert "no tests" in reason


def test_tests_fail_gate_rejects_a_missing_test_runner(project: Path) -> None:
    command = [sys.executable, "-c", "import sys; sys.exit('No module named pytest')", "pytest"]
    passed, reason = _gate(Gate.TESTS_FAIL, command, project)
    assert not passed
    assert "not installed" in reason


def test_tests_pass_gate_needs_a_green_run(project: Path) -> None:
    (project / "tests" / "test_a.py").write_text("def test_a():\n    assert True\n")
    assert _gate(Gate.TESTS_PASS, PYTEST, project)[0]
    (project / "tests" / "test_b.py").write_text("def test_b():\n    assert False\n")
    passed, reason = _gate(Gate.TESTS_PASS, PYTEST, project)
    assert not passed
    assert "must pass" in reason


def test_any_command_works_as_the_test_command(project: Path) -> None:
    assert _gate(Gate.TESTS_FAIL, [sys.executable, "-c", "raise SystemExit(3)"], project)[0]
    assert _gate(Gate.TESTS_PASS, [sys.executable, "-c", "pass"], project)[0]


def test_a_test_command_over_its_time_fails_the_gate(project: Path) -> None:
    [result] = run_gates(
        [Gate.TESTS_PASS],
        command=[sys.executable, "-c", "import time; time.sleep(30)"],
        cwd=project,
        env={"PATH": os.environ["PATH"]},
        timeout_s=0.5,
        log_path=project / "gate.log",
    )
    assert not result.passed
    assert "ran over" in result.reason


def test_no_gates_run_nothing(project: Path) -> None:
    assert (
        run_gates([], command=["false"], cwd=project, env={}, timeout_s=1, log_path=project / "x")
        == []
    )
