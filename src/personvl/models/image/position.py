"""Resizing learned position embeddings to another token grid."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def resize_position_embedding(embedding: torch.Tensor, new_grid: tuple[int, int],
                              old_grid: tuple[int, int] | None = None, prefix_tokens: int = 1,
                              mode: str = "bilinear") -> torch.Tensor:
    """Interpolate a ``[prefix + H*W, C]`` embedding (row-major grid after the class or mean
    token) to ``new_grid``; the prefix tokens are kept as they are.

    ``old_grid`` defaults to the square grid the token count implies (CLIP's 14x14 or 7x7).
    """
    prefix, grid = embedding[:prefix_tokens], embedding[prefix_tokens:]
    if old_grid is None:
        side = math.isqrt(grid.shape[0])
        if side * side != grid.shape[0]:
            raise ValueError(f"{grid.shape[0]} grid tokens are not a square grid: pass old_grid")
        old_grid = (side, side)
    old_grid, new_grid = tuple(old_grid), tuple(new_grid)
    if old_grid[0] * old_grid[1] != grid.shape[0]:
        raise ValueError(f"old grid {old_grid} does not hold {grid.shape[0]} tokens")
    if old_grid == new_grid:
        return embedding.clone()
    channels = grid.shape[1]
    dtype = grid.dtype
    image = grid.float().reshape(1, old_grid[0], old_grid[1], channels).permute(0, 3, 1, 2)
    image = F.interpolate(image, size=new_grid, mode=mode, align_corners=False)
    grid = image.permute(0, 2, 3, 1).reshape(new_grid[0] * new_grid[1], channels).to(dtype)
    return torch.cat([prefix, grid], dim=0)
