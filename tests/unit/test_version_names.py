"""The names model versions are shown under (Label Studio's prediction tab and Data Manager,
GET /versions, the training status): short, readable, fixed at commit, and mapped back to
the version's folder."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from backend.model.registry import InvalidName, Registry, shown_name

FOLDER = "v3.20260101T120000"


def measured(accuracy: float | None, posts: int, kind: str | None = None) -> dict:
    return {
        "validation": {"model_accuracy": accuracy, "judge_posts": posts, "llm_accuracy": 0.5},
        **({"kind": kind} if kind else {}),
    }


@pytest.mark.parametrize(
    "meta, expected",
    [
        (measured(0.84, 25, "head"), "v3 head 84%/25"),
        (measured(0.84, 25, "fine-tune"), "v3 tune 84%/25"),
        (measured(0.84, 25), "v3 tune 84%/25"),  # a version from before heads: a fine-tune
        (measured(1.0, 250, "head"), "v3 head 100%"),  # "/250" would pass 15 characters
        (measured(2 / 3, 3, "head"), "v3 head 67%/3"),
        (measured(None, 0, "head"), "v3 head unmeasured"),  # no judge posts: nothing to show
        ({"validation": {}}, "v3 tune unmeasured"),
        ({}, FOLDER),  # no figures at all: a version from before, known by its folder
    ],
)
def test_shown_name(meta, expected):
    assert shown_name(FOLDER, meta) == expected


def test_a_shown_name_fits_label_studios_prediction_tab():
    """The tab cuts a model version longer than 15 characters to its first 8 and last 6."""
    assert len(shown_name("v99.20260101T120000", measured(0.84, 99, "head"))) <= 15
    # Where the judge size does not fit, it is left out, not cut.
    assert shown_name("v123.20260101T120000", measured(1.0, 250, "head")) == "v123 head 100%"


def commit(registry: Registry, meta: dict) -> str:
    staging = registry.staging_dir()
    (staging / "config.json").write_text("{}")
    folder = registry.new_version_name()
    registry.commit(staging, folder, {"created": time.time(), **meta})
    return folder


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return Registry(tmp_path, 5)


def test_a_measured_version_is_known_by_its_shown_name(registry):
    folder = commit(registry, measured(0.84, 25))
    name = f"{folder.split('.')[0]} tune 84%/25"
    assert registry.meta(folder)["shown_name"] == name
    assert registry.name(folder) == registry.name(name) == name
    assert registry.folder(name) == folder and registry.folder(folder) == folder
    assert registry.path(name) == registry.versions_dir / folder
    registry.promote(name)
    assert registry.serving() == name
    assert (registry.root / "serving").read_text() == folder  # the file keeps the folder
    assert registry.names() == [name]


def test_a_shown_name_never_changes(registry):
    """Label Studio skips tasks holding a prediction of the version /setup names: a
    version's name must stay what it served under, whatever comes later."""
    first = commit(registry, measured(0.84, 25))
    name = registry.name(first)
    second = commit(registry, measured(0.9, 30))
    registry.promote(second)
    registry.promote(first)
    assert registry.name(first) == name == registry.serving()
    assert registry.names() == [name, registry.name(second)]


def test_a_version_without_figures_keeps_its_folder_name(registry):
    folder = commit(registry, {})
    assert "shown_name" not in registry.meta(folder)
    assert registry.name(folder) == folder
    registry.promote(folder)
    assert registry.serving() == folder


@pytest.mark.parametrize(
    "name",
    [
        "v7 84% (n=25)",  # well formed, no such version
        "v1 85% (n=25)",  # the number of a version, not its name
        "v1 84% (n=25) ",
        "v1 84% (n=25)/../../x",
        "/etc/passwd",
        "../v1.x",
        "",
        None,
        3,
        ["v1 84% (n=25)"],
    ],
)
def test_a_name_that_is_no_version_maps_to_no_folder(registry, name):
    commit(registry, measured(0.84, 25))
    with pytest.raises(InvalidName):
        registry.folder(name)
    assert registry.meta(name) is None  # so nothing is served or loaded under it
