"""Image transforms per recipe: what each method's papers resize, normalise and augment with.

- ``plip``: 256x128, PLIP's person-image mean/std, horizontal flip (PLIP pre-training);
- ``clip``: 384x128 with CLIP's mean/std, flip, 10-pixel padding + random crop and random
  erasing (IRRA-style text-to-image fine-tuning);
- ``reid``: 256x128 with ImageNet's mean/std, flip, padding + random crop and random erasing
  (torchreid / TransReID re-ID training).

Evaluation (``train=False``) only resizes and normalises. ``ToNormalizedTensor`` replaces
torchvision's ``ToTensor`` + ``Normalize`` pair with the same result in two passes over the
pixels instead of six, which is a large part of a loader worker's time on person crops.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable

import numpy as np
import torch

from personvl.errors import UsageError


@dataclass(frozen=True)
class TransformRecipe:
    height: int
    width: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    flip: float = 0.5             # probability of a horizontal flip
    padding: int = 0              # pixels padded before a random crop back to size (0: none)
    erasing: float = 0.0          # probability of random erasing


PLIP_MEAN, PLIP_STD = (0.357, 0.323, 0.328), (0.252, 0.242, 0.239)
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

RECIPES = {
    "plip": TransformRecipe(256, 128, PLIP_MEAN, PLIP_STD),
    "clip": TransformRecipe(384, 128, CLIP_MEAN, CLIP_STD, padding=10, erasing=0.5),
    "reid": TransformRecipe(256, 128, IMAGENET_MEAN, IMAGENET_STD, padding=10, erasing=0.5),
}


class ToNormalizedTensor:
    """PIL RGB image -> float CHW tensor ``(pixel / 255 - mean) / std``."""

    def __init__(self, mean: tuple[float, float, float], std: tuple[float, float, float]) -> None:
        self.mean = tuple(mean)
        self.std = tuple(std)
        self._offset = (torch.tensor(mean, dtype=torch.float32) * 255).view(3, 1, 1)
        self._scale = 1 / (torch.tensor(std, dtype=torch.float32) * 255).view(3, 1, 1)

    def __call__(self, image) -> torch.Tensor:
        pixels = torch.from_numpy(np.array(image, dtype=np.uint8, copy=True))
        if pixels.ndim != 3 or pixels.shape[2] != 3:
            raise ValueError(f"expected an RGB image, got an array of shape {tuple(pixels.shape)}")
        return pixels.permute(2, 0, 1).contiguous().float().sub_(self._offset).mul_(self._scale)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(mean={self.mean}, std={self.std})"


def get_recipe(name: str, **overrides: Any) -> TransformRecipe:
    if name not in RECIPES:
        raise UsageError(f"unknown transform recipe {name!r}; known: {', '.join(RECIPES)}")
    try:
        return replace(RECIPES[name], **overrides)
    except TypeError:
        raise UsageError(f"transform recipe fields are {', '.join(RECIPES[name].__dataclass_fields__)}; got {sorted(overrides)}") from None


def build_transform(recipe: str | TransformRecipe = "plip", train: bool = True, **overrides: Any) -> Callable:
    """A torchvision transform from PIL image to normalised tensor; ``overrides`` replace
    recipe fields (``height=384``, ``erasing=0``). A recipe's padding is set for its own width:
    at another width it scales with it (10 px at 128 wide is 2 px at 32), unless ``padding`` is
    given, so that a small model's crops shift as much, relative to the person, as a large one's."""
    from torchvision import transforms as T

    base = get_recipe(recipe) if isinstance(recipe, str) else recipe
    if "padding" not in overrides and overrides.get("width", base.width) != base.width:
        overrides = {**overrides, "padding": round(base.padding * overrides["width"] / base.width)}
    spec = get_recipe(recipe, **overrides) if isinstance(recipe, str) else replace(recipe, **overrides)
    size = (spec.height, spec.width)
    steps: list[Callable] = [T.Resize(size, interpolation=T.InterpolationMode.BICUBIC)]
    if train:
        if spec.flip > 0:
            steps.append(T.RandomHorizontalFlip(spec.flip))
        if spec.padding > 0:
            steps += [T.Pad(spec.padding), T.RandomCrop(size)]
    steps.append(ToNormalizedTensor(spec.mean, spec.std))
    if train and spec.erasing > 0:
        # Erased pixels take the mean colour (zero after normalisation), as torchreid does.
        steps.append(T.RandomErasing(p=spec.erasing, value=0))
    return T.Compose(steps)
