"""Image towers. Each maps normalised images [B, 3, H, W] to ``forward -> [B, output_dim]``
(not normalised) and ``forward_pyramid -> (maps at strides 4, 8, 16, 32, embedding)``, and
names its ``pyramid_channels``, ``pyramid_strides`` and ``image_size``. A ResNet tower built
with ``last_stride=1`` gives its last map at stride 16: ``pyramid_strides`` is (4, 8, 16, 16)."""

from __future__ import annotations

from typing import Any

from torch import nn

from personvl.models.image.modified_resnet import ModifiedResNetTower
from personvl.models.image.position import resize_position_embedding
from personvl.models.image.timm_tower import TimmTower
from personvl.models.image.vision_transformer import VisionTransformerTower

IMAGE_TOWERS: dict[str, type[nn.Module]] = {
    "modified_resnet": ModifiedResNetTower,
    "vision_transformer": VisionTransformerTower,
    "timm": TimmTower,
}


def build_image_tower(config: dict[str, Any]) -> nn.Module:
    """Instantiate the tower a config names by ``type``; the other keys are its arguments."""
    kwargs = dict(config)
    kind = kwargs.pop("type", None)
    if kind not in IMAGE_TOWERS:
        raise ValueError(f"unknown image tower type {kind!r} (known: {', '.join(IMAGE_TOWERS)})")
    return IMAGE_TOWERS[kind](**kwargs)


__all__ = ["IMAGE_TOWERS", "ModifiedResNetTower", "TimmTower", "VisionTransformerTower",
           "build_image_tower", "resize_position_embedding"]
