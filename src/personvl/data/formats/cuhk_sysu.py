"""CUHK-SYSU person search, in the layout SeqNet-style loaders read.

Assumed layout: ``Image/SSM/<name>.jpg`` scene images; ``annotation/Images.mat`` (``Img``: a
struct per image with ``imname``, ``nAppear`` and ``box``, a struct array whose ``idlocate``
is x, y, w, h); ``annotation/pool.mat`` (``pool``: the names of the 6,978 test images);
``annotation/test/train_test/Train.mat`` (``Train``: one 1x1 struct per training identity with
``idname``, ``nAppear`` and ``scene``, a struct array of ``imname``, ``idlocate``,
``ishard``) and ``annotation/test/train_test/TestG100.mat`` (``TestG100``: per query
identity a ``Query`` struct and a ``Gallery`` struct array of 100 entries, ``idlocate`` empty
where the person is absent). Fields are read by name, with SeqNet's positions as fallback.

Identities are numbered as SeqNet numbers them: the n-th Train.mat entry is pid n and the n-th
query of the protocol is pid n (train and test numbers are different people). Every other box
is unlabelled (``UNLABELLED_PID``). Boxes with zero width or height are dropped, as SeqNet does.
``train`` = images not in the test pool; ``gallery`` = the pool (without pool.mat: the images
the protocol names); ``query`` = one record per protocol entry with ``scene_box`` and its 100
gallery images in ``extra["gallery"]``. ``protocol`` picks another gallery-size file
(``TestG50`` ...).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from personvl.data.formats import matlab
from personvl.data.formats.common import DatasetFormat, SplitContents, absolute, require_directory
from personvl.data.records import UNLABELLED_PID, PersonRecord
from personvl.errors import PersonvlError

Box = tuple[int, int, int, int]


def _box(value, path: Path, what: str) -> Box | None:
    """An x, y, w, h box (truncated to whole pixels, as SeqNet does), or None for MATLAB's
    empty entry (a gallery image without the person)."""
    values = np.asarray(value)
    if values.size == 0:
        return None
    if values.dtype == object or not np.issubdtype(values.dtype, np.number) or values.size != 4:
        raise PersonvlError(f"{path}: {what}: expected 4 numbers (x, y, w, h), got {values.size} of {values.dtype}")
    return tuple(int(v) for v in values.astype(np.float64).reshape(-1).astype(np.int64))


def _all_boxes(root: Path) -> tuple[dict[str, list[Box]], Path]:
    path = root / "annotation" / "Images.mat"
    images = matlab.variable(matlab.load_mat(path, "the CUHK-SYSU boxes per image (Img)", cache=True), "Img", path)
    boxes: dict[str, list[Box]] = {}
    for i, item in enumerate(matlab.struct_items(images, path, "Img")):
        name = matlab.text(matlab.field(item, "imname", 0, path, f"Img[{i}]"), path, f"Img[{i}].imname")
        entries = matlab.struct_items(matlab.field(item, "box", 2, path, f"Img[{i}]"), path, f"Img[{i}].box")
        found = [_box(matlab.field(e, "idlocate", 0, path, f"Img[{i}].box"), path, f"Img[{i}].box") for e in entries]
        boxes[name] = [b for b in found if b is not None and b[2] > 0 and b[3] > 0]
    return boxes, path


def _protocol(root: Path, protocol: str) -> tuple[list[np.void], Path]:
    path = root / "annotation" / "test" / "train_test" / f"{protocol}.mat"
    value = matlab.variable(matlab.load_mat(path, f"the CUHK-SYSU test protocol ({protocol})", cache=True), protocol, path)
    return matlab.struct_items(value, path, protocol), path


def _appearances(item: np.void, key: str, position: int, path: Path, what: str) -> list[tuple[str, Box | None]]:
    """(image name, box) of each entry of a struct array field such as ``scene`` or ``Gallery``."""
    result = []
    for j, entry in enumerate(matlab.struct_items(matlab.field(item, key, position, path, what), path, f"{what}.{key}")):
        name = matlab.text(matlab.field(entry, "imname", 0, path, f"{what}.{key}[{j}]"), path, f"{what}.{key}[{j}].imname")
        result.append((name, _box(matlab.field(entry, "idlocate", 1, path, f"{what}.{key}[{j}]"), path, f"{what}.{key}[{j}].idlocate")))
    return result


def _query(item: np.void, n: int, path: Path, protocol: str) -> tuple[str, Box | None]:
    what = f"{protocol}[{n}].Query"
    query = matlab.struct(matlab.field(item, "Query", 0, path, f"{protocol}[{n}]"), path, what)
    name = matlab.text(matlab.field(query, "imname", 0, path, what), path, f"{what}.imname")
    return name, _box(matlab.field(query, "idlocate", 1, path, what), path, f"{what}.idlocate")


def _label(box_pids: dict[str, list[int]], boxes: dict[str, list[Box]], name: str, box: Box, pid: int, source: Path) -> None:
    if name not in boxes:
        raise PersonvlError(f"{source}: image {name!r} is not in annotation/Images.mat")
    for k, candidate in enumerate(boxes[name]):
        if candidate == box:
            box_pids[name][k] = pid
            return


def read_cuhk_sysu(root: Path, split: str, protocol: str = "TestG100") -> SplitContents:
    images = require_directory(root / "Image" / "SSM", "the CUHK-SYSU scene images")
    prefix = absolute(images) + "/"
    boxes, images_mat = _all_boxes(root)
    entries, protocol_path = _protocol(root, protocol)
    if split == "query":
        records = []
        for n, item in enumerate(entries):
            name, box = _query(item, n, protocol_path, protocol)
            if box is None:
                raise PersonvlError(f"{protocol_path}: {protocol}[{n}].Query has no box")
            gallery = [g for g, _ in _appearances(item, "Gallery", 1, protocol_path, f"{protocol}[{n}]")]
            x, y, w, h = box
            records.append(PersonRecord(prefix + name, pid=n + 1, scene_box=(x, y, x + w, y + h), split="query",
                                        extra={"gallery": gallery}))
        return SplitContents(records, annotation=str(protocol_path))

    box_pids = {name: [UNLABELLED_PID] * len(b) for name, b in boxes.items()}
    test_names = _test_pool(root, entries, protocol_path, protocol)
    if split == "train":
        path = root / "annotation" / "test" / "train_test" / "Train.mat"
        train = matlab.variable(matlab.load_mat(path, "the CUHK-SYSU training identities (Train)", cache=True), "Train", path)
        for n, item in enumerate(matlab.struct_items(train, path, "Train")):
            for name, box in _appearances(item, "scene", 2, path, f"Train[{n}]"):
                if box is not None:
                    _label(box_pids, boxes, name, box, n + 1, path)
        names = sorted(set(boxes) - set(test_names))
        annotation = path
    else:
        for n, item in enumerate(entries):
            appearances = [_query(item, n, protocol_path, protocol)] + _appearances(item, "Gallery", 1, protocol_path, f"{protocol}[{n}]")
            for name, box in appearances:
                if box is not None:
                    _label(box_pids, boxes, name, box, n + 1, protocol_path)
        names = test_names
        annotation = protocol_path
    missing = [n for n in names if n not in boxes]
    if missing:
        raise PersonvlError(f"{images_mat}: {len(missing)} image(s) of the {split} split have no boxes, e.g. {missing[0]!r}")
    records = [PersonRecord(prefix + name, split=split, boxes=[(x, y, x + w, y + h) for x, y, w, h in boxes[name]],
                            box_pids=list(box_pids[name])) for name in names]
    return SplitContents(records, annotation=str(annotation))


def _test_pool(root: Path, entries: list[np.void], protocol_path: Path, protocol: str) -> list[str]:
    path = root / "annotation" / "pool.mat"
    if path.is_file():
        return matlab.strings(matlab.variable(matlab.load_mat(path, "the CUHK-SYSU test pool", cache=True), "pool", path), path, "pool")
    names: dict[str, None] = {}
    for n, item in enumerate(entries):
        names[_query(item, n, protocol_path, protocol)[0]] = None
        names.update((g, None) for g, _ in _appearances(item, "Gallery", 1, protocol_path, f"{protocol}[{n}]"))
    return sorted(names)


FORMATS = [
    DatasetFormat("cuhk-sysu", read_cuhk_sysu, ("train", "query", "gallery"),
                  "CUHK-SYSU: Image/SSM/ + annotation/Images.mat, pool.mat, test/train_test/{Train,TestG100}.mat"),
]
