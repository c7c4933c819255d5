"""The review queue in a real Label Studio: after training, the "Review queue" tab lists
the model-vs-LLM disagreements first, in priority order, as the backend counts them."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from backend.domain import queue
from backend.domain.queue import QUEUE_BELOW
from backend.domain.taxonomy import parse_taxonomy
from backend.labelstudio import client as ls_client

pytestmark = pytest.mark.e2e


def tab_tasks(ls, project: int) -> list:
    view = next(
        v for v in ls.views.list(project=project) if (v.data or {}).get("title") == queue.REVIEW_TAB
    )
    return list(ls.tasks.list(project=project, view=view.id, fields="all"))


def served_score(task, version: str) -> float:
    return next(
        p["score"] if isinstance(p, dict) else p.score
        for p in task.predictions
        if (p["model_version"] if isinstance(p, dict) else p.model_version) == version
    )


def train(ls, backend, project: int, ml_id: int) -> dict:
    since = time.time()
    ls.ml.train(id=ml_id)
    status = backend.wait_training(project, since=since)
    assert status["state"] == "finished", status
    return status


def test_review_queue_tab_follows_the_backend(
    ls, start_backend, label_studio, posts, label_config, tmp_path
):
    backend = start_backend(
        LABEL_STUDIO_URL=label_studio.url,
        LABEL_STUDIO_API_KEY=label_studio.token,
        TRAIN_AFTER_ANNOTATIONS="100000",
    )
    taxonomy = parse_taxonomy(label_config)
    project = ls_client.ensure_project(ls, title="queue", label_config=label_config).id
    sample = [p for p in posts if len(p["text"]) < 300][:40]
    gold = {p["text"]: p["label"] for p in sample}
    # On the training side, every one: the held-out rule hashes task ids, which depend on
    # what earlier tests made, and 14 labels minus a few held out can fall short of a label.
    ls_client.import_posts(
        ls, project, [{"text": p["text"], "ref_id": p["id"], "split": "train"} for p in sample]
    )
    ml_id = ls_client.connect_backend(ls, project, url=backend.url, title="takemeter")
    ls_client.retrieve_predictions(ls, project)  # the LLM pre-labels, as annotators see them
    tasks = ls_client.all_tasks(ls, project)
    for task in tasks[:14]:
        ls.annotations.create(id=task["id"], result=taxonomy.result(gold[task["data"]["text"]]))

    first = train(ls, backend, project, ml_id)["version"]
    queue = backend.get(f"/queue?project={project}").json()
    assert queue["model_version"] == first
    rows = queue["rows"]
    queued = [r for r in rows if r["in_queue"]]
    assert queue["in_queue"] == len(queued)
    both = [r for r in rows if r["llm_label"] and r["model_label"]]
    # Priority = P(the shown pre-label is right); every disagreement below every agreement.
    assert all(0.0 <= r["priority"] <= 1.0 for r in rows)
    assert max((r["priority"] for r in both if r["disagree"]), default=0.0) < min(
        (r["priority"] for r in both if not r["disagree"]), default=1.0
    )

    tab = tab_tasks(ls, project)
    # The tab holds exactly the backend's queue, in priority order, disagreements first.
    assert sorted(t.id for t in tab) == sorted(r["task"] for r in queued)
    scores = [served_score(t, first) for t in tab]
    assert scores == sorted(scores) and all(s < QUEUE_BELOW for s in scores)
    by_task = {r["task"]: r for r in rows}
    flags = [
        by_task[t.id]["disagree"]
        for t in tab
        if by_task[t.id]["llm_label"] and by_task[t.id]["model_label"]
    ]
    # With none, the checks on disagreements below would hold for nothing.
    assert any(flags), "no model-vs-LLM disagreement in the tab"
    assert flags == sorted(flags, reverse=True)  # every disagreement before any agreement
    # Both opinions are in the task for the annotator to see.
    for task in tab:
        row = by_task[task.id]
        if row["disagree"]:
            versions = {
                p["model_version"] if isinstance(p, dict) else p.model_version
                for p in task.predictions
            }
            assert {first, f"{first}:model", "zero-shot:smollm2-135m-instruct"} <= versions

    # An annotated task leaves the tab.
    head = tab[0].id
    ls.annotations.create(id=head, result=taxonomy.result(gold[by_task[head]["text"]]))
    assert head not in [t.id for t in tab_tasks(ls, project)]

    # A new model version reorders the same unlabeled tasks by its own scores.
    for task in tasks[14:26]:
        ls.annotations.create(id=task["id"], result=taxonomy.result(gold[task["data"]["text"]]))
    annotated = {task["id"] for task in tasks[:26]} | {head}
    status = train(ls, backend, project, ml_id)
    second = status["version"]
    if not status["promoted"]:  # worse on validation: serve it by hand to see its queue
        since = time.time()
        answer = backend.post("/versions/promote", json={"project": project, "version": second})
        assert answer.status_code == 200
        backend.wait_training(project, since=since)
    assert backend.get(f"/queue?project={project}").json()["model_version"] == second
    after = tab_tasks(ls, project)
    assert [served_score(t, second) for t in after] == sorted(
        served_score(t, second) for t in after
    )
    new = {t.id: served_score(t, second) for t in after}
    # Tasks unlabeled throughout and in the tab under both versions, in the first's order.
    kept = [t.id for t in tab if t.id not in annotated and t.id in new]
    assert len(kept) >= 3, (len(tab), len(after))
    now = [i for i in new if i in set(kept)]  # the same tasks in the tab's order now
    assert [new[i] for i in now] == sorted(new[i] for i in now)
    # The first version's order is not the new scores' order: the tab moved with them.
    assert [new[i] for i in kept] != sorted(new[i] for i in kept)
    csv_export = backend.get(f"/queue?project={project}&format=csv")
    assert csv_export.status_code == 200
    assert csv_export.text.splitlines()[0].startswith("task,priority,in_queue,disagree")

    # The script gives the same queue, its disagreement summary, and an export.
    out = tmp_path / "queue.jsonl"
    script = subprocess.run(
        [
            str(Path(sys.executable).parent / "takemeter"),
            "queue",
            "--project",
            str(project),
            "--backend-url",
            backend.url,
            "--export",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert script.returncode == 0, script.stderr
    final = backend.get(f"/queue?project={project}").json()
    assert f"{final['in_queue']} in the review queue" in script.stdout
    exported = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(exported) == final["in_queue"]
    assert all(
        {"llm_label", "model_label", "model_probabilities", "priority"} <= set(row)
        for row in exported
    )
