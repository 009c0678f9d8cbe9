"""CLIP's ModifiedResNet (open_clip's module) at any input size divisible by 32.

PLIP uses it at 256x128, where the attention pool sees an 8x4 grid: its positional embedding is
[1 + 8*4, C], mean token first, then the grid row-major. open_clip only builds square grids, so
the embedding is re-created with the rectangular shape; everything else is open_clip's code.

``last_stride=1`` (BoT's re-ID trick) keeps the last stage at stride 16: its first block skips
the 2x2 average pools that open_clip downsamples with (main path and shortcut), so the weights
are the same tensors and only the attention pool's grid doubles (16x8 at 256x128).
"""

from __future__ import annotations

from typing import Sequence

import torch
from open_clip.modified_resnet import ModifiedResNet
from torch import nn


class ModifiedResNetTower(ModifiedResNet):
    """3-conv stem, anti-aliased bottleneck stages, multi-head attention pooling."""

    def __init__(self, layers: Sequence[int] = (3, 4, 6, 3), width: int = 64, heads: int = 32,
                 output_dim: int = 1024, image_size: Sequence[int] = (224, 224), last_stride: int = 2):
        if last_stride not in (1, 2):
            raise ValueError(f"last_stride must be 1 or 2, got {last_stride}")
        height, width_px = (int(v) for v in image_size)
        if height % 32 or width_px % 32:
            raise ValueError(f"ModifiedResNet needs an input size divisible by 32, got {height}x{width_px}")
        super().__init__(layers=list(layers), output_dim=output_dim, heads=heads, image_size=height, width=width)
        self.image_size = (height, width_px)
        self.last_stride = last_stride
        if last_stride == 1:
            first = self.layer4[0]
            first.avgpool = nn.Identity()
            first.downsample[0] = nn.Identity()   # the shortcut's pool ("-1"), before its 1x1 conv
            first.stride = 1
        self.pyramid_strides = (4, 8, 16, 16 * last_stride)
        self.grid_size = (height // self.pyramid_strides[-1], width_px // self.pyramid_strides[-1])
        embed_dim = width * 32
        if self.grid_size != (height // 32, height // 32):   # the square grid open_clip built
            tokens = 1 + self.grid_size[0] * self.grid_size[1]
            self.attnpool.positional_embedding = nn.Parameter(torch.randn(tokens, embed_dim) / embed_dim ** 0.5)
        self.pyramid_channels = (width * 4, width * 8, width * 16, width * 32)

    def forward_pyramid(self, images: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Maps after each stage (at ``pyramid_strides``: 4, 8, 16, 32, or 4, 8, 16, 16 with
        ``last_stride=1``) and the attention-pooled embedding."""
        x = self.stem(images)
        maps = []
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = stage(x)
            maps.append(x)
        return maps, self.attnpool(x)
