"""Where a benchmark's figures came from: the code revision (and whether the tree had
uncommitted changes), the command line and the machine, recorded beside the figures in
every committed result file, so a README figure can be traced to the run behind it."""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

from backend.files import write_json_atomic

ROOT = Path(__file__).resolve().parent.parent


def _git(*command: str) -> str:
    try:
        return subprocess.run(
            ["git", *command], cwd=ROOT, capture_output=True, text=True, timeout=30
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


# Read when the benchmark starts (it imports this first thing): the code that ran, even
# if the tree changes before the result is written.
_CODE = {
    "git_revision": _git("rev-parse", "HEAD") or None,
    "git_uncommitted_changes": bool(_git("status", "--porcelain")),  # untracked files too
}


def provenance() -> dict:
    return {
        **_CODE,
        "command": shlex.join(sys.orig_argv),
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "load_average": list(os.getloadavg()),
    }


def write_result(path: Path, figures: dict) -> None:
    """`figures` with their provenance, as JSON, atomically."""
    write_json_atomic(path, {**figures, "provenance": provenance()})
