"""The multi-label head: for multiple-choice projects, where a post may carry any set of
labels, one independent binary logistic regression per label over the same frozen,
L2-normalised embeddings as backend.model.head (whose fit each label reuses).

A softmax makes labels compete for one post; here each label has its own sigmoid and its
own decision threshold. Balanced weighting calibrates the scores toward 0.5 on the
training rows, not toward the F1 each label wants, so each threshold is chosen on
validation rows the weights never saw; the served head is then refit on every row and
keeps those thresholds, since (as with head.py's served head) the weights gain from every
label while the thresholds needed held-apart posts to be chosen at all.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from backend.domain.taxonomy import answer_key
from backend.model.embeddings import EmbeddingStore
from backend.model.head import HEAD_C, fit_head, head_roles
from backend.model.registry import JUDGE_MULTILABEL_HEAD_FILE, MULTILABEL_HEAD_FILE
from backend.model.thresholds import DEFAULT_THRESHOLD, MIN_VALIDATION_POSITIVES, choose
from backend.model.trainer import TrainResult


class MultiLabelHead:
    """Weights (labels x width), biases and per-label thresholds; independent sigmoids."""

    def __init__(self, weights: np.ndarray, biases: np.ndarray, thresholds: np.ndarray) -> None:
        self.weights = weights.astype(np.float32)
        self.biases = biases.astype(np.float32)
        self.thresholds = thresholds.astype(np.float64)  # exact: a float past a score

    def predict_proba(self, embeddings: np.ndarray) -> np.ndarray:
        """N x L probabilities, each label's on its own (rows need not sum to 1)."""
        logits = embeddings @ self.weights.T + self.biases
        return 0.5 * (1.0 + np.tanh(logits / 2))  # the sigmoid, without exp's overflow

    def predict(self, embeddings: np.ndarray) -> np.ndarray:
        """N x L booleans: whether each label's probability reaches its threshold."""
        return self.predict_proba(embeddings) >= self.thresholds

    def save(self, path: Path) -> None:
        with path.open("wb") as handle:  # np.savez would add ".npz" to a bare name
            np.savez(handle, weights=self.weights, biases=self.biases, thresholds=self.thresholds)

    @classmethod
    def load(cls, path: Path) -> MultiLabelHead:
        with np.load(path) as stored:
            return cls(stored["weights"], stored["biases"], stored["thresholds"])


def _fit_labels(
    embeddings: np.ndarray, y: np.ndarray, thresholds: np.ndarray, seed: int
) -> MultiLabelHead:
    """Each label as fit_head over two classes (absent, present): the same balanced
    regression at C=HEAD_C, and a label with one class among these rows gets weights 0 and
    a bias (±1e4) that always gives that class. The label's logit is the rows' difference."""
    weights = np.zeros((y.shape[1], embeddings.shape[1]), dtype=np.float32)
    biases = np.zeros(y.shape[1], dtype=np.float32)
    for k in range(y.shape[1]):
        pair, _ = fit_head(embeddings, y[:, k].tolist(), n_classes=2, seed=seed)
        weights[k] = pair.weights[1] - pair.weights[0]
        biases[k] = pair.biases[1] - pair.biases[0]
    return MultiLabelHead(weights, biases, thresholds)


