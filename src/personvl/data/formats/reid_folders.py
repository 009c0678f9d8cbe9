"""Market-1501-style re-ID folders: ``bounding_box_train/``, ``query/``, ``bounding_box_test/``,
identity and camera in each file name (``0002_c1s1_000451_03.jpg``, ``0001_c2_f0046182.jpg``).

Conventions of torchreid and fast-reid: pid and camera from the regex ``([-\\d]+)_c(\\d)``,
camid = C - 1, pid -1 (junk) dropped, pid 0 (distractors) kept, only the images directly in
each folder (``gt_bbox/`` repeats the query names; ``Thumbs.db`` is not an image).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

from personvl.data.formats.common import (
    DatasetFormat, SplitContents, absolute, list_images, parse_file_name, require_directory)
from personvl.data.records import PersonRecord
from personvl.errors import PersonvlError

FILE_NAME = re.compile(r"([-\d]+)_c(\d)")
SPLIT_FOLDERS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}


@dataclass(frozen=True)
class ReidFolderLayout:
    name: str
    cameras: int
    release_folder: str    # the versioned folder a release unpacks to, accepted one level down


def release_root(root: Path, layout: ReidFolderLayout) -> Path:
    if (root / SPLIT_FOLDERS["train"]).is_dir() or not (root / layout.release_folder).is_dir():
        return root
    return root / layout.release_folder


def read_reid_folders(layout: ReidFolderLayout, root: Path, split: str) -> SplitContents:
    base = release_root(root, layout)
    folder = require_directory(base / SPLIT_FOLDERS[split], f"the {layout.name} {split} images "
                               f"({', '.join(f + '/' for f in SPLIT_FOLDERS.values())} under the root)")
    records = []
    for path in list_images(folder):
        match = parse_file_name(FILE_NAME, path)
        pid, camera = int(match.group(1)), int(match.group(2))
        if pid == -1:
            continue
        if not 1 <= camera <= layout.cameras:
            raise PersonvlError(f"{path}: camera c{camera} is outside c1..c{layout.cameras} of {layout.name}")
        records.append(PersonRecord(absolute(path), pid=pid, camid=camera - 1, split=split))
    return SplitContents(records, annotation=str(folder))


FORMATS = [
    DatasetFormat("market1501", functools.partial(read_reid_folders, ReidFolderLayout("market1501", 6, "Market-1501-v15.09.15")),
                  ("train", "query", "gallery"),
                  "Market-1501: bounding_box_train/, query/, bounding_box_test/; pid -1 dropped, pid 0 kept"),
    DatasetFormat("dukemtmc", functools.partial(read_reid_folders, ReidFolderLayout("dukemtmc", 8, "DukeMTMC-reID")),
                  ("train", "query", "gallery"),
                  "DukeMTMC-reID: the Market-1501 layout with 8 cameras"),
]
