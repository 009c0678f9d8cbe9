"""Predicting masked words from the caption's token states and the image: PLIP's IAP and
UniPT's image-conditioned MLM (:class:`MaskedTokenPredictor`, one cross-attention block) and
IRRA's implicit relation reasoning (:class:`CrossModalTokenPredictor`, a multi-layer
cross-modal transformer)."""

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


def _default_heads(width: int) -> int:
    """IRRA's 64-wide attention heads; for widths that are not a multiple of 64, the most heads
    up to ``width // 64`` that divide the width (at least one)."""
    return next(h for h in range(max(1, width // 64), 0, -1) if width % h == 0)


class CrossModalTokenPredictor(nn.Module):
    """IRRA's cross-modal masked-token head (text-to-image fine-tuning's IRR).

    The masked caption's token states and the image tokens (the global embedding and, when
    given, every position of the last feature map) are brought to a common ``width``; each
    text token then queries the image tokens through one cross-attention (layer norms on both
    sides, no residual from the text, as in IRRA, so what reaches the output is read from the
    image); ``layers`` pre-norm transformer blocks let the fused text tokens attend to each
    other (padding excluded when ``attention_mask`` is given); a final layer norm and the MLM
    head (dense, GELU, layer norm, vocabulary projection) predict every position.

    Without an image (``image_dim=None``) there is no cross-attention: the blocks run over the
    text tokens alone. ``heads`` defaults to IRRA's ``width // 64``.
    """

    def __init__(self, text_dim: int, vocab_size: int, image_dim: int | None = None,
                 map_channels: int | None = None, heads: int | None = None, layers: int = 4,
                 width: int | None = None):
        super().__init__()
        if layers < 0:
            raise ValueError(f"layers must be 0 or more, got {layers}")
        width = width or text_dim
        heads = heads or _default_heads(width)
        self.conditioned = image_dim is not None
        self.text_proj = nn.Linear(text_dim, width) if width != text_dim else nn.Identity()
        if self.conditioned:
            self.image_proj = nn.Linear(image_dim, width)
            self.map_proj = nn.Linear(map_channels, width) if map_channels else None
            self.text_norm = nn.LayerNorm(width)
            self.image_norm = nn.LayerNorm(width)
            self.cross_attention = nn.MultiheadAttention(width, heads, batch_first=True)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(width, heads, dim_feedforward=4 * width, dropout=0.0,
                                       activation="gelu", batch_first=True, norm_first=True)
            for _ in range(layers))
        self.norm = nn.LayerNorm(width)
        self.transform = nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.LayerNorm(width))
        self.vocabulary = nn.Linear(width, vocab_size)
        self._init_like_irra(width, layers)

    def _init_like_irra(self, width: int, layers: int) -> None:
        # IRRA's (and CLIP's) scheme: attention inputs at width^-0.5, every projection back into
        # the residual stream shrunk by the depth so the stream's variance does not grow with it.
        # A head without blocks is scaled as one with a single block.
        attention_std = width ** -0.5
        residual_std = attention_std * (2 * max(layers, 1)) ** -0.5
        hidden_std = (2 * width) ** -0.5
        attentions = [block.self_attn for block in self.blocks]
        if self.conditioned:
            attentions.append(self.cross_attention)
        for attention in attentions:
            nn.init.normal_(attention.in_proj_weight, std=attention_std)
            nn.init.normal_(attention.out_proj.weight, std=residual_std)
        for block in self.blocks:
            nn.init.normal_(block.linear1.weight, std=hidden_std)
            nn.init.normal_(block.linear2.weight, std=residual_std)
        nn.init.normal_(self.transform[0].weight, std=hidden_std)
        nn.init.normal_(self.vocabulary.weight, std=residual_std)

    def forward(self, token_states: torch.Tensor, image_embedding: torch.Tensor | None = None,
                last_map: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """[B, T, text_dim] token states, [B, image_dim] embedding, [B, C, H, W] last map and
        [B, T] attention mask (1 for tokens, 0 for padding) -> [B, T, vocab] logits."""
        states = self.text_proj(token_states)
        if self.conditioned:
            if image_embedding is None:
                raise ValueError("this predictor is image-conditioned: pass image_embedding")
            image_tokens = [self.image_proj(image_embedding).unsqueeze(1)]
            if self.map_proj is not None and last_map is not None:
                image_tokens.append(self.map_proj(last_map.flatten(2).transpose(1, 2)))
            image = self.image_norm(torch.cat(image_tokens, dim=1))
            states, _ = self.cross_attention(self.text_norm(states), image, image, need_weights=False)
        padding = None if attention_mask is None else attention_mask == 0
        for block in self.blocks:
            states = block(states, src_key_padding_mask=padding)
        return self.vocabulary(self.transform(self.norm(states)))
