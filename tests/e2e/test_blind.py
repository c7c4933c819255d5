"""Blind labeling end to end (backend.domain.roles), with the backend's defaults: a real
Label Studio, the backend under gunicorn and the real local LLM. Held-out tasks and judge
posts get an empty prediction, and Label Studio's "Label All Tasks" (its next-task API)
serves them among the others by score instead of leaving them for last. `takemeter
report --plan` estimates the pre-labeling beforehand from a sample, and `takemeter
report` then reads back what the annotators did: accepted, changed, ignored, blind, their
lead times and what the LLM's answers cost."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections import Counter

import pytest
import requests

from backend.domain import roles
from backend.domain.taxonomy import parse_taxonomy
from backend.labelstudio import client as ls_client
from tests.conftest import BACKEND_AUTH, wait_for

pytestmark = pytest.mark.e2e

HOLDOUT = 20  # the default


def current(ls, project: int) -> dict[int, tuple[float, list]]:
    """task -> (score, result) of its prediction under the project's model_version."""
    version = ls.projects.get(id=project).model_version
    return {
        p.task: (p.score, p.result)
        for p in ls.predictions.list(project=project)
        if p.model_version == version
    }


def test_held_out_tasks_and_judge_posts_are_served_blind_and_the_report_reads_back_the_labels(
    ls, start_backend, label_studio, llm_url, posts, label_config, tmp_path
):
    taxonomy = parse_taxonomy(label_config)
    cache = tmp_path / "answers.sqlite"  # this project's own: the report's costs are its posts'
    backend = start_backend(
        LLM_CACHE=str(cache),
        auth=BACKEND_AUTH,
        LABEL_STUDIO_URL=label_studio.url,
        LABEL_STUDIO_API_KEY=label_studio.token,
        TRAIN_AFTER_ANNOTATIONS="100000",
        LLM_TIMEOUT="120",
        BLIND_LABELS="true",  # the default, said here because the test backends turn it off
    )
    project = ls_client.ensure_project(ls, title="blind", label_config=label_config).id
    sample = [p for p in posts if len(p["text"]) < 300][:24]
    # Four marked held out by the data; the rest fall where the task id's hash puts them.
    ids = ls_client.import_posts(
        ls,
        project,
        [{"text": p["text"], **({"split": "test"} if i < 4 else {})} for i, p in enumerate(sample)],
    )
    tasks = {t["id"]: t for t in ls_client.all_tasks(ls, project)}
    blind = {i for i in ids if roles.is_blind(tasks[i], holdout_percent=HOLDOUT)}
    assert blind and len(blind) < len(ids)
    env = {
        **os.environ,
        "LABEL_STUDIO_URL": label_studio.url,
        "LABEL_STUDIO_API_KEY": label_studio.token,
        "MODEL_DIR": str(backend.model_dir),
        "LLM_CACHE": str(cache),
        "LLM_BASE_URL": llm_url,
        "LLM_MODEL": "smollm2-135m-instruct",
    }

    def takemeter(*args: str) -> dict:
        done = subprocess.run(
            [sys.executable, "-m", "takemeter", *args, "--project", str(project), "--json"],
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    # Before the backend connects: what pre-labeling the project would take, from 3 posts.
    plan = takemeter(
        "report", "--plan", "--sample", "3", "--input-price", "0.5", "--output-price", "2"
    )
    assert (plan["unlabeled_posts"], plan["not_answered"], plan["sampled"]) == (24, 24, 3)
    with sqlite3.connect(cache) as db:
        sampled = db.execute("SELECT prompt_tokens, completion_tokens FROM answers").fetchall()
    assert len(sampled) == 3 and all(p > 0 for p, _ in sampled)
    per_post = [sum(column) / 3 for column in zip(*sampled, strict=True)]
    estimate = plan["estimate"]
    assert [estimate["prompt_tokens"], estimate["completion_tokens"]] == [
        round(t * 21) for t in per_post
    ]
    assert estimate["cost"] == pytest.approx(
        (estimate["prompt_tokens"] * 0.5 + estimate["completion_tokens"] * 2) / 1e6
    )
    assert estimate["seconds"] > 0

    ls_client.connect_backend(ls, project, url=backend.url, title="takemeter", auth=backend.auth)
    wait_for(
        lambda: (
            len(current(ls, project)) == len(ids)
            and ls.projects.get(id=project).sampling == "Uncertainty sampling"
        ),
        timeout=420,
        what="every task's prediction under the project's version, and the sampling",
    )
    predictions = current(ls, project)
    for task in ids:
        score, result = predictions[task]
        assert 0.0 <= score <= 1.0
        if task in blind:
            assert result == [], (task, result)  # nothing pre-selected
        else:
            assert taxonomy.label_of(result) in taxonomy.names, (task, result)

    # "Label All Tasks": each next task is the lowest score left, blind or not, so the blind
    # tasks come at their places in the queue, not after every pre-labeled one.
    served = []
    headers = {"Authorization": f"Token {label_studio.token}"}
    while len(served) < len(ids) and not (set(served) & blind and set(served) - blind):
        left = {t: s for t, (s, _) in current(ls, project).items() if t not in served}
        response = requests.get(
            f"{label_studio.url}/api/projects/{project}/next", headers=headers, timeout=60
        )
        response.raise_for_status()
        task = response.json()["id"]
        assert left[task] == min(left.values()), (task, left)
        served.append(task)
        ls.annotations.create(id=task, result=taxonomy.result(taxonomy.names[0]))
    assert set(served) - blind, served
    first_blind = next(i for i, t in enumerate(served) if t in blind)
    assert first_blind < len(ids) - len(blind), (served, blind)

    # What the annotators did next, made through the SDK as the labeling view makes it:
    # accepted, changed, labeled from scratch beside a pre-label, and blind, each with a
    # lead time. The report reads them back.
    predictions = {
        p.task: p
        for p in ls.predictions.list(project=project)
        if p.model_version == ls.projects.get(id=project).model_version
    }
    left = [t for t in ids if t not in served]
    shown_left = [t for t in left if t not in blind]
    blind_left = [t for t in left if t in blind]
    assert len(shown_left) >= 3 and len(blind_left) >= 2, (shown_left, blind_left)
    made = []  # (task, outcome, seconds)

    def label(task: int, name: str, *, origin: str, seconds: float, parent: bool, outcome: str):
        result = [{**r, "origin": origin} for r in taxonomy.result(name)]
        extra = {"parent_prediction": predictions[task].id} if parent else {}
        ls.annotations.create(id=task, result=result, lead_time=seconds, **extra)
        made.append((task, outcome, seconds))

    shown_label = {t: taxonomy.label_of(predictions[t].result) for t in shown_left}
    accept, change, ignore = shown_left[:3]
    other = {t: next(n for n in taxonomy.names if n != shown_label[t]) for t in (change, ignore)}
    label(
        accept,
        shown_label[accept],
        origin="prediction",
        seconds=10,
        parent=True,
        outcome="accepted",
    )
    label(
        change,
        other[change],
        origin="prediction-changed",
        seconds=14,
        parent=True,
        outcome="changed",
    )
    label(ignore, other[ignore], origin="manual", seconds=20, parent=False, outcome="ignored")
    for task, seconds in zip(blind_left[:2], (30, 40), strict=True):
        label(
            task, taxonomy.names[1], origin="manual", seconds=seconds, parent=True, outcome="blind"
        )

    env["LLM_BASE_URL"] = "http://127.0.0.1:9/v1"  # the report asks the LLM nothing
    report = takemeter(
        "report", "--input-price", "0.5", "--output-price", "2", "--hourly-rate", "36"
    )
    # The served tasks were annotated without a parent, origin or lead time: beside a
    # pre-label that reads "ignored", on a blind task "blind".
    expected = Counter(o for _, o, _ in made)
    expected["ignored"] += len([t for t in served if t not in blind])
    expected["blind"] += len([t for t in served if t in blind])
    assert report["outcomes"] == {
        o: expected[o] for o in ("accepted", "changed", "ignored", "blind")
    }
    llm = report["acceptance"]["LLM"]
    assert llm["n"] == expected["accepted"] + expected["changed"] + expected["ignored"]
    assert (llm["accepted"]["count"], llm["changed"]["count"]) == (1, 1)
    times = report["time"]
    assert times["prelabeled"] == {"n": 3, "median_seconds": 14.0}  # 10, 14, 20
    assert times["blind"] == {"n": 2, "median_seconds": 35.0}  # 30, 40
    # The backend's cache is this project's alone: every answer in it is one of its posts.
    with sqlite3.connect(cache) as db:
        prompt, completion, answered = db.execute(
            "SELECT SUM(prompt_tokens), SUM(completion_tokens), COUNT(*) FROM answers"
        ).fetchone()
    assert answered == len(ids)
    money = report["money"]
    assert prompt > 0 and (money["prompt_tokens"], money["completion_tokens"]) == (
        prompt,
        completion,
    )
    assert money["llm_cost"] == pytest.approx((prompt * 0.5 + completion * 2) / 1e6)
    assert money["cost_per_correct_prelabel"] == pytest.approx(money["llm_cost"])  # 1 accepted
    assert money["cost_per_label_blind"] == pytest.approx(35 / 3600 * 36)
    assert report["warnings"] == []  # every held-out label was made blind
