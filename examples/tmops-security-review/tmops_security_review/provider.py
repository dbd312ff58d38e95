"""The ``security-review-agent`` provider: the ``security-review`` phase played without a model.

The agent is :mod:`tmops_security_review.review_agent`, run with a Python (tmops' own unless
``providers.security-review-agent.command`` names another): it lists the worktree's files with
``git ls-files``, looks for the secrets the ``no-secrets`` validator knows, runs the scanner the
config names (``scanner: [bandit, -q, -r, .]``), and writes the phase's completion checkpoint
with its findings and ``Security verdict: PASS`` or ``FAIL``.

Like every provider it is PURE: it builds an argv, reads the agent's JSON lines and judges the
exit; the core starts the process, confines it and kills it on a timeout.
"""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any

import attrs

from tmops_hookspecs import (
    AgentEvent,
    AgentRequest,
    AgentResult,
    ConfigError,
    Invocation,
    Outcome,
    Provider,
    ProviderError,
    ProviderSpec,
)

__all__ = [
    "AGENT_MODULE",
    "CHECKPOINT",
    "NAME",
    "OPTIONS",
    "PHASE",
    "ReviewProvider",
    "ReviewSettings",
    "provider_spec",
    "read_settings",
]

NAME = "security-review-agent"
#: the one phase this agent can play, and the checkpoint it writes (the PhaseSpec's)
PHASE = "security-review"
CHECKPOINT = "009-security-complete.md"
AGENT_MODULE = "tmops_security_review.review_agent"
#: the provider's own keys, written in its section beside the shared ones
OPTIONS = ("scanner", "findings_exit_codes", "max_file_bytes")
#: shared keys that mean nothing to an agent without a model: refused when set
_MODEL_KEYS = ("args", "model", "max_turns")
_LINE_LIMIT = 500


@attrs.frozen(kw_only=True)
class ReviewSettings:
    """``providers.security-review-agent``, checked."""

    python: str
    scanner: tuple[str, ...] = ()
    #: the scanner's exit codes that mean "it found problems" (bandit and semgrep --error: 1)
    findings_exit_codes: tuple[int, ...] = (1,)
    max_file_bytes: int = 1_000_000


def _problem(key: str, message: str) -> str:
    return f"{message} @ $.providers.{NAME}.{key}"


def _is_count(value: object, low: int, high: int | None = None) -> bool:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        return False
    return high is None or value <= high


def read_settings(settings: Mapping[str, Any]) -> ReviewSettings:
    """Check the provider's config section; every problem is reported at once, each at its
    ``$.providers.security-review-agent.<key>``."""
    options = dict(settings.get("options") or {})
    problems = [
        _problem(key, f"unknown key {key!r} (known: {', '.join(OPTIONS)})")
        for key in sorted(set(options) - set(OPTIONS))
    ]
    problems += [
        _problem(key, f"{key!r} means nothing to a review without a model: remove it")
        for key in _MODEL_KEYS
        if settings.get(key) not in (None, (), [])
    ]
    scanner = options.get("scanner", ())
    if (
        isinstance(scanner, str)
        or not isinstance(scanner, Sequence)
        or not all(isinstance(item, str) and item and "\0" not in item for item in scanner)
    ):
        problems.append(
            _problem("scanner", f"'scanner' must be a list of strings, its argv, got {scanner!r}")
        )
    codes = options.get("findings_exit_codes", (1,))
    if (
        isinstance(codes, str)
        or not isinstance(codes, Sequence)
        or not all(_is_count(code, 1, 255) for code in codes)
    ):
        problems.append(
            _problem(
                "findings_exit_codes",
                f"'findings_exit_codes' must be exit codes 1-255, got {codes!r}",
            )
        )
    max_bytes = options.get("max_file_bytes", 1_000_000)
    if not _is_count(max_bytes, 1):
        problems.append(
            _problem(
                "max_file_bytes",
                f"'max_file_bytes' must be a whole number above 0, got {max_bytes!r}",
            )
        )
    if problems:
        raise ConfigError(
            f"provider '{NAME}': {len(problems)} problem(s) in its settings",
            problems,
            hint=f"fix providers.{NAME} in tmops.yaml (see the tmops-security-review README)",
        )
    return ReviewSettings(
        python=settings.get("command") or sys.executable,
        scanner=tuple(scanner),
        findings_exit_codes=tuple(codes),
        max_file_bytes=max_bytes,
    )


