"""A label config of two questions end to end: the demo's question and a multiple-choice
one about the same post, through a real Label Studio, the backend under gunicorn and the
real local LLM. Pre-labels hold both answers; annotations answer both; "Start Training"
trains the first (single-choice) question and the re-scored pre-labels keep both;
`takemeter evaluate` reports each question on the held-out posts."""

from __future__ import annotations

import json
import os
import time

import pytest

from backend.domain.taxonomy import parse_form
from backend.labelstudio import client as ls_client
from backend.model.registry import Registry
from tests.conftest import takemeter, wait_for

pytestmark = pytest.mark.e2e

TOPICS = """  <Choices name="topics" toName="text" choice="multiple">
    <Choice value="food" hint="meals, carbs, diets"/>
    <Choice value="medication" alias="meds" hint="insulin, metformin, pumps, pens"/>
    <Choice value="numbers" hint="glucose readings, A1c"/>
  </Choices>
</View>"""
KEYWORDS = {
    "food": ("carb", "food", "eat", "diet", "meal"),
    "medication": ("insulin", "metformin", "pump", "pen"),
    "numbers": ("a1c", "glucose", "sugar", "number", "reading"),
}


def topics_of(text: str) -> list[str]:
    """An annotator's topics, by keywords: enough to train and check on."""
    lowered = text.lower()
    return [topic for topic, words in KEYWORDS.items() if any(w in lowered for w in words)]


def by_task(ls, project: int) -> dict[int, list]:
    found: dict[int, list] = {}
    for prediction in ls.predictions.list(project=project):
        found.setdefault(prediction.task, []).append(prediction)
    return found


@pytest.fixture(scope="module")
def llm_cache(tmp_path_factory):
    """The backend's answer cache, where the evaluation finds the pre-labels' answers."""
    return tmp_path_factory.mktemp("questions-llm-cache") / "answers.sqlite"


@pytest.fixture(scope="module")
def backend(start_backend, label_studio, llm_cache):
    """Trains only on request (the button's run is the only one)."""
    return start_backend(
        LABEL_STUDIO_URL=label_studio.url,
        LABEL_STUDIO_API_KEY=label_studio.token,
        TRAIN_AFTER_ANNOTATIONS="100000",
        LLM_CACHE=str(llm_cache),
    )


def test_two_questions_are_pre_labeled_annotated_trained_and_evaluated(
    ls, backend, posts, label_config, label_studio, llm_url, llm_cache, tiny_model, tmp_path
):
    config = label_config.replace("</View>", TOPICS)
    form = parse_form(config)
    label, topics = form.questions
    assert (label.from_name, topics.from_name, topics.multiple) == ("label", "topics", True)
    project = ls_client.ensure_project(ls, title="two-questions", label_config=config)
    sample = [p for p in posts if len(p["text"]) < 300][:30]
    gold = {p["text"]: p["label"] for p in sample}
    # The first six are held out (data.split): the evaluation's posts.
    ls_client.import_posts(
        ls,
        project.id,
        [
            {"text": p["text"], "ref_id": p["id"], "split": "test" if i < 6 else "train"}
            for i, p in enumerate(sample)
        ],
    )
    ml_id = ls_client.connect_backend(ls, project.id, url=backend.url, title="takemeter")
    backend.post("/setup", json={"project": f"{project.id}.0", "schema": config})

    wait_for(
        lambda: len(by_task(ls, project.id)) == len(sample),
        timeout=420,
        what="every task's pre-label for both questions",
    )
    pre_labels = {task: found[0] for task, found in by_task(ls, project.id).items()}
    for prediction in pre_labels.values():
        assert [r["from_name"] for r in prediction.result] == ["label", "topics"]
        assert label.label_of(prediction.result) in label.names
        assert topics.labels_of(prediction.result) is not None  # a set, maybe empty
        assert 0.0 < prediction.score < 1.0

    tasks = sorted(ls_client.all_tasks(ls, project.id), key=lambda task: task["id"])
    for task in tasks[:24]:
        text = task["data"]["text"]
        result = label.result(gold[text]) + topics.result_of_set(topics_of(text))
        ls.annotations.create(id=task["id"], result=result)
    since = time.time()
    ls.ml.train(id=ml_id)  # what the "Start Training" button calls
    status = backend.wait_training(project.id, since=since)
    assert status["state"] == "finished", status
    # The first question's answers train it (the held-out ones excepted); the topics get a
    # head of their own (each topic is on 4-7 of the 18 training posts), the project's
    # first: it serves.
    assert 0 < status["n_examples"] <= 24 and status["version"], status
    assert status["questions"].startswith("topics: v1 head "), status
    assert status["questions"].endswith(" serves"), status
    topics_version = Registry(backend.model_dir, project.id, "topics").serving()
    assert topics_version is not None
    # The project's first version serves (nothing to be worse than), and the re-score
    # under it keeps the other question's answer.
    assert status["promoted"] is True, status
    new = status["version"]
    unlabeled = {t["id"] for t in tasks[24:]}
    wait_for(
        lambda: all(
            any(p.model_version == new for p in by_task(ls, project.id).get(task, []))
            for task in unlabeled
        ),
        timeout=60,
        what="the unlabeled tasks' predictions under the new version",
    )
    for task in unlabeled:
        (prediction,) = [p for p in by_task(ls, project.id)[task] if p.model_version == new]
        assert [r["from_name"] for r in prediction.result] == ["label", "topics"]

    # The evaluation: the first question as before, and a section for the other one, the
    # LLM's sets (the pre-labels' topics, from the cache) against the annotators' on the 6
    # held out.
    env = {
        **os.environ,
        "LABEL_STUDIO_URL": label_studio.url,
        "LABEL_STUDIO_API_KEY": label_studio.token,
        "MODEL_DIR": str(backend.model_dir),
        "LLM_BASE_URL": llm_url,
        "LLM_MODEL": "smollm2-135m-instruct",
        "LLM_CACHE": str(llm_cache),
        "BASE_MODEL": str(tiny_model),
        "TRAIN_MAX_LENGTH": "128",
    }
    out = tmp_path / "evaluation"
    done = takemeter("evaluate", "--project", str(project.id), "--out", str(out), env=env)
    report = json.loads((out / "report.json").read_text())
    (section,) = report["questions"]
    assert (section["question"], section["multiple"], section["report"]["n"]) == ("topics", True, 6)
    assert section["model_version"] == topics_version
    assert set(section["report"]["systems"]) == {"fine-tuned", "zero-shot"}
    assert list(section["report"]["pairs"]) == ["fine-tuned vs zero-shot"]
    held = [t for t in tasks if t["data"]["split"] == "test"]
    right = [
        topics.labels_of(pre_labels[t["id"]].result) == set(topics_of(t["data"]["text"]))
        for t in held
    ]
    llm = section["report"]["systems"]["zero-shot"]
    assert llm["subset_accuracy"]["value"] == pytest.approx(sum(right) / len(right))
    assert set(llm["per_label"]) == {"food", "medication", "numbers"}
    heading = f"Question 'topics' (multiple choice; fine-tuned = its model {topics_version})"
    assert heading in done.stdout
    assert f"## {heading}" in (out / "report.md").read_text()
