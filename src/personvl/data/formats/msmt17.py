"""MSMT17: images listed in ``list_{train,val,query,gallery}.txt`` as ``<relpath> <pid>``.

``train`` is the official training set, list_train + list_val (32,621 images of 1,041
identities), as TransReID-style loaders read it; ``include_val=False`` gives torchreid's and
fast-reid's default (list_train only). Identity numbers are kept as listed: test pids restart
at 0, so they repeat train numbers for different people. The camera is the third field of the
file name (cameras 01..15 -> camid 0..14).
"""

from __future__ import annotations

from pathlib import Path

from personvl.data.formats.common import DatasetFormat, SplitContents, absolute, find_directory, read_lines
from personvl.data.records import PersonRecord
from personvl.errors import PersonvlError

RELEASE_FOLDERS = ("MSMT17_V1", "MSMT17_V2", "MSMT17")
IMAGE_FOLDERS = {"train": ("train", "mask_train_v2"), "test": ("test", "mask_test_v2")}
SPLIT_LISTS = {"train": (("list_train.txt", "train"), ("list_val.txt", "train")),
               "query": (("list_query.txt", "test"),),
               "gallery": (("list_gallery.txt", "test"),)}


def release_root(root: Path) -> Path:
    if (root / "list_train.txt").is_file():
        return root
    return next((root / name for name in RELEASE_FOLDERS if (root / name / "list_train.txt").is_file()), root)


def camera_of(file_name: str, list_path: Path, number: int) -> int:
    fields = file_name.split("_")
    if len(fields) < 3 or not fields[2].isdigit() or int(fields[2]) < 1:
        raise PersonvlError(f"{list_path}: line {number}: {file_name!r} does not follow MSMT17's "
                            "PPPP_III_CC_... naming (camera CC from 01)")
    return int(fields[2]) - 1


def read_msmt17(root: Path, split: str, include_val: bool = True) -> SplitContents:
    base = release_root(root)
    lists = SPLIT_LISTS[split] if include_val or split != "train" else SPLIT_LISTS[split][:1]
    records = []
    for list_name, side in lists:
        list_path = base / list_name
        if not list_path.is_file():
            raise PersonvlError(f"{list_path}: not found; expected the MSMT17 {split} list ('<relpath> <pid>' per line)")
        folder = find_directory(base, IMAGE_FOLDERS[side], f"the MSMT17 {side} images")
        prefix = absolute(folder) + "/"
        for number, line in read_lines(list_path):
            fields = line.split()
            if len(fields) != 2 or not fields[1].lstrip("-").isdigit():
                raise PersonvlError(f"{list_path}: line {number}: expected '<relpath> <pid>', got {line!r}")
            relative, pid = fields[0], int(fields[1])
            camid = camera_of(relative.rsplit("/", 1)[-1], list_path, number)
            records.append(PersonRecord(prefix + relative, pid=pid, camid=camid, split=split))
    return SplitContents(records, annotation=str(base / lists[0][0]))


FORMATS = [
    DatasetFormat("msmt17", read_msmt17, ("train", "query", "gallery"),
                  "MSMT17 (V1/V2): train/, test/ + list_*.txt; train = list_train + list_val "
                  "(include_val=false: list_train only)"),
]
