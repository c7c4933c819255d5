"""The fast first model: a linear head on frozen encoder embeddings.

Each post is the mean of BASE_MODEL's last hidden states over its tokens, L2-normalised,
and never fine-tuned; a class-balanced multinomial logistic regression maps that to the
labels. It fits in about a second on a few hundred labels and, below a few hundred, is
often as good as a full fine-tune, so a project gets a useful model from its first labels
while the fine-tune (backend.model.trainer) catches up.

A head version stores only heads and the encoder's name in its meta: each process loads
an encoder once and shares it between every head version of every project. It keeps two
heads, since a refit costs milliseconds: HEAD_FILE, fit on every label, serves;
JUDGE_HEAD_FILE, fit without the judge posts, is what the judge compares (the posts that
judge a version must be posts it never learned from). On 20-60 labels the served head is
1-5 points better for the judge posts it learned from.

The embeddings of a project's labeled posts are kept in one file per encoder
(Registry.embeddings_file): a run embeds only the posts no earlier run did, so with labels
arriving a few dozen at a time each run embeds a few dozen posts, not all of them.
"""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer

from backend.domain.roles import split_roles
from backend.files import atomic_open
from backend.model import runtime
from backend.model.registry import HEAD_FILE, JUDGE_HEAD_FILE
from backend.model.trainer import TrainConfig, TrainResult

# L2 strength of the head (sklearn's C), fixed beforehand rather than tuned on any data
# the learning-curve benchmark reports: normalised embeddings make one value fit most.
HEAD_C = 1.0


class Encoder:
    """Mean-pooled, L2-normalised sentence embeddings from a frozen transformer."""

    def __init__(self, name_or_path: str) -> None:
        self.device = runtime.device()
        self.tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        self.model = AutoModel.from_pretrained(name_or_path).to(self.device).eval()
        self._lock = threading.Lock()  # one forward pass at a time per process

    def embed(self, texts: list[str], *, max_length: int, batch_size: int = 32) -> np.ndarray:
        """One row per text, in input order."""
        width = int(self.model.config.hidden_size)
        out = np.zeros((len(texts), width), dtype=np.float32)
        texts = runtime.clip(texts, max_length)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        dtype = runtime.autocast_dtype(self.device)
        with (
            self._lock,
            torch.inference_mode(),
            torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None),
        ):
            for start in range(0, len(order), batch_size):
                batch = order[start : start + batch_size]
                encoded = self.tokenizer(
                    [texts[i] for i in batch],
                    truncation=True,
                    max_length=max_length,
                    padding=True,
                    return_tensors="pt",
                ).to(self.device)
                hidden = self.model(**encoded).last_hidden_state.float()
                mask = encoded["attention_mask"].unsqueeze(-1).float()
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
                pooled = torch.nn.functional.normalize(pooled, dim=-1)
                out[batch] = pooled.cpu().numpy()
        return out


_encoders: dict[str, Encoder] = {}
_encoders_lock = threading.Lock()


def encoder(name_or_path: str) -> Encoder:
    """The process's encoder for `name_or_path`, loaded on first use."""
    with _encoders_lock:
        found = _encoders.get(name_or_path)
        if found is None:
            found = _encoders[name_or_path] = Encoder(name_or_path)
        return found


def _text_key(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()[:16]


def embed_kept(
    texts: list[str], *, base_model: str, max_length: int, kept: Path | None
) -> tuple[np.ndarray, int]:
    """Rows for `texts`, and how many had to be embedded now: the rest come from the file
    `kept` (None: no file), which is then rewritten with exactly these texts' rows. The
    file belongs to one encoder and max_length (the caller names it so); a file that cannot
    be read is embedded over, not trusted."""
    keys = [_text_key(t) for t in texts]
    known: dict[bytes, np.ndarray] = {}
    if kept is not None and kept.is_file():
        try:
            with np.load(kept) as stored:
                known = dict(
                    zip((bytes(k) for k in stored["keys"]), stored["vectors"], strict=True)
                )
        except (OSError, ValueError, KeyError):
            known = {}
    missing = sorted({i for i, key in enumerate(keys) if key not in known})
    if missing:
        fresh = encoder(base_model).embed([texts[i] for i in missing], max_length=max_length)
        known.update(zip((keys[i] for i in missing), fresh, strict=True))
    rows = np.stack([known[key] for key in keys]) if keys else np.zeros((0, 0), np.float32)
    if kept is not None and (missing or len(known) != len(set(keys))):
        unique = list(dict.fromkeys(keys))
        with atomic_open(kept, "wb") as handle:  # np.savez would add ".npz" to a bare name
            np.savez(
                handle,
                keys=np.array(unique, dtype="S16"),
                vectors=np.stack([known[key] for key in unique]),
            )
    return rows.astype(np.float32, copy=False), len(missing)


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


def train_head(
    texts: list[str],
    labels: list[str],
    *,
    label_names: list[str],
    base_model: str,
    max_length: int,
    out_dir: Path,
    keys: list[str],
    seed: int = 0,
    embeddings_file: Path | None = None,
) -> TrainResult:
    """Embed every post (those in `embeddings_file` are read from it, see embed_kept); fit
    the judged head on the training and validation sides (it picks no epoch) and predict
    the judge posts with it; fit the served head on every post; save both to out_dir."""
    started = time.monotonic()
    label_id = {name: i for i, name in enumerate(label_names)}
    y = [label_id[label] for label in labels]
    train_idx, val_idx, judge_idx = split_roles(
        keys, validation_share=TrainConfig.validation_share, judge_share=TrainConfig.judge_share
    )
    fit_idx = sorted(train_idx + val_idx)
    embeddings, embedded = embed_kept(
        texts, base_model=base_model, max_length=max_length, kept=embeddings_file
    )
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
        "embedded_now": embedded,  # the rest came from the project's embeddings file
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
