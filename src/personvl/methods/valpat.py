"""VAL-PAT: self-supervised contrast between two augmented views (momentum encoder + queue),
image-text contrast, and multi-attribute classification."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn

from personvl.methods.base import text_and_other_groups
from personvl.models import PersonEncoder
from personvl.objectives import (
    FeatureQueue, attribute_bce_loss, infonce_loss, momentum_contrast_loss, momentum_update,
)


@dataclass
class VALPATConfig:
    ssl_weight: float = 1.0
    contrast_weight: float = 1.0
    attribute_weight: float = 1.0
    queue_size: int = 4096
    momentum: float = 0.999
    ssl_temperature: float = 0.2
    positive_ratio_weighting: bool = True
    text_lr_scale: float = 1.0


def augment_views(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A second view on tensors: random horizontal flip, random crop-and-resize (scale 0.6-1),
    and brightness/contrast jitter, drawn per image from ``generator``."""
    batch, _, height, width = images.shape
    out = torch.empty_like(images)
    for i in range(batch):
        image = images[i]
        if torch.rand((), generator=generator) < 0.5:
            image = image.flip(-1)
        scale = 0.6 + 0.4 * torch.rand((), generator=generator).item()
        h, w = max(1, int(height * scale)), max(1, int(width * scale))
        top = int(torch.randint(0, height - h + 1, (), generator=generator))
        left = int(torch.randint(0, width - w + 1, (), generator=generator))
        crop = image[:, top:top + h, left:left + w].unsqueeze(0)
        image = nn.functional.interpolate(crop, size=(height, width), mode="bilinear", align_corners=False)[0]
        brightness = 0.8 + 0.4 * torch.rand((), generator=generator).item()
        contrast = 0.8 + 0.4 * torch.rand((), generator=generator).item()
        mean = image.mean()
        out[i] = (image - mean) * contrast + mean * brightness
    return out


class VALPATMethod(nn.Module):
    def __init__(self, encoder: PersonEncoder, config: VALPATConfig, attribute_count: int,
                 attribute_positive_ratio: torch.Tensor | None = None):
        super().__init__()
        self.encoder = encoder
        self.config = config
        dim = encoder.embed_dim
        self.ssl_projection = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(inplace=True), nn.Linear(dim, dim))
        self.momentum_visual = copy.deepcopy(encoder.visual).requires_grad_(False)
        self.momentum_projection = copy.deepcopy(self.ssl_projection).requires_grad_(False)
        self.queue = FeatureQueue(config.queue_size, dim)
        self.attribute_head = nn.Linear(dim, max(1, attribute_count))
        if encoder.logit_scale is None:
            self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        ratio = attribute_positive_ratio if attribute_positive_ratio is not None else torch.full((max(1, attribute_count),), 0.5)
        self.register_buffer("positive_ratio", ratio.float())

    def _scale(self) -> torch.Tensor:
        scale = self.encoder.logit_scale if self.encoder.logit_scale is not None else self.logit_scale
        return scale.exp().clamp(max=100.0)

    def forward(self, batch: dict, progress: float, step: int = 0) -> dict[str, torch.Tensor]:
        cfg = self.config
        images = batch["image"]
        embedding = self.encoder.visual(images)
        losses: dict[str, torch.Tensor] = {}
        total = images.new_zeros(())
        if cfg.ssl_weight:
            generator = torch.Generator().manual_seed(1_000_003 + step)
            view = augment_views(images, generator)
            momentum_update(self.encoder.visual, self.momentum_visual, cfg.momentum)
            momentum_update(self.ssl_projection, self.momentum_projection, cfg.momentum)
            query = self.ssl_projection(embedding)
            with torch.no_grad():
                key = self.momentum_projection(self.momentum_visual(view))
            # a copy: the queue is updated in place below, before the backward pass
            losses["ssl"] = momentum_contrast_loss(query, key, self.queue.keys.clone(), cfg.ssl_temperature)
            self.queue.push(key)
            total = total + cfg.ssl_weight * losses["ssl"]
        if cfg.contrast_weight:
            text_embedding = self.encoder.text(batch["input_ids"], batch["attention_mask"])
            losses["contrast"] = infonce_loss(embedding, text_embedding, self._scale())
            total = total + cfg.contrast_weight * losses["contrast"]
        if cfg.attribute_weight and "attributes" in batch:
            ratio = self.positive_ratio if cfg.positive_ratio_weighting else None
            losses["attributes"] = attribute_bce_loss(self.attribute_head(embedding), batch["attributes"], ratio)
            total = total + cfg.attribute_weight * losses["attributes"]
        losses["loss"] = total
        return losses

    def parameter_groups(self) -> list[dict]:
        return text_and_other_groups(self, self.encoder.text, self.config.text_lr_scale)
