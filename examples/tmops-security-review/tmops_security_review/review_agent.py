"""The review agent the ``security-review-agent`` provider runs: a security review, no model.

``python -m tmops_security_review.review_agent --worktree=W --checkpoint=C --feature=F
--run=R [--ignore=KIND]... [--max-file-bytes=N] [--findings-exit-code=N]... [-- SCANNER...]``

1. lists the worktree's files with ``git ls-files`` (tracked, and new ones not ignored);
2. looks in each for the secrets of :data:`~tmops_security_review.patterns.SECRET_PATTERNS`,
   reporting the kind, file and line, never the secret;
3. runs the scanner given after ``--`` in the worktree, if any: exit 0 is clean, an exit code
   of ``--findings-exit-code`` means findings, any other code fails the review (exit 2);
4. writes the completion checkpoint (0600, atomically) ending ``Security verdict: PASS`` or
   ``FAIL``.

It prints one JSON object a line for the provider: ``review`` (its id), ``step`` (what it
does), ``text`` (the scanner's output) and last ``result``. Exit 0: a verdict was reached
(PASS or FAIL); 2: the review could not be done (the reason on stderr).
"""

from __future__ import annotations

import argparse
import json
import os
import stat

# git and the configured scanner, run from argv lists
import subprocess  # nosec B404
import sys
import uuid
from pathlib import Path
from typing import Any

from .patterns import SECRET_PATTERNS, redact

__all__ = ["main"]

_REPORT_LINES = 200
_LINE_LIMIT = 500
_SNIFF_BYTES = 8192


class ReviewError(Exception):
    """The review could not be done; the message says why."""


def _say(**message: Any) -> None:
    print(json.dumps(message), flush=True)


def _arguments(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    scanner: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, scanner = argv[:cut], argv[cut + 1 :]
    parser = argparse.ArgumentParser(prog="python -m tmops_security_review.review_agent")
    parser.add_argument("--worktree", type=Path, required=True)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--feature", required=True)
    parser.add_argument("--run", required=True)
    parser.add_argument("--ignore", action="append", default=[], choices=list(SECRET_PATTERNS))
    parser.add_argument("--max-file-bytes", type=int, default=1_000_000)
    parser.add_argument("--findings-exit-code", type=int, action="append", default=[])
    return parser.parse_args(argv), scanner


def _files(worktree: Path) -> list[str]:
    # git is on PATH wherever tmops runs (it needs it too); the agent's PATH is tmops' own
    listed = subprocess.run(  # nosec B603 B607
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],  # noqa: S607
        cwd=worktree, capture_output=True, check=False,
    )  # fmt: skip
    if listed.returncode != 0:
        raise ReviewError(f"git ls-files failed: {listed.stderr.decode(errors='replace').strip()}")
    return sorted({name for name in listed.stdout.decode(errors="replace").split("\0") if name})


def _read(path: Path, limit: int) -> str | None:
    """The text of a regular file of at most ``limit`` bytes, never through a link; None for
    anything else (a link, a binary, a big file, a file gone since it was listed)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        data = handle.read(limit + 1)
    if len(data) > limit or b"\0" in data[:_SNIFF_BYTES]:
        return None
    return data.decode(errors="replace")


def _secrets(worktree: Path, names: list[str], ignore: set[str], limit: int) -> list[str]:
    findings = []
    for name in names:
        text = _read(worktree / name, limit)
        if text is None:
            continue
        for kind, pattern in SECRET_PATTERNS.items():
            if kind in ignore:
                continue
            for match in pattern.finditer(text):
                where = f"{name}:{text.count(chr(10), 0, match.start()) + 1}"
                _say(type="step", tool="Secret", target=f"{where} ({kind})")
                findings.append(f"{where}: {kind}; remove it and rotate it")
    return findings


def _scan(scanner: list[str], worktree: Path, findings_codes: set[int]) -> tuple[bool, list[str]]:
    """Run the scanner; (whether it found problems, its output with secrets redacted)."""
    _say(type="step", tool="Scanner", target=redact(" ".join(scanner)))
    output: list[str] = []
    try:
        # the configured argv list, never a shell
        process = subprocess.Popen(  # nosec B603
            scanner, cwd=worktree, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, text=True, errors="replace",
        )  # fmt: skip
    except OSError as exc:
        raise ReviewError(f"cannot run the scanner {scanner[0]}: {exc.strerror or exc}") from exc
    assert process.stdout is not None  # noqa: S101 - stdout=PIPE
    with process.stdout:
        for line in process.stdout:
            text = redact(line.rstrip())[:_LINE_LIMIT]  # the report stays small
            output.append(text)
            if text.strip():
                _say(type="text", text=text)
    code = process.wait()
    if code != 0 and code not in findings_codes:
        tail = " | ".join(line for line in output[-5:] if line.strip())
        raise ReviewError(f"the scanner {scanner[0]} failed with exit code {code}: {tail}")
    return code != 0, output[-_REPORT_LINES:]


def _report(args: argparse.Namespace, secrets: list[str], scanner: list[str],
            scanner_output: list[str] | None, verdict: str, files: int) -> str:  # fmt: skip
    lines = [
        f"# Checkpoint: {args.checkpoint.name}",
        "**From:** security-reviewer",
        "**To:** Orchestrator",
        f"**Feature:** {args.feature}",
        f"**Run:** {args.run}",
        "**Status:** complete",
        "",
        "## Work Completed",
        f"Reviewed {files} file(s) for secrets"
        + (f" and ran `{redact(' '.join(scanner))}`." if scanner else "."),
        "",
        "## Findings",
        *([f"- {finding}" for finding in secrets] or ["- no secrets found"]),
    ]
    if scanner_output is not None:
        lines += ["", "## Scanner Output", "```", *scanner_output, "```"]
    lines += ["", f"Security verdict: {verdict}", ""]
    return "\n".join(lines)


def _write(path: Path, text: str) -> None:
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        with os.fdopen(os.open(temp, flags, 0o600), "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def review(args: argparse.Namespace, scanner: list[str]) -> None:
    _say(type="review", review_id=uuid.uuid4().hex)
    names = _files(args.worktree)
    _say(type="step", tool="ListFiles", target=f"{len(names)} files")
    secrets = _secrets(args.worktree, names, set(args.ignore), args.max_file_bytes)
    found, output = False, None
    if scanner:
        found, output = _scan(scanner, args.worktree, set(args.findings_exit_code or [1]))
    verdict = "FAIL" if secrets or found else "PASS"
    _write(args.checkpoint, _report(args, secrets, scanner, output, verdict, len(names)))
    _say(type="step", tool="Write", target=str(args.checkpoint))
    _say(type="result", verdict=verdict, findings=len(secrets) + int(found), files=len(names))


def main(argv: list[str] | None = None) -> int:
    args, scanner = _arguments(sys.argv[1:] if argv is None else argv)
    try:
        review(args, scanner)
    except (ReviewError, OSError) as exc:
        print(f"security review failed: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
