"""A run never follows a link under ``.tmops/`` or the worktrees folder: it fails with the reason.

Each case plants one link, between ``init`` and ``start``, where the run reads or writes: the
spec, the run's folders, the worktree, an agent or gate log, a trigger checkpoint, SUMMARY.md or
metrics.json; pointing outside the project at a stand-in for ``/etc/passwd`` or at a folder.
The real engine (in-process) drives the run with the scripted agent. Each run is made once per
module; the tests read it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.engine_support import Finished, run_workflow, scripted_config
from tests.links_support import KINDS, Outside, says_remove_the_link
from tmops_core.workspace.features import InitResult


@dataclass(frozen=True)
class Case:
    name: str
    workflow: tuple[str, ...]
    where: Callable[[InitResult], Path]
    #: the phases whose agent runs before the link stops the run
    agents: tuple[str, ...] = ()


CASES = [
    Case("task-spec", ("orchestrator",), lambda init: init.task_spec),
    Case("checkpoints", ("orchestrator",), lambda init: init.checkpoint_dir),
    Case("logs", ("orchestrator",), lambda init: init.run_dir / "logs"),
    Case("worktree", ("orchestrator",), lambda init: init.worktree),
    Case("agent-log", ("orchestrator",), lambda init: init.run_dir / "logs/orchestrator.log"),
    Case("trigger", ("implementer",), lambda init: init.checkpoint_dir / "004-impl-trigger.md"),
    Case(
        "gate-log",
        ("orchestrator", "tester"),
        lambda init: init.run_dir / "logs/gate-tester.log",
        agents=("orchestrator",),
    ),
    Case(
        "summary",
        ("orchestrator",),
        lambda init: init.checkpoint_dir / "SUMMARY.md",
        agents=("orchestrator",),
    ),
    Case(
        "metrics",
        ("orchestrator",),
        lambda init: init.run_dir / "metrics.json",
        agents=("orchestrator",),
    ),
]


@dataclass
class Planted:
    finished: Finished
    link: Path
    outside: Outside
    case: Case


@pytest.fixture(
    scope="module",
    params=[(case, kind) for case in CASES for kind in KINDS],
    ids=[f"{case.name}-to-{kind}" for case in CASES for kind in KINDS],
)
def planted(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Planted]:
    case, kind = request.param
    base = tmp_path_factory.mktemp(case.name)
    outside = Outside.make(base / "outside")
    links: list[Path] = []

    def plant(init: InitResult) -> None:
        links.append(outside.plant(case.where(init), kind))

    data = scripted_config(base / "state", default_phases=list(case.workflow), max_retries=0)
    finished = run_workflow(base, data, prepare=plant)
    yield Planted(finished, links[0], outside, case)
    finished.close()


def test_the_run_fails_naming_the_link_and_what_to_do(planted: Planted) -> None:
    finished = planted.finished
    run = finished.store.run(finished.feature, finished.init.run)
    assert run is not None
    assert run.status == "failed"
    assert run.last_error is not None
    assert says_remove_the_link(run.last_error, planted.link), run.last_error
    assert finished.status()["last_error"] == run.last_error


def test_nothing_outside_is_read_or_written_through_the_link(planted: Planted) -> None:
    assert planted.outside.unchanged()
    assert planted.link.is_symlink()


def test_no_agent_is_started_once_a_link_is_on_its_way(planted: Planted) -> None:
    started = [attempt.phase for attempt in planted.finished.attempts()]
    assert started == list(planted.case.agents)


def test_the_failure_is_an_event_with_the_reason(planted: Planted) -> None:
    [error] = planted.finished.events("error")
    assert str(planted.link) in error["data"]["message"]
