"""The served model follows the labels, end to end in a real Label Studio.

- BBC posts labeled in steps, "Start Training" after each step, and every version the
  backend commits scored on posts that never reach Label Studio. The LLM is down on
  purpose there (a closed port): that test is about which trained version serves; a
  missing LLM answer counts as wrong in the judge's comparison.
- The demo posts as `make up` serves them (MiniLM-L6, the embedded SmolLM2): after 40
  labels the head's labels are the pre-labels and its scores order the queue.
"""

from __future__ import annotations

import time

import pytest

from backend.domain.taxonomy import parse_taxonomy
from backend.labelstudio import client as ls_client
from backend.model.classifier import Classifier
from backend.model.registry import Registry, kind_of
from takemeter.offline_data import bbc_label_config, bbc_posts
from takemeter.offline_models import minilm_path
from tests.conftest import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

STEPS = (20, 60, 100, 160)  # annotations made before each "Start Training"
# Held-out accuracy the served version may lag the best version committed so far: two
# versions' accuracies on 200 posts differ by chance by about 3 points (one standard
# error), and the judge sees only the 15% of the training side it never trains on.
TOLERANCE = 0.05


@pytest.fixture(scope="module")
def learning_backend(start_backend, label_studio):
    return start_backend(
        LABEL_STUDIO_URL=label_studio.url,
        LABEL_STUDIO_API_KEY=label_studio.token,
        LLM_BASE_URL="http://127.0.0.1:9/v1",
        LLM_MAX_RETRIES="0",
        LLM_TIMEOUT="1",
        BASE_MODEL=str(minilm_path()),
        TRAIN_AFTER_ANNOTATIONS="100000",
        TRAIN_FINETUNE_FROM="70",
        TRAIN_MIN_STEPS="30",
        TRAIN_MAX_LENGTH="64",
        TRAIN_LEARNING_RATE="5e-5",
        TRAIN_MIN_PER_LABEL="1",
    )


def held_out_accuracy(
    registry: Registry, version: str, texts: list[str], labels: list[str]
) -> float:
    predicted = Classifier(registry.path(version)).predict_proba(texts).argmax(1)
    names = registry.meta(version)["labels"]
    return sum(names[i] == t for i, t in zip(predicted, labels, strict=True)) / len(labels)


def test_the_served_version_is_the_best_so_far_as_labels_arrive(ls, learning_backend):
    backend = learning_backend
    config = bbc_label_config()
    taxonomy = parse_taxonomy(config)
    texts, topics = bbc_posts(440, seed=3)
    project = ls_client.ensure_project(ls, title="learning", label_config=config).id
    ls_client.import_posts(ls, project, [{"text": t} for t in texts[:240]])
    held_texts, held_topics = texts[240:], topics[240:]
    truth = dict(zip(texts[:240], topics[:240], strict=True))
    ml_id = ls_client.connect_backend(ls, project, url=backend.url, title="takemeter")
    tasks = ls_client.all_tasks(ls, project)
    registry = Registry(backend.model_dir, project)

    accuracy: dict[str, float] = {}
    labeled = 0
    for target in STEPS:
        for task in tasks[labeled:target]:
            ls.annotations.create(
                id=task["id"], result=taxonomy.result(truth[task["data"]["text"]])
            )
        labeled = target
        since = time.time()
        ls.ml.train(id=ml_id)
        status = backend.wait_training(project, since=since, timeout=600)
        assert status["state"] == "finished", status
        for name in registry.names():
            if name not in accuracy:
                accuracy[name] = held_out_accuracy(registry, name, held_texts, held_topics)
        serving = registry.serving()
        best = max(accuracy.values())
        assert accuracy[serving] >= best - TOLERANCE, (target, serving, accuracy)
        first = registry.names()[0]
        if target >= 100 and best >= accuracy[first] + 0.05:
            # The version of the first 20 labels does not outlive the 100th label once a
            # clearly better one exists.
            assert serving != first, (target, accuracy)

    metas = registry.versions()
    kinds = [kind_of(m) for m in metas]
    assert kinds.count("head") == len(STEPS)  # every run fits the head first
    assert "fine-tune" in kinds  # and fine-tunes from 70 training annotations
    assert metas[0]["data"]["n_examples"] < 25  # the first run had the first 20 labels
    assert accuracy[registry.serving()] > 0.6  # five topics: chance is 0.2


@pytest.fixture(scope="module")
def demo_backend(start_backend, label_studio):
    """As `make up` runs it: MiniLM-L6 as BASE_MODEL and the embedded SmolLM2."""
    return start_backend(
        LABEL_STUDIO_URL=label_studio.url,
        LABEL_STUDIO_API_KEY=label_studio.token,
        BASE_MODEL=str(minilm_path()),
        TRAIN_AFTER_ANNOTATIONS="100000",
        TRAIN_LEARNING_RATE="5e-5",
        TRAIN_MIN_PER_LABEL="3",
    )


def test_on_the_demo_the_head_takes_over_the_pre_labels_within_40_labels(
    ls, demo_backend, posts, label_config
):
    backend = demo_backend
    taxonomy = parse_taxonomy(label_config)
    sample = posts[:120]
    gold = {p["text"]: p["label"] for p in sample}
    project = ls_client.ensure_project(ls, title="demo-loop", label_config=label_config).id
    ls_client.import_posts(ls, project, [{"text": p["text"], "ref_id": p["id"]} for p in sample])
    ml_id = ls_client.connect_backend(ls, project, url=backend.url, title="takemeter")
    ls_client.retrieve_predictions(ls, project)  # the LLM's pre-labels, as annotators see them
    tasks = ls_client.all_tasks(ls, project)
    for task in tasks[:40]:
        ls.annotations.create(id=task["id"], result=taxonomy.result(gold[task["data"]["text"]]))
    since = time.time()
    ls.ml.train(id=ml_id)  # "Start Training"
    status = backend.wait_training(project, since=since, timeout=600)
    assert status["state"] == "finished" and status["promoted"] is True, status

    registry = Registry(backend.model_dir, project)
    serving = registry.serving()
    meta = registry.meta(serving)
    assert kind_of(meta) == "head" and serving.split()[1] == "head"
    validation = meta["validation"]
    # The judge found the head right on more of its posts than the 135M-parameter LLM.
    assert meta["beats_llm"] is True, validation
    assert validation["model_accuracy"] > validation["llm_accuracy"], validation

    queue = wait_for(
        lambda: (
            (q := backend.get(f"/queue?project={project}").json())["model_version"] == serving and q
        ),
        timeout=120,
        what="the re-score under the head",
    )
    rows = [r for r in queue["rows"] if r["model_label"]]
    assert len(rows) >= 60  # the 80 unlabeled tasks but the held-out ones' share
    # The model's label is the pre-label now, and the priorities are the model's own,
    # not the ties of a weak LLM's low confidences.
    assert all(r["shown_from"] == "model" and r["shown_label"] == r["model_label"] for r in rows)
    assert len({round(r["priority"], 4) for r in rows}) >= len(rows) // 2
    # Label Studio shows those pre-labels under the head's name.
    ls_client.retrieve_predictions(ls, project)
    found = ls_client.prediction_versions(ls, project)
    unlabeled = [t["id"] for t in tasks[40:]]
    assert all(serving in found.get(task, set()) for task in unlabeled)
