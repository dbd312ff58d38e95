"""The scripted agent's command line: the flags of ``claude -p`` it takes, checked as claude
checks them, with the environment that steers it (faults, the delay before each action).

What the flags mean is in the docstring of :mod:`tmops_plugins.scripted_agent`; this module
owns :func:`read_options` (and the :class:`Options` it returns) and :class:`UsageError`.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
from collections.abc import Sequence
from typing import NoReturn, TextIO

import attrs

from .scripted_journal import JOURNAL_ENV
from .scripted_roles import LABEL
from .scripted_session import FAULT_ENV, Fault, parse_faults

__all__ = ["DELAY_ENV", "Options", "UsageError", "read_options"]

DELAY_ENV = "TMOPS_SCRIPTED_DELAY_S"
_PERMISSION_MODES = ("acceptEdits", "bypassPermissions", "default", "dontAsk", "plan")
_OUTPUT_FORMATS = ("text", "json", "stream-json")
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)

# --------------------------------------------------------------------------------------------
# The command line
# --------------------------------------------------------------------------------------------


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a positive whole number, got {text!r}"
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return value


def _usd(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected an amount in USD >= 0, got {text!r}")
    return value


def _parser() -> _Parser:
    parser = _Parser(
        prog="python -m tmops_plugins.scripted_agent",
        description=(
            f"The {LABEL}: a stand-in for `claude -p` that does the tmops demo task by script, "
            "with no AI model behind it. Same flags as claude."
        ),
        epilog=f"Fault injection: {FAULT_ENV}=<role>:<kind>[:always],...; "
        f"pause before each action: {DELAY_ENV}=<seconds>; "
        f"journal of sessions: {JOURNAL_ENV}=<folder>.",
        allow_abbrev=False,
    )
    parser.add_argument("prompt", nargs="?", help="the prompt (default: read stdin)")
    parser.add_argument("--version", action="version", version="0.0.0 (tmops scripted agent)")
    parser.add_argument("-p", "--print", action="store_true", help="print mode (required)")
    parser.add_argument("--output-format", choices=_OUTPUT_FORMATS, default="text")
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--append-system-prompt", metavar="TEXT")
    parser.add_argument("--permission-mode", choices=_PERMISSION_MODES)
    parser.add_argument("--dangerously-skip-permissions", action="store_true")
    parser.add_argument("--add-dir", action="extend", nargs="+", metavar="DIR")
    parser.add_argument("--resume", "-r", metavar="SESSION_ID")
    parser.add_argument("--max-turns", type=_positive_int, metavar="N")
    parser.add_argument("--model", metavar="MODEL")
    parser.add_argument("--max-budget-usd", type=_usd, metavar="AMOUNT")
    parser.add_argument(
        "--allowedTools", "--allowed-tools", dest="allowed_tools", action="extend", nargs="+"
    )
    parser.add_argument(
        "--disallowedTools",
        "--disallowed-tools",
        dest="disallowed_tools",
        action="extend",
        nargs="+",
    )
    return parser


@attrs.frozen(kw_only=True)
class Options:
    prompt: str
    output_format: str
    verbose: bool
    resume: str | None
    max_turns: int | None
    max_budget_usd: float | None
    permission_mode: str
    faults: tuple[Fault, ...]
    delay_s: float


def read_options(argv: Sequence[str] | None, stdin: TextIO | None) -> Options:
    """The checked command line and environment.

    :raises UsageError: (or ValueError from the faults) for anything claude would refuse.
    """
    args = _parser().parse_args(argv)
    if not args.print:
        raise UsageError("the scripted agent runs in print mode only: pass -p/--print")
    if args.output_format == "stream-json" and not args.verbose:
        raise UsageError("When using --print, --output-format=stream-json requires --verbose")
    if args.resume is not None and not _UUID.match(args.resume):
        raise UsageError(f"--resume requires a valid session ID, got {args.resume!r}")
    faults = parse_faults(os.environ.get(FAULT_ENV, ""))
    delay_text = os.environ.get(DELAY_ENV, "").strip() or "0"
    try:
        delay_s = float(delay_text)
    except ValueError:
        delay_s = -1.0
    if not math.isfinite(delay_s) or delay_s < 0:
        raise UsageError(f"{DELAY_ENV} must be a number of seconds >= 0, got {delay_text!r}")
    prompt = args.prompt
    if prompt is None:
        source = sys.stdin if stdin is None else stdin
        prompt = "" if source is None or source.isatty() else source.read()
    if not prompt.strip():
        raise UsageError(
            "Input must be provided either through stdin or as a prompt argument when using --print"
        )
    return Options(
        prompt=prompt,
        output_format=args.output_format,
        verbose=args.verbose,
        resume=args.resume,
        max_turns=args.max_turns,
        max_budget_usd=args.max_budget_usd,
        permission_mode=args.permission_mode or "default",
        faults=faults,
        delay_s=delay_s,
    )
