"""``corral check``: a static check of agent and tool code for state shared between users.

corral keeps each user's runs apart, but an agent or tool can still undo that with state that
outlives one run: a module-level dict it fills, a list on a class, a ``global`` it rewrites, a
cache keyed by user ids, a mutable default argument. This package reads Python source (it never
imports or runs it) and reports those places under stable codes:

    CR001  module-level mutable object mutated at run time
    CR002  class-level mutable attribute, or a class attribute written at run time
    CR003  write through global or nonlocal to state that outlives one run
    CR004  cache on a function whose arguments carry user data
    CR005  mutable default argument
    E902 / E999  a file that cannot be read / does not parse

docs/check.md shows a leak and its fix for each code. Everything here is pure stdlib
(:mod:`ast`, :mod:`tokenize`) and keeps no state between calls.
"""

from __future__ import annotations

from corral.check.checker import check_source
from corral.check.files import CheckResult, check_file, check_paths, python_files
from corral.check.findings import CODES, Finding
from corral.check.report import OutputFormat, run_check

__all__ = [
    "CODES",
    "CheckResult",
    "Finding",
    "OutputFormat",
    "check_file",
    "check_paths",
    "check_source",
    "python_files",
    "run_check",
]
