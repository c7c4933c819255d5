"""`takemeter label-issues` against a real Label Studio: a project whose annotations carry
some deliberately wrong labels, the command run as a user runs it, and the "Suspect
labels" Data Manager tab checked through the API (Label Studio applies its filter and
its numeric ordering itself)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from backend.domain.taxonomy import parse_taxonomy
from takemeter import label_issues
from tests.conftest import ROOT
from tests.doubles.llm_endpoint import MisbehavingLLM

pytestmark = pytest.mark.e2e

PLANTED = range(3, 180, 30)  # post indexes given a wrong label: 6 of 180


def takemeter(*args: str, env: dict) -> dict:
    command = Path(sys.executable).parent / "takemeter"
    done = subprocess.run(
        [str(command), "label-issues", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    return json.loads(done.stdout)


def tab_tasks(ls, project: int) -> tuple[int, list[int]]:
    """The tab's id and the task ids Label Studio lists in it, in its order."""
    views = [
        v
        for v in ls.views.list(project=project)
        if (v.data or {}).get("title") == label_issues.SUSPECT_TAB
    ]
    assert len(views) == 1
    return views[0].id, [t.id for t in ls.tasks.list(project=project, view=views[0].id)]


@pytest.fixture(scope="module")
def project(ls, posts, label_config, label_studio, tmp_path_factory, request) -> dict:
    """180 posts imported with annotations, 6 of them wrong; the LLM's answers (right on
    the wrong ones, wrong on a quarter of the others) put in an answer cache."""
    taxonomy = parse_taxonomy(label_config)
    names = list(taxonomy.names)
    gold = [p["label"] for p in posts]
    human = list(gold)
    for i in PLANTED:
        human[i] = names[(names.index(gold[i]) + 1) % len(names)]
    created = ls.projects.create(title="label-issues", label_config=label_config)
    rows = [
        {
            "data": {"text": p["text"], "ref_id": p["id"], "split": "train"},
            "annotations": [{"result": taxonomy.result(label)}],
        }
        for p, label in zip(posts, human, strict=True)
    ]
    rows[0]["data"][label_issues.RANK_FIELD] = 99  # a stale rank from an earlier run
    imported = ls.projects.import_tasks(id=created.id, return_task_ids=True, request=rows)
    ids = list(imported.task_ids)
    assert len(ids) == len(posts)
    # A tab of that name from an earlier run, since changed by hand: put right, not doubled.
    stale_tab = ls.views.create(
        project=created.id,
        data={
            "title": label_issues.SUSPECT_TAB,
            "ordering": ["tasks:id"],
            "filters": {"conjunction": "and", "items": []},
        },
    )

    # The LLM: an OpenAI-compatible endpoint whose answers the test knows (right on the
    # wrong ones, wrong on a quarter of the others), asked by the command itself.
    answers = {
        post["text"]: (
            gold[i] if i % 4 or i in PLANTED else names[(names.index(gold[i]) + 2) % len(names)]
        )
        for i, post in enumerate(posts)
    }

    def answer(prompt_text: str) -> str:
        return next(label for text, label in answers.items() if text in prompt_text)

    llm = MisbehavingLLM("scripted", answer=answer).__enter__()
    request.addfinalizer(lambda: llm.__exit__(None, None, None))
    env = {k: v for k, v in os.environ.items() if k not in ("BASE_MODEL", "LLM_BASE_URL")}
    env.update(
        LABEL_STUDIO_URL=label_studio.url,
        LABEL_STUDIO_API_KEY=label_studio.token,
        LLM_BASE_URL=llm.url,
        LLM_MODEL="double",
        LLM_CACHE=str(tmp_path_factory.mktemp("label-issues-llm") / "answers.sqlite"),
        MODEL_DIR=str(tmp_path_factory.mktemp("label-issues-models")),
    )
    return {
        "id": created.id,
        "ids": ids,
        "wrong": {ids[i] for i in PLANTED},
        "env": env,
        "taxonomy": taxonomy,
        "gold": gold,
        "stale_tab": stale_tab.id,
    }


def test_suspect_tab_lists_the_flagged_tasks_in_rank_order(ls, project):
    summary = takemeter(
        "--project", str(project["id"]), "--tab", "--json", "--llm", "ask", env=project["env"]
    )
    suspects = summary["suspects"]
    assert summary["annotated"] == len(project["ids"])
    assert summary["flagged"] == summary["listed"] == len(suspects)
    assert "out-of-fold" in summary["model"] and "MiniLM" in summary["model"]
    assert summary["llm"]["answered"] == len(project["ids"])
    assert [s["rank"] for s in suspects] == list(range(1, len(suspects) + 1))
    assert all(s["flagged"] for s in suspects)
    # Most of the planted wrong labels are caught, near the top.
    ranks = {s["task_id"]: s["rank"] for s in suspects}
    caught = project["wrong"] & set(ranks)
    assert len(caught) >= 4, (sorted(ranks.get(t, 0) for t in project["wrong"]), ranks)
    # Each comes with the three opinions.
    by_task = {s["task_id"]: s for s in suspects}
    for task in caught:
        s = by_task[task]
        gold = project["gold"][project["ids"].index(task)]
        assert s["human_label"] != gold and s["llm_label"] == gold
        assert s["llm_confidence"] is None  # the endpoint gives no logprobs
        assert 0 <= s["model_p_human"] <= 1
        assert s["model_label"] in project["taxonomy"].names

    # The tab (the one there was, put right): exactly the flagged tasks, in rank order,
    # more than 9 of them, so "10" must come after "9": Label Studio orders by the rank
    # as a number.
    assert len(suspects) >= 10
    view, listed = tab_tasks(ls, project["id"])
    assert view == summary["tab"] == project["stale_tab"]
    assert listed == [s["task_id"] for s in suspects]
    # Ranks are in the data of the listed tasks only: the stale one is gone.
    in_data = {
        t.id: (t.data or {}).get(label_issues.RANK_FIELD)
        for t in ls.tasks.list(project=project["id"])
    }
    assert {t: r for t, r in in_data.items() if r is not None} == ranks
