"""Condense Snakemake's output into lines a person can follow: jobs done of total, and elapsed time.

    snakemake ... 2>&1 | python -m landscape_utils.study.progress

Progress lines become ``[02:13] 17 of 51 jobs done (33%)``; errors (Snakemake's and the jobs'
``error:`` lines) pass through whole; everything else is kept in Snakemake's own log (named at
the end). ``LANDSCAPE_VERBOSE=1`` passes every line through unchanged.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Iterable, Iterator

_DONE = re.compile(r"^(\d+) of (\d+) steps \((\d+%)\) done")
_TOTAL = re.compile(r"^total\s+(\d+)\s*$")
_ERROR_START = re.compile(r"^(Error in rule|RuleException|WorkflowError|MissingInputException|"
                          r"InputFunctionException|Exiting because|SyntaxError|Traceback|IncompleteFilesException|"
                          r"LockException|Error:|Building DAG of jobs\.\.\.\s*$)")
_ALWAYS = re.compile(r"^(error: |Nothing to be done|Complete log|.*Exception)")


def condense(lines: Iterable[str], started: float | None = None) -> Iterator[str]:
    """The lines worth showing, progress lines rewritten with the elapsed time."""
    started = time.time() if started is None else started
    in_error = False
    for raw in lines:
        line = raw.rstrip("\n")
        elapsed = int(time.time() - started)
        stamp = f"[{elapsed // 60:02d}:{elapsed % 60:02d}]"
        if m := _DONE.match(line):
            yield f"{stamp} {m.group(1)} of {m.group(2)} jobs done ({m.group(3)})"
        elif m := _TOTAL.match(line):
            yield f"{stamp} {m.group(1)} jobs to run"
        elif line.startswith("Nothing to be done"):
            yield f"{stamp} nothing to do: every output is up to date"
        elif _ERROR_START.match(line) and not line.startswith("Building DAG"):
            in_error = True
            yield line
        elif in_error or _ALWAYS.match(line):
            yield line


def main() -> int:
    if os.environ.get("LANDSCAPE_VERBOSE"):
        for line in sys.stdin:
            sys.stdout.write(line)
        return 0
    for line in condense(sys.stdin):
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
