"""PA-100K: ``annotation.mat`` and ``data/`` (some copies: ``data/release_data/release_data/``).

Variables ``attributes`` (26 names), ``{train,val,test}_images_name`` and
``{train,val,test}_label``: the splits are the three variables (80,000 / 10,000 / 10,000).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from personvl.data.formats import matlab
from personvl.data.formats.attribute_labels import binary_rows
from personvl.data.formats.common import DatasetFormat, SplitContents, absolute, find_directory
from personvl.data.records import PersonRecord
from personvl.errors import PersonvlError

# The nested copies first: their outer "data/" exists too but holds only the inner folder.
IMAGE_FOLDERS = ("data/release_data/release_data", "release_data/release_data", "data")


def read_pa100k(root: Path, split: str) -> SplitContents:
    path = root / "annotation.mat"
    variables = matlab.load_mat(path, "the PA-100K annotation (attributes, *_images_name, *_label)", cache=True)
    names = matlab.strings(matlab.variable(variables, "attributes", path), path, "attributes")
    images = matlab.strings(matlab.variable(variables, f"{split}_images_name", path), path, f"{split}_images_name")
    labels = matlab.matrix(matlab.variable(variables, f"{split}_label", path), path, f"{split}_label", columns=len(names))
    if labels.shape[0] != len(images):
        raise PersonvlError(f"{path}: {split}_label has {labels.shape[0]} rows but {split}_images_name has {len(images)} names")
    folder = find_directory(root, IMAGE_FOLDERS, "the PA-100K images (000001.jpg ...)")
    prefix = absolute(folder) + "/"
    vectors = binary_rows(labels, np.arange(len(images)), np.arange(len(names)), path, f"{split}_label")
    records = [PersonRecord(prefix + name, attributes=vector, split=split) for name, vector in zip(images, vectors)]
    return SplitContents(records, attribute_names=names, annotation=str(path))


FORMATS = [
    DatasetFormat("pa100k", read_pa100k, ("train", "val", "test"),
                  "PA-100K: annotation.mat + data/; 26 attributes; 80k/10k/10k"),
]
