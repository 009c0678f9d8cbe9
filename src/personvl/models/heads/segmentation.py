"""A segmentation head over an encoder's multi-scale maps (strides 4, 8, 16, 32).

Two decoders share one interface: ``"upernet"`` (UPerNet: a pyramid pooling module on the
coarsest map, an FPN top-down path, every level brought to stride 4 and fused by a 3x3
convolution) and ``"fpn"`` (the semantic FPN of panoptic FPN: laterals, top-down sums, each
level refined and upsampled to stride 4, then summed). Both return class scores at stride 4;
the caller resizes them to the image or mask size.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

SEGMENTATION_STYLES = ("upernet", "fpn")


def _conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


class PyramidPooling(nn.Module):
    """PSPNet's pyramid pooling: the map average-pooled to several grid sizes, projected,
    upsampled back and concatenated with the map, then fused to ``width`` channels."""

    def __init__(self, in_channels: int, width: int, scales: Sequence[int] = (1, 2, 3, 6)):
        super().__init__()
        self.scales = tuple(scales)
        # No BatchNorm on the 1x1 pooled branch: a single pixel per image has no batch statistics
        # worth normalising when the batch is small.
        self.branches = nn.ModuleList(nn.Sequential(nn.Conv2d(in_channels, width, 1), nn.ReLU(inplace=True))
                                      for _ in self.scales)
        self.fuse = _conv_bn_relu(in_channels + width * len(self.scales), width, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        pooled = [F.interpolate(branch(F.adaptive_avg_pool2d(x, scale)), size=size, mode="bilinear", align_corners=False)
                  for scale, branch in zip(self.scales, self.branches)]
        return self.fuse(torch.cat([x, *pooled], dim=1))


class SegmentationHead(nn.Module):
    """Per-pixel class scores at stride 4 from maps at strides 4, 8, 16, 32.

    ``in_channels``: the channels of each map (an image tower's ``pyramid_channels``);
    ``style``: ``"upernet"`` or ``"fpn"``; ``width``: the decoder's channels.
    """

    def __init__(self, in_channels: Sequence[int], num_classes: int, *, style: str = "upernet", width: int = 256,
                 pool_scales: Sequence[int] = (1, 2, 3, 6), dropout: float = 0.1):
        super().__init__()
        if style not in SEGMENTATION_STYLES:
            raise ValueError(f"style must be one of {', '.join(SEGMENTATION_STYLES)}, got {style!r}")
        if len(in_channels) < 2:
            raise ValueError(f"a segmentation head needs at least two feature maps, got {len(in_channels)}")
        self.style = style
        self.num_classes = num_classes
        levels = len(in_channels)
        if style == "upernet":
            self.top = PyramidPooling(in_channels[-1], width, pool_scales)
            self.lateral = nn.ModuleList(_conv_bn_relu(c, width, 1) for c in in_channels[:-1])
            self.refine = nn.ModuleList(_conv_bn_relu(width, width, 3) for _ in in_channels[:-1])
            self.fuse = _conv_bn_relu(width * levels, width, 3)
        else:
            self.lateral = nn.ModuleList(nn.Conv2d(c, width, 1) for c in in_channels)
            self.refine = nn.ModuleList(_conv_bn_relu(width, width, 3) for _ in in_channels)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(width, num_classes, 1)

    def forward(self, maps: Sequence[torch.Tensor]) -> torch.Tensor:
        finest = maps[0].shape[-2:]
        if self.style == "upernet":
            levels = [lateral(x) for lateral, x in zip(self.lateral, maps[:-1])] + [self.top(maps[-1])]
        else:
            levels = [lateral(x) for lateral, x in zip(self.lateral, maps)]
        for i in range(len(levels) - 1, 0, -1):      # top-down: coarse context into finer levels
            levels[i - 1] = levels[i - 1] + F.interpolate(levels[i], size=levels[i - 1].shape[-2:], mode="bilinear",
                                                          align_corners=False)
        if self.style == "upernet":
            refined = [refine(x) for refine, x in zip(self.refine, levels[:-1])] + [levels[-1]]
            upsampled = [F.interpolate(x, size=finest, mode="bilinear", align_corners=False) for x in refined]
            fused = self.fuse(torch.cat(upsampled, dim=1))
        else:
            fused = sum(F.interpolate(refine(x), size=finest, mode="bilinear", align_corners=False)
                        for refine, x in zip(self.refine, levels))
        return self.classifier(self.dropout(fused))
