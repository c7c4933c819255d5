"""The fast first model: a linear head on frozen encoder embeddings.

Each post is the mean of BASE_MODEL's last hidden states over its tokens, L2-normalised,
and never fine-tuned; a class-balanced multinomial logistic regression maps that to the
labels. It fits in about a second on a few hundred labels and, below a few hundred, is
often as good as a full fine-tune, so a project gets a useful model from its first labels
while the fine-tune (backend.model.trainer) catches up.

A head version stores only heads and the encoder's name in its meta: each process loads
an encoder once (backend.model.embeddings) and shares it between every head version of
every project. It keeps two
heads, since a refit costs milliseconds: HEAD_FILE, fit on every label, serves;
JUDGE_HEAD_FILE, fit without the judge posts, is what the judge compares (the posts that
judge a version must be posts it never learned from). On 20-60 labels the served head is
1-5 points better for the judge posts it learned from.

A run reads its posts' embeddings from the project's store (Registry.embeddings), which
pre-labeling and earlier runs filled: it embeds only the posts no job saw before.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from backend.domain.roles import split_roles
from backend.model import runtime
from backend.model.embeddings import EmbeddingStore
from backend.model.registry import HEAD_FILE, JUDGE_HEAD_FILE
from backend.model.trainer import TrainConfig, TrainResult

# L2 strength of the head (sklearn's C), fixed beforehand rather than tuned on any data
# the learning-curve benchmark reports: normalised embeddings make one value fit most.
HEAD_C = 1.0


class LinearHead:
    """Weights (classes x width) and biases over embeddings; softmax probabilities."""

    def __init__(self, weights: np.ndarray, biases: np.ndarray) -> None:
        self.weights = weights.astype(np.float32)
        self.biases = biases.astype(np.float32)

    def predict_proba(self, embeddings: np.ndarray) -> np.ndarray:
        logits = embeddings @ self.weights.T + self.biases
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return exp / exp.sum(axis=1, keepdims=True)

    def save(self, path: Path) -> None:
        with path.open("wb") as handle:  # np.savez would add ".npz" to a bare name
            np.savez(handle, weights=self.weights, biases=self.biases)

    @classmethod
    def load(cls, path: Path) -> LinearHead:
        with np.load(path) as stored:
            return cls(stored["weights"], stored["biases"])


def fit_head(
    embeddings: np.ndarray, y: list[int], *, n_classes: int, seed: int = 0
) -> tuple[LinearHead, float]:
    """A class-balanced logistic regression over all `n_classes` (a label with no training
    post gets a bias that keeps it from ever winning), and the seconds the fit took."""
    from sklearn.linear_model import LogisticRegression

    started = time.monotonic()
    present = sorted(set(y))
    weights = np.zeros((n_classes, embeddings.shape[1]), dtype=np.float32)
    biases = np.full(n_classes, -1e4, dtype=np.float32)
    if len(present) == 1:
        biases[present[0]] = 0.0
    else:
        model = LogisticRegression(
            C=HEAD_C, class_weight="balanced", max_iter=2000, random_state=seed
        )
        model.fit(embeddings, y)
        coef, intercept = model.coef_, model.intercept_
        if len(present) == 2:  # sklearn keeps one row for two classes: the second's
            coef = np.vstack([-coef[0] / 2, coef[0] / 2])
            intercept = np.array([-intercept[0] / 2, intercept[0] / 2])
        for row, label in enumerate(model.classes_):
            weights[label], biases[label] = coef[row], intercept[row]
    return LinearHead(weights, biases), time.monotonic() - started


def head_roles(keys: list[str]) -> tuple[list[int], list[int], list[int]]:
    """The posts a head's judged fit learns from (training and validation sides, in
    order), the validation posts and the judge posts, by the trainer's role split."""
    train_idx, val_idx, judge_idx = split_roles(
        keys, validation_share=TrainConfig.validation_share, judge_share=TrainConfig.judge_share
    )
    return sorted(train_idx + val_idx), val_idx, judge_idx


def train_head(
    texts: list[str],
    labels: list[str],
    *,
    label_names: list[str],
    store: EmbeddingStore,
    out_dir: Path,
    keys: list[str],
    seed: int = 0,
) -> TrainResult:
    """Every post's embedding from `store` (embedding those it lacks); fit
    the judged head on the training and validation sides (it picks no epoch) and predict
    the judge posts with it; fit the served head on every post; save both to out_dir."""
    started = time.monotonic()
    label_id = {name: i for i, name in enumerate(label_names)}
    y = [label_id[label] for label in labels]
    fit_idx, _, judge_idx = head_roles(keys)
    embeddings, embedded = store.rows(texts)
    embed_seconds = time.monotonic() - started
    fitted, fit_seconds = fit_head(
        embeddings[fit_idx], [y[i] for i in fit_idx], n_classes=len(label_names), seed=seed
    )
    fitted.save(out_dir / JUDGE_HEAD_FILE)
    served, _ = fit_head(embeddings, y, n_classes=len(label_names), seed=seed)
    served.save(out_dir / HEAD_FILE)

    def predicted(rows: list[int]) -> list[str]:
        if not rows:
            return []
        return [label_names[i] for i in fitted.predict_proba(embeddings[rows]).argmax(1)]

    metrics = {
        "kind": "head",
        "n_train": len(fit_idx),
        "n_served_fit": len(texts),
        "n_validation": 0,
        "n_judge": len(judge_idx),
        "train_seconds": round(fit_seconds, 3),
        "embed_seconds": round(embed_seconds, 3),
        "embedded_now": embedded,  # the rest came from the project's store
        "total_seconds": round(time.monotonic() - started, 3),
        "device": str(runtime.device()),
        "head_c": HEAD_C,
    }
    return TrainResult(
        metrics,
        [],
        [],
        [],
        [texts[i] for i in judge_idx],
        [labels[i] for i in judge_idx],
        predicted(judge_idx),
        trained_on=[keys[i] for i in fit_idx],
    )
