"""Statistics of a held-out evaluation of multiple-choice (multi-label) questions.

A post's answer is a set of labels. Subset accuracy (the whole set right) is a binomial
share of posts, so it gets a Clopper-Pearson interval; micro-F1, macro-F1, Hamming loss
and each label's F1 are no such share and get BCa bootstrap intervals over posts, with an
exact bound where BCa is undefined, as in :mod:`takemeter.evaluation.statistics`. A
``None`` prediction (no answer) predicts no label in the per-label counts and is wrong
for subset accuracy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from takemeter.evaluation.statistics import (
    BCA,
    DEFAULT_RESAMPLING,
    EXACT_FALLBACK,
    Interval,
    Resampling,
    _as_f1,
    _bca,
    _check_labels,
    _check_nonempty,
    _check_same_length,
    _exact_bound,
    _Share,
    mcnemar,
    proportion_ci,
)

__all__ = [
    "POST_BOUND_FALLBACK",
    "Answer",
    "Estimate",
    "LabelSet",
    "hamming_loss",
    "indicator",
    "intervals",
    "macro_f1",
    "micro_f1",
    "paired_subset_comparison",
    "per_label",
    "subset_accuracy",
]

LabelSet = frozenset[str] | set[str]
Answer = LabelSet | None  # None: the system gave no answer
Estimate = tuple[float, Interval]

# Interval method where BCa is undefined and the metric is bounded through the share of
# posts with any error (see :func:`intervals`).
POST_BOUND_FALLBACK = "exact Clopper-Pearson bound via posts with any error, BCa undefined"


def _check_sets(**seqs: Sequence[Answer]) -> int:
    n = _check_same_length(**seqs)
    _check_nonempty(n)
    for what, seq in seqs.items():
        if any(isinstance(s, str) for s in seq):
            # A bare string would pass for the set of its characters.
            raise ValueError(f"{what} holds a string, not a set of labels")
    return n


def _rows(sets: Sequence[Answer], labels: list[str], what: str) -> np.ndarray:
    unknown = {label for s in sets for label in s or ()} - set(labels)
    if unknown:
        raise ValueError(f"{what} has labels not in labels: {sorted(unknown, key=str)}")
    rows = [[label in (s or ()) for label in labels] for s in sets]
    return np.array(rows, dtype=bool).reshape(len(sets), len(labels))


def _matrices(labels: Sequence[str], **seqs: Sequence[Answer]) -> list[np.ndarray]:
    checked = _check_labels(labels)
    _check_sets(**seqs)
    return [_rows(seq, checked, name) for name, seq in seqs.items()]


def _subset_right(truth: Sequence[LabelSet], pred: Sequence[Answer]) -> np.ndarray:
    _check_sets(truth=truth, pred=pred)
    return np.array([p is not None and set(p) == set(t) for t, p in zip(truth, pred, strict=True)])


def _post_counts(t: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Per post (n, 3, L): true positives, false positives, false negatives."""
    return np.stack([t & p, ~t & p, t & ~p], axis=1).astype(float)


