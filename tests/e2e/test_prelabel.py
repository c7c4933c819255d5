"""Zero-shot pre-labels end to end: a real Label Studio, the backend under gunicorn (basic
auth on, the embedded job mode) and the real local LLM. Nobody clicks anything."""

from __future__ import annotations

import pytest

from backend.domain import queue
from backend.domain.taxonomy import parse_taxonomy
from backend.labelstudio import client as ls_client
from backend.workflows.prelabel import tasks_to_label
from tests.conftest import wait_for

pytestmark = pytest.mark.e2e


def predictions_by_task(ls, project: int) -> dict[int, list]:
    by_task: dict[int, list] = {}
    for prediction in ls.predictions.list(project=project):
        by_task.setdefault(prediction.task, []).append(prediction)
    return by_task


def finished_prelabel(backend, project: int) -> dict | None:
    """The pre-labeling lane's status once its run has finished, else None."""
    status = backend.get(f"/jobs?project={project}").json()["prelabel"]
    return status if status["state"] == "finished" else None


def test_connecting_prelabels_every_task_once_and_new_imports_follow(
    ls, backend, posts, label_config
):
    taxonomy = parse_taxonomy(label_config)
    project = ls_client.ensure_project(ls, title="prelabel", label_config=label_config)
    sample = [p for p in posts if len(p["text"]) < 300][:24]
    first, later = sample[:20], sample[20:]
    ids = ls_client.import_posts(
        ls, project.id, [{"text": p["text"], "ref_id": p["id"]} for p in first]
    )
    assert len(ids) == len(first)
    before = backend.metrics()
    # Connecting is all it takes: Label Studio calls /setup, the backend queues the job.
    ls_client.connect_backend(ls, project.id, url=backend.url, title="takemeter", auth=backend.auth)
    served = backend.post(
        "/setup", json={"project": f"{project.id}.0", "schema": label_config}
    ).json()["model_version"]

    wait_for(
        lambda: len(predictions_by_task(ls, project.id)) == len(ids),
        timeout=420,
        what="every task's pre-label, pushed by the background job",
    )
    # The last batch reaches Label Studio a moment before the runner records its finish.
    jobs = wait_for(
        lambda: finished_prelabel(backend, project.id),
        timeout=60,
        what="the pre-labeling run to record its finish",
    )
    # Counts are the last attempt's: on a loaded machine the LLM may time out on some
    # posts, and the job's next attempt asks for just those.
    assert (jobs["tasks"], jobs["failed"]) == (20, 0) and jobs["done"] == jobs["to_label"]
    by_task = predictions_by_task(ls, project.id)
    assert sorted(by_task) == sorted(ids)
    for task_predictions in by_task.values():
        assert len(task_predictions) == 1
        prediction = task_predictions[0]
        assert prediction.model_version == served
        assert taxonomy.label_of(prediction.result) in taxonomy.names
        assert 0.0 <= prediction.score <= 1.0
    after = backend.metrics()
    # Each distinct post paid for once: asked = posts the session's cache lacked.
    asked = after["llm_calls"] - before["llm_calls"]
    assert asked == after["cache_misses"] - before["cache_misses"]
    assert asked <= len(first)

    # New tasks: Label Studio's TASKS_CREATED starts the job again, still no click.
    new_ids = ls_client.import_posts(
        ls, project.id, [{"text": p["text"], "ref_id": p["id"]} for p in later]
    )
    wait_for(
        lambda: set(new_ids) <= set(predictions_by_task(ls, project.id)),
        timeout=240,
        what="the imported tasks' pre-labels",
    )
    status = wait_for(
        lambda: finished_prelabel(backend, project.id),
        timeout=60,
        what="the second pre-labeling run to finish",
    )
    assert (status["tasks"], status["to_label"], status["done"]) == (24, 4, 4)

    # "Retrieve Predictions" still works: it adds nothing and asks the LLM nothing.
    calls = backend.metrics()["llm_calls"]
    count = sum(map(len, predictions_by_task(ls, project.id).values()))
    ls_client.retrieve_predictions(ls, project.id)
    assert sum(map(len, predictions_by_task(ls, project.id).values())) == count
    assert backend.metrics()["llm_calls"] == calls

    # The backend set itself up in the project: model version, review tab, webhook auth.
    wait_for(
        lambda: ls.projects.get(id=project.id).model_version == served,
        timeout=20,
        what="the project's model_version to follow the backend",
    )
    assert [
        v
        for v in ls.views.list(project=project.id)
        if (v.data or {}).get("title") == queue.REVIEW_TAB
    ]
    hooks = [h for h in ls.webhooks.list(project=project.id) if h.url.startswith(backend.url)]
    assert hooks and all((h.headers or {}).get("Authorization") for h in hooks)


def test_the_listing_decides_what_needs_a_pre_label_as_label_studio_counts(ls, label_config):
    """What the job reads of each task comes from Label Studio's computed columns; a
    versions column Label Studio cut short is looked up in full."""
    taxonomy = parse_taxonomy(label_config)
    project = ls.projects.create(title="Listing", label_config=label_config).id
    ls.projects.import_tasks(
        id=project, request=[{"text": f"post {i}"} for i in range(8)] + [{"text": "   "}]
    )
    ids = [t["id"] for page in ls_client.task_pages(ls, project) for t in page]
    (
        fresh,
        annotated,
        skipped,
        ours,
        older,
        crowded_with,
        crowded_without,
        skipped_then_annotated,
        no_text,
    ) = ids
    ls.annotations.create(id=annotated, result=taxonomy.result("health_claim"))
    ls.annotations.create(id=skipped, result=[], was_cancelled=True)
    ls.annotations.create(id=skipped_then_annotated, result=[], was_cancelled=True)
    ls.annotations.create(id=skipped_then_annotated, result=taxonomy.result("health_claim"))
    version = "v7.20261121T120000"
    many = [f"v{i}.20261121T120000" for i in range(100, 130)]  # over 500 characters joined
    ls.projects.import_predictions(
        id=project,
        request=[
            {"task": task, "model_version": v, "score": 0.5, "result": []}
            for task, v in [
                (ours, version),
                (older, "v6.20261120T120000"),
                *[(crowded_with, v) for v in [*many, version]],
                *[(crowded_without, v) for v in many],
            ]
        ],
    )
    pages = list(ls_client.task_pages(ls, project, page_size=4))
    assert [len(page) for page in pages] == [4, 4, 1]
    listed = {t["id"]: t for page in pages for t in page}
    assert listed[crowded_with]["model_versions"] == {*many, version}
    assert listed[crowded_without]["model_versions"] == set(many)
    assert listed[no_text]["data"] == {"text": "   "}
    assert listed[skipped_then_annotated]["total_annotations"] == 1
    todo = [t["id"] for page in pages for t in tasks_to_label(page, taxonomy.text_field, version)]
    assert todo == [fresh, skipped, older, crowded_without]
