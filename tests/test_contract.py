"""The plugin contract: hookspecs typed and documented, records frozen and self-checking."""

from __future__ import annotations

import inspect
import re
from datetime import UTC
from pathlib import Path

import attrs
import pluggy
import pytest

import tmops_hookspecs
from tmops_hookspecs import (
    AgentEvent,
    Checkpoint,
    CheckpointFormat,
    CheckpointRequirement,
    ConfigError,
    Event,
    FeatureContext,
    Gate,
    Invocation,
    Outcome,
    PhaseSpec,
    Provider,
    ProviderSpec,
    RollbackPolicy,
    Sink,
    SinkSpec,
    TmopsError,
    ValidatorSpec,
    specs,
)

from .conftest import REPO

HOOKSPECS = sorted(
    name
    for name, function in vars(specs).items()
    if name.startswith("tmops_") and inspect.isfunction(function)
)
REQUIRED_HOOKS = {
    "tmops_register_providers",
    "tmops_register_phases",
    "tmops_register_validators",
    "tmops_register_sinks",
    "tmops_register_commands",
    "tmops_feature_initialized",
    "tmops_phase_started",
    "tmops_phase_finished",
    "tmops_workflow_finished",
}


def _documented_hooks() -> set[str]:
    text = (REPO / "docs" / "plugins.md").read_text()
    return set(re.findall(r"^#+\s+(tmops_\w+)\s*$", text, flags=re.MULTILINE))


def test_contract_defines_every_required_hook() -> None:
    assert set(HOOKSPECS) >= REQUIRED_HOOKS


@pytest.mark.parametrize("hook", HOOKSPECS)
def test_every_hookspec_is_documented_in_the_plugin_guide(hook: str) -> None:
    assert hook in _documented_hooks(), f"docs/plugins.md needs a '#### {hook}' section"


def test_docs_do_not_document_hooks_that_do_not_exist() -> None:
    assert _documented_hooks() <= set(HOOKSPECS)


@pytest.mark.parametrize("hook", HOOKSPECS)
def test_every_hookspec_is_typed_and_has_a_docstring(hook: str) -> None:
    function = getattr(specs, hook)
    signature = inspect.signature(function)
    assert inspect.getdoc(function)
    assert signature.return_annotation is not inspect.Signature.empty
    for parameter in signature.parameters.values():
        assert parameter.annotation is not inspect.Parameter.empty, parameter.name
        assert f":param {parameter.name}:" in (function.__doc__ or ""), parameter.name


@pytest.mark.parametrize("hook", HOOKSPECS)
def test_every_hookspec_is_marked_for_project_tmops(hook: str) -> None:
    assert hasattr(getattr(specs, hook), "tmops_spec")


def test_hookimpl_marker_is_public_and_belongs_to_tmops() -> None:
    assert isinstance(tmops_hookspecs.hookimpl, pluggy.HookimplMarker)
    assert tmops_hookspecs.hookimpl.project_name == "tmops"
    assert "hookimpl" in tmops_hookspecs.__all__


def test_public_names_are_all_exported() -> None:
    for name in tmops_hookspecs.__all__:
        assert hasattr(tmops_hookspecs, name), name


def test_records_are_frozen() -> None:
    spec = SinkSpec(name="audit", factory=lambda options: None)  # type: ignore[arg-type,return-value]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        spec.name = "other"  # type: ignore[misc]
    event = Event(event_type="test.frozen", data={"a": 1})
    with pytest.raises(TypeError):
        event.data["a"] = 2  # type: ignore[index]


@pytest.mark.parametrize("bad", ["", "Upper", "has space", "-leading", "trailing-", "a/b", "x" * 0])
def test_record_names_are_checked(bad: str) -> None:
    with pytest.raises(ValueError, match="must be lowercase"):
        ProviderSpec(name=bad, factory=lambda settings: None)  # type: ignore[arg-type,return-value]


def test_record_factories_must_be_callable() -> None:
    with pytest.raises(TypeError, match="callable"):
        ValidatorSpec(name="v", validate="not callable")  # type: ignore[arg-type]


def test_phase_checkpoint_names_follow_the_upstream_protocol() -> None:
    phase = PhaseSpec(
        name="tester",
        role="tester",
        instructions="write failing tests",
        prompt="go",
        trigger_checkpoint="001-discovery-trigger.md",
        completion_checkpoint="003-tests-complete.md",
        gates=[Gate.TESTS_FAIL],
        rollback=RollbackPolicy(preserve={tmops_hookspecs.Artifact.TESTS}),
    )
    assert phase.gates == (Gate.TESTS_FAIL,)
    assert phase.rollback.preserve == frozenset({tmops_hookspecs.Artifact.TESTS})
    with pytest.raises(ValueError, match="checkpoint file name"):
        PhaseSpec(name="x", role="x", instructions="", prompt="", completion_checkpoint="../x.md")
    with pytest.raises(ValueError, match="checkpoint file name"):
        PhaseSpec(
            name="x",
            role="x",
            instructions="",
            prompt="",
            completion_checkpoint="SUMMARY.md",
            trigger_checkpoint="trigger.txt",
        )


