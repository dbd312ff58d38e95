"""The third-party example plugin, installed with pip, seen and used through entry points."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import pytest

from .conftest import REPO

EXAMPLE = REPO / "examples" / "tmops-security-review"
TMOPS = str(Path(sys.executable).with_name("tmops"))


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """An environment in which the example is installed: as found, or pip-installed for us."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TMOPS_")}
    try:
        distribution("tmops-security-review")
    except PackageNotFoundError:
        target = tmp_path_factory.mktemp("site")
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
             str(EXAMPLE)],
            check=True,
        )  # fmt: skip
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(target), env.get("PYTHONPATH")]))
    return env


def test_the_example_depends_on_the_contract_only() -> None:
    import tomllib

    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
    assert project["dependencies"] == ["tmops-hookspecs>=0.1,<0.2"]
    assert project["entry-points"]["tmops"] == {"security-review": "tmops_security_review.plugin"}
    for path in (EXAMPLE / "tmops_security_review").rglob("*.py"):
        assert "tmops_core" not in path.read_text(), path


def test_tmops_plugins_lists_the_example(plugin_env: dict[str, str], tmp_path: Path) -> None:
    result = subprocess.run(
        [TMOPS, "plugins", "--json"],
        capture_output=True,
        text=True,
        check=True,
        env=plugin_env,
        cwd=tmp_path,
    )
    plugins = {p["name"]: p for p in json.loads(result.stdout)["plugins"]}
    example = plugins["security-review"]
    assert example["distribution"] == "tmops-security-review"
    assert example["version"] == "0.1.0"
    assert example["registers"] == {
        "providers": ["security-review-agent"],
        "phases": ["security-review"],
        "validators": ["no-secrets"],
        "sinks": ["security-audit"],
        "hooks": ["tmops_configure"],
    }


def test_the_example_reads_its_setting_from_plugins_settings(
    plugin_env: dict[str, str], tmp_path: Path
) -> None:
    """``plugins.settings.security-review.ignore`` reaches the plugin through tmops_configure:
    the kinds it lists are no longer reported by its validator."""
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from tmops_core.service.operations import Service\n"
        "from tmops_hookspecs import Checkpoint, CheckpointFormat, FeatureContext\n"
        "here = Path.cwd()\n"
        "context = FeatureContext(feature='auth', run='initial', workspace='default',\n"
        "    project_root=here, worktree=here, branch='feature/auth', run_dir=here,\n"
        "    checkpoint_dir=here)\n"
        "leaked = Checkpoint(name='005-impl-complete.md', path=here / '005-impl-complete.md',\n"
        "    format=CheckpointFormat.PLAIN, body='key AKIAABCDEFGHIJKLMNOP\\n')\n"
        "service = Service.load(sys.argv[1])\n"
        "validate = service.plugins.validators()['no-secrets'].spec.validate\n"
        "print(len(list(validate(leaked, context))))\n"
        "service.close()\n"
    )

    def problems_with(config_text: str) -> str:
        config = tmp_path / "tmops.yaml"
        config.write_text(config_text)
        config.chmod(0o600)
        return subprocess.run(
            [sys.executable, "-c", script, str(config)], capture_output=True, text=True,
            check=True, env=plugin_env, cwd=tmp_path, timeout=60,
        ).stdout.strip()  # fmt: skip

    assert problems_with("{}\n") == "1"
    ignoring = "plugins:\n  settings:\n    security-review: {ignore: [AWS access key]}\n"
    assert problems_with(ignoring) == "0"


def test_a_bad_setting_of_the_example_fails_config_check(
    plugin_env: dict[str, str], tmp_path: Path
) -> None:
    config = tmp_path / "tmops.yaml"
    config.write_text("plugins:\n  settings:\n    security-review: {ignore: [passwords]}\n")
    config.chmod(0o600)
    result = subprocess.run(
        [TMOPS, "--config", str(config), "config", "check"],
        capture_output=True, text=True, check=False, env=plugin_env, cwd=tmp_path, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr
    assert "'ignore' must be a list of secret kinds" in result.stderr
    assert "@ $.plugins.settings.security-review" in result.stderr


def test_an_emitted_event_reaches_the_example_sink(
    plugin_env: dict[str, str], tmp_path: Path
) -> None:
    audit = tmp_path / "logs" / "audit.jsonl"
    config = tmp_path / "tmops.yaml"
    config.write_text(f"telemetry:\n  outputs:\n    security-audit:\n      path: {audit}\n")
    script = (
        "from tmops_core.service.operations import Service\n"
        "service = Service.load()\n"
        "service.events.emit('orchestration.feature.initialized', {'ms': 4}, feature='auth')\n"
        "service.close()\n"
    )
    subprocess.run(
        [sys.executable, "-c", script], check=True, env=plugin_env, cwd=tmp_path, timeout=60
    )
    [line] = audit.read_text().splitlines()
    event = json.loads(line)
    assert event["event_type"] == "orchestration.feature.initialized"
    assert event["feature"] == "auth"
    assert event["data"] == {"ms": 4}
    assert audit.stat().st_mode & 0o777 == 0o600


def test_the_example_validator_rejects_checkpoints_with_secrets(tmp_path: Path) -> None:
    sys.path.insert(0, str(EXAMPLE))
    try:
        from tmops_security_review.plugin import find_secrets
    finally:
        sys.path.remove(str(EXAMPLE))
    from tmops_hookspecs import Checkpoint, CheckpointFormat, FeatureContext

    context = FeatureContext(
        feature="auth",
        run="initial",
        workspace="default",
        project_root=tmp_path,
        worktree=tmp_path,
        branch="feature/auth",
        run_dir=tmp_path,
        checkpoint_dir=tmp_path,
    )
    leaked = Checkpoint(
        name="005-impl-complete.md",
        path=tmp_path / "005-impl-complete.md",
        format=CheckpointFormat.PLAIN,
        body="done\nkey: sk-ant-api03-abcdefghijklmnopqrstuvwxyz\n",
    )
    [problem] = find_secrets(leaked, context)
    assert "Anthropic API key (line 2)" in problem.message
    clean = Checkpoint(
        name="005-impl-complete.md",
        path=tmp_path / "005-impl-complete.md",
        format=CheckpointFormat.PLAIN,
        body="All 12 tests pass.",
    )
    assert list(find_secrets(clean, context)) == []
