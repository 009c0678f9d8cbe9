"""What the methods share: optimiser groups that let the text tower learn at its own rate."""

from __future__ import annotations

import torch
from torch import nn


def text_and_other_groups(method: nn.Module, text_tower: nn.Module, text_lr_scale: float) -> list[dict]:
    """Two optimiser groups: the text tower at ``text_lr_scale`` x the base learning rate, and
    every other parameter of ``method`` (image tower, heads, temperatures) at the base rate."""
    text = list(text_tower.parameters())
    text_ids = {id(p) for p in text}
    return [{"params": [p for p in method.parameters() if id(p) not in text_ids], "name": "image+heads"},
            {"params": text, "lr_scale": text_lr_scale, "name": "text"}]


def attention_heads(width: int) -> int:
    """The most heads (up to 8) that divide ``width``."""
    return next(h for h in (8, 4, 2, 1) if width % h == 0)


def contrast_identities(pids: torch.Tensor) -> torch.Tensor:
    """Identity labels for identity-aware contrast, with every unknown identity (a negative pid,
    -1 where a record has none) made an identity of its own: an image without an identity is
    the positive of its own caption only, never of every other unlabelled sample. The
    stand-ins differ across DDP ranks too, since the losses compare the gathered labels."""
    unknown = pids < 0
    if not unknown.any():
        return pids
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    rank = torch.distributed.get_rank() if distributed else 0
    positions = torch.arange(len(pids), device=pids.device) + rank * len(pids)
    # Below every real pid and every pid code in use (UNLABELLED_PID is -2).
    return torch.where(unknown, -1_000_000 - positions, pids)
