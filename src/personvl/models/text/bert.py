"""BERT text tower (transformers' BertModel) with the poolings the person methods use."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import BertConfig, BertModel

POOLINGS = ("pooler", "cls", "max")

# bert-base-uncased, the text encoder of PLIP, UniPT and VAL-PAT.
BERT_BASE = dict(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                 intermediate_size=3072, hidden_act="gelu", max_position_embeddings=512,
                 type_vocab_size=2, layer_norm_eps=1e-12)

# Fields that decide what weights mean; a checkpoint whose config differs in any is another model.
ARCHITECTURE_FIELDS = tuple(BERT_BASE)


class BertTower(nn.Module):
    """``pooling``: ``pooler`` is BERT's tanh(dense(h_CLS)) (PLIP), ``cls`` the [CLS] state,
    ``max`` the maximum over the non-padding token states (UniPT). ``output_dim`` adds a linear
    projection; None keeps the pooled width. The embeddings and the first ``frozen_layers``
    layers are not trained (PLIP trains only layers 8-11 and the pooler)."""

    def __init__(self, bert: dict[str, Any] | None = None, pooling: str = "pooler", output_dim: int | None = None,
                 frozen_layers: int = 0):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        settings = dict(BERT_BASE, **(bert or {}))
        self.bert_settings = settings
        self.bert = BertModel(BertConfig(**settings), add_pooling_layer=pooling == "pooler")
        self.pooling = pooling
        width = settings["hidden_size"]
        self.projection = nn.Linear(width, output_dim) if output_dim else None
        self.output_dim = output_dim or width
        self.width = width
        self.vocab_size = settings["vocab_size"]
        self.max_positions = settings["max_position_embeddings"]
        layers = settings["num_hidden_layers"]
        if not 0 <= frozen_layers <= layers:
            raise ValueError(f"frozen_layers must be between 0 and {layers}, got {frozen_layers}")
        self.frozen_layers = frozen_layers
        if frozen_layers:
            for module in (self.bert.embeddings, *self.bert.encoder.layer[:frozen_layers]):
                module.requires_grad_(False)

    def forward_tokens(self, input_ids: torch.Tensor, attention_mask: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """Token states [B, L, width] and the embedding [B, output_dim].

        Columns that are padding in every row are not run: captions padded to a tokenizer's
        ``max_length`` are mostly padding, and a padding position changes no other position's
        state. Their states come back as zeros, so the shape is still [B, L, width]."""
        full_length = input_ids.shape[1]
        used = attention_mask.any(dim=0).nonzero()
        length = int(used.max()) + 1 if len(used) else 1
        input_ids, attention_mask = input_ids[:, :length], attention_mask[:, :length]
        out = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                        token_type_ids=torch.zeros_like(input_ids))
        states = out.last_hidden_state
        if self.pooling == "pooler":
            pooled = out.pooler_output
        elif self.pooling == "cls":
            pooled = states[:, 0]
        else:
            padding = (attention_mask == 0).unsqueeze(-1)
            pooled = states.masked_fill(padding, torch.finfo(states.dtype).min).max(dim=1).values
        if self.projection is not None:
            pooled = self.projection(pooled)
        if length < full_length:
            states = nn.functional.pad(states, (0, 0, 0, full_length - length))
        return states, pooled

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.forward_tokens(input_ids, attention_mask)[1]
