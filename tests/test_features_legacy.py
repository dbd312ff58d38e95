"""``tmops init`` delegating to a legacy ``init_feature_multi.sh`` named in the configuration.

Everything runs for real: git repositories in ``tmp_path``, real processes, no mocks.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tmops_hookspecs import WorkspaceError

from .features_support import branch_exists, init, write_config

SCRIPT = "tmops_v6_portable/tmops_tools/init_feature_multi.sh"


UPSTREAM_SCRIPT = """\
#!/bin/sh
printf '%s\\n' "$@" > "{argv_file}"
feature="$1"
branch="feature/$feature"
make_branch=yes
[ "$3" = "--branch" ] && branch="$4"
[ "$3" = "--use-current-branch" ] && make_branch=no && branch="$(git symbolic-ref --short HEAD)"
dir=".tmops/$feature"
mkdir -p "$dir/runs/initial/checkpoints" "$dir/runs/initial/logs"
mkdir -p "$dir/docs/internal" "$dir/docs/external" "$dir/docs/archive" "$dir/docs/images"
printf '# Task Specification: %s\\n' "$feature" > "$dir/runs/initial/TASK_SPEC.md"
ln -s runs/initial "$dir/current"
printf '%s:initialized:2025-08-20T09:34:30Z:%s\\n' "$feature" "$branch" >> .tmops/FEATURES.txt
if [ "$make_branch" = yes ]; then git branch "$branch"; fi
"""


def legacy(repo: Path, body: str, *, timeout: int | None = None, mode: int = 0o755) -> Path:
    script = repo / SCRIPT
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(body)
    script.chmod(mode)
    extra = f"\n  init_timeout: {timeout}" if timeout else ""
    return write_config(repo, f"paths:\n  init_script: {SCRIPT}{extra}\n")


@pytest.fixture
def argv_file(tmp_path: Path) -> Path:
    return tmp_path / "argv.txt"


def test_legacy_script_runs_with_feature_and_run_type(repo: Path, argv_file: Path) -> None:
    config = legacy(repo, UPSTREAM_SCRIPT.format(argv_file=argv_file))
    init(repo, config=config)
    assert argv_file.read_text().splitlines() == ["auth-api", "initial"]


def test_legacy_script_result_is_reported(repo: Path, argv_file: Path) -> None:
    config = legacy(repo, UPSTREAM_SCRIPT.format(argv_file=argv_file))
    result = init(repo, config=config)
    assert result.created is True
    assert result.changes == ("ran init_feature_multi.sh",)
    assert result.run == "initial"
    assert result.branch == "feature/auth-api"
    assert branch_exists(repo, "feature/auth-api")


def test_legacy_script_gets_use_current_branch(repo: Path, argv_file: Path) -> None:
    config = legacy(repo, UPSTREAM_SCRIPT.format(argv_file=argv_file))
    init(repo, config=config, use_current_branch=True)
    assert argv_file.read_text().splitlines() == ["auth-api", "initial", "--use-current-branch"]


def test_legacy_script_gets_the_branch_as_one_argument_without_a_shell(
    repo: Path, argv_file: Path
) -> None:
    # A valid git ref that a shell would run as two commands.
    branch = "topic/x;touch${IFS}pwned"
    config = legacy(repo, UPSTREAM_SCRIPT.format(argv_file=argv_file))
    init(repo, config=config, branch=branch)
    assert argv_file.read_text().splitlines() == ["auth-api", "initial", "--branch", branch]
    assert not (repo / "pwned").exists()
    assert not Path("pwned").exists()


def test_legacy_init_reports_a_worktree_that_exists(repo: Path, argv_file: Path) -> None:
    config = legacy(repo, UPSTREAM_SCRIPT.format(argv_file=argv_file))
    result = init(repo, config=config)
    assert result.worktree.is_dir()


def test_legacy_script_failure_reports_exit_code_and_stderr(repo: Path) -> None:
    config = legacy(repo, "#!/bin/sh\necho boom >&2\nexit 3\n")
    with pytest.raises(WorkspaceError, match="exit code 3") as caught:
        init(repo, config=config)
    assert "boom" in str(caught.value)


def test_legacy_script_that_creates_nothing_is_an_error(repo: Path) -> None:
    config = legacy(repo, "#!/bin/sh\nexit 0\n")
    with pytest.raises(WorkspaceError, match="exited 0 but did not create") as caught:
        init(repo, config=config)
    assert ".tmops/auth-api/current" in str(caught.value)


def test_legacy_script_that_creates_part_lists_what_is_missing(repo: Path) -> None:
    body = (
        "#!/bin/sh\n"
        'mkdir -p ".tmops/$1/runs/initial/checkpoints"\n'
        'ln -s runs/initial ".tmops/$1/current"\n'
    )
    config = legacy(repo, body)
    with pytest.raises(WorkspaceError) as caught:
        init(repo, config=config)
    message = str(caught.value)
    for missing in (
        ".tmops/auth-api/runs/initial/logs",
        ".tmops/auth-api/runs/initial/TASK_SPEC.md",
        ".tmops/auth-api/docs/internal",
        "a FEATURES.txt line",
        "branch feature/auth-api",
    ):
        assert missing in message
    assert "checkpoints" not in message


def test_legacy_script_that_runs_too_long_times_out(repo: Path) -> None:
    config = legacy(repo, "#!/bin/sh\nexec sleep 30\n", timeout=1)
    with pytest.raises(WorkspaceError, match="did not finish within 1 s"):
        init(repo, config=config)


def test_legacy_script_that_is_not_executable_is_an_error(repo: Path, argv_file: Path) -> None:
    config = legacy(repo, UPSTREAM_SCRIPT.format(argv_file=argv_file), mode=0o644)
    with pytest.raises(WorkspaceError, match="not an executable file"):
        init(repo, config=config)
    assert not argv_file.exists()
