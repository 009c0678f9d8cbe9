"""VAL-PAT: self-supervised contrast between two augmented views (momentum encoder + queue),
image-text contrast, and multi-attribute classification.

The two views come from the data loader (``data.transform: moco``, MoCo v2's augmentations
sized for person crops: ``personvl.data.transforms``): the batch's ``image`` and
``second_view``. The self-supervised loss is symmetric, each view's query against the other
view's momentum key (the mean of the two directions), and the keys of both views enter the
queue. The image-text contrast is identity-aware: another image of the same person is not a
negative of a caption."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn

from personvl.errors import UsageError
from personvl.methods.base import contrast_identities, text_and_other_groups
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
            if "second_view" not in batch:
                raise UsageError("VAL-PAT's self-supervised contrast needs two augmented views of each image: "
                                 "set data.transform: moco (or valpat.ssl_weight: 0)")
            second = batch["second_view"]
            momentum_update(self.encoder.visual, self.momentum_visual, cfg.momentum)
            momentum_update(self.ssl_projection, self.momentum_projection, cfg.momentum)
            first_query = self.ssl_projection(embedding)
            second_query = self.ssl_projection(self.encoder.visual(second))
            with torch.no_grad():
                first_key = self.momentum_projection(self.momentum_visual(images))
                second_key = self.momentum_projection(self.momentum_visual(second))
            # a copy: the queue is updated in place below, before the backward pass
            queue = self.queue.keys.clone()
            losses["ssl"] = (momentum_contrast_loss(first_query, second_key, queue, cfg.ssl_temperature)
                             + momentum_contrast_loss(second_query, first_key, queue, cfg.ssl_temperature)) / 2
            self.queue.push(torch.cat([first_key, second_key]))
            total = total + cfg.ssl_weight * losses["ssl"]
        if cfg.contrast_weight:
            text_embedding = self.encoder.text(batch["input_ids"], batch["attention_mask"])
            losses["contrast"] = infonce_loss(embedding, text_embedding, self._scale(),
                                              contrast_identities(batch["pid"]))
            total = total + cfg.contrast_weight * losses["contrast"]
        if cfg.attribute_weight and "attributes" in batch:
            ratio = self.positive_ratio if cfg.positive_ratio_weighting else None
            losses["attributes"] = attribute_bce_loss(self.attribute_head(embedding), batch["attributes"], ratio)
            total = total + cfg.attribute_weight * losses["attributes"]
        losses["loss"] = total
        return losses

    def parameter_groups(self) -> list[dict]:
        return text_and_other_groups(self, self.encoder.text, self.config.text_lr_scale)
