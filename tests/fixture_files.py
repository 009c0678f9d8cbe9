"""Building dataset fixtures on disk: empty image files and MATLAB cell arrays."""

from pathlib import Path

import numpy as np


def touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")


def cell(strings, shape=None):
    """A MATLAB cell array of ``strings`` (N x 1 unless ``shape`` is given), as savemat writes it."""
    values = np.empty((len(strings), 1) if shape is None else shape, dtype=object)
    for i, s in enumerate(strings):
        values.flat[i] = s
    return values


def randomise_batch_norms(module, generator) -> None:
    """Random statistics and affine terms in every BatchNorm2d of ``module``: CLIP initialises each
    residual block's last BN weight to zero, which would hide the block's main path from a
    comparison of two implementations."""
    import torch
    from torch import nn

    for bn in module.modules():
        if isinstance(bn, nn.BatchNorm2d):
            n = bn.num_features
            bn.weight.data = torch.rand(n, generator=generator) + 0.5
            bn.bias.data = torch.randn(n, generator=generator) * 0.1
            bn.running_mean = torch.randn(n, generator=generator) * 0.1
            bn.running_var = torch.rand(n, generator=generator) + 0.5
            bn.num_batches_tracked.fill_(1000)
