"""A multiple-choice question's per-label decision thresholds: each label's sigmoid says
yes at its threshold or above, chosen on validation posts the weights never saw (the head
of backend.model.multilabel_head and the fine-tune of backend.model.trainer alike)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

DEFAULT_THRESHOLD = 0.5  # a balanced sigmoid's own boundary
# A label's threshold moves from DEFAULT_THRESHOLD only where the validation posts hold at
# least this many with the label: on fewer, the threshold that maximises their F1 is
# noise, and cost 2-4 points of subset accuracy at 50-100 labels (bench_multilabel's
# derived BBC question, decided on a split of its pool, never on its held-out posts).
MIN_VALIDATION_POSITIVES = 20


def _f1(predicted: np.ndarray, truth: np.ndarray) -> float:
    tp = int(np.sum(predicted & truth))
    wrong = int(np.sum(predicted != truth))  # false positives plus false negatives
    return 2 * tp / (2 * tp + wrong) if tp else 0.0


def best_threshold(proba: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """The threshold maximising F1 of `proba >= threshold` against `truth` (which holds a
    positive), and that F1. F1 only changes at the scores, so the nearest point to 0.5 of
    each interval of equal F1 is 0.5 itself, a score, or the float just above one; ties
    go to the threshold closest to 0.5 (the lower one when two are equally close)."""
    truth = truth.astype(bool)
    scores = np.unique(proba)
    candidates = np.unique(np.concatenate([scores, np.nextafter(scores, 2.0), [0.5]]))
    f1 = np.array([_f1(proba >= c, truth) for c in candidates])
    best = np.flatnonzero(f1 >= f1.max() - 1e-12)
    chosen = best[np.argmin(np.abs(candidates[best] - 0.5))]
    return float(candidates[chosen]), float(f1[chosen])


def choose(
    proba: np.ndarray,
    truth: np.ndarray,
    *,
    learnable: Sequence[bool],
    min_positives: int = MIN_VALIDATION_POSITIVES,
) -> tuple[np.ndarray, list[float | None]]:
    """Each label's threshold from the validation posts' probabilities (N x L) and yes/no
    (N x L), and its validation F1 there (None where no validation post has the label).
    The F1-best threshold where the label is `learnable` (both answers among the training
    posts) and at least `min_positives` validation posts have it; DEFAULT_THRESHOLD
    elsewhere."""
    thresholds = np.full(truth.shape[1], DEFAULT_THRESHOLD)
    validation_f1: list[float | None] = [None] * truth.shape[1]
    for k in range(truth.shape[1]):
        column = truth[:, k].astype(bool)
        if not column.any():
            continue
        if learnable[k] and column.sum() >= max(min_positives, 1):
            thresholds[k], validation_f1[k] = best_threshold(proba[:, k], column)
        else:
            validation_f1[k] = _f1(proba[:, k] >= DEFAULT_THRESHOLD, column)
    return thresholds, validation_f1
