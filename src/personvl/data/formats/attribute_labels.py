"""Label matrices of the pedestrian-attribute sets as 0/1 vectors.

RAP marks some labels 2 (uncertain); Rethinking_of_PAR maps 2 to 0 for every attribute set, and
so does personvl. Any other value is a broken file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from personvl.errors import PersonvlError


def binary_rows(labels: np.ndarray, rows: np.ndarray, columns: np.ndarray, path: Path, what: str) -> list[list[int]]:
    """``labels[rows][:, columns]`` as lists of 0/1."""
    block = np.asarray(labels)[np.ix_(rows, columns)].astype(np.int64)
    block[block == 2] = 0
    bad = np.flatnonzero((block != 0) & (block != 1))
    if bad.size:
        row, column = divmod(int(bad[0]), block.shape[1])
        raise PersonvlError(f"{path}: {what}: row {int(rows[row]) + 1}, column {int(columns[column]) + 1} "
                            f"holds {block[row, column]} (expected 0, 1 or 2)")
    return block.tolist()
