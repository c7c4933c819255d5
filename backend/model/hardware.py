"""Where training and inference run: the GPU when there is one, in bf16 (fp16 where the
GPU lacks bf16) autocast; the CPU in fp32 otherwise."""

from __future__ import annotations

import torch


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def autocast_dtype(on: torch.device) -> torch.dtype | None:
    """The autocast dtype for `on`, or None for full precision (the CPU)."""
    if on.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
