"""docs/security.md names real tests: every ``tests/...py`` file and ``::test`` it names exists."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "security.md"
# a file, then its tests: `tests/x.py::a`, `::b` (the later ones name the same file)
_REFERENCE = re.compile(r"`(tests/[\w/]+\.py)(?:::(\w+))?`|`::(\w+)`")


def referenced_tests() -> list[tuple[int, str, str | None]]:
    found: list[tuple[int, str, str | None]] = []
    current: str | None = None  # `::name` continues the file named last in its paragraph
    for number, line in enumerate(DOC.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            current = None
        for match in _REFERENCE.finditer(line):
            file, test, continued = match.groups()
            current = file or current
            if current is not None:
                found.append((number, current, test or continued))
    return found


def test_every_test_the_security_doc_names_exists() -> None:
    references = referenced_tests()
    assert len(references) > 30
    missing = []
    for number, file, test in references:
        path = REPO / file
        if not path.is_file():
            missing.append(f"line {number}: {file}")
        elif test and not re.search(
            rf"^(async )?def {test}\(", path.read_text(encoding="utf-8"), re.M
        ):
            missing.append(f"line {number}: {file}::{test}")
    assert missing == []
