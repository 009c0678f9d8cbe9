"""Text towers. Each maps token ids and an attention mask to ``forward -> [B, output_dim]``
(not normalised) and ``forward_tokens -> (token states, embedding)``, and names its
``vocab_size`` and ``max_positions``."""

from __future__ import annotations

from typing import Any

from torch import nn

from personvl.models.text.bert import BERT_BASE, BertTower
from personvl.models.text.clip_text import ClipTextTower

TEXT_TOWERS: dict[str, type[nn.Module]] = {
    "bert": BertTower,
    "clip_text": ClipTextTower,
}


def build_text_tower(config: dict[str, Any]) -> nn.Module:
    """Instantiate the tower a config names by ``type``; the other keys are its arguments."""
    kwargs = dict(config)
    kind = kwargs.pop("type", None)
    if kind not in TEXT_TOWERS:
        raise ValueError(f"unknown text tower type {kind!r} (known: {', '.join(TEXT_TOWERS)})")
    return TEXT_TOWERS[kind](**kwargs)


__all__ = ["BERT_BASE", "BertTower", "ClipTextTower", "TEXT_TOWERS", "build_text_tower"]
