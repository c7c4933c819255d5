"""The fine-tuned classifier that serves predictions: load a registry version, predict."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from backend.model.registry import read_meta
from backend.model.runtime import clip, device


class Classifier:
    def __init__(self, folder: Path) -> None:
        meta = read_meta(folder)
        self.version: str = meta["version"]
        self.labels: list[str] = meta["labels"]
        self.meta = meta
        self.max_length: int = meta.get("max_length", 256)
        self.device = device()
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.model = AutoModelForSequenceClassification.from_pretrained(folder).to(self.device)
        self.model.eval()
        self._lock = threading.Lock()  # one forward pass at a time per worker

    def predict_proba(self, texts: list[str], *, batch_size: int = 32) -> np.ndarray:
        """Class probabilities, rows in input order, columns in `self.labels` order."""
        out = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        texts = clip(texts, self.max_length)
        # Sorting by length keeps padding small inside each batch.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        with self._lock, torch.inference_mode():
            for start in range(0, len(order), batch_size):
                batch = order[start:start + batch_size]
                encoded = self.tokenizer([texts[i] for i in batch], truncation=True,
                                         max_length=self.max_length, padding=True,
                                         return_tensors="pt").to(self.device)
                logits = self.model(**encoded).logits.float()
                out[batch] = torch.softmax(logits, dim=-1).cpu().numpy()
        return out


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
