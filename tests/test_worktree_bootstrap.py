"""A new worktree gets what git does not give it: the gitignored files the config lists (.env),
copied at init, and the setup command, run once per worktree before the first agent, its
output in the run's logs; a failing setup fails the run clearly and loses nothing."""

from __future__ import annotations

import os
import stat
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tmops_core.config import parse_config
from tmops_core.orchestration.worktree_setup import SETUP_LOG, run_worktree_setup
from tmops_core.service.demo_project import create_demo_project
from tmops_core.service.operations import Service
from tmops_core.workspace.features import InitRequest, InitResult
from tmops_core.workspace.layout import Layout
from tmops_hookspecs import ConfigError

from .engine_support import (
    SHORT_WORKFLOW,
    WAIT_S,
    in_memory_service,
    new_feature,
    open_store,
    scripted_config,
    serve,
)
from .worktree_support import git, project

SECRET_LINE = "API_TOKEN=hunter2-very-secret"  # noqa: S105  # pragma: allowlist secret


def _setup(script: str) -> list[str]:
    return [sys.executable, "-c", script]


def test_init_copies_the_listed_gitignored_files_keeping_their_mode(tmp_path: Path) -> None:
    p = project(tmp_path, worktree_copy=[".env", "config/*.yaml", "missing.txt"])
    (p.root / ".gitignore").write_text(".env\nconfig/\n")
    git(p.root, "commit", "-q", "-am", "ignore the local config")
    (p.root / ".env").write_text("DATABASE_URL=postgres://localhost/dev\n")
    (p.root / ".env").chmod(0o600)
    (p.root / "config").mkdir()
    (p.root / "config" / "local.yaml").write_text("debug: true\n")
    (p.root / "config" / "local.yaml").chmod(0o644)
    outside = tmp_path / "outside.yaml"
    outside.write_text("not the project's\n")
    (p.root / "config" / "linked.yaml").symlink_to(outside)

    result = p.service.init(InitRequest(feature="boot", workspace=p.root))

    worktree = result.worktree
    assert (worktree / ".env").read_text() == "DATABASE_URL=postgres://localhost/dev\n"
    assert stat.S_IMODE((worktree / ".env").stat().st_mode) == 0o600
    assert (worktree / "config" / "local.yaml").read_text() == "debug: true\n"
    assert stat.S_IMODE((worktree / "config" / "local.yaml").stat().st_mode) == 0o644
    # a link is never followed out of the project, and is not copied
    assert not os.path.lexists(worktree / "config" / "linked.yaml")
    assert "copied .env" in result.changes
    assert "copied config/local.yaml" in result.changes
    # ignored in the worktree too: nothing for a phase to commit
    assert git(worktree, "status", "--porcelain") == ""


