"""PLIP's text-guided colorization decoder."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class ColorizationDecoder(nn.Module):
    """Fuses the multi-scale maps of a grayscale image (strides 4..32) FPN-style into one
    stride-4 map, gates its channels with the caption embedding (SE-style: pooled visual vector
    and text vector -> Linear -> ReLU -> Linear -> sigmoid), then two transposed convolutions
    bring it back to a 3-channel image at the input resolution."""

    def __init__(self, in_channels: Sequence[int], text_dim: int, width: int = 1024, gate_hidden: int = 512):
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, width, kernel_size=1) for c in in_channels)
        self.smooth = nn.Conv2d(width, width, kernel_size=3, padding=1)
        self.gate = nn.Sequential(nn.Linear(width + text_dim, gate_hidden), nn.ReLU(inplace=True),
                                  nn.Linear(gate_hidden, width), nn.Sigmoid())
        self.upsample = nn.Sequential(
            nn.ConvTranspose2d(width, width // 4, kernel_size=4, stride=2, padding=1),
            nn.BatchNorm2d(width // 4), nn.ReLU(inplace=True),
            nn.ConvTranspose2d(width // 4, 3, kernel_size=4, stride=2, padding=1),
        )

    def forward(self, feature_maps: Sequence[torch.Tensor], text_embedding: torch.Tensor) -> torch.Tensor:
        fused = self.lateral[-1](feature_maps[-1])
        for lateral, features in zip(reversed(self.lateral[:-1]), reversed(feature_maps[:-1])):
            fused = lateral(features) + F.interpolate(fused, size=features.shape[-2:], mode="nearest")
        fused = self.smooth(fused)
        pooled = fused.mean(dim=(2, 3))
        gate = self.gate(torch.cat([pooled, text_embedding], dim=1))
        return self.upsample(fused * gate[:, :, None, None])
