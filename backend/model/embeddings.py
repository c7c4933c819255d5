"""Post embeddings from a frozen encoder, and a project's store of them.

A head version (backend.model.head) sees a post only through its embedding: the mean of
BASE_MODEL's last hidden states over its tokens, L2-normalised. Embedding is the slow part
of a head (a fit takes milliseconds), so a project keeps every embedding its jobs made, one
store per encoder and max_length (Registry.embeddings): pre-labeling fills it as the LLM's
answers are pushed, so the first "Start Training" embeds nothing, and each re-score under a
head embeds only the posts no job saw before.

A store is a folder of shards, each written once (atomically) with the rows one call
added; past MAX_SHARDS they are merged into one. Writers in other processes only add
shards, so a lost race costs a post embedded twice, never a wrong row: a post's key is a
hash of its text, and a row depends on nothing else.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import uuid
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer

from backend.files import atomic_open
from backend.model import runtime

MAX_SHARDS = 32  # merged into one past this: a read opens a bounded number of files
SHARD_SUFFIX = ".npz"


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


KEY_BYTES = 16


def text_key(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()[:KEY_BYTES]


def _read_shard(path: Path) -> dict[bytes, np.ndarray]:
    """A shard's rows; nothing for one that vanished (merged away) or cannot be read (it is
    embedded over, not trusted)."""
    try:
        with np.load(path) as stored:
            keys = [row.tobytes() for row in stored["keys"]]
            return dict(zip(keys, stored["vectors"], strict=True))
    except (OSError, ValueError, KeyError):
        return {}


def _write_shard(folder: Path, rows: dict[bytes, np.ndarray]) -> Path:
    path = folder / f"{uuid.uuid4().hex}{SHARD_SUFFIX}"
    with atomic_open(path, "wb") as handle:  # np.savez would add ".npz" to a bare name
        np.savez(
            handle,
            # Raw bytes, not numpy's "S16": that strips a key's trailing zero bytes.
            keys=np.frombuffer(b"".join(rows), dtype=np.uint8).reshape(len(rows), KEY_BYTES),
            vectors=np.stack(list(rows.values())),  # float32, as Encoder.embed makes them
        )
    return path


class EmbeddingStore:
    """A project's embeddings by one encoder and max_length, in `folder`. Kept in memory
    once read; shards other processes add are read on the next call."""

    def __init__(self, folder: Path, base_model: str, max_length: int) -> None:
        self.folder = folder
        self.base_model = base_model
        self.max_length = max_length
        self._rows: dict[bytes, np.ndarray] = {}
        self._read: set[str] = set()  # shard names already in _rows
        self._lock = threading.Lock()

    def rows(self, texts: list[str]) -> tuple[np.ndarray, int]:
        """One row per text, in input order, and how many had to be embedded now (the rest
        came from the store, which keeps the new ones)."""
        keys = [text_key(t) for t in texts]
        with self._lock:
            self._read_new_shards()
            missing = {key: i for i, key in enumerate(keys) if key not in self._rows}
            if missing:
                fresh = encoder(self.base_model).embed(
                    [texts[i] for i in missing.values()], max_length=self.max_length
                )
                added = dict(zip(missing, fresh, strict=True))
                self._rows.update(added)
                self._read.add(_write_shard(self.folder, added).name)
                self._merge_if_many()
            if not keys:
                return np.zeros((0, 0), np.float32), 0
            return np.stack([self._rows[key] for key in keys]), len(missing)  # float32 rows

    def __len__(self) -> int:
        with self._lock:
            self._read_new_shards()
            return len(self._rows)

    def _shards(self) -> list[Path]:
        if not self.folder.is_dir():
            return []
        return sorted(p for p in self.folder.iterdir() if p.name.endswith(SHARD_SUFFIX))

    def _read_new_shards(self) -> None:
        for path in self._shards():
            if path.name not in self._read:
                self._rows.update(_read_shard(path))
                self._read.add(path.name)

    def _merge_if_many(self) -> None:
        shards = self._shards()
        if len(shards) <= MAX_SHARDS:
            return
        merged = [p for p in shards if p.name in self._read]  # a newer one waits its turn
        self._read.add(_write_shard(self.folder, self._rows).name)
        for path in merged:  # every row of these is in the merged shard
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)


# A worker serves many projects: the stores used last stay in memory, the others are read
# from disk again when next used.
STORES_IN_MEMORY = 4
_stores: OrderedDict[Path, EmbeddingStore] = OrderedDict()
_stores_lock = threading.Lock()


def store(folder: Path, base_model: str, max_length: int) -> EmbeddingStore:
    """The process's store kept in `folder` (one per folder, so its rows are read once)."""
    with _stores_lock:
        found = _stores.get(folder)
        if found is None:
            found = _stores[folder] = EmbeddingStore(folder, base_model, max_length)
            while len(_stores) > STORES_IN_MEMORY:
                _stores.popitem(last=False)
        _stores.move_to_end(folder)
        return found
