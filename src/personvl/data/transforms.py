"""Image transforms per recipe: what each method's papers resize, normalise and augment with.

- ``plip``: 256x128, PLIP's person-image mean/std, horizontal flip (PLIP pre-training);
- ``clip``: 384x128 with CLIP's mean/std, flip, 10-pixel padding + random crop and random
  erasing (IRRA-style text-to-image fine-tuning);
- ``reid``: 256x128 with ImageNet's mean/std, flip, padding + random crop and random erasing
  (torchreid / TransReID re-ID training);
- ``moco``: two views of each image (VAL-PAT's self-supervised contrast), each drawn with MoCo
  v2's augmentations sized for person crops: a random resized crop, colour jitter
  (brightness, contrast, saturation 0.4, hue 0.1) with probability 0.8, greyscale 0.2, Gaussian
  blur (sigma 0.1-2 at 256 pixels high) 0.5 and a horizontal flip. MoCo's crop keeps 20-100% of
  a square photo at any aspect ratio from 3:4 to 4:3; a 20% crop of a 256x128 person is often a
  fragment of the torso or background only, so the crop keeps 40-100% of the image, at aspect
  ratios from 3:4 to 4:3 of the person's own 1:2, and resizes back to 256x128.

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
    crop_scale: tuple[float, float] | None = None   # random resized crop: the area kept (None: no crop)
    crop_ratio: tuple[float, float] = (0.75, 4 / 3)  # its aspect ratio, relative to the output's
    colour_jitter: float = 0.0    # probability of brightness/contrast/saturation 0.4, hue 0.1
    grayscale: float = 0.0        # probability of a greyscale image (3 equal channels)
    blur: float = 0.0             # probability of a Gaussian blur
    blur_sigma: tuple[float, float] = (0.1, 2.0)     # its sigma range at the recipe's height
    views: int = 1                # 2: the transform returns two independently augmented views


PLIP_MEAN, PLIP_STD = (0.357, 0.323, 0.328), (0.252, 0.242, 0.239)
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

RECIPES = {
    "plip": TransformRecipe(256, 128, PLIP_MEAN, PLIP_STD),
    "clip": TransformRecipe(384, 128, CLIP_MEAN, CLIP_STD, padding=10, erasing=0.5),
    "reid": TransformRecipe(256, 128, IMAGENET_MEAN, IMAGENET_STD, padding=10, erasing=0.5),
    "moco": TransformRecipe(256, 128, IMAGENET_MEAN, IMAGENET_STD, crop_scale=(0.4, 1.0), colour_jitter=0.8,
                            grayscale=0.2, blur=0.5, views=2),
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


class TwoViews:
    """Two independent draws of a random transform: the query and key views of one image."""

    def __init__(self, transform: Callable) -> None:
        self.transform = transform

    def __call__(self, image) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transform(image), self.transform(image)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.transform!r})"


def get_recipe(name: str, **overrides: Any) -> TransformRecipe:
    if name not in RECIPES:
        raise UsageError(f"unknown transform recipe {name!r}; known: {', '.join(RECIPES)}")
    try:
        return replace(RECIPES[name], **overrides)
    except TypeError:
        raise UsageError(f"transform recipe fields are {', '.join(RECIPES[name].__dataclass_fields__)}; got {sorted(overrides)}") from None


def build_transform(recipe: str | TransformRecipe = "plip", train: bool = True, **overrides: Any) -> Callable:
    """A torchvision transform from PIL image to normalised tensor (a pair of them, two views,
    for a recipe with ``views=2``); ``overrides`` replace recipe fields (``height=384``,
    ``erasing=0``). A recipe's padding and blur are set for its own size: at another width the
    padding scales with it (10 px at 128 wide is 2 px at 32), unless ``padding`` is given, and
    at another height the blur's sigma scales with it, so that a small model's images shift and
    blur as much, relative to the person, as a large one's."""
    from torchvision import transforms as T

    base = get_recipe(recipe) if isinstance(recipe, str) else recipe
    if "padding" not in overrides and overrides.get("width", base.width) != base.width:
        overrides = {**overrides, "padding": round(base.padding * overrides["width"] / base.width)}
    if "blur_sigma" not in overrides and overrides.get("height", base.height) != base.height:
        factor = overrides["height"] / base.height
        overrides = {**overrides, "blur_sigma": tuple(s * factor for s in base.blur_sigma)}
    spec = get_recipe(recipe, **overrides) if isinstance(recipe, str) else replace(recipe, **overrides)
    if spec.views not in (1, 2):
        raise UsageError(f"a transform recipe gives 1 or 2 views of an image, got views={spec.views}")
    size = (spec.height, spec.width)
    steps: list[Callable] = [T.Resize(size, interpolation=T.InterpolationMode.BICUBIC)]
    if train:
        if spec.crop_scale is not None:
            # torchvision's ratio is the crop's width / height in the source: relative to the output's.
            aspect = spec.width / spec.height
            ratio = tuple(r * aspect for r in spec.crop_ratio)
            steps.append(T.RandomResizedCrop(size, scale=spec.crop_scale, ratio=ratio,
                                             interpolation=T.InterpolationMode.BICUBIC))
        if spec.colour_jitter > 0:
            steps.append(T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=spec.colour_jitter))
        if spec.grayscale > 0:
            steps.append(T.RandomGrayscale(spec.grayscale))
        if spec.blur > 0:
            # A kernel of about a tenth of the height (SimCLR's), odd; its radius exceeds 3 sigma.
            kernel = max(3, int(spec.height * 0.1) // 2 * 2 + 1)
            steps.append(T.RandomApply([T.GaussianBlur(kernel, sigma=spec.blur_sigma)], p=spec.blur))
        if spec.flip > 0:
            steps.append(T.RandomHorizontalFlip(spec.flip))
        if spec.padding > 0:
            steps += [T.Pad(spec.padding), T.RandomCrop(size)]
    steps.append(ToNormalizedTensor(spec.mean, spec.std))
    if train and spec.erasing > 0:
        # Erased pixels take the mean colour (zero after normalisation), as torchreid does.
        steps.append(T.RandomErasing(p=spec.erasing, value=0))
    transform = T.Compose(steps)
    return TwoViews(transform) if train and spec.views == 2 else transform
