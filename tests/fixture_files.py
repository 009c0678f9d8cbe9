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