def test_a_checkpoint_requirement_checks_itself() -> None:
    plan = CheckpointRequirement(
        what="test plan", sections=["action_required"], fields=["details"], pattern=r"\S"
    )
    assert plan.sections == ("action_required",)
    assert plan.fields == ("details",)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        plan.what = "other"  # type: ignore[misc]
    with pytest.raises(ValueError, match="names no field, no section and no pattern"):
        CheckpointRequirement(what="nothing")
    with pytest.raises(ValueError, match="lowercase words joined by '_'"):
        CheckpointRequirement(what="plan", sections=["Action Required"])
    with pytest.raises(ValueError, match="lowercase words joined by '_'"):
        CheckpointRequirement(what="plan", fields=["passing:"])
    with pytest.raises(ValueError, match="not a regular expression"):
        CheckpointRequirement(what="run", fields=["passing"], pattern="([0-9]")
    with pytest.raises(ValueError, match="non-empty string"):
        CheckpointRequirement(what=" ", fields=["passing"])


def test_phases_and_contexts_hold_requirement_records_only() -> None:
    plan = CheckpointRequirement(what="test plan", sections=["action_required"])
    phase = PhaseSpec(
        name="planner",
        role="planner",
        instructions="plan",
        prompt="go",
        completion_checkpoint="001-plan-complete.md",
        requires=[plan],
    )
    assert phase.requires == (plan,)
    assert (
        PhaseSpec(
            name="x", role="x", instructions="", prompt="", completion_checkpoint="001-x.md"
        ).requires
        == ()
    )
    with pytest.raises(TypeError, match="CheckpointRequirement records"):
        PhaseSpec(
            name="x",
            role="x",
            instructions="",
            prompt="",
            completion_checkpoint="001-x.md",
            requires=["## Action Required"],  # type: ignore[list-item]
        )
    here = Path("/x")
    context = FeatureContext(
        feature="f", run="r", workspace="w", project_root=here, worktree=here, branch="b",
        run_dir=here, checkpoint_dir=here, requires=[plan],
    )  # fmt: skip
    assert context.requires == (plan,)
    with pytest.raises(TypeError, match="CheckpointRequirement records"):
        attrs.evolve(context, requires=[{"what": "plan"}])


def test_checkpoint_sections_are_read_only() -> None:
    checkpoint = Checkpoint(
        name="001-discovery-trigger.md",
        path=Path("/x/001-discovery-trigger.md"),
        format=CheckpointFormat.HEADER_BLOCK,
        sections={"action_required": "- a test"},
    )
    assert checkpoint.parse_error is None
    with pytest.raises(TypeError):
        checkpoint.sections["action_required"] = "x"  # type: ignore[index]


def test_invocation_is_an_argv_list_never_a_shell_line() -> None:
    invocation = Invocation(argv=["claude", "-p", "hi; rm -rf /"], env={"K": "v"})
    assert invocation.argv == ("claude", "-p", "hi; rm -rf /")
    with pytest.raises(ValueError, match="must name a program"):
        Invocation(argv=[])
    with pytest.raises(ValueError, match="without NUL"):
        Invocation(argv=["a\0b"])


def test_event_has_the_seed_schema() -> None:
    event = Event(event_type="orchestration.feature.initialized", feature="auth", data={"ms": 3})
    data = event.to_dict()
    assert set(data) == {
        "event_id",
        "event_type",
        "timestamp",
        "feature",
        "workspace",
        "correlation_id",
        "data",
        "metadata",
    }
    assert set(data["metadata"]) == {"service", "version", "environment"}
    assert event.timestamp.tzinfo is UTC
    assert event.event_id != Event(event_type="a.b").event_id


def test_outcomes_say_whether_a_retry_can_help() -> None:
    assert Outcome.TRANSIENT_ERROR.retryable
    assert Outcome.CRASHED.retryable
    assert not Outcome.AUTH_ERROR.retryable
    assert not Outcome.CANCELLED.retryable
    assert not Outcome.USAGE_LIMITED.retryable


def test_protocols_are_runtime_checkable() -> None:
    class EchoProvider:
        def build_invocation(self, request: object) -> Invocation:
            return Invocation(argv=["echo"])

        def parse_line(self, line: str) -> list[AgentEvent]:
            return [AgentEvent(kind="progress", message=line)]

        def finish(self, returncode: int, events: object, stderr: str) -> object:
            return None

    class NullSink:
        def emit(self, event: Event) -> None:
            pass

        def close(self) -> None:
            pass

    assert isinstance(EchoProvider(), Provider)
    assert isinstance(NullSink(), Sink)
    assert not isinstance(object(), Sink)


def test_checkpoint_fields_are_read_only() -> None:
    checkpoint = Checkpoint(
        name="003-tests-complete.md",
        path=Path("/x/003-tests-complete.md"),
        format=CheckpointFormat.KEY_VALUE,
        fields={"status": "complete"},
    )
    with pytest.raises(TypeError):
        checkpoint.fields["status"] = "x"  # type: ignore[index]


def test_errors_carry_a_hint_and_config_errors_every_problem() -> None:
    error = TmopsError("it broke", hint="fix it")
    assert str(error) == "it broke\n  hint: fix it"
    assert str(TmopsError("plain")) == "plain"
    config_error = ConfigError("2 errors:", ["a @ $.x", "b @ $.y"], hint="edit it")
    assert config_error.exit_code == 2
    assert config_error.problems == ("a @ $.x", "b @ $.y")
    assert str(config_error) == "2 errors:\n  a @ $.x\n  b @ $.y\n  hint: edit it"
    assert issubclass(tmops_hookspecs.PluginError, TmopsError)
