"""Listing a project's tasks a page at a time (what the pre-labeling job starts on while
Label Studio lists the rest), against the in-process Label Studio."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from backend.labelstudio.client import (
    LISTED_FIELDS,
    VERSIONS_CUT_AT,
    shown_versions,
    task_pages,
)
from backend.workflows.prelabel import fetched_ahead, tasks_to_label
from tests.doubles.label_studio import FakeLabelStudio

LABEL_CONFIG = (Path(__file__).resolve().parents[2] / "label_config.xml").read_text()


@pytest.mark.parametrize(
    "n_tasks, sizes, requested",
    [
        (5, [2, 2, 1], [1, 2, 3]),
        (4, [2, 2], [1, 2, 3]),  # a full last page: the request past it gets a 404
        (0, [], [1]),
    ],
)
def test_pages_cover_every_task_once_and_stop_at_the_end(n_tasks, sizes, requested):
    fake = FakeLabelStudio()
    project = fake.add_project(LABEL_CONFIG)
    ids = [fake.add_task(project, f"post {i}") for i in range(n_tasks)]
    pages = list(task_pages(fake, project, page_size=2))
    assert [len(page) for page in pages] == sizes
    assert [task["id"] for page in pages for task in page] == ids
    # Label Studio's 404 past the last page ends the listing rather than failing it.
    assert [call["page"] for call in fake.called("tasks.list")] == requested


def test_pages_carry_what_decides_whether_a_task_needs_a_pre_label():
    fake = FakeLabelStudio()
    project = fake.add_project(LABEL_CONFIG)
    fresh = fake.add_task(project, "my numbers today")
    fake.add_task(project, "annotated", label="personal_experience")
    skipped = fake.add_task(project, "skipped only", label="health_claim", cancelled=True)
    labeled = fake.add_task(project, "has this version's pre-label")
    other = fake.add_task(project, "has an older version's pre-label")
    fake.add_task(project, None, data={"image": "no text"})
    fake.projects.import_predictions(
        id=project,
        request=[
            {"task": labeled, "model_version": "zero-shot:m", "score": 0.5, "result": []},
            {"task": other, "model_version": "v1 80% (n=5)", "score": 0.5, "result": []},
        ],
    )
    (page,) = task_pages(fake, project)
    todo = tasks_to_label(page, "text", "zero-shot:m")
    assert [t["id"] for t in todo] == [fresh, skipped, other]
    # Only the computed columns are asked for, never every annotation and prediction.
    assert {call["include"] for call in fake.called("tasks.list")} == {LISTED_FIELDS}


def postgresql_column(versions: list[str]) -> str:
    """The column as Label Studio renders PostgreSQL's array: JSON, cut, quotes taken out."""
    return json.dumps(versions)[1:-1][:VERSIONS_CUT_AT].replace('"', "")


@pytest.mark.parametrize(
    "shown, versions",
    [
        ("", set()),
        (None, set()),
        ("zero-shot:m", {"zero-shot:m"}),
        ("v2.20260101T000000,zero-shot:m", {"v2.20260101T000000", "zero-shot:m"}),  # SQLite
        (
            postgresql_column(["v2.20260101T000000", "zero-shot:m"]),
            {"v2.20260101T000000", "zero-shot:m"},
        ),
        ("x" * 400, {"x" * 400}),
        ("x" * 498, None),  # on PostgreSQL, 500 before its two quotes were taken out
        (",".join(f"v{i}.run" for i in range(100))[:VERSIONS_CUT_AT], None),  # SQLite, cut
        (postgresql_column([f"v{i}" for i in range(100)]), None),  # PostgreSQL, cut
    ],
)
def test_the_versions_column_is_read_in_both_forms_and_a_cut_one_is_not_trusted(shown, versions):
    assert shown_versions(shown) == versions


def test_a_task_whose_versions_column_was_cut_gets_its_versions_in_full():
    fake = FakeLabelStudio()
    project = fake.add_project(LABEL_CONFIG)
    crowded = fake.add_task(project, "pre-labeled by many versions")
    fresh = fake.add_task(project, "no pre-label")
    ours = "v41.20261121T120000"
    versions = [f"v{i}.20261121T120000" for i in range(1, 42)]  # ours last: cut off
    fake.projects.import_predictions(
        id=project,
        request=[
            {"task": crowded, "model_version": v, "score": 0.5, "result": []} for v in versions
        ],
    )
    (page,) = task_pages(fake, project)
    assert page[0]["model_versions"] == set(versions)
    assert [t["id"] for t in tasks_to_label(page, "text", ours)] == [fresh]
    # One extra listing, for the crowded task only.
    exact = [call for call in fake.called("tasks.list") if call["query"]]
    assert [json.loads(call["query"])["selectedItems"]["included"] for call in exact] == [[crowded]]


def test_the_next_page_is_fetched_while_this_one_is_worked_on():
    asked_for_next = threading.Event()

    def pages():
        yield [0]
        asked_for_next.set()  # runs only once the next page is asked for
        yield [1]

    seen = []
    for page in fetched_ahead(pages()):
        if page == [0]:
            # Without fetching ahead, page 1 is asked for after this body: never set here.
            assert asked_for_next.wait(timeout=10)
        seen.append(page)
    assert seen == [[0], [1]]
