"""The fast first model, for real: a linear head on frozen MiniLM-L6 embeddings, trained,
committed to a registry and served by the same Classifier as a fine-tune."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from backend.model import embeddings
from backend.model.classifier import Classifier
from backend.model.embeddings import EmbeddingStore, store
from backend.model.head import fit_head, train_head
from backend.model.multilabel_head import train_multilabel_head
from backend.model.registry import HEAD_FILE, JUDGE_HEAD_FILE, Registry
from takemeter.offline_models import minilm_path

NAMES = ["seeking_support", "health_claim", "personal_experience"]
TEMPLATES = {
    "seeking_support": "has anyone else had lows after {}? any advice would help",
    "health_claim": "cinnamon cures diabetes, {} proves it for everyone",
    "personal_experience": "my numbers were steady after {} this week",
}
TOPICS = [
    "running",
    "dinner",
    "a long walk",
    "swimming",
    "pasta",
    "a nap",
    "work",
    "cycling",
    "breakfast",
    "yoga",
    "a party",
    "travel",
]


def posts() -> tuple[list[str], list[str]]:
    texts, labels = [], []
    for topic in TOPICS:
        for label, template in TEMPLATES.items():
            texts.append(template.format(topic))
            labels.append(label)
    return texts, labels


def test_a_head_learns_is_committed_and_serves(tmp_path: Path):
    texts, labels = posts()
    registry = Registry(tmp_path, 3)
    staging = registry.staging_dir()
    keys = [str(i) for i in range(len(texts))]
    result = train_head(
        texts,
        labels,
        label_names=NAMES,
        store=store(registry.embeddings_folder(str(minilm_path()), 64), str(minilm_path()), 64),
        out_dir=staging,
        keys=keys,
    )
    metrics = result.metrics
    assert metrics["kind"] == "head" and metrics["n_judge"] == len(result.judge_texts) > 0
    # The judged head never saw a judge post; the served one learned from every post.
    assert not set(result.trained_on) & {keys[texts.index(t)] for t in result.judge_texts}
    assert metrics["n_train"] + metrics["n_judge"] == metrics["n_served_fit"] == len(texts)
    right = sum(p == t for p, t in zip(result.judge_predictions, result.judge_labels, strict=True))
    assert right / len(result.judge_labels) >= 0.8  # three clearly different templates
    assert (staging / HEAD_FILE).is_file() and (staging / JUDGE_HEAD_FILE).is_file()

    name = registry.new_version_name()
    registry.commit(
        staging,
        name,
        {
            "created": time.time(),
            "kind": "head",
            "labels": NAMES,
            "base_model": str(minilm_path()),
            "max_length": 64,
            "validation": {"model_accuracy": 1.0, "judge_posts": 5},
        },
    )
    registry.promote(name)
    assert registry.serving().split()[1] == "head"
    classifier = Classifier(registry.path(name))
    new = [
        "has anyone else had lows after tennis? any advice would help",
        "my numbers were steady after tennis this week",
    ]
    served = classifier.predict_proba(new)
    judged = classifier.predict_proba(new, judging=True)
    assert served.shape == judged.shape == (2, 3)
    assert np.allclose(served.sum(1), 1.0, atol=1e-5)
    assert list(served.argmax(1)) == [0, 2]
    assert not np.allclose(served, judged)  # two fits, on different posts


def test_a_head_version_without_its_weights_is_incomplete(tmp_path: Path):
    registry = Registry(tmp_path, 3)
    staging = registry.staging_dir()
    (staging / "config.json").write_text("{}")  # a fine-tune's file is not a head's
    name = registry.new_version_name()
    registry.commit(staging, name, {"created": time.time(), "kind": "head", "labels": NAMES})
    assert registry.meta(name) is None
    with pytest.raises(ValueError, match="not a complete version"):
        registry.promote(name)


def test_fit_head_covers_every_label_even_one_without_posts():
    rng = np.random.default_rng(0)
    x = np.vstack([rng.normal(-1, 0.3, (10, 4)), rng.normal(1, 0.3, (10, 4))])
    head, seconds = fit_head(x, [0] * 10 + [2] * 10, n_classes=3)
    proba = head.predict_proba(x)
    assert proba.shape == (20, 3) and seconds >= 0
    assert list(proba.argmax(1)) == [0] * 10 + [2] * 10  # two classes: both rows kept
    assert proba[:, 1].max() < 1e-6  # label 1 had no training post: it never wins
    single, _ = fit_head(x, [1] * 20, n_classes=3)
    assert set(single.predict_proba(x).argmax(1)) == {1}


def test_a_project_embeds_each_post_once_across_jobs_and_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    texts, _ = posts()
    model = str(minilm_path())
    folder = Registry(tmp_path, 3).embeddings_folder(model, 64)
    first, embedded = EmbeddingStore(folder, model, 64).rows(texts[:20])
    assert embedded == 20 and first.shape == (20, 384)
    # Another process (a store of its own on the same folder): the 20 come from disk, the
    # new posts alone are embedded, and the rows equal what embedding gives.
    other = EmbeddingStore(folder, model, 64)
    second, embedded = other.rows(texts)
    assert embedded == len(texts) - 20
    assert np.array_equal(second[:20], first)
    fresh = embeddings.encoder(model).embed(texts, max_length=64)
    assert np.allclose(fresh, second, atol=1e-5)
    assert other.rows(list(reversed(texts)))[1] == 0 and len(other) == len(texts)
    # A key ending in a zero byte (1 post in 256) reads back whole.
    zero_end = next(f"post {i}" for i in range(10_000) if embeddings.text_key(f"post {i}")[-1] == 0)
    assert EmbeddingStore(folder, model, 64).rows([zero_end])[1] == 1
    assert EmbeddingStore(folder, model, 64).rows([zero_end])[1] == 0
    # Another encoder or max_length has a store of its own.
    assert Registry(tmp_path, 3).embeddings_folder(model, 128) != folder
    # A damaged shard is embedded over, not trusted.
    for shard in folder.iterdir():
        shard.write_bytes(b"not an npz file")
    again, embedded = EmbeddingStore(folder, model, 64).rows(texts)
    assert embedded == len(texts) and np.allclose(again, second, atol=1e-5)
    # Past MAX_SHARDS the shards are merged into one that holds every row.
    monkeypatch.setattr(embeddings, "MAX_SHARDS", 3)
    writer = EmbeddingStore(folder, model, 64)
    for i in range(4):
        writer.rows([f"a post never seen before, number {i}"])
    assert len(list(folder.iterdir())) <= 3
    reader = EmbeddingStore(folder, model, 64)
    assert reader.rows([*texts, "a post never seen before, number 3"])[1] == 0


def test_a_process_keeps_the_stores_it_used_last_in_memory(tmp_path: Path):
    model = str(minilm_path())
    first = store(tmp_path / "0", model, 64)
    assert store(tmp_path / "0", model, 64) is first  # its rows are read once
    for i in range(1, embeddings.STORES_IN_MEMORY + 1):
        store(tmp_path / str(i), model, 64)
    assert store(tmp_path / "0", model, 64) is not first  # the oldest was let go
    assert store(tmp_path / str(embeddings.STORES_IN_MEMORY), model, 64) is store(
        tmp_path / str(embeddings.STORES_IN_MEMORY), model, 64
    )


def test_a_multiple_choice_question_gets_a_head_of_its_own_that_serves_sets(tmp_path: Path):
    """Posts about food, exercise, both or neither: a multilabel head learns the sets on
    real MiniLM embeddings, is committed to the question's own registry (the project's
    store shared), and the Classifier serves sets with their probabilities."""
    foods, sports = ["pasta", "rice", "bread", "cake"], ["running", "cycling", "swimming", "yoga"]
    texts, sets = [], []
    for i in range(12):
        food, sport = foods[i % 4], sports[(i * 3) % 4]
        for labels, text in (
            ({"food"}, f"I ate {food} for dinner tonight"),
            ({"exercise"}, f"went {sport} this morning for an hour"),
            ({"food", "exercise"}, f"ate {food} right after {sport} today"),
            (set(), f"my meter broke again, day {i}"),
        ):
            texts.append(text)
            sets.append(frozenset(labels))
    project = Registry(tmp_path, 4)
    registry = Registry(tmp_path, 4, "topics")
    assert registry.root == project.root / "questions" / "topics"
    assert registry.embeddings_folder("m", 64) == project.embeddings_folder("m", 64)
    assert Registry(tmp_path, 4, "a/../b").root.name.startswith("q-")  # no path from a name
    model = str(minilm_path())
    staging = registry.staging_dir()
    result = train_multilabel_head(
        texts,
        sets,
        label_names=["food", "exercise"],
        store=store(registry.embeddings_folder(model, 64), model, 64),
        out_dir=staging,
        keys=[str(i) for i in range(len(texts))],
    )
    assert result.metrics["kind"] == "multilabel-head" and result.judge_texts
    right = sum(p == t for p, t in zip(result.judge_predictions, result.judge_labels, strict=True))
    assert right / len(result.judge_labels) >= 0.75  # whole sets, on posts it never saw
    name = registry.new_version_name()
    registry.commit(
        staging,
        name,
        {
            "kind": "multilabel-head",
            "labels": ["food", "exercise"],
            "base_model": model,
            "max_length": 64,
            "validation": {"model_accuracy": right / len(result.judge_labels), "judge_posts": 4},
        },
    )
    classifier = Classifier(registry.path(name))
    assert classifier.multiple
    found, probabilities = classifier.predict_sets(
        ["ate rice after swimming today", "my meter broke again, day 40"]
    )
    assert found == [frozenset({"food", "exercise"}), frozenset()]
    assert probabilities.shape == (2, 2)
