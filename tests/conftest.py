"""Shared fixtures: a clean tmops environment per test and fake installed distributions."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from mcp import Client

from tmops_core.service.operations import Service
from tmops_core.surfaces.mcp_server import build_server

# Started in the background by a shell without job control (`(.ci/run &)`), the tests inherit
# SIGINT ignored, and so would every tmops they start: the Ctrl-C tests could not deliver it.
# A Python handler here is reset to the default in each child at exec.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

REPO = Path(__file__).resolve().parent.parent

_TMOPS_ENV = (
    "TMOPS_CONFIG",
    "TMOPS_DISABLE_PLUGINS",
    "TMOPS_DISABLE_PLUGIN_AUTOLOAD",
)


@pytest.fixture(autouse=True)
def clean_tmops_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Every test starts in an empty folder with no tmops variables set."""
    for name in _TMOPS_ENV:
        monkeypatch.delenv(name, raising=False)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)


MakeDist = Callable[..., Path]


@pytest.fixture
def make_dist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MakeDist]:
    """Install a fake distribution (modules + entry points in group ``tmops``) on sys.path.

    This goes through the real importlib.metadata entry-point machinery, as pip-installed
    plugins do.
    """
    site = tmp_path / "site-packages"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    created: list[str] = []

    def make(name: str, entry_points: dict[str, str], modules: dict[str, str]) -> Path:
        for module, source in modules.items():
            (site / f"{module}.py").write_text(textwrap.dedent(source))
            created.append(module)
        info = site / f"{name.replace('-', '_')}-0.1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1.0\n")
        lines = ["[tmops]", *(f"{ep} = {target}" for ep, target in entry_points.items())]
        (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
        return site

    yield make
    for module in created:
        sys.modules.pop(module, None)


def git(cwd: Path, *args: str) -> str:
    """Run git in ``cwd`` (the tests' own calls, as a user would type them)."""
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout


def make_repo(path: Path) -> Path:
    """A real git repository (branch ``main``, one commit) at ``path``."""
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.name", "tmops tests")
    git(path, "config", "user.email", "tests@tmops.invalid")
    git(path, "config", "commit.gpgsign", "false")
    (path / "README.md").write_text("hello\n")
    git(path, "add", "README.md")
    git(path, "commit", "-q", "-m", "initial commit")
    return path


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A real git repository in ``tmp_path / "repo"``, outside the test's working directory."""
    return make_repo(tmp_path / "repo")


# -- shared by the split test modules ----------------------------------------------------------

# The support modules of the tests assert too: rewrite them, as pytest does test modules.
pytest.register_assert_rewrite(
    "tests.acceptance_support",
    "tests.checkpoint_support",
    "tests.config_support",
    "tests.features_support",
    "tests.mcp_support",
    "tests.scripted_support",
    "tests.takeover_support",
)

import io  # noqa: E402

from tmops_core.config import CONFIG_ENV  # noqa: E402
from tmops_core.service.demo_project import create_demo_project  # noqa: E402
from tmops_plugins.scripted_agent import DELAY_ENV, main  # noqa: E402
from tmops_plugins.scripted_journal import JOURNAL_ENV  # noqa: E402
from tmops_plugins.scripted_session import FAULT_ENV, STATE_ENV  # noqa: E402

from .scripted_support import Demo, Runner, Session, run_subprocess  # noqa: E402
from .users_support import SECOND_USER, why_no_second_user  # noqa: E402


def log_subjects(path: Path) -> list[tuple[str, str]]:
    """(id, subject) newest first."""
    lines = git(path, "log", "--format=%H %s").splitlines()
    return [(sha, subject) for sha, _, subject in (line.partition(" ") for line in lines)]


@pytest.fixture
def no_config_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No configuration named by the environment (``test_config*.py``)."""
    monkeypatch.delenv(CONFIG_ENV, raising=False)


# The scripted agent (``test_scripted_agent*.py``; they use ``agent_env`` for every test).


@pytest.fixture
def agent_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No fault, delay or journal from outside; sessions saved under tmp_path."""
    monkeypatch.delenv(FAULT_ENV, raising=False)
    monkeypatch.delenv(DELAY_ENV, raising=False)
    monkeypatch.delenv(JOURNAL_ENV, raising=False)
    state = tmp_path / "state"
    monkeypatch.setenv(STATE_ENV, str(state))
    return state


@pytest.fixture
def demo(tmp_path: Path) -> Demo:
    project = create_demo_project(tmp_path / "demo")
    run_dir = tmp_path / "tmops-run"
    checkpoints = run_dir / "checkpoints"
    checkpoints.mkdir(parents=True)
    spec = run_dir / "TASK_SPEC.md"
    spec.write_text(project.task_spec, encoding="utf-8")
    return Demo(project=project, checkpoints=checkpoints, spec=spec)


@pytest.fixture
def in_process(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Runner:
    def run(demo: Demo, argv: list[str], fault: str = "", **env: str) -> Session:
        with monkeypatch.context() as patch:
            if fault:
                patch.setenv(FAULT_ENV, fault)
            for name, value in env.items():
                patch.setenv(name, value)
            out = io.StringIO()
            code = main(argv, stdout=out, stdin=io.StringIO(""), cwd=demo.path)
        return Session(code, out.getvalue(), capsys.readouterr().err)

    return run


@pytest.fixture(params=["subprocess", "in-process"])
def runner(request: pytest.FixtureRequest, in_process: Runner) -> Runner:
    return run_subprocess if request.param == "subprocess" else in_process


def _find_claude() -> Path | None:
    override = os.environ.get("TMOPS_CLAUDE_BIN")
    if override:
        return Path(override) if os.access(override, os.X_OK) else None
    spec = importlib.util.find_spec("claude_agent_sdk")  # finds it without importing it
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / "_bundled" / "claude"
        if os.access(candidate, os.X_OK):
            return candidate
    return None


@pytest.fixture
def codex_bin() -> Path:
    """The real Codex CLI ($TMOPS_CODEX_BIN, else ``codex`` on PATH).

    Skipped where it is missing, except that ``TMOPS_REQUIRE_CODEX=1`` fails."""
    from .agent_cli_support import real_binary  # it imports this module

    return real_binary("TMOPS_CODEX_BIN", "codex", "npm install @openai/codex (pinned in .ci/run)")


@pytest.fixture(scope="session")
def claude_bin() -> Path:
    """The real Claude Code binary (from the claude-agent-sdk wheel, or $TMOPS_CLAUDE_BIN).

    Skipped where it is missing, except that ``TMOPS_REQUIRE_CLAUDE=1`` (set by CI) fails.
    """
    found = _find_claude()
    if found is None:
        why = (
            "no Claude Code binary: install claude-agent-sdk==0.2.186 (it bundles one) "
            "or point TMOPS_CLAUDE_BIN at one"
        )
        if os.environ.get("TMOPS_REQUIRE_CLAUDE") == "1":
            pytest.fail(f"TMOPS_REQUIRE_CLAUDE=1 but {why}")
        pytest.skip(why)
    return found


# A second user (``test_features_errors.py``).


@pytest.fixture(scope="session")
def second_user() -> int:
    """The uid of a second user who can run this venv's ``tmops`` (see
    :func:`tests.users_support.as_second_user`).

    Needs root (setpriv switches to that user) and a venv the second user can reach: every
    folder above the clone enterable by all, the venv and the sources it installs readable.
    Skipped where that does not hold, except that ``TMOPS_REQUIRE_SECOND_USER=1`` (set by CI
    where it holds) fails.
    """
    why = why_no_second_user()
    if why is not None:
        if os.environ.get("TMOPS_REQUIRE_SECOND_USER") == "1":
            pytest.fail(f"TMOPS_REQUIRE_SECOND_USER=1 but the test {why}")
        pytest.skip(why)
    return SECOND_USER


# -- the in-memory MCP server (tests/test_mcp_server.py, test_mcp_resources.py, ...) ----------

Connect = Callable[[], Client]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def service() -> Iterator[Service]:
    """The service of the config found from the test's environment (a module may define its
    own)."""
    loaded = Service.load()
    yield loaded
    loaded.close()


@pytest.fixture(params=["auto", "legacy"])
def connect(request: pytest.FixtureRequest, service: Service, repo: Path) -> Connect:
    """A new in-memory client of a server whose default workspace is ``repo``, in both of the
    SDK's client modes."""
    return lambda: Client(build_server(service, workspace=repo), mode=request.param)


# -- PostgreSQL: the store tests run against both backends -----------------------------------

from .pg_support import PgCluster, pg_bindir  # noqa: E402

POSTGRES_REQUIRED_ENV = "TMOPS_REQUIRE_POSTGRES"


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """A throwaway PostgreSQL server for the session (tests/pg_support.py).

    Skipped where PostgreSQL or psycopg is missing, except that ``TMOPS_REQUIRE_POSTGRES=1``
    (set by CI) fails.
    """
    bindir = pg_bindir()
    why = None
    if bindir is None:
        why = "needs PostgreSQL's initdb and pg_ctl (Debian's postgresql-15)"
    elif importlib.util.find_spec("psycopg") is None:
        why = "needs psycopg (pip install -e '.[dev]' pulls tmops[postgres])"
    if why is not None or bindir is None:
        if os.environ.get(POSTGRES_REQUIRED_ENV) == "1":
            pytest.fail(f"{POSTGRES_REQUIRED_ENV}=1 but the test {why}")
        pytest.skip(str(why))
    cluster = PgCluster(bindir)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def pg_url(pg_cluster: PgCluster, monkeypatch: pytest.MonkeyPatch) -> str:
    """The URL of a new empty database (its password in ``PGPASSWORD``, as libpq reads it)."""
    monkeypatch.setenv("PGPASSWORD", pg_cluster.password)
    return pg_cluster.new_database()


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A ``store.url`` of each backend: a SQLite file, and a PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite://{tmp_path / 'tmops.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url
