"""CUHK03 under the new (767/700) protocol, as torchreid reads it.

Assumed layout (the split files distributed with the re-ranking paper's CUHK03-NP protocol):
``cuhk03_new_protocol_config_{detected,labeled}.mat`` holding ``filelist`` (N x 1 cell of file
names such as ``1_001_1_01.png``), ``labels`` (N x 1 identity numbers) and ``train_idx``,
``query_idx``, ``gallery_idx`` (1-based rows), with the images in ``images_detected/`` and
``images_labeled/``. The file name reads ``<camera pair>_<pid>_<camera>_<n>``: camid is the
third field minus 1 (0 or 1 within the pair), as in torchreid.
"""

from __future__ import annotations

from pathlib import Path

from personvl.data.formats import matlab
from personvl.data.formats.common import DatasetFormat, SplitContents, absolute, require_directory
from personvl.data.records import PersonRecord
from personvl.errors import PersonvlError, UsageError

VARIANTS = ("detected", "labeled")


def read_cuhk03(root: Path, split: str, variant: str = "detected") -> SplitContents:
    if variant not in VARIANTS:
        raise UsageError(f"cuhk03 variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
    path = root / f"cuhk03_new_protocol_config_{variant}.mat"
    variables = matlab.load_mat(path, f"the CUHK03 new-protocol split file ({variant} boxes)", cache=True)
    names = matlab.strings(matlab.variable(variables, "filelist", path), path, "filelist")
    labels = matlab.integers(matlab.variable(variables, "labels", path), path, "labels")
    if len(labels) != len(names):
        raise PersonvlError(f"{path}: labels has {len(labels)} entries but filelist has {len(names)}")
    rows = matlab.one_based_rows(matlab.variable(variables, f"{split}_idx", path), len(names), path, f"{split}_idx")
    folder = require_directory(root / f"images_{variant}", f"the CUHK03 {variant} images")
    prefix = absolute(folder) + "/"
    records = []
    for row in rows:
        name = names[row]
        fields = name.split("_")
        if len(fields) < 4 or not fields[2].isdigit():
            raise PersonvlError(f"{path}: filelist[{row}]: {name!r} does not follow CUHK03's <pair>_<pid>_<camera>_<n> naming")
        records.append(PersonRecord(prefix + name, pid=int(labels[row]), camid=int(fields[2]) - 1, split=split))
    return SplitContents(records, annotation=str(path))


FORMATS = [
    DatasetFormat("cuhk03", read_cuhk03, ("train", "query", "gallery"),
                  "CUHK03 new protocol: cuhk03_new_protocol_config_{detected,labeled}.mat + images_{detected,labeled}/ "
                  "(variant=detected|labeled)"),
]
