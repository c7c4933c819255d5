"""The trainer, for real, on the tiny DistilBERT."""

from __future__ import annotations

import random

import pytest

from backend.domain.roles import split_roles
from backend.model import runtime
from backend.model.classifier import Classifier
from backend.model.registry import write_meta
from backend.model.trainer import (
    TrainConfig,
    fine_tune,
    length_grouped_batches,
    split_validation,
)


def test_length_grouped_batches_cover_everything_once_and_group_lengths():
    rng = random.Random(1)
    lengths = [rng.randint(5, 120) for _ in range(300)]
    batches = length_grouped_batches(lengths, 16, random.Random(0))
    flat = sorted(i for batch in batches for i in batch)
    assert flat == list(range(300))
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches)
    shuffled = list(range(300))
    random.Random(2).shuffle(shuffled)
    naive = [shuffled[i : i + 16] for i in range(0, 300, 16)]
    naive_spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in naive)
    assert spread < naive_spread / 4  # far less padding than random batches


def test_validation_split_is_stable_per_key():
    keys = [str(i) for i in range(1000)]
    train, val = split_validation(keys, share=0.15)
    assert sorted(train + val) == list(range(1000))
    assert 110 <= len(val) <= 190
    # The same key lands on the same side when the data grows.
    _, val_more = split_validation([*keys, *[str(i) for i in range(1000, 1500)]], share=0.15)
    assert set(val) == {i for i in val_more if i < 1000}


@pytest.mark.slow
def test_fine_tune_trains_saves_and_serves(tmp_path, tiny_model):
    texts = [f"has anyone else had lows after running {i} miles?" for i in range(60)] + [
        f"cinnamon cures diabetes for everyone, trust me {i}" for i in range(60)
    ]
    labels = ["seeking_support"] * 60 + ["health_claim"] * 60
    events = []
    result = fine_tune(
        texts,
        labels,
        label_names=["seeking_support", "health_claim"],
        config=TrainConfig(
            base_model=str(tiny_model),
            epochs=5,
            patience=5,
            learning_rate=3e-3,
            batch_size=8,
            max_length=32,
        ),
        out_dir=tmp_path,
        keys=[str(i) for i in range(120)],
        progress=events.append,
    )
    metrics = result.metrics
    # 120 posts leave about 84 to train on: 11 steps an epoch at batch 8, so the step
    # budget (150) asks for 14 epochs instead of 5, judged on validation every 2.
    steps_per_epoch = -(-metrics["n_train"] // 8)
    assert metrics["step_budget"] >= 150 and metrics["step_budget"] % steps_per_epoch == 0
    epochs = [e["epoch"] for e in events]
    assert epochs == list(range(2, metrics["epochs_run"] + 1, 2)) and epochs[-1] > 5
    assert [e["step"] for e in events] == [epoch * steps_per_epoch for epoch in epochs]
    assert metrics["steps_run"] == events[-1]["step"]
    # Every example has exactly one role: train, validation (early stopping) or judge.
    assert metrics["n_train"] + metrics["n_validation"] + metrics["n_judge"] == 120
    assert metrics["n_judge"] > 0 and len(result.judge_predictions) == metrics["n_judge"]
    # An easy, separable task: a random-init model still learns it in a few epochs.
    assert metrics["history"][-1]["loss"] < metrics["history"][0]["loss"]
    assert metrics["val_accuracy"] >= 0.9
    assert metrics["device"] == runtime.device().type and metrics["samples_per_second"] > 0
    assert len(result.validation_predictions) == metrics["n_validation"]
    write_meta(
        tmp_path, {"version": "v1", "labels": ["seeking_support", "health_claim"], "max_length": 32}
    )
    probabilities = Classifier(tmp_path).predict_proba(
        [
            "has anyone else had lows after running 99 miles?",
            "cinnamon cures diabetes for everyone, trust me 99",
        ]
    )
    assert probabilities.shape == (2, 2)
    assert probabilities[0, 0] > 0.5 and probabilities[1, 1] > 0.5


def test_split_roles_keeps_judge_posts_apart_and_stable():
    keys = [str(i) for i in range(2000)]
    train, val, judge = split_roles(keys, validation_share=0.15, judge_share=0.15)
    assert sorted(train + val + judge) == list(range(2000))
    assert not (set(train) & set(val)) and not (set(val) & set(judge))
    assert 0.12 < len(judge) / 2000 < 0.18 and 0.12 < len(val) / 2000 < 0.18
    # The validation side is the one split_validation always gave: old runs compare.
    assert split_validation(keys, share=0.15)[1] == val
    # A post keeps its role when the project grows.
    _, _, judge_more = split_roles(
        [*keys, *map(str, range(5000, 6000))], validation_share=0.15, judge_share=0.15
    )
    assert set(judge) == {i for i in judge_more if i < 2000}
