"""A training run on a config of two questions, against an in-process Label Studio
(tests/doubles/label_studio.py) and real MiniLM embeddings: the other (multiple-choice)
question gets a head of its own, from every annotation that answers it, judged and
promoted by the first question's rules, and its sets reach the re-scored pre-labels.
The LLM endpoint is a closed port: no LLM answer, so each question's model answers."""

from __future__ import annotations

import pytest

from backend.config import load_settings
from backend.domain.taxonomy import parse_form
from backend.inference.predictor import Predictor
from backend.jobs.state import JobState
from backend.llm.labeler import from_settings as labeler_from_settings
from backend.model.classifier import Classifier
from backend.model.registry import Registry, read_meta
from backend.workflows.training import Runner
from takemeter.offline_models import minilm_path
from tests.conftest import ROOT, TOPICS_CONFIG
from tests.doubles.label_studio import FakeLabelStudio

CONFIG = TOPICS_CONFIG
FORM = parse_form(CONFIG)
LABEL, TOPICS = FORM.questions
TEMPLATES = {
    "seeking_support": "has anyone had lows after {}? any advice?",
    "health_claim": "{} cures diabetes for everyone, trust me",
    "personal_experience": "my numbers were steady after {} this week",
}
THINGS = {  # what a post is about, and its topics
    "pasta": {"food"},
    "rice": {"food"},
    "running": {"exercise"},
    "cycling": {"exercise"},
    "a pasta dinner after running": {"food", "exercise"},
    "a rice bowl after cycling": {"food", "exercise"},
    "a nap": set(),
    "work": set(),
}


@pytest.fixture
def world(tmp_path):
    settings = load_settings(
        {
            "MODEL_DIR": str(tmp_path / "models"),
            "LLM_BASE_URL": "http://127.0.0.1:9/v1",
            "LLM_TIMEOUT": "0.5",
            "LLM_MAX_RETRIES": "0",
            "BASE_MODEL": str(minilm_path()),
            "TRAIN_MAX_LENGTH": "64",
            "TRAIN_MIN_PER_LABEL": "2",
            "BLIND_LABELS": "false",
        }
    )
    fake = FakeLabelStudio()
    predictor = Predictor(settings, labeler_from_settings(settings))
    yield settings, fake, predictor
    predictor.labeler.close()


def test_the_other_question_trains_serves_and_is_re_scored(world):
    settings, fake, predictor = world
    project = fake.add_project(CONFIG)
    for thing, topics in THINGS.items():
        for label, template in TEMPLATES.items():
            task = fake.add_task(project, template.format(thing), split="train")
            result = LABEL.result(label) + TOPICS.result_of_set(sorted(topics))
            fake.annotate(project, task, None, result=result)
    # Annotated for the topics only: they train the topics head, not the first question's.
    for i, thing in enumerate(["pasta again", "a long run"]):
        task = fake.add_task(project, f"day {i}: {thing}", split="train")
        chosen = ["food"] if "pasta" in thing else ["exercise"]
        fake.annotate(project, task, None, result=TOPICS.result_of_set(chosen))
    unlabeled = {
        fake.add_task(project, text, split="train"): text
        for text in ("my numbers were steady after rice this week", "a nap, again")
    }

    Runner(settings, JobState(settings.model_dir), client=fake, predictor=predictor).train(project)

    status = JobState(settings.model_dir).status(project, "training")
    assert status["state"] == "finished", status
    assert status["questions"].startswith("topics: v1 head ") and status["questions"].endswith(
        " serves"
    )
    registry = Registry(settings.model_dir, project, "topics")
    serving = registry.serving()
    assert serving is not None
    meta = read_meta(registry.path(serving))
    assert (meta["kind"], meta["question"], meta["labels"]) == (
        "multilabel-head",
        "topics",
        ["food", "exercise"],
    )
    assert registry.read_calibration() is not None  # its scores' own calibrator
    first = read_meta(Registry(settings.model_dir, project).path(status["version"]))
    assert meta["data"]["n_examples"] == first["data"]["n_examples"] + 2
    assert meta["validation"]["judge_posts"] > 0 and meta["promoted"] is True

    # The re-score: each unlabeled task's prediction holds the topics head's set.
    sets, _ = Classifier(registry.path(serving)).predict_sets(list(unlabeled.values()))
    pushed = {
        p.task: p.result
        for p in fake.predictions_of(project)
        if p.task in unlabeled and p.model_version == status["version"]
    }
    assert sorted(pushed) == sorted(unlabeled)
    for (task, text), expected in zip(unlabeled.items(), sets, strict=True):
        assert TOPICS.labels_of(pushed[task]) == expected, text
        assert LABEL.label_of(pushed[task]) in LABEL.names


