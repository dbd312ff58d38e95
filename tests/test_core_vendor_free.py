"""The core names no agent vendor: what is particular to an agent lives in its provider plugin.

Comments and docstrings may name one (to say why); code and string literals may not. Python's
tokenizer tells them apart: every token but comments is checked, and a string that is a whole
statement (a docstring) counts as a comment.
"""

from __future__ import annotations

import io
import re
import tokenize
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parent.parent / "tmops_core"
VENDORS = re.compile(r"anthropic|claude|openai|codex|gemini", re.IGNORECASE)


def vendor_names_in_code(source: str) -> list[tuple[int, str]]:
    """(line, token) for each token of ``source`` naming a vendor, comments and docstrings
    aside."""
    found: list[tuple[int, str]] = []
    previous = tokenize.NEWLINE
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        kind = token.type
        if kind in (tokenize.COMMENT, tokenize.NL, tokenize.INDENT, tokenize.DEDENT):
            continue
        # a string right after a statement's end (or at a block's start) is a docstring
        docstring = kind == tokenize.STRING and previous in (tokenize.NEWLINE, tokenize.INDENT)
        if not docstring and VENDORS.search(token.string):
            found.append((token.start[0], token.string))
        previous = kind if kind != tokenize.STRING or not docstring else tokenize.NEWLINE
    return found


def test_the_check_sees_code_and_strings_but_not_comments_or_docstrings() -> None:
    source = '''"""Runs Claude Code."""
# Claude's settings
def f() -> str:
    """For Gemini."""
    return "claude-code"  # a literal
PREFIX = ("OPENAI_",)
'''
    assert vendor_names_in_code(source) == [(5, '"claude-code"'), (6, '"OPENAI_"')]


@pytest.mark.parametrize("path", sorted(CORE.rglob("*.py")), ids=lambda p: str(p.relative_to(CORE)))
def test_no_core_module_names_a_vendor_outside_comments(path: Path) -> None:
    found = vendor_names_in_code(path.read_text(encoding="utf-8"))
    assert not found, f"{path.relative_to(CORE.parent)} names a vendor in code: {found}"
