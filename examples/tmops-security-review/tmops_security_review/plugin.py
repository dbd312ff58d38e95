"""The ``security-review`` plugin: a phase, a provider that plays it without a model, a
checkpoint validator and a telemetry sink.

It imports ``tmops_hookspecs`` only, as every third-party plugin should.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from tmops_hookspecs import (
    Checkpoint,
    ConfigError,
    Event,
    FeatureContext,
    Gate,
    PhaseSpec,
    Problem,
    ProviderSpec,
    SinkSpec,
    ValidatorSpec,
    hookimpl,
)

from .patterns import SECRET_PATTERNS
from .provider import CHECKPOINT, PHASE, ReviewProvider, provider_spec, read_settings

INSTRUCTIONS = """\
You are the SECURITY REVIEWER of a TeamOps feature. You are read-only: you change no code and
no tests. Review the feature branch for injection (shell, SQL, path traversal), secrets in code
or history, unsafe deserialisation, missing input validation and unsafe file permissions.
Write your findings, each with file, line, severity and a fix, to the completion checkpoint,
ending with `Security verdict: PASS` or `Security verdict: FAIL`.
"""

PROMPT = """\
Review the security of feature {feature} (run {run}) in {worktree}.
The spec is {task_spec}. Write your report to {checkpoint_dir}/{completion_checkpoint}.
"""

#: the kinds of secret not reported, from ``plugins.settings.security-review.ignore``
_ignored: frozenset[str] = frozenset()


@hookimpl
def tmops_configure(settings: Mapping[str, Any]) -> None:
    """Read ``plugins.settings.security-review``: ``ignore``, kinds of secret not to report
    (a project whose checkpoints quote fake test keys, say)."""
    global _ignored  # noqa: PLW0603 - tmops hands the settings over once per load
    unknown = sorted(set(settings) - {"ignore"})
    if unknown:
        raise ConfigError(f"unknown setting(s) for 'security-review': {', '.join(unknown)}")
    ignore = settings.get("ignore", ())
    if isinstance(ignore, str) or not all(kind in SECRET_PATTERNS for kind in ignore):
        raise ConfigError(
            f"'ignore' must be a list of secret kinds among: {', '.join(SECRET_PATTERNS)}"
        )
    _ignored = frozenset(ignore)


def find_secrets(checkpoint: Checkpoint, context: FeatureContext) -> Iterable[Problem]:
    """Yield one problem per kind of secret found in the checkpoint's text."""
    text = checkpoint.body + "\n" + "\n".join(checkpoint.fields.values())
    for kind, pattern in SECRET_PATTERNS.items():
        if kind in _ignored:
            continue
        match = pattern.search(text)
        if match:
            line = text.count("\n", 0, match.start()) + 1
            yield Problem(
                message=f"contains what looks like a {kind} (line {line}); remove it and rotate it",
                path=checkpoint.path,
            )


class AuditSink:
    """Appends every event as one JSON line to a file created with mode 0600."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
        self._fd = os.open(path, flags, 0o600)

    def emit(self, event: Event) -> None:
        os.write(self._fd, (json.dumps(event.to_dict(), sort_keys=True) + "\n").encode())

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def make_audit_sink(options: Mapping[str, Any]) -> AuditSink:
    unknown = sorted(set(options) - {"path"})
    if unknown:
        raise ConfigError(f"unknown option(s) for 'security-audit': {', '.join(unknown)}")
    path = options.get("path")
    if not isinstance(path, str) or not path:
        raise ConfigError("the 'security-audit' sink needs a 'path' (a file to append to)")
    return AuditSink(Path(path).expanduser().absolute())


@hookimpl
def tmops_register_phases() -> Iterable[PhaseSpec]:
    return [
        PhaseSpec(
            name=PHASE,
            role="security-reviewer",
            instructions=INSTRUCTIONS,
            prompt=PROMPT,
            trigger_checkpoint="008-security-trigger.md",
            completion_checkpoint=CHECKPOINT,
            gates=(Gate.TESTS_PASS,),
            description="read-only security review after the verifier",
        )
    ]


def make_review_provider(settings: Mapping[str, Any]) -> ReviewProvider:
    """The ``security-review-agent`` factory: ``settings`` is ``providers.security-review-agent``;
    the agent skips the kinds of secret the validator is told to ignore."""
    return ReviewProvider(read_settings(settings), ignore=_ignored)


@hookimpl
def tmops_register_providers() -> Iterable[ProviderSpec]:
    return [provider_spec(make_review_provider)]


@hookimpl
def tmops_register_validators() -> Iterable[ValidatorSpec]:
    return [
        ValidatorSpec(
            name="no-secrets",
            validate=find_secrets,
            description="rejects checkpoints that contain keys or tokens",
        )
    ]


@hookimpl
def tmops_register_sinks() -> Iterable[SinkSpec]:
    return [
        SinkSpec(
            name="security-audit",
            factory=make_audit_sink,
            description="every event appended to a 0600 JSON-lines audit file",
        )
    ]