def test_from_train_finetune_from_labels_the_other_question_is_fine_tuned_too(tmp_path, tiny_model):
    """With TRAIN_FINETUNE_FROM reached, the topics get a fine-tune as well: a sigmoid a
    label on the (tiny) encoder, its thresholds saved beside it, judged whole sets."""
    settings = load_settings(
        {
            "MODEL_DIR": str(tmp_path / "models"),
            "LLM_BASE_URL": "http://127.0.0.1:9/v1",
            "LLM_TIMEOUT": "0.5",
            "LLM_MAX_RETRIES": "0",
            "BASE_MODEL": str(tiny_model),
            "TRAIN_MAX_LENGTH": "32",
            "TRAIN_MIN_PER_LABEL": "2",
            "TRAIN_FINETUNE_FROM": "10",
            "TRAIN_EPOCHS": "1",
            "TRAIN_MIN_STEPS": "4",
            "TRAIN_BATCH_SIZE": "8",
            "BLIND_LABELS": "false",
        }
    )
    fake = FakeLabelStudio()
    predictor = Predictor(settings, labeler_from_settings(settings))
    project = fake.add_project(CONFIG)
    for thing, topics in THINGS.items():
        for label, template in TEMPLATES.items():
            task = fake.add_task(project, template.format(thing), split="train")
            result = LABEL.result(label) + TOPICS.result_of_set(sorted(topics))
            fake.annotate(project, task, None, result=result)
    try:
        Runner(settings, JobState(settings.model_dir), client=fake, predictor=predictor).train(
            project
        )
    finally:
        predictor.labeler.close()
    status = JobState(settings.model_dir).status(project, "training")
    assert status["state"] == "finished", status
    said = status["questions"]
    assert said.startswith("topics: v1 head ") and "; v2 tune " in said, said
    registry = Registry(settings.model_dir, project, "topics")
    tuned = next(v for v in registry.versions() if v["kind"] == "fine-tune")
    assert tuned["labels"] == ["food", "exercise"] and set(tuned["metrics"]["thresholds"]) == {
        "food",
        "exercise",
    }
    classifier = Classifier(registry.path(tuned["version"]))
    assert classifier.multiple and classifier.kind == "fine-tune"
    sets, probabilities = classifier.predict_sets(["ate pasta after running", "a nap"])
    assert len(sets) == 2 and all(s <= {"food", "exercise"} for s in sets)
    assert probabilities.shape == (2, 2) and ((probabilities >= 0) & (probabilities <= 1)).all()


def test_another_single_choice_question_gets_its_head_and_its_own_score_calibrator(world):
    """A second single-choice question: a softmax head of its own, and a calibrator of its
    own refitted on its annotations (scores follow each question's labels)."""
    settings, fake, predictor = world
    config = (
        (ROOT / "label_config.xml")
        .read_text()
        .replace(
            "</View>",
            '<Choices name="asks" toName="text"><Choice value="yes"/><Choice value="no"/>'
            "</Choices></View>",
        )
    )
    label, asks = parse_form(config).questions
    project = fake.add_project(config)
    for thing in THINGS:
        for name, template in TEMPLATES.items():
            task = fake.add_task(project, template.format(thing), split="train")
            answer = "yes" if name == "seeking_support" else "no"
            fake.annotate(project, task, None, result=label.result(name) + asks.result(answer))
    Runner(settings, JobState(settings.model_dir), client=fake, predictor=predictor).train(project)
    status = JobState(settings.model_dir).status(project, "training")
    assert status["questions"].startswith("asks: v1 head "), status
    registry = Registry(settings.model_dir, project, "asks")
    assert read_meta(registry.path(registry.serving()))["kind"] == "head"
    assert registry.read_calibration() is not None
    # Its pre-labels: the head's answer (the LLM gave none), scored by its calibrator.
    (other,) = predictor.others(project, parse_form(config), ["any advice on lows after pasta?"])
    assert other is not None and asks.label_of(other.result) == "yes"
