"""The classifier that serves predictions: load a registry version of any kind (a
fine-tuned model, a linear head on the shared frozen encoder, or a multiple-choice
question's head or fine-tune of a sigmoid a label), predict."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from backend.model import embeddings, head
from backend.model.multilabel_head import MultiLabelHead
from backend.model.registry import (
    HEAD_FILE,
    JUDGE_HEAD_FILE,
    JUDGE_MULTILABEL_HEAD_FILE,
    MULTILABEL_HEAD_FILE,
    kind_of,
    read_meta,
)
from backend.model.runtime import clip, device
from backend.model.trainer import THRESHOLDS_FILE


class Classifier:
    def __init__(self, folder: Path) -> None:
        meta = read_meta(folder)
        self.version: str = meta["version"]
        self.labels: list[str] = meta["labels"]
        self.meta = meta
        self.max_length: int = meta.get("max_length", 256)
        self.kind = kind_of(meta)
        self.device = device()
        self._lock = threading.Lock()  # one forward pass at a time per worker
        self.multiple = self.kind == "multilabel-head"  # a set of labels a post
        self.head: head.LinearHead | MultiLabelHead
        if self.kind in ("head", "multilabel-head"):
            # The encoder loads on the first post to embed: a job finds its posts in the
            # project's store and may never need it.
            self.base_model: str = meta["base_model"]
            kind, files = (
                (MultiLabelHead, (MULTILABEL_HEAD_FILE, JUDGE_MULTILABEL_HEAD_FILE))
                if self.multiple
                else (head.LinearHead, (HEAD_FILE, JUDGE_HEAD_FILE))
            )
            self.head = kind.load(folder / files[0])
            judged = folder / files[1]
            self.judged_head = kind.load(judged) if judged.is_file() else self.head
            return
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.model = AutoModelForSequenceClassification.from_pretrained(folder).to(self.device)
        self.model.eval()
        # A multiple-choice question's fine-tune: a sigmoid a label, and its thresholds.
        self.multiple = self.model.config.problem_type == "multi_label_classification"
        if self.multiple:
            self.thresholds = np.array(json.loads((folder / THRESHOLDS_FILE).read_text()))

    def predict_proba(
        self,
        texts: list[str],
        *,
        batch_size: int = 32,
        judging: bool = False,
        store: embeddings.EmbeddingStore | None = None,
    ) -> np.ndarray:
        """Class probabilities (a multiple-choice head's: each label's on its own), rows
        in input order, columns in `self.labels` order.
        `judging`: from the weights that never learned from a judge post (a head's judged
        twin; a fine-tune never trains on them). `store`: the project's store of this
        head's encoder (Predictor.store_for), where it finds the posts already embedded and
        keeps the others."""
        if self.kind != "fine-tune":
            if store is not None:
                rows, _ = store.rows(texts)
            else:
                rows = embeddings.encoder(self.base_model).embed(
                    texts, max_length=self.max_length, batch_size=batch_size
                )
            chosen = self.judged_head if judging else self.head
            return chosen.predict_proba(rows).astype(np.float32)
        out = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        texts = clip(texts, self.max_length)
        # Sorting by length keeps padding small inside each batch.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        with self._lock, torch.inference_mode():
            for start in range(0, len(order), batch_size):
                batch = order[start : start + batch_size]
                encoded = self.tokenizer(
                    [texts[i] for i in batch],
                    truncation=True,
                    max_length=self.max_length,
                    padding=True,
                    return_tensors="pt",
                ).to(self.device)
                logits = self.model(**encoded).logits.float()
                scores = torch.sigmoid(logits) if self.multiple else torch.softmax(logits, dim=-1)
                out[batch] = scores.cpu().numpy()
        return out

    def predict_sets(
        self,
        texts: list[str],
        *,
        judging: bool = False,
        store: embeddings.EmbeddingStore | None = None,
    ) -> tuple[list[frozenset[str]], np.ndarray]:
        """A multiple-choice head's sets (each label whose probability reaches its
        threshold) and the probabilities they come from."""
        assert self.multiple, "a multiple-choice question's version"
        probabilities = self.predict_proba(texts, judging=judging, store=store)
        if self.kind == "fine-tune":
            limits = self.thresholds
        else:
            chosen = self.judged_head if judging else self.head
            assert isinstance(chosen, MultiLabelHead)
            limits = chosen.thresholds
        picked = probabilities >= limits
        sets = [frozenset(np.array(self.labels)[row].tolist()) for row in picked]
        return sets, probabilities


class ServingModels:
    """Per-worker cache of loaded classifiers, following each registry's `serving` file."""

    def __init__(self) -> None:
        self._loaded: dict[Path, Classifier] = {}
        self._lock = threading.Lock()

    def get(self, folder: Path) -> Classifier:
        with self._lock:
            model = self._loaded.get(folder)
            if model is None:
                model = Classifier(folder)
                # Keep only the newest version of each project in memory.
                for old in [p for p in self._loaded if p.parent == folder.parent]:
                    del self._loaded[old]
                self._loaded[folder] = model
            return model
