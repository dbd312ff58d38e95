"""Each agent is handed only its own feature: two features run side by side, and a recorder
standing in for the agent program dumps what each agent process got (argv, environment,
working directory, stdin, open files) before it execs the scripted agent. No agent of one
feature may have been given any path of the other: its worktree, run folder, checkpoint folder
or branch.

The branches are chosen so that a prompt naming ``feature/<feature>`` instead of the feature's
own branch would name the other feature's branch.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.engine_support import AGENT, PHASES, in_memory_service, scripted_config, wait_for
from tmops_core.service.demo_project import DEMO_TASK_SPEC, create_demo_project
from tmops_core.workspace.features import InitRequest, InitResult

#: feature -> its branch; bravo's branch is what alpha's default branch would have been
BRANCHES = {"alpha-api": "work/alpha", "bravo-api": "feature/alpha-api"}

RECORDER = """\
#!{python}
import json, os, sys, uuid

def target(fd):
    try:
        return os.readlink(f"/proc/self/fd/{{fd}}")
    except OSError:
        return ""

record = {{
    "argv": sys.argv,
    "env": dict(os.environ),
    "cwd": os.getcwd(),
    "stdin": sys.stdin.read(),
    "files": [target(fd) for fd in os.listdir("/proc/self/fd")],
}}
with open(os.path.join({records!r}, uuid.uuid4().hex + ".json"), "w") as out:
    json.dump(record, out)
os.execv({agent!r}, [{agent!r}, *sys.argv[1:]])
"""


def _recorder(folder: Path) -> Path:
    records = folder / "records"
    records.mkdir()
    script = folder / "record-agent"
    script.write_text(RECORDER.format(python=sys.executable, records=str(records), agent=AGENT))
    script.chmod(0o755)
    return script


def _texts(record: dict[str, Any]) -> list[str]:
    """Everything the agent process was handed, as text."""
    env = record["env"]
    return [*record["argv"], *env, *env.values(), record["cwd"], record["stdin"], *record["files"]]


def _identifiers(init: InitResult) -> set[str]:
    return {str(init.worktree), str(init.run_dir), str(init.checkpoint_dir), init.branch}


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict, list[dict]]]:
    base = tmp_path_factory.mktemp("confined")
    recorder = _recorder(base)
    root = create_demo_project(base / "p").path
    service = in_memory_service(
        scripted_config(base / "state", provider={"command": str(recorder)}, concurrent_limit=2)
    )
    try:
        inits = {}
        for feature, branch in BRANCHES.items():
            inits[feature] = service.init(
                InitRequest(feature=feature, workspace=root, branch=branch)
            )
            inits[feature].task_spec.write_text(DEMO_TASK_SPEC)
        for feature in BRANCHES:
            service.start(feature, workspace=root, spawn=False)
        engine = threading.Thread(
            target=service.serve_engine,
            kwargs={"workspace": root, "idle_exit_s": 0.2, "retry_backoff_s": (0.05,)},
        )
        engine.start()
        engine.join(timeout=300)
        states = {
            f: wait_for(service, f, root, done=lambda s: s != "running", timeout=5)["status"]
            for f in BRANCHES
        }
        assert states == dict.fromkeys(BRANCHES, "completed")
        records = [json.loads(p.read_text()) for p in sorted((base / "records").iterdir())]
        yield inits, records
    finally:
        service.close()


def _owner(record: dict[str, Any], inits: dict[str, InitResult]) -> str:
    [owner] = [f for f, init in inits.items() if record["cwd"] == str(init.worktree)]
    return owner


def test_every_agent_ran_in_its_own_worktree_with_its_own_checkpoint_folder(
    recorded: tuple[dict[str, InitResult], list[dict[str, Any]]],
) -> None:
    inits, records = recorded
    owners = [_owner(record, inits) for record in records]
    assert sorted(owners) == sorted([*BRANCHES] * len(PHASES))
    for record, owner in zip(records, owners, strict=True):
        argv = record["argv"]
        # --add-dir holds exactly the feature's checkpoint folder
        added = argv[argv.index("--add-dir") + 1]
        assert added == str(inits[owner].checkpoint_dir)
        assert f"(branch {BRANCHES[owner]})" in argv[-1]


def test_no_agent_was_given_any_path_or_the_branch_of_the_other_feature(
    recorded: tuple[dict[str, InitResult], list[dict[str, Any]]],
) -> None:
    inits, records = recorded
    for record in records:
        owner = _owner(record, inits)
        [other] = [f for f in inits if f != owner]
        forbidden = _identifiers(inits[other])
        if other not in BRANCHES[owner]:
            forbidden.add(other)
        leaks = {
            (name, text[:200]) for text in _texts(record) for name in forbidden if name in text
        }
        assert leaks == set(), owner