def _resampled_counts(counts: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Summed counts (..., 3, L) of the posts ``idx`` (..., m) picks, repeats included.

    Each resample becomes a vector of post weights, so one matrix product sums thousands
    of resamples without materialising their (m, 3, L) counts."""
    n = counts.shape[0]
    flat = idx.reshape(-1, idx.shape[-1])
    cells = (flat + n * np.arange(flat.shape[0])[:, None]).ravel()
    weights = np.bincount(cells, minlength=flat.shape[0] * n).reshape(*idx.shape[:-1], n)
    return (weights @ counts.reshape(n, -1)).reshape(*idx.shape[:-1], *counts.shape[1:])


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.full(np.shape(den), np.nan), where=den > 0)


def _scores(summed: np.ndarray, n_posts: int) -> np.ndarray:
    """(..., 3 + L): micro-F1, macro-F1, Hamming loss, each label's F1; NaN where 0/0."""
    tp, fp, fn = summed[..., 0, :], summed[..., 1, :], summed[..., 2, :]
    involved = 2 * tp + fp + fn
    f1 = _ratio(2 * tp, involved)
    micro = _ratio(2 * tp.sum(-1), involved.sum(-1))
    present = involved > 0
    macro = _ratio(np.where(present, f1, 0.0).sum(-1), present.sum(-1))
    hamming = (fp + fn).sum(-1) / (n_posts * tp.shape[-1])
    return np.concatenate([np.stack([micro, macro, hamming], -1), f1], -1)


def _point(truth: Sequence[LabelSet], pred: Sequence[Answer], labels: Sequence[str]) -> np.ndarray:
    t, p = _matrices(labels, truth=truth, pred=pred)
    return _scores(_post_counts(t, p).sum(0), len(t))


def _value(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


def _share(num: int, den: int) -> float | None:
    return float(num / den) if den else None


def indicator(sets: Sequence[Answer], labels: Sequence[str]) -> np.ndarray:
    """The N x L 0/1 matrix of ``sets`` (columns in ``labels`` order; None is a 0 row):
    the form sklearn's multi-label metrics take."""
    [matrix] = _matrices(labels, sets=sets)
    return matrix.astype(int)


def subset_accuracy(truth: Sequence[LabelSet], pred: Sequence[Answer]) -> float:
    """Share of posts whose predicted set is exactly the human set (None is wrong)."""
    return float(_subset_right(truth, pred).mean())


def hamming_loss(truth: Sequence[LabelSet], pred: Sequence[Answer], labels: Sequence[str]) -> float:
    """Share of the N x L yes/no label decisions that are wrong (None predicts no label).

    Unlike subset accuracy it gives credit for a set that is nearly right."""
    return float(_point(truth, pred, labels)[2])


def per_label(
    truth: Sequence[LabelSet], pred: Sequence[Answer], labels: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """Per label: precision, recall, F1, support (human count), predicted (system count).

    Precision is None where the label is never predicted, recall where no post has it,
    F1 where both (all 0/0): an undefined score is not reported as 0 or 1."""
    t, p = _matrices(labels, truth=truth, pred=pred)
    tp, fp, fn = _post_counts(t, p).sum(0).astype(int).tolist()
    return {
        label: {
            "precision": _share(a, a + b),
            "recall": _share(a, a + c),
            "f1": _share(2 * a, 2 * a + b + c),
            "support": a + c,
            "predicted": a + b,
        }
        for label, a, b, c in zip(_check_labels(labels), tp, fp, fn, strict=True)
    }


def micro_f1(
    truth: Sequence[LabelSet], pred: Sequence[Answer], labels: Sequence[str]
) -> float | None:
    """F1 of the label decisions pooled over labels, 2TP / (2TP + FP + FN); frequent labels
    weigh more. None where no post has or is predicted any label (0/0)."""
    return _value(_point(truth, pred, labels)[0])


def macro_f1(
    truth: Sequence[LabelSet], pred: Sequence[Answer], labels: Sequence[str]
) -> float | None:
    """Unweighted mean of per-label F1 over the labels some post has or is predicted.

    A label nobody used has no F1 (0/0) and is left out rather than scored 0 or 1, so
    an unused option of the question does not move the mean. None where no label is used.
    Equals sklearn's ``average='macro'`` when every label has support or predictions."""
    return _value(_point(truth, pred, labels)[1])


def _post_bounds(t: np.ndarray, p: np.ndarray, confidence: float) -> list[Interval | None]:
    """Exact bounds of micro-F1 and Hamming loss through q, a share of posts with any error,
    whose Clopper-Pearson interval carries over. Of all posts: each has L decisions, so
    q / L <= Hamming <= q. Of the posts involving a label: each has 1 to L of TP + FP + FN,
    a wrong one at least one error, so 1 - qL / (qL + 1 - q) <= J = TP / (TP + FP + FN)
    <= 1 - q / L, and micro-F1 = 2J / (1 + J); None where no post involves a label."""
    n_labels = t.shape[1]
    wrong, involved = np.any(t != p, axis=1), np.any(t | p, axis=1)
    micro = None
    if involved.any():
        q = proportion_ci(int(wrong.sum()), int(involved.sum()), confidence=confidence)
        low = 1 - q.high * n_labels / (q.high * n_labels + 1 - q.high)
        micro = Interval(_as_f1(low), _as_f1(1 - q.low / n_labels), POST_BOUND_FALLBACK)
    q = proportion_ci(int(wrong.sum()), wrong.size, confidence=confidence)
    return [micro, Interval(q.low / n_labels, q.high, POST_BOUND_FALLBACK)]


def intervals(
    truth: Sequence[LabelSet],
    pred: Sequence[Answer],
    labels: Sequence[str],
    *,
    resampling: Resampling = DEFAULT_RESAMPLING,
) -> dict[str, Any]:
    """Each metric's value and interval, as (value, Interval), or None where undefined.

    Keys ``subset_accuracy``, ``micro_f1``, ``macro_f1``, ``hamming_loss`` and
    ``per_label_f1`` ({label: ...}). Subset accuracy: Clopper-Pearson. The rest: BCa
    bootstrap over posts (a post's labels travel together); a resample where a label (or
    every label) is unused scores it 0, sklearn's ``zero_division=0``, as in
    :mod:`~takemeter.evaluation.statistics`. Where BCa is undefined (e.g. every post
    right), an exact bound: for a label's F1 and macro-F1 that of
    :func:`~takemeter.evaluation.statistics.f1_intervals`, for micro-F1 and Hamming loss
    one through the share of posts with any error (:data:`POST_BOUND_FALLBACK`).
    """
    checked = _check_labels(labels)
    t, p = _matrices(checked, truth=truth, pred=pred)
    n = len(t)
    counts = _post_counts(t, p)
    confidence = resampling.confidence

    def statistic(idx: np.ndarray, axis: int = -1) -> np.ndarray:
        scores = _scores(_resampled_counts(counts, idx), idx.shape[-1])
        return np.moveaxis(np.nan_to_num(scores, nan=0.0), -1, 0)

    bounds = _bca(statistic, n, vectorized=True, resampling=resampling)
    observed = _scores(counts.sum(0), n)
    tp, fp, fn = counts.sum(0).astype(int).tolist()
    shares = [_Share(1.0, a, a + b + c, _as_f1) for a, b, c in zip(tp, fp, fn, strict=True)]
    live = [s for s in shares if s.trials > 0]
    macro_shares = [_Share(1 / max(len(live), 1), s.hits, s.trials, _as_f1) for s in live]
    exact = [
        Interval(*_exact_bound(f1_shares, confidence=confidence), EXACT_FALLBACK)
        for f1_shares in [macro_shares, *([s] for s in shares)]
    ]
    micro, hamming = _post_bounds(t, p, confidence)
    fallbacks = [micro, exact[0], hamming, *exact[1:]]

    def estimate(i: int) -> Estimate | None:
        value = _value(observed[i])
        if value is None:
            return None
        if np.all(np.isfinite(bounds[i])):
            return value, Interval(float(bounds[i, 0]), float(bounds[i, 1]), BCA)
        fallback = fallbacks[i]
        assert fallback is not None  # only micro-F1's is None, where micro-F1 is undefined
        return value, fallback

    right = _subset_right(truth, pred)
    subset = proportion_ci(int(right.sum()), n, confidence=confidence)
    return {
        "subset_accuracy": (float(right.mean()), subset),
        "micro_f1": estimate(0),
        "macro_f1": estimate(1),
        "hamming_loss": estimate(2),
        "per_label_f1": {label: estimate(3 + j) for j, label in enumerate(checked)},
    }


def paired_subset_comparison(
    truth: Sequence[LabelSet], pred_a: Sequence[Answer], pred_b: Sequence[Answer]
) -> dict[str, Any]:
    """McNemar's test of two systems' subset correctness on the same posts.

    As :func:`~takemeter.evaluation.statistics.mcnemar`: ``b`` counts posts A gets exactly
    right and B not, ``c`` the reverse; exact binomial test below 25 discordant posts."""
    n = _check_same_length(truth=truth, pred_a=pred_a, pred_b=pred_b)
    # mcnemar compares single-label answers; each post's verdict is one: the answer
    # "right" against a truth of "right", None where the set is wrong.
    verdicts = [
        ["right" if r else None for r in _subset_right(truth, pred)] for pred in (pred_a, pred_b)
    ]
    return mcnemar(["right"] * n, *verdicts)
