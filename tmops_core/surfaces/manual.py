"""What a person is shown to do a phase by hand: the same text from the CLI (``tmops prompt``)
and the MCP server (its prompts)."""

from __future__ import annotations

from typing import Any

__all__ = ["prompt_text"]


def prompt_text(answer: dict[str, Any]) -> str:
    """The text ``tmops prompt FEATURE PHASE`` prints for ``answer`` (a ``Service.prompt``)."""
    feature = answer["feature"]
    return (
        f"# {answer['role']} of {feature} (run {answer['run']}): role instructions\n\n"
        f"{answer['instructions'].rstrip()}\n\n"
        "# the prompt\n\n"
        f"{answer['prompt'].rstrip()}\n\n"
        f"# work in {answer['worktree']}; when done, write {answer['checkpoint']}\n"
        f"# then `tmops resume {feature}` checks it and goes on\n"
    )
