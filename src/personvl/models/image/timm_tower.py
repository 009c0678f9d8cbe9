"""Image towers from timm backbones (ResNet-50 for VAL-PAT, Swin-B for PLIP's large row)."""

from __future__ import annotations

from typing import Any, Sequence

import timm
import torch
from torch import nn

PROJECTIONS = ("linear", "mlp")


class TimmTower(nn.Module):
    """A timm backbone (classifier removed, its own global pooling kept) followed by a
    projection head into the joint space: ``linear``, or ``mlp`` (Linear-ReLU-Linear, the
    usual head of self-supervised contrastive learning)."""

    def __init__(self, model_name: str, image_size: Sequence[int], output_dim: int,
                 projection: str = "linear", model_kwargs: dict[str, Any] | None = None):
        super().__init__()
        if projection not in PROJECTIONS:
            raise ValueError(f"projection must be one of {PROJECTIONS}, got {projection!r}")
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in (model_kwargs or {}).items()}
        self.trunk = timm.create_model(model_name, pretrained=False, num_classes=0, **kwargs)
        self.image_size = tuple(int(v) for v in image_size)
        self.output_dim = output_dim
        features = self.trunk.num_features
        if projection == "linear":
            self.head = nn.Linear(features, output_dim, bias=False)
        else:
            self.head = nn.Sequential(nn.Linear(features, features), nn.ReLU(inplace=True),
                                      nn.Linear(features, output_dim))
        by_stride = {info["reduction"]: (i, info["num_chs"]) for i, info in enumerate(self.trunk.feature_info)}
        missing = [s for s in (4, 8, 16, 32) if s not in by_stride]
        if missing:
            raise ValueError(f"timm model {model_name} has no feature map at stride(s) {missing}")
        self._pyramid_indices = [by_stride[s][0] for s in (4, 8, 16, 32)]
        self.pyramid_channels = tuple(by_stride[s][1] for s in (4, 8, 16, 32))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(images))

    def forward_pyramid(self, images: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Backbone maps at strides 4, 8, 16, 32 (NCHW) and the projected embedding."""
        final, maps = self.trunk.forward_intermediates(images, indices=self._pyramid_indices)
        pooled = self.trunk.forward_head(final, pre_logits=True)
        return list(maps), self.head(pooled)
