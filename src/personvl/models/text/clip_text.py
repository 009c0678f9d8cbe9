"""CLIP's causal text transformer (open_clip's TextTransformer)."""

from __future__ import annotations

import torch
from open_clip.transformer import QuickGELU, TextTransformer
from torch import nn


class ClipTextTower(TextTransformer):
    """Token + position embedding, causal transformer, final norm, the end-of-text token's state
    projected. ``quick_gelu`` selects OpenAI's activation: weights trained with it need it.

    The causal mask already keeps every token from seeing the padding after it, and the
    embedding is read at the end-of-text token (the largest id), so the attention mask the
    other towers take is not needed here."""

    def __init__(self, context_length: int = 77, vocab_size: int = 49408, width: int = 512, heads: int = 8,
                 layers: int = 12, mlp_ratio: float = 4.0, output_dim: int = 512, quick_gelu: bool = False):
        super().__init__(context_length=context_length, vocab_size=vocab_size, width=width, heads=heads,
                         layers=layers, mlp_ratio=mlp_ratio, output_dim=output_dim,
                         act_layer=QuickGELU if quick_gelu else nn.GELU, output_tokens=True)
        self.max_positions = context_length

    def forward_tokens(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """Token states [B, L, width] after the final norm and the embedding [B, output_dim]."""
        pooled, tokens = super().forward(input_ids)
        return tokens, pooled

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return super().forward(input_ids)[0]
