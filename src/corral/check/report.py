"""``corral check`` output and exit status: text lines or a JSON list on stdout, a summary on
stderr; 0 when clean, 1 with findings, 2 for bad usage or a file that cannot be checked."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, TextIO

from corral.check.files import CheckResult, check_paths
from corral.errors import CheckPathError

OutputFormat = Literal["text", "json"]
EXIT_CLEAN = 0
EXIT_FINDINGS = 1
EXIT_USAGE = 2


def render(result: CheckResult, output_format: OutputFormat) -> str:
    """The findings (and unreadable files) as text lines or as one JSON document."""
    if output_format == "json":
        return json.dumps([f.as_json() for f in result.findings], indent=2, ensure_ascii=False)
    return "\n".join(f.as_text() for f in result.findings)


def summary(result: CheckResult) -> str:
    files = f"{result.files} file{'' if result.files == 1 else 's'}"
    errors = len(result.errors)
    findings = len(result.findings) - errors
    if errors:
        return (
            f"corral check: {errors} file(s) could not be checked, {findings} finding(s) in {files}"
        )
    if findings:
        return (
            f"corral check: {findings} finding(s) in {files}; docs/check.md explains each code, "
            "and `# corral: shared-ok <reason>` on the line accepts one"
        )
    return f"corral check: no state shared between users found in {files}"


def exit_status(result: CheckResult) -> int:
    if result.errors:
        return EXIT_USAGE
    return EXIT_FINDINGS if result.findings else EXIT_CLEAN


def run_check(
    paths: Sequence[Path],
    output_format: str = "text",
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Check ``paths``, write the report to ``out`` and a summary to ``err``, and return the
    exit status. Synchronous (it reads files)."""
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    if output_format not in ("text", "json"):
        print(f"corral check: --format is text or json, not {output_format!r}", file=err)
        return EXIT_USAGE
    if not paths:
        print("corral check: give at least one Python file or folder to check", file=err)
        return EXIT_USAGE
    try:
        result = check_paths(paths)
    except CheckPathError as exc:
        print(f"corral check: {exc}", file=err)
        return EXIT_USAGE
    text = render(result, "json" if output_format == "json" else "text")
    if text:
        print(text, file=out)
    elif output_format == "json":
        print("[]", file=out)
    print(summary(result), file=err)
    return exit_status(result)
