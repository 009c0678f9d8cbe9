"""Evaluation preprocessing of a model: RGB, resize to its input size, normalise."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from PIL import Image
from torchvision import transforms

from personvl.errors import PersonvlError
from personvl.models.config import PreprocessConfig

INTERPOLATIONS = {
    "bicubic": transforms.InterpolationMode.BICUBIC,
    "bilinear": transforms.InterpolationMode.BILINEAR,
    "nearest": transforms.InterpolationMode.NEAREST,
}


class _ToRGB:
    """Grayscale, palette and RGBA images become 3-channel RGB (a class, not a lambda, so the
    transform pickles into data-loader workers)."""

    def __call__(self, image: Image.Image) -> Image.Image:
        return image if image.mode == "RGB" else image.convert("RGB")

    def __repr__(self) -> str:
        return "ToRGB()"


class ImageTransform(transforms.Compose):
    """A torchvision transform (PIL image -> normalised [3, H, W] tensor) that also carries its
    numbers: ``size`` (height, width), ``mean``, ``std``, ``interpolation``. The whole image is
    resized to the size, without cropping, as person crops are."""

    def __init__(self, size: Sequence[int], mean: Sequence[float], std: Sequence[float],
                 interpolation: str = "bicubic"):
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {tuple(INTERPOLATIONS)}, got {interpolation!r}")
        self.size = tuple(int(v) for v in size)
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)
        self.interpolation = interpolation
        super().__init__([
            _ToRGB(),
            transforms.Resize(self.size, interpolation=INTERPOLATIONS[interpolation]),
            transforms.ToTensor(),
            transforms.Normalize(self.mean, self.std),
        ])

    @classmethod
    def from_config(cls, config: PreprocessConfig) -> "ImageTransform":
        return cls(config.input_size, config.mean, config.std, config.interpolation)


def open_rgb_image(item: Image.Image | str | os.PathLike) -> Image.Image:
    """A PIL image as given, or the file read and converted to RGB; an unreadable file is a
    ``PersonvlError`` naming it."""
    if isinstance(item, Image.Image):
        return item
    path = Path(item)
    try:
        with Image.open(path) as image:
            return image.convert("RGB")   # a loaded copy that outlives the file handle
    except OSError as exc:
        raise PersonvlError(f"cannot read image {path}: {exc}") from None
