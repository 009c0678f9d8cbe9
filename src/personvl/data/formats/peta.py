"""PETA: ``PETA.mat`` (one struct ``peta``) and ``images/00001.png`` ... ``19000.png``.

Fields, read by name with the peers' positions as fallback: ``data`` (19000 x 109: image
index, identity over all PETA, sub-dataset, identity within it, then 105 labels),
``attribute`` (105 names), ``selected_attribute`` (1-based columns of ``data`` of the 35
evaluated attributes) and ``partion_attribute`` (sic; 5 partitions, each with ``train``,
``val``, ``test`` 1-based rows). The standard split is partition 1 (``partition=0``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from personvl.data.formats import matlab
from personvl.data.formats.attribute_labels import binary_rows
from personvl.data.formats.common import DatasetFormat, SplitContents, absolute, require_directory
from personvl.data.records import PersonRecord
from personvl.errors import PersonvlError, UsageError

ID_COLUMNS = 4   # image index, global identity, sub-dataset, identity within the sub-dataset
SPLIT_POSITIONS = {"train": 0, "val": 1, "test": 2}


def read_peta(root: Path, split: str, partition: int = 0, all_attributes: bool = False) -> SplitContents:
    path = root / "PETA.mat"
    variables = matlab.load_mat(path, "the PETA annotation (struct peta)", cache=True)
    peta = matlab.struct(matlab.variable(variables, "peta", path), path, "peta")
    data = matlab.matrix(matlab.field(peta, "data", 0, path, "peta"), path, "peta.data")
    names = matlab.strings(matlab.field(peta, "attribute", 1, path, "peta"), path, "peta.attribute")
    if data.shape[1] != ID_COLUMNS + len(names):
        raise PersonvlError(f"{path}: peta.data has {data.shape[1]} columns; expected {ID_COLUMNS} ids + {len(names)} attributes")
    if all_attributes:
        columns = np.arange(len(names))
    else:
        columns = matlab.integers(matlab.field(peta, "selected_attribute", 2, path, "peta"), path, "peta.selected_attribute") - 1 - ID_COLUMNS
        if columns.size == 0 or columns.min() < 0 or columns.max() >= len(names):
            raise PersonvlError(f"{path}: peta.selected_attribute must hold data columns {ID_COLUMNS + 1}..{data.shape[1]}")
    partitions = matlab.field(peta, "partion_attribute", 3, path, "peta").reshape(-1)
    if not 0 <= partition < len(partitions):
        raise UsageError(f"PETA partition must be in 0..{len(partitions) - 1}, got {partition}")
    part = matlab.struct(partitions[partition], path, f"partion_attribute[{partition}]")
    rows = matlab.one_based_rows(matlab.field(part, split, SPLIT_POSITIONS[split], path, f"partion_attribute[{partition}]"),
                                 data.shape[0], path, f"partion_attribute[{partition}].{split}")
    folder = require_directory(root / "images", "the PETA images (00001.png ...)")
    prefix = absolute(folder) + "/"
    vectors = binary_rows(data, rows, columns + ID_COLUMNS, path, "peta.data")
    identities = data[:, 1].astype(np.int64)
    records = [PersonRecord(f"{prefix}{row + 1:05d}.png", pid=int(identities[row]), attributes=vector, split=split)
               for row, vector in zip(rows.tolist(), vectors)]
    return SplitContents(records, attribute_names=[names[c] for c in columns], annotation=str(path))


FORMATS = [
    DatasetFormat("peta", read_peta, ("train", "val", "test"),
                  "PETA: PETA.mat + images/; 35 evaluated attributes, partition 1 (9,500/1,900/7,600)"),
]
