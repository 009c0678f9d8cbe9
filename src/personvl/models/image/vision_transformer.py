"""CLIP's VisionTransformer (open_clip's module) at person-shaped inputs.

Re-ID recipes run ViT-B/16 at 384x128, optionally with overlapping patches (stride 12 instead of
16): only the patch convolution's stride and the size of the position embedding change.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from open_clip.transformer import QuickGELU, VisionTransformer
from torch import nn

POOLINGS = ("token", "max")


class VisionTransformerTower(VisionTransformer):
    """Patch embedding, class token, pre-norm transformer, final norm and projection.

    ``pool="token"`` embeds with the class token (CLIP); ``"max"`` max-pools all tokens (UniPT).
    ``quick_gelu`` selects OpenAI's activation: weights trained with it need it.
    """

    def __init__(self, image_size: Sequence[int] = (224, 224), patch_size: int = 16, patch_stride: int | None = None,
                 width: int = 768, layers: int = 12, heads: int = 12, mlp_ratio: float = 4.0,
                 output_dim: int = 512, pool: str = "token", quick_gelu: bool = False):
        if pool not in POOLINGS:
            raise ValueError(f"pool must be one of {POOLINGS}, got {pool!r}")
        height, width_px = (int(v) for v in image_size)
        stride = int(patch_stride or patch_size)
        if height < patch_size or width_px < patch_size:
            raise ValueError(f"input {height}x{width_px} is smaller than one {patch_size}px patch")
        super().__init__(image_size=(height, width_px), patch_size=patch_size, width=width, layers=layers,
                         heads=heads, mlp_ratio=mlp_ratio, output_dim=output_dim,
                         act_layer=QuickGELU if quick_gelu else nn.GELU)
        self.patch_stride = stride
        self.pool = pool
        grid = ((height - patch_size) // stride + 1, (width_px - patch_size) // stride + 1)
        if stride != patch_size:
            self.conv1 = nn.Conv2d(3, width, kernel_size=patch_size, stride=stride, bias=False)
        if grid != tuple(self.grid_size):
            scale = width ** -0.5
            self.positional_embedding = nn.Parameter(scale * torch.randn(grid[0] * grid[1] + 1, width))
        self.grid_size = grid
        self.pyramid_channels = (width,) * 4
        self.pyramid_strides = (4, 8, 16, 32)

    def _global_pool(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # open_clip's pooling hook (its own choices are the class token and the mean); UniPT
        # max-pools every token.
        if self.pool == "max":
            return x.max(dim=1).values, x[:, 1:]
        return x[:, 0], x[:, 1:]

    def forward_pyramid(self, images: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Token maps after 1/4, 2/4, 3/4 and all of the blocks, resized to strides 4, 8, 16
        and 32 of the input (a parameter-free pyramid: the decoder heads learn on top), and the
        embedding."""
        depth = len(self.transformer.resblocks)
        taps = [math.ceil(depth * quarter / 4) - 1 for quarter in (1, 2, 3, 4)]
        blocks = sorted(set(taps))
        # Token lists (NLC), reshaped here: open_clip's own NCHW reshape assumes stride = patch size.
        out = self.forward_intermediates(images, indices=blocks, output_fmt="NLC")
        by_block = dict(zip(blocks, out["image_intermediates"]))
        batch, height, width = images.shape[0], images.shape[-2], images.shape[-1]
        maps = []
        for tap, stride in zip(taps, (4, 8, 16, 32)):
            tokens = by_block[tap]
            grid = tokens.transpose(1, 2).reshape(batch, tokens.shape[-1], *self.grid_size)
            maps.append(F.interpolate(grid, size=(height // stride, width // stride), mode="bilinear",
                                      align_corners=False))
        return maps, out["image_features"]
