"""UniPT: image-text contrast (symmetric InfoNCE, learnable temperature) + whole-word masked
language modelling (15% of the words, BERT's 80/10/10 split), optionally conditioned on the
image through cross-attention over its tokens."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from personvl.methods.base import attention_heads, contrast_identities, text_and_other_groups
from personvl.methods.text_masking import wordpiece_words
from personvl.models import PersonEncoder, TokenBatch
from personvl.models.heads import MaskedTokenPredictor
from personvl.objectives import infonce_loss, masked_token_loss, whole_word_mask


@dataclass
class UniPTConfig:
    contrast_weight: float = 1.0
    mlm_weight: float = 1.0
    mlm_ratio: float = 0.15
    # The caption's words predict their masked words with the image's tokens (the ViT's patch
    # tokens, a ResNet's last feature map) and its embedding to attend to.
    mlm_image_conditioned: bool = False
    identity_aware: bool = False       # same-identity pairs are positives too
    text_lr_scale: float = 1.0
    seed: int = 0


class UniPTMethod(nn.Module):
    def __init__(self, encoder: PersonEncoder, config: UniPTConfig):
        super().__init__()
        self.encoder = encoder
        self.config = config
        if encoder.logit_scale is None:
            self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        conditioned = config.mlm_image_conditioned
        self.mlm_head = MaskedTokenPredictor(
            text_dim=encoder.text.width, vocab_size=encoder.tokenizer.vocab_size,
            image_dim=encoder.embed_dim if conditioned else None,
            map_channels=encoder.visual.pyramid_channels[-1] if conditioned else None,
            heads=attention_heads(encoder.text.width))
        if config.mlm_weight:
            # A masked word is replaced by any ordinary token 10% of the time, never by a special one.
            tokenizer = encoder.tokenizer
            vocabulary = torch.arange(tokenizer.vocab_size)
            special = torch.tensor(tokenizer.special_token_ids + [tokenizer.mask_token_id])
            self.replacement_ids = vocabulary[~torch.isin(vocabulary, special)]   # masking runs on the CPU

    def _scale(self) -> torch.Tensor:
        scale = self.encoder.logit_scale if self.encoder.logit_scale is not None else self.logit_scale
        return scale.exp().clamp(max=100.0)

    def forward(self, batch: dict, progress: float, step: int = 0) -> dict[str, torch.Tensor]:
        cfg = self.config
        images = batch["image"]
        tokens = TokenBatch(batch["input_ids"], batch["attention_mask"])
        last_map = None
        if cfg.mlm_weight and cfg.mlm_image_conditioned:
            features = self.encoder.image_features(images)
            image_embedding, last_map = features.embedding, features.maps[-1]
        else:
            image_embedding = self.encoder.visual(images)
        losses: dict[str, torch.Tensor] = {}
        total = images.new_zeros(())
        if cfg.contrast_weight:
            text_embedding = self.encoder.text(tokens.input_ids, tokens.attention_mask)
            pids = contrast_identities(batch["pid"]) if cfg.identity_aware else None
            losses["contrast"] = infonce_loss(image_embedding, text_embedding, self._scale(), pids)
            total = total + cfg.contrast_weight * losses["contrast"]
        if cfg.mlm_weight:
            hf = self.encoder.tokenizer.hf
            word_ids, _ = wordpiece_words(hf, tokens.input_ids)
            generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
            masked_ids, labels = whole_word_mask(tokens.input_ids.cpu(), word_ids, cfg.mlm_ratio, hf.mask_token_id,
                                                 generator, replacement_ids=self.replacement_ids)
            states = self.encoder.text_features(TokenBatch(masked_ids.to(images.device), tokens.attention_mask)).tokens
            logits = self.mlm_head(states, image_embedding if cfg.mlm_image_conditioned else None, last_map)
            losses["mlm"] = masked_token_loss(logits, labels.to(images.device))
            total = total + cfg.mlm_weight * losses["mlm"]
        losses["loss"] = total
        return losses

    def parameter_groups(self) -> list[dict]:
        return text_and_other_groups(self, self.encoder.text, self.config.text_lr_scale)
