"""The three distributions and the direction of their dependencies."""

from __future__ import annotations

import ast
import tomllib
from importlib.metadata import distribution, entry_points
from pathlib import Path

import pytest

from .conftest import REPO

PACKAGES = {
    "tmops_core": REPO / "tmops_core",
    "tmops_hookspecs": REPO / "hookspecs" / "tmops_hookspecs",
    "tmops_plugins": REPO / "plugins" / "tmops_plugins",
}
FORBIDDEN = {
    "tmops_core": {"tmops_plugins"},
    "tmops_hookspecs": {"tmops_core", "tmops_plugins"},
    "tmops_plugins": {"tmops_core"},
}


def _imported_top_levels(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_dependency_direction_is_never_broken(package: str) -> None:
    offenders = {
        f"{path.relative_to(REPO)} imports {name}"
        for path in PACKAGES[package].rglob("*.py")
        for name in _imported_top_levels(path) & FORBIDDEN[package]
    }
    assert not offenders


def test_hookspecs_distribution_depends_on_pluggy_and_attrs_only() -> None:
    requires = distribution("tmops-hookspecs").requires or []
    assert sorted(r.split(">")[0].split("<")[0].split("=")[0].strip() for r in requires) == [
        "attrs",
        "pluggy",
    ]


def test_tmops_distribution_depends_on_both_others_and_mcp_2() -> None:
    requires = " ".join(distribution("tmops").requires or [])
    for name in ("tmops-hookspecs", "tmops-plugins", "pluggy", "attrs", "cattrs", "click"):
        assert name in requires
    assert "mcp<3,>=2.3" in requires or "mcp>=2.3,<3" in requires
    dev = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    dev_names = " ".join(dev["dev"])
    for name in ("pytest", "pytest-cov", "hypothesis", "ruff", "mypy"):
        assert name in dev_names
    scripts = {ep.name: ep.value for ep in entry_points(group="console_scripts")}
    assert scripts["tmops"] == "tmops_core.surfaces.cli:main"


def test_every_builtin_plugin_module_is_an_entry_point_in_group_tmops() -> None:
    declared = {
        ep.value
        for ep in entry_points(group="tmops")
        if ep.dist and ep.dist.name == "tmops-plugins"
    }
    modules = {
        f"tmops_plugins.{path.stem}"
        for path in PACKAGES["tmops_plugins"].glob("*.py")
        if "@hookimpl" in path.read_text()
    } | {  # a plugin that is a package registers in its __init__.py
        f"tmops_plugins.{path.parent.name}"
        for path in PACKAGES["tmops_plugins"].glob("*/__init__.py")
        if "@hookimpl" in path.read_text()
    }
    assert modules
    assert modules == declared


@pytest.mark.parametrize(
    "project", ["pyproject.toml", "hookspecs/pyproject.toml", "plugins/pyproject.toml"]
)
def test_every_distribution_requires_python_311(project: str) -> None:
    meta = tomllib.loads((REPO / project).read_text())["project"]
    assert meta["requires-python"] == ">=3.11"


def test_repository_has_the_documented_layout() -> None:
    for folder in ("tmops_core", "hookspecs", "plugins", "examples", "tests", "docs"):
        assert (REPO / folder).is_dir(), folder


def _readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    return [block.split("```")[0].strip() for block in text.split("```sh\n")[1:]]


def test_ci_runs_the_readme_test_command() -> None:
    test_command = next(c for c in _readme_commands() if "pytest" in c)
    assert test_command in (REPO / ".ci" / "run").read_text().splitlines()


def test_readme_holds_a_run_command_and_a_test_command() -> None:
    commands = _readme_commands()
    assert any(".venv/bin/tmops " in c for c in commands)
    assert any(c.startswith("python3 -m venv .venv") and "pytest" in c for c in commands)


#: The wings of the core, lowest first: a module may import its own layer and those below.
_LAYERS = (
    {
        "lifecycle",
        "secrets",
        "config",
        "config_source",
        "config_store",
        "events",
        "plugins",
        "git",
        "artefacts",
        "log",
        "entry_points",
        "__init__",
    },
    {"agents", "checkpoints", "workspace", "store"},
    {"orchestration"},
    {"service"},
    {"surfaces"},
)


def _layer(module: str) -> int:
    wing = module.removeprefix("tmops_core.").split(".")[0]
    return next(i for i, names in enumerate(_LAYERS) if wing in names)


def test_the_core_wings_depend_only_downwards() -> None:
    offenders = []
    for path in PACKAGES["tmops_core"].rglob("*.py"):
        module = ".".join(path.relative_to(REPO).with_suffix("").parts)
        if module == "tmops_core.__main__":
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                target = node.module
            elif isinstance(node, ast.Import):
                target = node.names[0].name
            else:
                continue
            if target.startswith("tmops_core.") and _layer(target) > _layer(module):
                offenders.append(f"{module} imports {target}")
    assert not offenders


def test_every_document_the_readme_links_exists() -> None:
    text = (REPO / "README.md").read_text()
    linked = [part.split(")")[0] for part in text.split("](")[1:]]
    local = [link for link in linked if not link.startswith(("http://", "https://", "#"))]
    assert local
    assert [link for link in local if not (REPO / link).exists()] == []