def fit_multilabel_head(
    embeddings: np.ndarray,
    y: np.ndarray,
    *,
    validation: np.ndarray | list[int] | None = None,
    seed: int = 0,
    min_positives: int = MIN_VALIDATION_POSITIVES,
) -> tuple[MultiLabelHead, dict]:
    """The served head, fit on all rows of `y` (N x L of 0/1), with thresholds chosen on
    the `validation` rows (a boolean mask or row indices) by a head fit without them, and
    what was chosen for the version's metrics. A label keeps 0.5 where nothing can be
    chosen: no validation rows, fewer than `min_positives` with the label among them
    (MIN_VALIDATION_POSITIVES; none: F1 is undefined), or only one class among the
    training rows (its validation scores are constant)."""
    y = np.asarray(y)
    if y.ndim != 2 or len(y) != len(embeddings) or not np.isin(y, (0, 1)).all():
        raise ValueError("y must be N x L of 0/1, one row per embedding")
    y = y.astype(np.int64)
    held = np.zeros(len(y), dtype=bool)
    if validation is not None:
        rows = np.asarray(validation)
        if rows.dtype == bool:
            held |= rows
        else:
            held[rows.astype(np.int64)] = True
    if held.all():
        raise ValueError("every row is a validation row: nothing left to fit on")
    thresholds = np.full(y.shape[1], DEFAULT_THRESHOLD)
    validation_f1: list[float | None] = [None] * y.shape[1]
    if held.any():
        fitted = _fit_labels(embeddings[~held], y[~held], thresholds, seed)
        # A label with one class among the training rows has constant scores: kept at 0.5.
        learnable = [len(np.unique(y[~held, k])) == 2 for k in range(y.shape[1])]
        thresholds, validation_f1 = choose(
            fitted.predict_proba(embeddings[held]),
            y[held].astype(bool),
            learnable=learnable,
            min_positives=min_positives,
        )
    served = _fit_labels(embeddings, y, thresholds, seed)
    chosen = {
        "thresholds": [float(t) for t in thresholds],
        "validation_f1": validation_f1,
        "n_rows": len(y),
        "n_validation": int(held.sum()),
        "head_c": HEAD_C,
    }
    return served, chosen


def train_multilabel_head(
    texts: list[str],
    sets: list[frozenset[str]],
    *,
    label_names: list[str],
    store: EmbeddingStore,
    out_dir: Path,
    keys: list[str],
    seed: int = 0,
) -> TrainResult:
    """A multiple-choice question's version, as backend.model.head.train_head makes a
    single-choice one: posts split by role (training, validation, judge); the judged head
    fit without the judge posts (thresholds on the validation ones), the served head on
    every post (thresholds on the validation ones, by a head fit without them); both saved
    to out_dir. The judge sets are given as answer_key strings, so the judge compares
    whole sets."""
    started = time.monotonic()
    index = {name: j for j, name in enumerate(label_names)}
    y = np.zeros((len(sets), len(label_names)), dtype=np.int64)
    for i, labels in enumerate(sets):
        y[i, [index[name] for name in labels]] = 1
    fit_idx, val_idx, judge_idx = head_roles(keys)
    rows, embedded = store.rows(texts)
    place = {row: at for at, row in enumerate(fit_idx)}
    validation_in_fit = [place[i] for i in val_idx]
    judged, _ = fit_multilabel_head(
        rows[fit_idx], y[fit_idx], validation=validation_in_fit, seed=seed
    )
    judged.save(out_dir / JUDGE_MULTILABEL_HEAD_FILE)
    served, chosen = fit_multilabel_head(rows, y, validation=val_idx, seed=seed)
    served.save(out_dir / MULTILABEL_HEAD_FILE)
    picked = judged.predict(rows[judge_idx]) if judge_idx else np.zeros((0, len(label_names)))
    predicted = [
        answer_key(frozenset(name for name, on in zip(label_names, row, strict=True) if on))
        for row in picked
    ]
    metrics = {
        "kind": "multilabel-head",
        "n_train": len(fit_idx),
        "n_served_fit": len(texts),
        "n_validation": len(val_idx),
        "n_judge": len(judge_idx),
        "thresholds": dict(zip(label_names, chosen["thresholds"], strict=True)),
        "validation_f1": dict(zip(label_names, chosen["validation_f1"], strict=True)),
        "embedded_now": embedded,
        "train_seconds": round(time.monotonic() - started, 3),
        "head_c": HEAD_C,
    }
    return TrainResult(
        metrics,
        [],
        [],
        [],
        [texts[i] for i in judge_idx],
        [answer_key(sets[i]) or "" for i in judge_idx],
        [p or "" for p in predicted],
        trained_on=[keys[i] for i in fit_idx],
    )