@pytest.mark.parametrize("pattern", ["../secrets.env", "/etc/passwd", "a/../../b", ""])
def test_worktree_copy_refuses_paths_outside_the_project(pattern: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config({"features": {"worktree_copy": [pattern]}})
    assert "$.features.worktree_copy" in str(error.value)


def _run_setup(tmp_path: Path, script: str, **features: Any) -> tuple[str | None, Path, list[Any]]:
    p = project(tmp_path, worktree_setup=_setup(script), **features)
    worktree = p.init("boot")
    config = parse_config(
        {"features": {"worktree_setup": _setup(script), "worktree_setup_timeout": 30, **features}}
    )
    events: list[Any] = []
    store = open_store(p.root)
    try:
        failed = run_worktree_setup(
            config, Layout(p.root), feature="boot", run="initial", worktree=worktree,
            emit=lambda kind, **data: events.append((kind, data)), cancel=threading.Event(),
            store=store, fencing=0,
        )  # fmt: skip
    finally:
        store.close()
    return failed, p.root / ".tmops" / "boot" / "runs" / "initial" / "logs" / SETUP_LOG, events


def test_the_setup_runs_in_the_worktree_once_with_its_output_in_the_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = (
        "import os, pathlib\n"
        "print('setting up in', os.getcwd())\n"
        f"print({SECRET_LINE!r})\n"
        "runs = pathlib.Path(os.environ['HOME'], 'setup-runs')\n"
        "runs.write_text(runs.read_text() + 'x' if runs.exists() else 'x')\n"
    )
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    failed, log, events = _run_setup(tmp_path, script)
    worktree = tmp_path / "project" / ".tmops" / "worktrees" / "boot"
    assert failed is None
    text = log.read_text()
    assert f"setting up in {worktree}" in text
    assert "hunter2" not in text  # redacted like the agents' logs
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    assert [kind for kind, _ in events] == [
        "orchestration.worktree.setup_started", "orchestration.worktree.setup",
    ]  # fmt: skip
    # once per worktree: a second call (a resumed run, a retry run) runs nothing
    config = parse_config({"features": {"worktree_setup": _setup(script)}})
    store = open_store(tmp_path / "project")
    again = run_worktree_setup(
        config, Layout(tmp_path / "project"), feature="boot", run="initial",
        worktree=worktree, emit=lambda *a, **k: None, cancel=threading.Event(), store=store,
        fencing=0,
    )  # fmt: skip
    store.close()
    assert again is None
    assert (home / "setup-runs").read_text() == "x"


def test_a_failing_setup_says_why_with_the_tail_of_its_output(tmp_path: Path) -> None:
    failed, log, events = _run_setup(
        tmp_path, "import sys\nprint('resolving packages')\nsys.exit('no package left-pad')\n"
    )
    assert failed is not None
    assert "exited 1" in failed
    assert "resolving packages" in failed
    assert "no package left-pad" in failed
    assert str(log) in failed
    assert "tmops resume boot" in failed
    assert events[-1][1]["ok"] is False


def _queued(tmp_path: Path, script: str) -> tuple[dict[str, Any], Service, Path, InitResult]:
    """The demo project, its feature queued (not yet served) with ``script`` as its setup."""
    root = create_demo_project(tmp_path / "p").path
    data = scripted_config(tmp_path / "state", default_phases=SHORT_WORKFLOW,
                           worktree_setup=_setup(script))  # fmt: skip
    service = in_memory_service(data)
    init = new_feature(service, root)
    service.start(init.feature, workspace=root, spawn=False)
    return data, service, root, init


def test_the_engine_sets_up_before_the_first_agent_and_a_failure_loses_nothing(
    tmp_path: Path,
) -> None:
    data, service, root, init = _queued(tmp_path, "print('installing'); raise SystemExit(3)")
    (init.worktree / "scratch.txt").write_text("a person's notes\n")  # before the engine runs
    serve(service, root)

    status = service.status(init.feature, workspace=root)
    assert status["status"] == "failed"
    assert "exited 3" in status["last_error"]
    assert "installing" in status["last_error"]
    assert f"tmops resume {init.feature}" in status["last_error"]
    store = open_store(root)
    assert store.attempts(init.feature, init.run) == []  # no agent ran
    assert (init.worktree / "scratch.txt").read_text() == "a person's notes\n"
    service.close()

    # fixed, the resumed run sets up and goes through its phases
    fixed = dict(data, features={**data["features"], "worktree_setup": _setup("print('ok')")})
    service = in_memory_service(fixed)
    service.start(init.feature, resume=True, workspace=root, spawn=False)
    serve(service, root)
    assert service.status(init.feature, workspace=root)["status"] == "completed"
    events = [e["event_type"] for e in service.events_since(init.feature, workspace=root)]
    setup_done = len(events) - 1 - events[::-1].index("orchestration.worktree.setup")
    assert setup_done < events.index("orchestration.session.started")
    assert "ok" in (init.run_dir / "logs" / SETUP_LOG).read_text()
    store.close()
    service.close()


def test_a_worktree_made_again_after_cleanup_is_bootstrapped_again(tmp_path: Path) -> None:
    p = project(tmp_path, worktree_copy=[".env"])
    (p.root / ".env").write_text("SETTING=1\n")
    worktree = p.init("again")
    head = git(worktree, "rev-parse", "HEAD")
    p.cancel("again")
    git(worktree, "push", "-q", "origin", "feature/again")
    p.service.cleanup(workspace=p.root)
    assert not worktree.exists()

    result = p.service.init(InitRequest(feature="again", run="initial", workspace=p.root))

    assert result.worktree == worktree
    assert "copied .env" in result.changes
    assert (worktree / ".env").read_text() == "SETTING=1\n"
    assert git(worktree, "rev-parse", "HEAD") == head
    assert p.status("again")["status"] == "cancelled"  # the run is as it was: resumable


def test_a_cancel_stops_a_running_setup_with_everything_it_started(tmp_path: Path) -> None:
    slow = "import os, time\nprint('pid', os.getpid(), flush=True)\ntime.sleep(120)\n"
    _, service, root, init = _queued(tmp_path, slow)
    engine = threading.Thread(target=serve, args=(service, root))
    engine.start()
    log = init.run_dir / "logs" / SETUP_LOG
    deadline = time.monotonic() + WAIT_S
    while "pid" not in (log.read_text() if log.exists() else ""):
        assert time.monotonic() < deadline, "the setup never started"
        time.sleep(0.05)
    pid = int(log.read_text().split("pid", 1)[1].split()[0])

    service.cancel(init.feature, workspace=root)
    engine.join(WAIT_S)

    assert not engine.is_alive()
    assert not Path(f"/proc/{pid}").exists() or _zombie(pid)
    assert service.status(init.feature, workspace=root)["status"] == "cancelled"
    store = open_store(root)
    assert store.attempts(init.feature, init.run) == []  # no agent was started
    store.close()
    service.close()


def _zombie(pid: int) -> bool:
    stat_line = Path(f"/proc/{pid}/stat").read_text()
    return stat_line.rsplit(")", 1)[1].split()[0] == "Z"


def test_a_glob_never_copies_through_a_linked_folder(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "id_rsa").write_text("not the project's\n")
    p = project(tmp_path, worktree_copy=["conf/**"])
    (p.root / ".gitignore").write_text(".env\nconf/\n")
    git(p.root, "commit", "-q", "-am", "ignore conf")
    (p.root / "conf").mkdir()
    (p.root / "conf" / "app.ini").write_text("[app]\n")
    (p.root / "conf" / "keys").symlink_to(outside)

    worktree = p.init("globbed")

    assert (worktree / "conf" / "app.ini").read_text() == "[app]\n"
    assert not os.path.lexists(worktree / "conf" / "keys")
    assert list(worktree.rglob("id_rsa")) == []


def test_a_setup_over_its_timeout_is_stopped_and_fails_saying_so(tmp_path: Path) -> None:
    failed, _, _ = _run_setup(
        tmp_path,
        "import time\nprint('compiling', flush=True)\ntime.sleep(60)\n",
        worktree_setup_timeout=1,
    )
    assert failed is not None
    assert "ran over 1 s (features.worktree_setup_timeout)" in failed
    assert "compiling" in failed


def test_a_setup_program_that_is_not_there_fails_saying_so(tmp_path: Path) -> None:
    p = project(tmp_path)
    worktree = p.init("boot")
    config = parse_config({"features": {"worktree_setup": ["no-such-setup-program-xyz"]}})
    store = open_store(p.root)
    failed = run_worktree_setup(
        config, Layout(p.root), feature="boot", run="initial", worktree=worktree,
        emit=lambda *a, **k: None, cancel=threading.Event(), store=store, fencing=0,
    )  # fmt: skip
    store.close()
    assert failed is not None
    assert "could not start" in failed
    assert "no-such-setup-program-xyz" in failed