def _killed(returncode: int) -> str:
    try:
        return f"killed by signal {signal.Signals(-returncode).name}"
    except ValueError:
        return f"killed by signal {-returncode}"


class ReviewProvider:
    """Runs the review agent and judges its exit."""

    #: every attempt is a new review: there is no conversation to continue
    can_resume = False

    def __init__(self, settings: ReviewSettings, *, ignore: Collection[str] = ()) -> None:
        self.settings = settings
        #: the kinds of secret not reported (``plugins.settings.security-review.ignore``)
        self.ignore = tuple(sorted(ignore))

    def build_invocation(self, request: AgentRequest) -> Invocation:
        if request.phase != PHASE:
            raise ProviderError(
                f"'{NAME}' runs a security review: it cannot play the phase {request.phase!r}",
                hint=f"list only {PHASE!r} in the workflow it runs, or start the feature with "
                "another provider",
            )
        if not request.extra_dirs:
            raise ProviderError(f"'{NAME}' was given no checkpoint folder to write its report to")
        argv = [
            self.settings.python, "-m", AGENT_MODULE,
            f"--worktree={request.working_dir}",
            f"--checkpoint={request.extra_dirs[0] / CHECKPOINT}",
            f"--feature={request.feature}",
            f"--run={request.run}",
            f"--max-file-bytes={self.settings.max_file_bytes}",
            *(f"--ignore={kind}" for kind in self.ignore),
            *(f"--findings-exit-code={code}" for code in self.settings.findings_exit_codes),
        ]  # fmt: skip
        if self.settings.scanner:
            argv += ["--", *self.settings.scanner]
        # providers.<name>.env is added by the core; the agent needs nothing more
        return Invocation(argv=argv)

    def parse_line(self, line: str) -> Iterable[AgentEvent]:
        try:
            message = json.loads(line)
        except ValueError:
            message = None
        if not isinstance(message, dict):  # a line the agent did not shape: show it as it is
            text = line.strip()[:_LINE_LIMIT]
            return [AgentEvent(kind="progress", message=text)] if text else []
        kind = message.get("type")
        if kind == "review":
            return [AgentEvent(kind="session", session_id=str(message.get("review_id")))]
        if kind == "step":
            tool, target = str(message.get("tool", "")), str(message.get("target", ""))
            text = f"{tool} {target}".strip()[:_LINE_LIMIT]
            return [AgentEvent(kind="progress", message=text, data={"tool": tool})]
        if kind == "text":
            return [AgentEvent(kind="progress", message=str(message.get("text", ""))[:_LINE_LIMIT])]
        if kind == "result":
            data = {key: message.get(key) for key in ("verdict", "findings", "files")}
            text = f"Security verdict: {data['verdict']} ({data['findings']} finding(s))"
            return [AgentEvent(kind="result", message=text, data=data)]
        return []

    def finish(self, returncode: int, events: Sequence[AgentEvent], stderr: str) -> AgentResult:
        session = next((e.session_id for e in reversed(events) if e.session_id), None)
        result = next((e for e in reversed(events) if e.kind == "result"), None)
        tail = " | ".join(line.strip() for line in stderr.splitlines()[-5:] if line.strip())
        why = f"; stderr: {tail}" if tail else "; nothing on stderr"
        if returncode < 0:
            outcome, message = Outcome.CRASHED, f"the review agent was {_killed(returncode)}{why}"
        elif returncode > 0:
            outcome, message = Outcome.FAILED, f"the review agent exited {returncode}{why}"
        elif result is None:
            outcome, message = Outcome.FAILED, f"the review agent exited 0 without a verdict{why}"
        else:
            outcome, message = Outcome.SUCCEEDED, result.message
        # a local review costs nothing: say so, rather than leave the cost unknown
        return AgentResult(outcome=outcome, session_id=session, cost_usd=0.0, message=message)


def provider_spec(factory: Callable[[Mapping[str, Any]], Provider]) -> ProviderSpec:
    """The spec the plugin registers, with its factory (which knows the ignored kinds)."""
    return ProviderSpec(
        name=NAME,
        factory=factory,
        description="a security review without a model: secrets, plus the scanner you name",
        # the agent is this package run by tmops' Python: where tmops found the package
        # (PYTHONPATH), the agent must find it too
        env_names=("PYTHONPATH",),
    )
