"""The multi-label head on synthetic embeddings (no encoder is loaded): label sets
recovered, thresholds chosen for F1, one-class labels, and the saved file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from backend.model.multilabel_head import MultiLabelHead, fit_multilabel_head
from backend.model.thresholds import DEFAULT_THRESHOLD, MIN_VALIDATION_POSITIVES, best_threshold

LABELS = 3
WIDTH = 8


def synthetic(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Label k is present with chance 0.4, independently; coordinate k is +1 when it is
    and -1 when it is not, plus noise; the rest is noise; rows L2-normalised like the
    encoder's embeddings."""
    rng = np.random.default_rng(seed)
    y = (rng.random((n, LABELS)) < 0.4).astype(np.int64)
    x = rng.normal(0.0, 0.3, (n, WIDTH))
    x[:, :LABELS] += 2 * y - 1
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), y


def test_recovers_label_sets_on_fresh_rows() -> None:
    x, y = synthetic(300, seed=0)
    head, chosen = fit_multilabel_head(x, y, validation=list(range(200, 300)), seed=0)
    fresh_x, fresh_y = synthetic(500, seed=1)
    predicted = head.predict(fresh_x)
    subset_accuracy = np.mean((predicted == fresh_y.astype(bool)).all(axis=1))
    assert subset_accuracy >= 0.95
    assert chosen["n_rows"] == 300 and chosen["n_validation"] == 100
    assert len(chosen["thresholds"]) == LABELS
    assert all(f1 is not None and f1 >= 0.9 for f1 in chosen["validation_f1"])


def test_threshold_maximises_f1() -> None:
    # Scores 0.1 0.3 0.35 0.6 0.8 with truth 0 1 1 0 1. F1 = 2TP / (2TP + FP + FN):
    #   t <= 0.1        all five: TP 3 FP 2      -> 6/8 = 0.75
    #   0.1 < t <= 0.3  last four: TP 3 FP 1     -> 6/7 = 0.857  (the best)
    #   0.3 < t <= 0.35 TP 2 FP 1 FN 1           -> 4/6
    #   0.35 < t <= 0.6 TP 1 FP 1 FN 2           -> 2/5  (0.5 lies here)
    #   0.6 < t <= 0.8  TP 1 FN 2                -> 2/4
    # so the best interval is (0.1, 0.3], whose point closest to 0.5 is 0.3.
    threshold, f1 = best_threshold(np.array([0.1, 0.3, 0.35, 0.6, 0.8]), np.array([0, 1, 1, 0, 1]))
    assert threshold == pytest.approx(0.3)
    assert f1 == pytest.approx(6 / 7)


def test_threshold_ties_go_closest_to_half() -> None:
    # 0.2 0.7 0.9 with truth 0 1 1: any t in (0.2, 0.7] is perfect and holds 0.5.
    assert best_threshold(np.array([0.2, 0.7, 0.9]), np.array([0, 1, 1])) == (0.5, 1.0)
    # 0.1 0.2 0.8 0.9 with truth 1 0 0 1: t <= 0.1 gives 4/6 and 0.8 < t <= 0.9 gives 2/3,
    # the same F1 (the rest give 2/5 and 1/2); the second is closer to 0.5, from above 0.8.
    threshold, f1 = best_threshold(np.array([0.1, 0.2, 0.8, 0.9]), np.array([1, 0, 0, 1]))
    assert 0.8 < threshold < 0.8 + 1e-9
    assert f1 == pytest.approx(2 / 3)


def test_one_class_labels_always_give_that_class() -> None:
    x, y = synthetic(60, seed=2)
    y[:, 1] = 0
    y[:, 2] = 1
    head, chosen = fit_multilabel_head(x, y, seed=0)
    assert not head.weights[1].any() and not head.weights[2].any()
    predicted = head.predict(synthetic(40, seed=3)[0])
    assert not predicted[:, 1].any() and predicted[:, 2].all()
    assert chosen["thresholds"] == [0.5, 0.5, 0.5]
    assert chosen["n_validation"] == 0


def test_unchoosable_thresholds_stay_at_half() -> None:
    x, y = synthetic(120, seed=4)
    validation = np.zeros(120, dtype=bool)
    validation[80:] = True
    y[80:, 0] = 0  # no positive of label 0 among the validation rows
    y[:80, 1] = 0  # label 1 positive only among the validation rows
    head, chosen = fit_multilabel_head(x, y, validation=validation, seed=0)
    assert chosen["thresholds"][:2] == [0.5, 0.5]
    assert chosen["validation_f1"][0] is None
    assert chosen["validation_f1"][1] == 0.0  # a constant "absent" finds none of them
    assert head.weights[1].any()  # the refit on every row learns label 1 all the same


def test_validation_must_leave_rows_to_fit() -> None:
    x, y = synthetic(10, seed=5)
    with pytest.raises(ValueError):
        fit_multilabel_head(x, y, validation=np.ones(10, dtype=bool))
    with pytest.raises(ValueError):
        fit_multilabel_head(x, y[:, 0])


def test_save_load_round_trip(tmp_path: Path) -> None:
    x, y = synthetic(80, seed=6)
    head, _ = fit_multilabel_head(x, y, validation=np.arange(60, 80), seed=0)
    path = tmp_path / "multilabel-head"
    head.save(path)
    assert path.exists() and not (tmp_path / "multilabel-head.npz").exists()
    loaded = MultiLabelHead.load(path)
    np.testing.assert_array_equal(loaded.weights, head.weights)
    np.testing.assert_array_equal(loaded.biases, head.biases)
    np.testing.assert_array_equal(loaded.thresholds, head.thresholds)
    np.testing.assert_array_equal(loaded.predict(x), head.predict(x))


def test_shapes_and_dtypes() -> None:
    x, y = synthetic(50, seed=7)
    head, _ = fit_multilabel_head(x, y, seed=0)
    assert head.weights.shape == (LABELS, WIDTH) and head.biases.shape == (LABELS,)
    assert head.thresholds.shape == (LABELS,)
    proba = head.predict_proba(x[:7])
    assert proba.shape == (7, LABELS) and np.issubdtype(proba.dtype, np.floating)
    assert ((proba >= 0) & (proba <= 1)).all()
    assert not np.allclose(proba.sum(axis=1), 1.0)  # independent, not a softmax
    predicted = head.predict(x[:7])
    assert predicted.shape == (7, LABELS) and predicted.dtype == np.bool_


def test_a_threshold_moves_only_on_enough_validation_posts_with_the_label() -> None:
    """Below MIN_VALIDATION_POSITIVES posts with the label among the validation rows the
    F1-best threshold is noise: 0.5 stays. With enough, it is chosen."""
    x, y = synthetic(300, seed=5)
    flipped = np.random.default_rng(99).random(y.shape) < 0.2  # noisy labels: no clean cut
    y = np.where(flipped, 1 - y, y)
    validation = np.zeros(300, dtype=bool)
    validation[200:] = True
    positives = y[validation].sum(0)
    assert (positives >= MIN_VALIDATION_POSITIVES).all()
    _, chosen = fit_multilabel_head(x, y, validation=validation, seed=0)
    assert chosen["thresholds"] != [DEFAULT_THRESHOLD] * LABELS  # chosen, off 0.5
    _, strict = fit_multilabel_head(
        x, y, validation=validation, seed=0, min_positives=int(positives.max()) + 1
    )
    assert strict["thresholds"] == [DEFAULT_THRESHOLD] * LABELS
    assert all(f1 is not None for f1 in strict["validation_f1"])  # F1 at 0.5, measured
