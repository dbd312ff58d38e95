"""The built-in checkpoint validators: file safety, UTF-8, identity, the content a phase
requires, the verifier's score, and a blocked status.

Each validator is a pure function ``(checkpoint, context) -> problems``. Those that look at the
file itself do so safely: ``lstat`` first, then ``open`` with ``O_NOFOLLOW`` and ``O_NONBLOCK``,
reading at most 1 MiB.
"""

from __future__ import annotations

import codecs
import os
import re
import stat
from collections.abc import Iterable, Iterator

from tmops_hookspecs import (
    Checkpoint,
    CheckpointRequirement,
    FeatureContext,
    Problem,
    Severity,
    ValidatorSpec,
    hookimpl,
)

__all__ = [
    "MAX_CHECKPOINT_BYTES",
    "check_blocked_status",
    "check_file_safety",
    "check_identity",
    "check_phase_content",
    "check_utf8",
    "check_verifier_score",
    "tmops_register_validators",
]

MAX_CHECKPOINT_BYTES = 1024 * 1024
VERIFIER_CHECKPOINT = "007-verify-complete.md"
SUMMARY = "SUMMARY.md"
_WHOLE = re.compile(r"[0-9]{1,2}")

_KINDS = {
    stat.S_IFDIR: "a directory",
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
}


def _kind(mode: int) -> str:
    return _KINDS.get(stat.S_IFMT(mode), "not a regular file")


def check_file_safety(checkpoint: Checkpoint, context: FeatureContext) -> Iterator[Problem]:
    """A regular file (not a symlink), directly inside the run's checkpoint folder, <= 1 MiB."""
    path = checkpoint.path
    try:
        info = os.lstat(path)
    except OSError as exc:
        yield Problem(message=f"{path} cannot be read: {exc.strerror or exc}")
        return
    if stat.S_ISLNK(info.st_mode):
        yield Problem(
            message=f"{path} is a symlink; a checkpoint must be a regular file written in place "
            "(tmops never follows links in the checkpoint folder)"
        )
        return
    if not stat.S_ISREG(info.st_mode):
        yield Problem(message=f"{path} is {_kind(info.st_mode)}; a checkpoint must be a file")
        return
    folder = os.path.realpath(context.checkpoint_dir)
    if os.path.realpath(path.parent) != folder:
        yield Problem(message=f"{path} is not in the checkpoint folder {folder} of this run")
    if info.st_size > MAX_CHECKPOINT_BYTES:
        yield Problem(
            message=f"{path} is {info.st_size} bytes; a checkpoint is at most 1 MiB "
            f"({MAX_CHECKPOINT_BYTES} bytes)"
        )


