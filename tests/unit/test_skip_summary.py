"""A developer's machine without a service the tests use: its tests are skipped, and the
end of the run says which service was missing and how to get it."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from tests.conftest import ROOT


def test_the_run_ends_naming_the_missing_service_and_how_to_get_it():
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["TEST_REDIS_URL"] = "redis://127.0.0.1:1/0"  # nothing listens there
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/unit/test_jobs.py", "-q", "-p", "no:cacheprovider"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:]
    assert "skipped: services this machine lacks" in done.stdout
    assert re.search(r"Redis: \d+ skipped; to get it: apt-get install redis-server", done.stdout)
    # Under CI=true the same run fails instead of skipping.
    failed = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/unit/test_jobs.py", "-q", "-p", "no:cacheprovider"],
        cwd=ROOT,
        env={**env, "CI": "true"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert failed.returncode == 1 and "Redis is not reachable" in failed.stdout
