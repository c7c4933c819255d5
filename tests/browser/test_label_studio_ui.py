"""What an annotator and a project owner see in Label Studio, clicked through in a real
browser against the test Label Studio and a real backend (the local LLM, the tiny
DistilBERT):

- "Label All Tasks" serves the unlabeled tasks lowest prediction score first (the backend
  set the project's sampling), a held-out task among them with nothing pre-selected, and
  what the annotator submits is saved: a pre-label accepted as is, another corrected, the
  blind one labeled from scratch; `takemeter report` reads the three back with their lead
  times;
- the model card in Settings > Model says what the pre-labeling job did; after "Start
  Training" on it, the card's title says how the run ended and what pre-labels did, and
  the new version's name shows in a task's prediction tab.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import pytest
from playwright.sync_api import Page, expect

from backend.domain.taxonomy import parse_taxonomy
from backend.labelstudio import client as ls_client
from tests.conftest import BACKEND_AUTH, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

TASK_ID = ".lsf-current-task__task-id"  # the "#<id>" in the labeling view's bottom bar
SUBMIT = "bottombar-submit-button"
CARD_TITLE = ".lsf-backend-card__title"


@pytest.fixture(scope="module")
def ui_backend(start_backend, label_studio):
    """A backend behind basic auth, as deployed; it trains only on request. The local LLM
    gets time to answer on a busy machine rather than being asked again."""
    return start_backend(
        auth=BACKEND_AUTH,
        LABEL_STUDIO_URL=label_studio.url,
        LABEL_STUDIO_API_KEY=label_studio.token,
        TRAIN_AFTER_ANNOTATIONS="100000",
        LLM_TIMEOUT="120",
        BLIND_LABELS="true",  # the default: held-out tasks and judge posts come blind
    )


def scores_now(ls, project: int) -> dict[int, tuple[float, str | None]]:
    """task -> (score, label) of its prediction under the project's model_version, for
    the tasks without annotations: what uncertainty sampling orders by. A blind task's
    label is None (its prediction is empty)."""
    version = ls.projects.get(id=project).model_version
    unlabeled = {t["id"] for t in ls_client.all_tasks(ls, project) if not t["annotations"]}
    found = {}
    for prediction in ls.predictions.list(project=project):
        if prediction.task in unlabeled and prediction.model_version == version:
            result = prediction.result
            found[prediction.task] = (
                prediction.score,
                result[0]["value"]["choices"][0] if result else None,
            )
    return found


@pytest.fixture(scope="module")
def ui_project(ls, ui_backend, posts, label_config):
    """30 short demo posts, labels balanced: 22 annotated (enough to train on), 8 to label,
    the last of them held out (so blind). The backend is connected and its own
    pre-labeling job has pre-labeled the 8."""
    taxonomy = parse_taxonomy(label_config)
    short = [p for p in posts if len(p["text"]) < 300]
    groups = [[p for p in short if p["label"] == name] for name in taxonomy.names]
    sample = [post for row in zip(*groups, strict=False) for post in row][:30]
    project = ls_client.ensure_project(ls, title="browser", label_config=label_config).id
    ls.projects.import_tasks(
        id=project,
        request=[
            {
                "data": {
                    "text": p["text"],
                    "ref_id": p["id"],
                    **({"split": "test"} if i == 29 else {}),
                },
                "annotations": [{"result": taxonomy.result(p["label"])}] if i < 22 else [],
            }
            for i, p in enumerate(sample)
        ],
    )
    ml_id = ls_client.connect_backend(
        ls, project, url=ui_backend.url, title="TakeMeter", auth=ui_backend.auth
    )
    wait_for(
        lambda: (
            ls.projects.get(id=project).model_version.startswith("zero-shot:")
            and len(scores_now(ls, project)) == len(sample) - 22
        ),
        timeout=300,
        what="the LLM's pre-labels of the tasks to label",
    )
    return project, ml_id


def current_task(page: Page, previous: int | None = None) -> int:
    """The id of the task the labeling view shows, once it is not `previous`."""
    shown = page.wait_for_function(
        """([selector, previous]) => {
               const id = document.querySelector(selector)?.firstChild?.textContent?.trim();
               return /^[0-9]+$/.test(id || "") && id !== String(previous) ? id : null;
           }""",
        arg=[TASK_ID, previous],
    )
    return int(shown.json_value())


def test_label_all_tasks_serves_the_lowest_score_first_and_saves_the_choice(
    page, ls, label_studio, ui_backend, ui_project, label_config
):
    project, _ = ui_project
    names = parse_taxonomy(label_config).names
    # Set by the backend when Label Studio connected it, not by this test.
    assert ls.projects.get(id=project).sampling == "Uncertainty sampling"

    page.goto(f"{label_studio.url}/projects/{project}/data")
    page.get_by_role("button", name="Label All Tasks").click()
    submitted = {}  # outcome -> (task, label, origin)
    task = current_task(page)
    while len(submitted) < 3:
        scores = scores_now(ls, project)
        assert scores[task][0] == min(score for score, _ in scores.values()), (task, scores)
        prelabel = scores[task][1]
        if prelabel is None:  # blind: nothing is pre-selected, the annotator picks
            outcome, label, origin = "blind", names[0], "manual"
        elif "accepted" not in submitted:
            outcome, label, origin = "accepted", prelabel, "prediction"
        else:
            outcome = "changed"
            label, origin = next(n for n in names if n != prelabel), "prediction-changed"
        if outcome != "accepted":
            page.locator("label").filter(has_text=label).click()
        page.get_by_test_id(SUBMIT).click()
        submitted.setdefault(outcome, (task, label, origin))
        task = current_task(page, previous=task)
    scores = scores_now(ls, project)  # the next task served: again the lowest left
    assert scores[task][0] == min(score for score, _ in scores.values()), (task, scores)

    for task_id, label, origin in submitted.values():
        (annotation,) = ls.annotations.list(id=task_id)
        (result,) = annotation.result
        assert result["value"]["choices"] == [label]
        assert result["origin"] == origin  # accepted as pre-labeled, changed, or blind

    # The report reads each back: what was in view, and how long the task was open.
    done = subprocess.run(
        [sys.executable, "-m", "takemeter", "report", "--project", str(project), "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={
            **os.environ,
            "LABEL_STUDIO_URL": label_studio.url,
            "LABEL_STUDIO_API_KEY": label_studio.token,
            "MODEL_DIR": str(ui_backend.model_dir),
            "LLM_BASE_URL": "http://127.0.0.1:9/v1",  # the report asks the LLM nothing
        },
    )
    assert done.returncode == 0, done.stderr
    read = {item["task"]: item for item in json.loads(done.stdout)["items"]}
    for outcome, (task_id, label, _) in submitted.items():
        assert (read[task_id]["outcome"], read[task_id]["label"]) == (outcome, label)
        assert read[task_id]["seconds"] > 0  # the labeling view's lead time


def test_start_training_shows_on_the_model_card_and_names_the_new_version(
    page, ls, label_studio, ui_backend, ui_project
):
    project, ml_id = ui_project
    # The pre-labeling job's line, after the title the backend was connected with (the
    # job writes it just after its last batch reaches Label Studio).
    wait_for(
        lambda: "pre-labeled" in ls.ml.get(id=ml_id).title,
        timeout=60,
        what="the pre-labeling job's line on the model card",
    )
    page.goto(f"{label_studio.url}/projects/{project}/settings/ml")
    card = page.locator(CARD_TITLE)
    expect(card).to_have_text("TakeMeter · pre-labeled 8 tasks")
    since = time.time()
    page.get_by_role("button", name="Machine learning model options").click()
    page.get_by_text("Start Training", exact=True).click()  # the card's menu item
    page.get_by_role("button", name="Start Training").click()  # the dialog's button
    expect(page.get_by_text("Request Sent!")).to_be_visible()

    status = ui_backend.wait_training(project, since=since, timeout=300)
    assert status["state"] == "finished" and status["promoted"] is True, status
    version = status["version"]
    assert re.fullmatch(r"v1 head (\d{1,3}%(/\d+)?|unmeasured)", version), version
    page.reload()  # Label Studio reads the card when the page loads
    expect(card).to_have_text(re.compile(rf"^TakeMeter · promoted {re.escape(version)}: "))
    # What pre-labels did, counted at the end of the run: the first test accepted one.
    headline = re.compile(r"pre-labels accepted \d+% \(1 of \d+\)")
    wait_for(
        lambda: headline.search(ls.ml.get(id=ml_id).title),
        timeout=60,
        what="what pre-labels did, on the model card",
    )
    page.reload()
    expect(card).to_contain_text(headline)
    assert ls.ml.get(id=ml_id).description == card.inner_text().split(" · ", 1)[1]

    # A task still to label carries the new version's pre-label, named in its tab.
    waiting = next(
        iter(
            wait_for(
                lambda: scores_now(ls, project), timeout=30, what="pre-labels of the new version"
            )
        )
    )
    assert ls.projects.get(id=project).model_version == version
    page.goto(f"{label_studio.url}/projects/{project}/data?task={waiting}")
    expect(page.get_by_text(version, exact=True).first).to_be_visible()
