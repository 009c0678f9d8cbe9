"""Image towers from timm backbones (ResNet-50 for VAL-PAT, Swin-B for PLIP's large row).

``last_stride=1`` (BoT's re-ID trick, ResNets only) gives the last stage's first block stride 1
without dilation, as BoT does (timm's own ``output_stride=16`` dilates instead): the weights are
the same tensors, the last map is at stride 16.
"""

from __future__ import annotations

from typing import Any, Sequence

import timm
import torch
from timm.models.resnet import ResNet
from torch import nn

PROJECTIONS = ("linear", "mlp")


class TimmTower(nn.Module):
    """A timm backbone (classifier removed, its own global pooling kept) followed by a
    projection head into the joint space: ``linear``, or ``mlp`` (Linear-ReLU-Linear, the
    usual head of self-supervised contrastive learning)."""

    def __init__(self, model_name: str, image_size: Sequence[int], output_dim: int,
                 projection: str = "linear", model_kwargs: dict[str, Any] | None = None, last_stride: int = 2):
        super().__init__()
        if projection not in PROJECTIONS:
            raise ValueError(f"projection must be one of {PROJECTIONS}, got {projection!r}")
        if last_stride not in (1, 2):
            raise ValueError(f"last_stride must be 1 or 2, got {last_stride}")
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
        self.last_stride = last_stride
        self.pyramid_strides = (4, 8, 16, 16 * last_stride)
        if last_stride == 1:
            if not isinstance(self.trunk, ResNet):
                raise ValueError(f"last_stride=1 needs a ResNet trunk, not timm's {model_name}")
            _unstride_first_block(self.trunk.layer4[0])
            self.trunk.feature_info[-1]["reduction"] = 16

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(images))

    def forward_pyramid(self, images: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Backbone maps at ``pyramid_strides`` (NCHW) and the projected embedding."""
        final, maps = self.trunk.forward_intermediates(images, indices=self._pyramid_indices)
        pooled = self.trunk.forward_head(final, pre_logits=True)
        return list(maps), self.head(pooled)


def _unstride_first_block(block: nn.Module) -> None:
    """Stride 1 for a timm ResNet block whose main path and shortcut downsample by 2: strided
    convolutions keep their kernels, the average pools of ``avg_down`` shortcuts go."""
    for name, module in list(block.named_modules())[1:]:
        if isinstance(module, nn.Conv2d) and module.stride == (2, 2):
            module.stride = (1, 1)
        elif isinstance(module, nn.AvgPool2d) and module.stride in (2, (2, 2)):
            parent, _, child = name.rpartition(".")
            setattr(block.get_submodule(parent) if parent else block, child, nn.Identity())
        elif getattr(module, "stride", 1) not in (1, (1, 1)):   # e.g. an anti-aliasing blur pool
            raise ValueError(f"last_stride=1 cannot remove the stride of {type(module).__name__} in {name}")
    if hasattr(block, "stride"):
        block.stride = 1
