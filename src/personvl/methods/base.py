"""What the methods share: optimiser groups that let the text tower learn at its own rate."""

from __future__ import annotations

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
