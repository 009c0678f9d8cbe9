"""RAP: ``RAP_annotation/RAP_annotation.mat`` (one struct ``RAP_annotation``) and
``RAP_dataset/<name>.png``.

RAPv2, as Rethinking_of_PAR (by name) and DeepMAR (by position) read it: fields ``name``
(84,928 image names), ``data`` (84,928 x 152 labels), ``attribute`` (152 names),
``selected_attribute`` (the 54 evaluated, 1-based) and ``partition_attribute`` (5 partitions,
each with ``train_index``, ``val_index``, ``test_index``, 1-based rows). Standard split:
partition 1 (``partition=0``).

RAPv1 is read by position only, as Rethinking_of_PAR's ``format_rap.py`` does, because its
field names are not documented anywhere we could verify: field 0 the partitions (each with a
trainval and a test index, so v1 has ``train`` = trainval and ``test``, no ``val``), field 1
the 41,585 x 92 labels, field 3 the 92 names, field 5 the image names; the evaluated
attributes are the first 51. ``version="auto"`` takes a struct with a
``partition_attribute`` field for v2 and one with 92 label columns in field 1 for v1.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from personvl.data.formats import matlab
from personvl.data.formats.attribute_labels import binary_rows
from personvl.data.formats.common import DatasetFormat, SplitContents, absolute, find_file, require_directory
from personvl.data.records import PersonRecord
from personvl.errors import PersonvlError, UsageError

V1_LABEL_COLUMNS = 92
V1_EVALUATED = 51
V2_SPLIT_FIELDS = {"train": ("train_index", 0), "val": ("val_index", 1), "test": ("test_index", 2)}
V1_SPLIT_POSITIONS = {"train": 0, "test": 1}   # trainval, test


def detect_version(annotation: np.void, path: Path) -> str:
    fields = annotation.dtype.names or ()
    if "partition_attribute" in fields:
        return "v2"
    if len(fields) > 5:
        labels = annotation[1]
        if isinstance(labels, np.ndarray) and labels.ndim == 2 and labels.shape[1] == V1_LABEL_COLUMNS:
            return "v1"
    raise PersonvlError(f"{path}: RAP_annotation is neither RAPv2 (no partition_attribute field) nor RAPv1 "
                        f"({V1_LABEL_COLUMNS} label columns in field 2); pass version=v1 or version=v2")


def rap_splits(root: Path, version: str = "auto", **_options) -> tuple[str, ...]:
    """v1 has no val split; the annotation is cached, so reading a split afterwards is free."""
    path = find_file(root, ("RAP_annotation/RAP_annotation.mat", "RAP_annotation.mat"), "the RAP annotation (struct RAP_annotation)")
    annotation = matlab.struct(matlab.variable(matlab.load_mat(path, "the RAP annotation", cache=True), "RAP_annotation", path),
                               path, "RAP_annotation")
    if (detect_version(annotation, path) if version == "auto" else version) == "v1":
        return tuple(V1_SPLIT_POSITIONS)
    return tuple(V2_SPLIT_FIELDS)


def read_rap(root: Path, split: str, partition: int = 0, all_attributes: bool = False, version: str = "auto") -> SplitContents:
    if version not in ("auto", "v1", "v2"):
        raise UsageError(f"rap version must be auto, v1 or v2, got {version!r}")
    path = find_file(root, ("RAP_annotation/RAP_annotation.mat", "RAP_annotation.mat"), "the RAP annotation (struct RAP_annotation)")
    variables = matlab.load_mat(path, "the RAP annotation", cache=True)
    annotation = matlab.struct(matlab.variable(variables, "RAP_annotation", path), path, "RAP_annotation")
    version = detect_version(annotation, path) if version == "auto" else version
    read = _read_v2 if version == "v2" else _read_v1
    images, labels, names, columns, rows = read(annotation, path, split, partition, all_attributes)
    if labels.shape[0] != len(images):
        raise PersonvlError(f"{path}: {labels.shape[0]} label rows but {len(images)} image names")
    folder = require_directory(root / "RAP_dataset", "the RAP images")
    prefix = absolute(folder) + "/"
    vectors = binary_rows(labels, rows, columns, path, "RAP_annotation labels")
    records = [PersonRecord(prefix + images[row], attributes=vector, split=split) for row, vector in zip(rows.tolist(), vectors)]
    return SplitContents(records, attribute_names=[names[c] for c in columns], annotation=str(path))


def _partition(partitions: np.ndarray, partition: int) -> np.ndarray:
    partitions = partitions.reshape(-1)
    if not 0 <= partition < len(partitions):
        raise UsageError(f"RAP partition must be in 0..{len(partitions) - 1}, got {partition}")
    return partitions[partition]


def _read_v2(annotation, path, split, partition, all_attributes):
    what = "RAP_annotation"
    images = matlab.strings(matlab.field(annotation, "name", 0, path, what), path, "RAP_annotation.name")
    labels = matlab.matrix(matlab.field(annotation, "data", 1, path, what), path, "RAP_annotation.data")
    names = matlab.strings(matlab.field(annotation, "attribute", 2, path, what), path, "RAP_annotation.attribute")
    if labels.shape[1] != len(names):
        raise PersonvlError(f"{path}: RAP_annotation.data has {labels.shape[1]} columns but there are {len(names)} attribute names")
    if all_attributes:
        columns = np.arange(len(names))
    else:
        columns = matlab.one_based_rows(matlab.field(annotation, "selected_attribute", 3, path, what), len(names),
                                        path, "RAP_annotation.selected_attribute")
    part = matlab.struct(_partition(matlab.field(annotation, "partition_attribute", 4, path, what), partition),
                         path, f"partition_attribute[{partition}]")
    name, position = V2_SPLIT_FIELDS[split]
    rows = matlab.one_based_rows(matlab.field(part, name, position, path, f"partition_attribute[{partition}]"),
                                 labels.shape[0], path, f"partition_attribute[{partition}].{name}")
    return images, labels, names, columns, rows


def _read_v1(annotation, path, split, partition, all_attributes):
    if split not in V1_SPLIT_POSITIONS:
        raise PersonvlError(f"{path}: RAPv1 has no {split} split (its partitions hold trainval, read as train, and test)")
    fields = len(annotation.dtype.names or ())
    if fields < 6:
        raise PersonvlError(f"{path}: RAPv1 RAP_annotation should have at least 6 fields, has {fields}")
    labels = matlab.matrix(annotation[1], path, "RAP_annotation field 2 (labels)")
    names = matlab.strings(annotation[3], path, "RAP_annotation field 4 (attribute names)")
    images = matlab.strings(annotation[5], path, "RAP_annotation field 6 (image names)")
    if labels.shape[1] != len(names):
        raise PersonvlError(f"{path}: RAPv1 labels have {labels.shape[1]} columns but there are {len(names)} attribute names")
    columns = np.arange(len(names) if all_attributes else min(V1_EVALUATED, len(names)))
    part = matlab.struct(_partition(annotation[0], partition), path, f"RAPv1 partition {partition}")
    if len(part.dtype.names or ()) < 2:
        raise PersonvlError(f"{path}: RAPv1 partition {partition} should hold a trainval and a test index")
    rows = matlab.one_based_rows(part[V1_SPLIT_POSITIONS[split]], labels.shape[0], path, f"RAPv1 partition {partition} {split}")
    return images, labels, names, columns, rows


FORMATS = [
    DatasetFormat("rap", read_rap, ("train", "val", "test"),
                  "RAPv2: RAP_annotation/RAP_annotation.mat + RAP_dataset/; 54 attributes, partition 1 "
                  "(RAPv1 by position, unverified: train=trainval/test, 51 attributes)", discover_splits=rap_splits),
]
