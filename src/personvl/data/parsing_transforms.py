"""Human parsing's geometry as LIP's protocol (SCHP, CE2P) runs it: whole frames warped into a
fixed crop for the network, and the network's class scores warped back to each annotation.

- Training (:class:`ParsingAugmentation`): the whole frame is the person box (centred on the
  frame, widened or heightened to the crop's aspect ratio, so a multi-person
  PASCAL-Person-Part frame is parsed whole). The box is scaled by a factor drawn from
  ``N(1, scale_factor)`` clipped to ``1 ± scale_factor``, rotated with probability
  ``rotation_probability`` by an angle drawn from ``N(0, rotation_factor)`` degrees clipped to
  ``± 2 rotation_factor``, and flipped with probability ``flip_probability`` (``Left-``/``Right-``
  labels swapped by a permutation table); then one affine warp maps it onto the crop: the image
  bilinearly with a constant fill, the mask by nearest neighbour with the ignore label 255.
- Evaluation (:func:`to_network`, :func:`to_annotation`): the whole frame fitted into the crop,
  aspect ratio kept, centred, nothing random; the returned affine takes the network's scores
  back to the frame's own pixels, so metrics are computed at the annotation's resolution.
  :func:`flip_test_logits` averages a pass on the images and a pass on their mirror images.

Coordinates are continuous pixel coordinates with pixel ``(i, j)`` covering ``[j, j+1) x [i, i+1)``
(PIL's and ``align_corners=False``'s convention): the frame's full extent maps onto the crop's.
SCHP maps the first and last pixel centres instead (OpenCV's convention); the two differ by
less than a pixel.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from personvl.data.transforms import ToNormalizedTensor

IGNORE_INDEX = 255
LIP_CROP_SIZE = (473, 473)


def flip_permutation(part_names: Sequence[str]) -> list[int]:
    """Label of each class after a horizontal flip: ``Left-x`` and ``Right-x`` swap."""
    index = {name.lower(): i for i, name in enumerate(part_names)}
    permutation = list(range(len(part_names)))
    for i, name in enumerate(part_names):
        lowered = name.lower()
        for side, other in (("left-", "right-"), ("right-", "left-")):
            if lowered.startswith(side) and other + lowered[len(side):] in index:
                permutation[i] = index[other + lowered[len(side):]]
    return permutation


def frame_to_crop_affine(frame_size: tuple[int, int], crop_size: tuple[int, int], *, scale: float = 1.0,
                         rotation: float = 0.0) -> np.ndarray:
    """The 2x3 affine taking frame pixel coordinates ``(x, y, 1)`` to crop coordinates.

    ``frame_size`` and ``crop_size`` are (height, width). The whole frame, centred and padded to
    the crop's aspect ratio, fills the crop at ``scale=1``; ``scale > 1`` shows more of the
    surroundings (the person smaller), ``rotation`` turns the content counter-clockwise by that
    many degrees about the frame's centre.
    """
    frame_h, frame_w = (float(v) for v in frame_size)
    crop_h, crop_w = (float(v) for v in crop_size)
    if min(frame_h, frame_w, crop_h, crop_w) <= 0 or scale <= 0:
        raise ValueError(f"sizes and scale must be positive, got frame {frame_size}, crop {crop_size}, scale {scale}")
    box_w = max(frame_w, frame_h * crop_w / crop_h) * scale
    zoom = crop_w / box_w            # the box has the crop's aspect ratio: one zoom for both axes
    angle = math.radians(rotation)
    # y points down, so a counter-clockwise turn on screen is this matrix.
    turn = np.array([[math.cos(angle), math.sin(angle)], [-math.sin(angle), math.cos(angle)]]) * zoom
    offset = np.array([crop_w / 2, crop_h / 2]) - turn @ np.array([frame_w / 2, frame_h / 2])
    return np.concatenate([turn, offset[:, None]], axis=1)


def _inverted(affine: np.ndarray) -> np.ndarray:
    full = np.vstack([np.asarray(affine, dtype=np.float64).reshape(2, 3), [0.0, 0.0, 1.0]])
    return np.linalg.inv(full)[:2]


def _warp(picture: Image.Image, affine: np.ndarray, crop_size: tuple[int, int], resample, fill) -> Image.Image:
    # PIL asks for the map from output to input pixels.
    coefficients = tuple(float(v) for v in _inverted(affine).reshape(-1))
    return picture.transform((int(crop_size[1]), int(crop_size[0])), Image.Transform.AFFINE, coefficients,
                             resample=resample, fillcolor=fill)


def _flip_table(permutation: Sequence[int]) -> np.ndarray:
    permutation = [int(p) for p in permutation]
    if sorted(permutation) != list(range(len(permutation))) or len(permutation) > IGNORE_INDEX:
        raise ValueError(f"a flip permutation reorders the labels 0..n-1 (n < {IGNORE_INDEX}), got {permutation}")
    table = np.arange(256, dtype=np.uint8)   # labels it does not name (the ignore label) stay
    table[:len(permutation)] = permutation
    return table


class ParsingAugmentation:
    """Joint random scale, rotation and flip of an image and its part mask, warped to ``crop_size``
    (height, width): ``augment(image, mask, rng) -> (image [3, H, W] normalised, mask [H, W]
    int64 with 255 where the crop shows no frame)``. ``flip_permutation=None`` never flips.
    Every draw comes from the given generator, so a sample's seed fixes its crop."""

    def __init__(self, crop_size: Sequence[int] = LIP_CROP_SIZE, mean: Sequence[float] = (0.485, 0.456, 0.406),
                 std: Sequence[float] = (0.229, 0.224, 0.225), flip_permutation: Sequence[int] | None = None, *,
                 scale_factor: float = 0.25, rotation_factor: float = 30.0, rotation_probability: float = 0.6,
                 flip_probability: float = 0.5, fill: tuple[int, int, int] = (0, 0, 0)):
        if not 0 <= scale_factor < 1:
            raise ValueError(f"scale_factor must be in [0, 1), got {scale_factor}")
        self.crop_size = (int(crop_size[0]), int(crop_size[1]))
        self.to_tensor = ToNormalizedTensor(tuple(mean), tuple(std))
        self.flip_table = None if flip_permutation is None else _flip_table(flip_permutation)
        self.scale_factor = scale_factor
        self.rotation_factor = rotation_factor
        self.rotation_probability = rotation_probability
        self.flip_probability = flip_probability if flip_permutation is not None else 0.0
        self.fill = tuple(int(v) for v in fill)

    def draw(self, rng: np.random.Generator) -> tuple[float, float, bool]:
        """(scale, rotation in degrees, flip) for one sample; always four draws from ``rng``."""
        normal_scale, normal_angle = rng.standard_normal(2)
        rotate, flip = rng.random(2)
        factor = self.scale_factor
        scale = float(np.clip(1 + factor * normal_scale, 1 - factor, 1 + factor))
        limit = 2 * self.rotation_factor
        rotation = float(np.clip(self.rotation_factor * normal_angle, -limit, limit)) \
            if rotate < self.rotation_probability else 0.0
        return scale, rotation, bool(flip < self.flip_probability)

    def apply(self, image: Image.Image, mask: np.ndarray, *, scale: float = 1.0, rotation: float = 0.0,
              flip: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """The warp for given parameters (what :meth:`__call__` does with drawn ones)."""
        labels = np.asarray(mask)
        if labels.shape != (image.height, image.width):
            raise ValueError(f"mask of shape {labels.shape} for an image of {image.height}x{image.width}")
        if labels.size and (labels.min() < 0 or labels.max() > IGNORE_INDEX):
            raise ValueError(f"part labels must be in 0..{IGNORE_INDEX}, got {labels.min()}..{labels.max()}")
        labels = labels.astype(np.uint8)
        image = image.convert("RGB")
        if flip:
            if self.flip_table is None:
                raise ValueError("this augmentation was built without a flip permutation")
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            labels = self.flip_table[labels[:, ::-1]]
        affine = frame_to_crop_affine((image.height, image.width), self.crop_size, scale=scale, rotation=rotation)
        pixels = _warp(image, affine, self.crop_size, Image.Resampling.BILINEAR, self.fill)
        target = _warp(Image.fromarray(np.ascontiguousarray(labels)), affine, self.crop_size,
                       Image.Resampling.NEAREST, IGNORE_INDEX)
        return self.to_tensor(pixels), torch.from_numpy(np.asarray(target, dtype=np.int64))

    def __call__(self, image: Image.Image, mask: np.ndarray,
                 rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        scale, rotation, flip = self.draw(rng)
        return self.apply(image, mask, scale=scale, rotation=rotation, flip=flip)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(crop_size={self.crop_size}, scale_factor={self.scale_factor}, "
                f"rotation_factor={self.rotation_factor}, rotation_probability={self.rotation_probability}, "
                f"flip_probability={self.flip_probability})")


def to_network(image: Image.Image, crop_size: Sequence[int] = LIP_CROP_SIZE,
               mean: Sequence[float] = (0.485, 0.456, 0.406), std: Sequence[float] = (0.229, 0.224, 0.225), *,
               fill: tuple[int, int, int] = (0, 0, 0)) -> tuple[torch.Tensor, np.ndarray]:
    """The whole frame fitted into ``crop_size`` (height, width), aspect ratio kept, centred, the
    rest filled with ``fill``: (normalised tensor [3, H, W], the frame-to-crop affine for
    :func:`to_annotation`)."""
    crop = (int(crop_size[0]), int(crop_size[1]))
    image = image.convert("RGB")
    affine = frame_to_crop_affine((image.height, image.width), crop)
    pixels = _warp(image, affine, crop, Image.Resampling.BILINEAR, tuple(int(v) for v in fill))
    return ToNormalizedTensor(tuple(mean), tuple(std))(pixels), affine


def to_annotation(logits: torch.Tensor, affine: np.ndarray | torch.Tensor, size: Sequence[int],
                  crop_size: Sequence[int] | None = None) -> torch.Tensor:
    """Class scores [C, h, w] of a crop made by :func:`to_network` (its ``affine``), sampled
    bilinearly at each pixel of the frame: [C, H, W] float32 for ``size`` (H, W). The scores may
    cover the crop at a lower resolution than ``crop_size`` (by default their own size)."""
    if logits.dim() != 3:
        raise ValueError(f"expected class scores [C, h, w], got shape {tuple(logits.shape)}")
    score_h, score_w = logits.shape[-2:]
    crop_h, crop_w = (score_h, score_w) if crop_size is None else (int(crop_size[0]), int(crop_size[1]))
    matrix = affine.detach().cpu().numpy() if isinstance(affine, torch.Tensor) else np.asarray(affine)
    matrix = np.asarray(matrix, dtype=np.float64).reshape(2, 3)
    height, width = int(size[0]), int(size[1])
    ys, xs = np.meshgrid(np.arange(height) + 0.5, np.arange(width) + 0.5, indexing="ij")
    crop_x = matrix[0, 0] * xs + matrix[0, 1] * ys + matrix[0, 2]
    crop_y = matrix[1, 0] * xs + matrix[1, 1] * ys + matrix[1, 2]
    # grid_sample's [-1, 1] spans the crop's full extent (align_corners=False), whatever its resolution.
    grid = np.stack([crop_x / crop_w * 2 - 1, crop_y / crop_h * 2 - 1], axis=-1)
    grid = torch.as_tensor(grid, dtype=torch.float32, device=logits.device)[None]
    # Border, not zeros: the frame's edge pixels lie within half a crop pixel of the scores' edge.
    return F.grid_sample(logits[None].float(), grid, mode="bilinear", padding_mode="border",
                         align_corners=False)[0]


def flip_test_logits(forward: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor,
                     flip_permutation: Sequence[int] | None) -> torch.Tensor:
    """The mean of ``forward(images)`` and the scores of the mirrored images mirrored back, with
    each class's channel read from its mirror class (``flip_permutation``; None: no swap)."""
    scores = forward(images)
    mirrored = forward(images.flip(-1)).flip(-1)
    if flip_permutation is not None:
        permutation = list(flip_permutation)
        if len(permutation) != mirrored.shape[1]:
            raise ValueError(f"flip permutation of {len(permutation)} classes for scores of {mirrored.shape[1]}")
        # The mirror image's channel p[c] scores what is class c before mirroring.
        mirrored = mirrored[:, torch.as_tensor(permutation, device=mirrored.device)]
    return (scores + mirrored) / 2
