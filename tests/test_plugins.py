"""The plugin manager factory and its typed facade."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import click
import pytest
from loguru import logger

from tmops_core.plugins import Plugins, create_plugin_manager, disabled_from_env
from tmops_hookspecs import FeatureContext, SinkSpec, hookimpl

from .conftest import MakeDist


class _NullSink:
    def emit(self, event: object) -> None:
        pass

    def close(self) -> None:
        pass


def _sink_plugin(*names: str) -> object:
    class Plugin:
        @staticmethod
        @hookimpl
        def tmops_register_sinks() -> list[SinkSpec]:
            return [SinkSpec(name=name, factory=lambda options: _NullSink()) for name in names]

    return Plugin()


@pytest.fixture
def warnings() -> Iterator[list[str]]:
    messages: list[str] = []
    handler = logger.add(lambda message: messages.append(str(message)), level="WARNING")
    yield messages
    logger.remove(handler)


def _context() -> FeatureContext:
    from pathlib import Path

    root = Path("/project")
    return FeatureContext(
        feature="auth",
        run="initial",
        workspace="default",
        project_root=root,
        worktree=root,
        branch="feature/auth",
        run_dir=root / ".tmops/auth/runs/initial",
        checkpoint_dir=root / ".tmops/auth/runs/initial/checkpoints",
    )


def test_each_call_builds_a_fresh_manager() -> None:
    first = create_plugin_manager(autoload=False, extra=[("one", _sink_plugin("one"))])
    second = create_plugin_manager(autoload=False)
    assert "one" in first.sinks()
    assert second.sinks() == {}


def test_builtin_plugins_load_through_entry_points() -> None:
    plugins = create_plugin_manager()
    assert {"console", "jsonl"} <= set(plugins.sinks())
    info = {i.name: i for i in plugins.info()}
    assert info["jsonl"].distribution == "tmops-plugins"
    assert info["jsonl"].registers == {"sinks": ("jsonl",)}
    assert info["console"].module == "tmops_plugins.console_sink"


def test_autoload_can_be_switched_off_by_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TMOPS_DISABLE_PLUGIN_AUTOLOAD", "1")
    assert create_plugin_manager().names() == []


def test_plugins_are_disabled_by_name_from_config_and_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TMOPS_DISABLE_PLUGINS", "console")
    plugins = create_plugin_manager(disabled=["jsonl"])
    assert "console" not in plugins.names()
    assert "jsonl" not in plugins.names()
    assert disabled_from_env({"TMOPS_DISABLE_PLUGINS": "a, b c"}) == ("a", "b", "c")


def test_a_plugin_that_fails_to_import_is_reported_and_the_others_load(
    make_dist: MakeDist,
) -> None:
    make_dist(
        "broken-plugin",
        {"broken": "broken_plugin_mod"},
        {"broken_plugin_mod": "raise RuntimeError('database unreachable')\n"},
    )
    make_dist(
        "good-plugin",
        {"good": "good_plugin_mod"},
        {
            "good_plugin_mod": """
            from tmops_hookspecs import SinkSpec, hookimpl

            class _Sink:
                def emit(self, event): pass
                def close(self): pass

            @hookimpl
            def tmops_register_sinks():
                return [SinkSpec(name="good-sink", factory=lambda options: _Sink())]
            """
        },
    )
    plugins = create_plugin_manager()
    [failure] = plugins.failures
    assert failure.name == "broken"
    assert "RuntimeError: database unreachable" in failure.reason
    assert "good-sink" in plugins.sinks()
    assert {"console", "jsonl"} <= set(plugins.sinks())
    good = next(i for i in plugins.info() if i.name == "good")
    assert (good.distribution, good.version) == ("good-plugin", "0.1.0")


def test_a_plugin_that_exits_at_import_does_not_stop_tmops(make_dist: MakeDist) -> None:
    make_dist("exits", {"exits": "exits_mod"}, {"exits_mod": "import sys\nsys.exit(3)\n"})
    plugins = create_plugin_manager()
    assert [f.name for f in plugins.failures] == ["exits"]
    assert "SystemExit" in plugins.failures[0].reason


def test_a_plugin_returning_bad_records_is_skipped_by_name() -> None:
    class WrongType:
        @staticmethod
        @hookimpl
        def tmops_register_sinks() -> list[str]:
            return ["not a SinkSpec"]

    class NotIterable:
        @staticmethod
        @hookimpl
        def tmops_register_phases() -> int:
            return 42

    class Raises:
        @staticmethod
        @hookimpl
        def tmops_register_validators() -> list[Any]:
            raise KeyError("missing")

    plugins = create_plugin_manager(
        autoload=False,
        extra=[
            ("wrong-type", WrongType()),
            ("not-iterable", NotIterable()),
            ("raises", Raises()),
            ("fine", _sink_plugin("fine")),
        ],
    )
    reasons = {f.name: f.reason for f in plugins.failures}
    assert "returned str where a SinkSpec (sink) was expected" in reasons["wrong-type"]
    assert "must return an iterable of PhaseSpec, got int" in reasons["not-iterable"]
    assert "KeyError" in reasons["raises"]
    assert plugins.names() == ["fine"]
    assert list(plugins.sinks()) == ["fine"]


def test_a_plugin_building_an_invalid_record_is_skipped_with_the_reason() -> None:
    class BadName:
        @staticmethod
        @hookimpl
        def tmops_register_sinks() -> list[SinkSpec]:
            return [SinkSpec(name="Bad Name", factory=lambda options: _NullSink())]

    plugins = create_plugin_manager(autoload=False, extra=[("bad-name", BadName())])
    [failure] = plugins.failures
    assert failure.name == "bad-name"
    assert "must be lowercase" in failure.reason


def test_a_plugin_dropped_for_one_hook_loses_all_its_registrations() -> None:
    class HalfBroken:
        @staticmethod
        @hookimpl
        def tmops_register_sinks() -> list[SinkSpec]:
            return [SinkSpec(name="half", factory=lambda options: _NullSink())]

        @staticmethod
        @hookimpl
        def tmops_register_providers() -> None:
            raise RuntimeError("boom")

    plugins = create_plugin_manager(autoload=False, extra=[("half", HalfBroken())])
    assert plugins.sinks() == {}
    assert plugins.names() == []


def test_one_name_registered_by_two_plugins_is_refused_naming_both() -> None:
    plugins = create_plugin_manager(
        autoload=False,
        extra=[("alpha", _sink_plugin("shared", "alpha-only")), ("beta", _sink_plugin("shared"))],
    )
    assert "shared" not in plugins.sinks()
    assert "alpha-only" in plugins.sinks()
    [failure] = plugins.failures
    assert "'alpha'" in failure.reason
    assert "'beta'" in failure.reason
    assert "sink 'shared'" in failure.reason


def test_two_distributions_with_one_plugin_name_are_both_named(make_dist: MakeDist) -> None:
    module = "from tmops_hookspecs import hookimpl\n"
    make_dist("first-dist", {"same": "same_first"}, {"same_first": module})
    make_dist("second-dist", {"same": "same_second"}, {"same_second": module})
    plugins = create_plugin_manager()
    [failure] = plugins.failures
    assert "first-dist" in failure.reason
    assert "second-dist" in failure.reason


def test_a_plugin_implementing_an_unknown_hook_is_refused() -> None:
    class Typo:
        @staticmethod
        @hookimpl
        def tmops_register_sink() -> list[Any]:
            return []

    class BadArgument:
        @staticmethod
        @hookimpl
        def tmops_phase_started(nonsense: int) -> None:
            pass

    plugins = create_plugin_manager(
        autoload=False,
        extra=[("typo", Typo()), ("bad-arg", BadArgument()), ("ok", _sink_plugin("ok"))],
    )
    reasons = {f.name: f.reason for f in plugins.failures}
    assert "tmops_register_sink" in reasons["typo"]
    assert "nonsense" in reasons["bad-arg"]
    assert plugins.names() == ["ok"]


def test_disabled_extra_plugins_are_not_registered() -> None:
    plugins = create_plugin_manager(
        autoload=False, disabled=["skip-me"], extra=[("skip-me", _sink_plugin("s"))]
    )
    assert plugins.names() == []


def test_lifecycle_broadcasts_reach_every_plugin_and_contain_failures(
    warnings: list[str],
) -> None:
    calls: list[tuple[str, dict[str, Any]]] = []

    class Recorder:
        @hookimpl
        def tmops_feature_initialized(self, context: FeatureContext) -> None:
            calls.append(("initialized", {"feature": context.feature}))

        @hookimpl
        def tmops_phase_started(self, phase: str, attempt: int) -> None:
            calls.append(("started", {"phase": phase, "attempt": attempt}))

        @hookimpl
        def tmops_phase_finished(self, phase: str, outcome: str, duration_s: float) -> None:
            calls.append(("finished", {"phase": phase, "outcome": outcome}))

        @hookimpl
        def tmops_workflow_finished(self, outcome: str) -> None:
            calls.append(("workflow", {"outcome": outcome}))

    class Failing:
        @hookimpl
        def tmops_phase_started(self) -> None:
            raise RuntimeError("lifecycle bug")

        @hookimpl(wrapper=True)
        def tmops_workflow_finished(self) -> Iterator[None]:
            raise AssertionError("wrappers are not called for broadcasts")
            yield  # pragma: no cover

    plugins = create_plugin_manager(
        autoload=False, extra=[("recorder", Recorder()), ("failing", Failing())]
    )
    context = _context()
    plugins.feature_initialized(context)
    plugins.phase_started(context, "tester", 1)
    plugins.phase_started(context, "tester", 2)
    plugins.phase_finished(context, "tester", 2, "completed", 1.5)
    plugins.workflow_finished(context, "completed", 9.0)
    assert calls == [
        ("initialized", {"feature": "auth"}),
        ("started", {"phase": "tester", "attempt": 1}),
        ("started", {"phase": "tester", "attempt": 2}),
        ("finished", {"phase": "tester", "outcome": "completed"}),
        ("workflow", {"outcome": "completed"}),
    ]
    failures = [m for m in warnings if "lifecycle bug" in m]
    assert len(failures) == 1
    assert "plugin failing failed in tmops_phase_started" in failures[0]


def test_plugins_can_add_cli_commands() -> None:
    def register(cli: click.Group) -> None:
        @cli.command("hello")
        def hello() -> None:
            click.echo("hello")

    plugin = SimpleNamespace(tmops_register_commands=hookimpl(register))
    plugin.tmops_register_commands.__name__ = "tmops_register_commands"
    group = click.Group("root")
    plugins = create_plugin_manager(autoload=False, extra=[("greeter", plugin)])
    plugins.register_commands(group)
    assert "hello" in group.commands
    assert plugins.info()[0].registers == {"hooks": ("tmops_register_commands",)}


def test_the_facade_is_the_only_caller_of_pm_hook() -> None:
    from .conftest import REPO

    offenders = [
        path.name
        for path in (REPO / "tmops_core").rglob("*.py")
        if ".hook." in path.read_text() and path.name != "plugins.py"
    ]
    assert offenders == []
    assert isinstance(create_plugin_manager(autoload=False), Plugins)
