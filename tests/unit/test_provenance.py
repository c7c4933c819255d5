"""Every benchmark result a README links was made by a commit of this repository with
nothing uncommitted: a figure can be traced to the code that produced it."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from tests.conftest import ROOT

READMES = [ROOT / "README.md", ROOT / "benchmarks" / "README.md"]


def linked_results() -> list:
    found = set()
    for readme in READMES:
        for link in re.findall(r"\(([^)\s]*results/[\w.-]+\.json)\)", readme.read_text()):
            found.add((readme.parent / link).resolve())
    return sorted(found)


def test_the_readmes_link_results():
    names = {path.name for path in linked_results()}
    assert {"prelabel.json", "learning_curve.json", "train_to_serve.json"} <= names


@pytest.mark.parametrize("path", linked_results(), ids=lambda p: p.name)
def test_a_linked_result_comes_from_a_clean_commit_of_this_history(path):
    assert path.is_file(), f"{path} is linked but missing"
    provenance = json.loads(path.read_text()).get("provenance") or {}
    revision = provenance.get("git_revision")
    assert revision, f"{path.name} names no revision"
    assert provenance.get("git_uncommitted_changes") is False, (
        f"{path.name} was made with uncommitted changes at {revision[:8]}"
    )
    ancestor = subprocess.run(
        ["git", "merge-base", "--is-ancestor", revision, "HEAD"], cwd=ROOT, capture_output=True
    )
    assert ancestor.returncode == 0, f"{path.name}: {revision[:8]} is not an ancestor of HEAD"
