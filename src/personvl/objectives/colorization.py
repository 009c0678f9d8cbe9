"""Text-guided image colorization (PLIP's TIC): the image branch sees a grayscale copy and a
decoder, gated by the caption, paints the colours back."""

from __future__ import annotations

import torch
import torch.nn.functional as F

# ITU-R BT.601 luma weights, the usual RGB -> gray conversion.
_LUMA = (0.299, 0.587, 0.114)


def to_grayscale(images: torch.Tensor, mean: torch.Tensor | None = None, std: torch.Tensor | None = None) -> torch.Tensor:
    """Grayscale copies with 3 channels, in the same normalisation as the input.

    ``images`` are [B, 3, H, W], normalised with ``mean``/``std`` when given (they are undone,
    the luma taken in RGB, and the result normalised again so the encoder sees familiar ranges).
    """
    if mean is not None and std is not None:
        mean = mean.view(1, 3, 1, 1).to(images)
        std = std.view(1, 3, 1, 1).to(images)
        rgb = images * std + mean
    else:
        rgb = images
    weights = torch.tensor(_LUMA, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    gray = (rgb * weights).sum(dim=1, keepdim=True).expand(-1, 3, -1, -1)
    if mean is not None and std is not None:
        gray = (gray - mean) / std
    return gray.contiguous()


def colorization_loss(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MSE between the decoded image and the normalised colour image (resized if needed)."""
    if predicted.shape[-2:] != target.shape[-2:]:
        predicted = F.interpolate(predicted, size=target.shape[-2:], mode="bilinear", align_corners=False)
    return F.mse_loss(predicted, target)
