"""Predicting masked words from the caption's token states and the image (PLIP's IAP, and
image-conditioned MLM)."""

from __future__ import annotations

import torch
from torch import nn


class MaskedTokenPredictor(nn.Module):
    """Token states attend to the image (its global embedding and, when given, the tokens of
    its last feature map) through cross-attention; a vocabulary head predicts every position.
    Without an image (``image_dim=None``) it is a plain MLM head."""

    def __init__(self, text_dim: int, vocab_size: int, image_dim: int | None = None,
                 map_channels: int | None = None, heads: int = 8):
        super().__init__()
        self.conditioned = image_dim is not None
        if self.conditioned:
            self.image_proj = nn.Linear(image_dim, text_dim)
            self.map_proj = nn.Linear(map_channels, text_dim) if map_channels else None
            self.cross_attention = nn.MultiheadAttention(text_dim, heads, batch_first=True)
            self.norm = nn.LayerNorm(text_dim)
        self.transform = nn.Sequential(nn.Linear(text_dim, text_dim), nn.GELU(), nn.LayerNorm(text_dim))
        self.vocabulary = nn.Linear(text_dim, vocab_size)

    def forward(self, token_states: torch.Tensor, image_embedding: torch.Tensor | None = None,
                last_map: torch.Tensor | None = None) -> torch.Tensor:
        """[B, T, D] token states -> [B, T, vocab] logits."""
        states = token_states
        if self.conditioned:
            if image_embedding is None:
                raise ValueError("this predictor is image-conditioned: pass image_embedding")
            keys = [self.image_proj(image_embedding).unsqueeze(1)]
            if self.map_proj is not None and last_map is not None:
                keys.append(self.map_proj(last_map.flatten(2).transpose(1, 2)))
            memory = torch.cat(keys, dim=1)
            attended, _ = self.cross_attention(states, memory, memory, need_weights=False)
            states = self.norm(states + attended)
        return self.vocabulary(self.transform(states))