def _read_head(checkpoint: Checkpoint) -> tuple[bytes, bool] | None:
    """Up to 1 MiB of the file and whether that is all of it; ``None`` if it is not a regular
    file that can be opened without following a link (file-safety reports why)."""
    try:
        fd = os.open(checkpoint.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        data = handle.read(MAX_CHECKPOINT_BYTES + 1)
    return data[:MAX_CHECKPOINT_BYTES], len(data) <= MAX_CHECKPOINT_BYTES


def check_utf8(checkpoint: Checkpoint, context: FeatureContext) -> Iterator[Problem]:
    """The file's bytes (the first 1 MiB) are strict UTF-8 and hold no NUL byte."""
    head = _read_head(checkpoint)
    if head is None:
        return
    data, complete = head
    try:
        # A file cut at 1 MiB may end inside a character; only a whole file must end cleanly.
        codecs.getincrementaldecoder("utf-8")("strict").decode(data, final=complete)
    except UnicodeDecodeError as exc:
        yield Problem(
            message=f"{checkpoint.name} is not valid UTF-8 text (byte {exc.start}: {exc.reason}); "
            "write the checkpoint as UTF-8"
        )
    nul = data.find(b"\0")
    if nul >= 0:
        yield Problem(
            message=f"{checkpoint.name} contains a NUL byte (byte {nul}); a checkpoint is text"
        )


def _name(value: str) -> str:
    return value.strip().strip("`'\"").strip()


def check_identity(checkpoint: Checkpoint, context: FeatureContext) -> Iterator[Problem]:
    """The feature and run the checkpoint names (if any) are this run's."""
    feature = checkpoint.fields.get("feature")
    run = checkpoint.fields.get("run")
    if feature is not None and _name(feature) != context.feature:
        yield Problem(
            message=f"{checkpoint.name} names feature {_name(feature)!r} but this is "
            f"{context.feature!r}"
        )
    if run is not None and _name(run) != context.run:
        yield Problem(
            message=f"{checkpoint.name} names run {_name(run)!r} but this is {context.run!r}"
        )
    if feature is None and run is None and checkpoint.name != SUMMARY:
        yield Problem(
            severity=Severity.WARNING,
            message=f"{checkpoint.name} does not say which feature and run it is for; add "
            f"'**Feature:** {context.feature}' and '**Run:** {context.run}' header lines",
        )


def check_verifier_score(checkpoint: Checkpoint, context: FeatureContext) -> Iterator[Problem]:
    """``007-verify-complete.md`` holds a quality score 0..10 and a YES/NO merge verdict."""
    if checkpoint.name != VERIFIER_CHECKPOINT:
        return
    how = "write a line 'Quality score: X/10' with X a whole number from 0 to 10"
    score = checkpoint.fields.get("quality_score")
    if score is None or not score.strip():
        yield Problem(message=f"{checkpoint.name} has no quality score; {how}")
    elif not (_WHOLE.fullmatch(score.strip()) and int(score) <= 10):
        yield Problem(message=f"{checkpoint.name} has quality score {score!r}; {how}")
    verdict = checkpoint.fields.get("ready_for_merge")
    if verdict is not None and verdict.strip().upper() not in {"YES", "NO"}:
        yield Problem(
            message=f"{checkpoint.name} says 'Feature ready for merge: {verdict}'; write YES or NO"
        )


def _blocked(checkpoint: Checkpoint) -> bool:
    return checkpoint.fields.get("status", "").strip().strip("*`").strip().lower() == "blocked"


def _shown(value: str) -> str:
    line = " ".join(value.split())
    return repr(line if len(line) <= 60 else line[:57] + "...")


def _either(items: list[str]) -> str:
    return ", ".join(items[:-1]) + (" or " if len(items) > 1 else "") + items[-1]


def _places(requirement: CheckpointRequirement) -> str:
    """Where a requirement is looked for, as a person would write it."""
    places = []
    if requirement.sections:
        titles = [f"'## {key.replace('_', ' ').title()}'" for key in requirement.sections]
        places.append(f"a section {_either(titles)}")
    if requirement.fields:
        lines = [f"'{key.replace('_', ' ').capitalize()}: ...'" for key in requirement.fields]
        places.append(f"a line {_either(lines)}")
    if not places:
        return f"text matching `{requirement.pattern}`"
    return ", or ".join(places)


def _unmet(checkpoint: Checkpoint, requirement: CheckpointRequirement) -> str | None:
    """Why ``checkpoint`` does not hold ``requirement``, or None when it does."""
    pattern = re.compile(requirement.pattern, re.M) if requirement.pattern else None
    missing = f"is missing the {requirement.what} (expected {_places(requirement)})"
    if not (requirement.fields or requirement.sections):  # then it has a pattern
        found = pattern is not None and pattern.search(checkpoint.body) is not None
        return None if found else missing
    values = [checkpoint.fields.get(key, "") for key in requirement.fields]
    values += [checkpoint.sections.get(key, "") for key in requirement.sections]
    present = [value.strip() for value in values if value.strip()]
    if not present:
        return missing
    if pattern is None or any(pattern.search(value) for value in present):
        return None
    return (
        f"has the {requirement.what} as {_shown(present[0])}, which does not match "
        f"`{requirement.pattern}`"
    )


def check_phase_content(checkpoint: Checkpoint, context: FeatureContext) -> Iterator[Problem]:
    """The checkpoint can be read and says something: its front matter (if any) parses, it is
    not empty, and it holds each part its phase requires (``context.requires``, from
    ``PhaseSpec.requires``). A checkpoint that reports itself blocked need not hold them: the
    blocked-status validator stops it with the agent's reason."""
    try:
        if not stat.S_ISREG(os.lstat(checkpoint.path).st_mode):
            return  # a symlink, FIFO, ...: file-safety says why
    except OSError:
        return
    if checkpoint.parse_error:
        yield Problem(
            message=f"{checkpoint.name} cannot be read: {checkpoint.parse_error}; fix the "
            "front matter, or write the header-block format of your instructions"
        )
    if not checkpoint.body.strip():
        yield Problem(
            message=f"{checkpoint.name} is empty; write the header lines and sections your "
            "instructions describe, in one write"
        )
        return
    if _blocked(checkpoint):
        return
    for requirement in context.requires:
        why = _unmet(checkpoint, requirement)
        if why is not None:
            hint = f"; {requirement.hint}" if requirement.hint else ""
            yield Problem(message=f"{checkpoint.name} {why}{hint}")


def check_blocked_status(checkpoint: Checkpoint, context: FeatureContext) -> Iterator[Problem]:
    """A checkpoint whose status is ``blocked`` stops the handoff, with the agent's reason."""
    if not _blocked(checkpoint):
        return
    who = checkpoint.fields.get("from", "").strip() or "agent"
    reason = (
        checkpoint.fields.get("blockers", "").strip()
        or checkpoint.fields.get("message", "").strip()
        or "no reason given under ## Blockers"
    )
    yield Problem(message=f"the {who} reported it is blocked: {reason}")


@hookimpl
def tmops_register_validators() -> Iterable[ValidatorSpec]:
    return [
        ValidatorSpec(
            name="file-safety",
            validate=check_file_safety,
            description="a regular file (no symlink) in the run's checkpoint folder, <= 1 MiB",
        ),
        ValidatorSpec(
            name="utf8", validate=check_utf8, description="strict UTF-8 text without NUL bytes"
        ),
        ValidatorSpec(
            name="identity",
            validate=check_identity,
            description="the feature and run it names are this run's",
        ),
        ValidatorSpec(
            name="phase-content",
            validate=check_phase_content,
            description="front matter that parses, not empty, and every part the phase "
            "requires (PhaseSpec.requires)",
        ),
        ValidatorSpec(
            name="verifier-score",
            validate=check_verifier_score,
            description="007-verify-complete.md has a quality score 0-10 and a YES/NO verdict",
        ),
        ValidatorSpec(
            name="blocked-status",
            validate=check_blocked_status,
            description="a checkpoint with status 'blocked' stops the handoff",
        ),
    ]
