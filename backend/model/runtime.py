"""Where and on what training and inference run: the GPU when there is one, in bf16
(fp16 where the GPU lacks bf16) autocast, the CPU in fp32 otherwise; and texts clipped
before the tokenizer sees them."""

from __future__ import annotations

import torch


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def autocast_dtype(on: torch.device) -> torch.dtype | None:
    """The autocast dtype for `on`, or None for full precision (the CPU)."""
    if on.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


# WordPiece averages about 4-5 characters a token: 16 per token keeps every token the
# model can use while a hostile 50 MB post costs the tokenizer nothing.
CHARS_PER_TOKEN_BOUND = 16


def clip(texts: list[str], max_length: int) -> list[str]:
    """Each text cut to what `max_length` tokens can hold, before tokenizing."""
    limit = max_length * CHARS_PER_TOKEN_BOUND
    return [text[:limit] for text in texts]
