"""The project files tmops keeps beside the runs: the TASK_SPEC.md template (and whether a
spec came from the preflight workflow) and FEATURES.txt, the one-line-per-feature index the
upstream scripts read. Every file is read and written through :mod:`.layout`'s link-safe
helpers.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

import attrs

from tmops_core.workspace.layout import (
    FEATURE_NAME,
    Layout,
    atomic_write,
    iso,
    locked,
    read_checked,
    read_text_checked,
)

__all__ = [
    "PREFLIGHT_MARKERS",
    "FeatureLine",
    "is_preflight_spec",
    "is_untouched_template",
    "read_features",
    "task_spec_template",
    "write_feature_line",
]

PREFLIGHT_MARKERS = ("Created by preflight workflow", "Refined by preflight")


# --------------------------------------------------------------------------------------------
# TASK_SPEC.md
# --------------------------------------------------------------------------------------------


_TEMPLATE = """\
# Task Specification: {feature}

<!-- Created by tmops init on {created} for run {run}. Edit this file, then start. -->

## User Story
As a <role>, I want <capability>, so that <benefit>.

## Acceptance Criteria
- [ ] Given <context>, when <action>, then <outcome>.
- [ ] ...

## Technical Constraints
- Language, frameworks and versions:
- Where the code and the tests live:
- The command that runs the tests:

## Definition of Done
- [ ] Every acceptance criterion has a test that failed before the code was written.
- [ ] All tests pass on branch feature/{feature}.
- [ ] The verifier's review is recorded in 007-verify-complete.md.
"""


def task_spec_template(feature: str, run: str, moment: datetime) -> str:
    return _TEMPLATE.format(feature=feature, run=run, created=iso(moment))


def is_untouched_template(text: str, feature: str) -> bool:
    """Whether ``text`` is still the template ``tmops init`` wrote for ``feature``, whatever its
    date and run (a retry run starts from the spec of the run before it), ignoring trailing
    whitespace."""
    hole = "\x00"  # where the template has its date and run: any word matches there
    holed = _normalised(_TEMPLATE.format(feature=feature, run=hole, created=hole))
    pattern = r"\S+".join(re.escape(part) for part in holed.split(hole))
    return re.fullmatch(pattern, _normalised(text)) is not None


def _normalised(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.rstrip().splitlines())


def is_preflight_spec(path: Path) -> bool:
    """Whether an existing TASK_SPEC.md says the preflight workflow created or refined it."""
    head = (read_checked(path, limit=64 * 1024) or b"").decode("utf-8", errors="replace")
    return any(marker in head for marker in PREFLIGHT_MARKERS)


# --------------------------------------------------------------------------------------------
# FEATURES.txt: <feature>:<status>:<ISO-8601 time>:<branch>
# --------------------------------------------------------------------------------------------


@attrs.frozen
class FeatureLine:
    feature: str
    status: str
    updated: str
    branch: str

    def render(self) -> str:
        return f"{self.feature}:{self.status}:{self.updated}:{self.branch}"


def read_features(layout: Layout) -> dict[str, FeatureLine]:
    """The lines of FEATURES.txt by feature; lines that do not parse are skipped."""
    text = read_text_checked(layout.features_file) or ""
    found: dict[str, FeatureLine] = {}
    for line in text.splitlines():
        parts = line.strip().split(":")
        # The time holds colons itself; the feature and status come first, the branch last.
        if len(parts) < 4 or not FEATURE_NAME.fullmatch(parts[0]):
            continue
        found[parts[0]] = FeatureLine(parts[0], parts[1], ":".join(parts[2:-1]), parts[-1])
    return found


def write_feature_line(layout: Layout, line: FeatureLine, *, replace: bool) -> bool:
    """Add (or with ``replace``, update) the line of one feature; return whether it changed."""
    with locked(layout.tmops_dir / ".features.lock"):
        lines = (read_text_checked(layout.features_file) or "").splitlines()
        prefix = f"{line.feature}:"
        index = next((i for i, text in enumerate(lines) if text.startswith(prefix)), None)
        if index is not None and (not replace or lines[index] == line.render()):
            return False
        if index is None:
            lines.append(line.render())
        else:
            lines[index] = line.render()
        atomic_write(layout.features_file, "\n".join(lines) + "\n")
        return True
