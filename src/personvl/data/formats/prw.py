"""PRW (Person Re-identification in the Wild), as SeqNet reads it.

``frames/c<C>s<S>_<n>.jpg``, one ``annotations/<frame>.jpg.mat`` per frame (an N x 5
``[pid, x, y, w, h]`` matrix under ``box_new``, ``anno_file`` or ``anno_previous``; pid -2 =
an unidentified person), ``frame_train.mat`` / ``frame_test.mat`` (``img_index_train`` /
``img_index_test``: frame names) and ``query_info.txt`` (``pid x y w h frame`` per line).

Splits: ``train`` and ``gallery`` are one record per frame with every box (x1, y1, x2, y2;
negative coordinates clipped to 0 as SeqNet does) and its pid; ``query`` is one record per
query_info line with its pid, camera and ``scene_box`` in the frame (``query_crops=True``
reads the ``query_box/<pid>_<frame>.jpg`` crop as the image instead, with the frame in
``extra["frame_path"]``).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from personvl.data.formats import matlab
from personvl.data.formats.common import DatasetFormat, SplitContents, absolute, read_lines, require_directory
from personvl.data.records import PersonRecord
from personvl.errors import PersonvlError

FRAME_NAME = re.compile(r"^c(\d)s\d+_")
BOX_KEYS = ("box_new", "anno_file", "anno_previous")
FRAME_LISTS = {"train": ("frame_train.mat", "img_index_train"), "gallery": ("frame_test.mat", "img_index_test")}


def camera_of(frame: str, source: Path) -> int:
    match = FRAME_NAME.match(frame)
    if match is None or int(match.group(1)) < 1:
        raise PersonvlError(f"{source}: frame {frame!r} does not follow PRW's c<camera>s<sequence>_<n> naming")
    return int(match.group(1)) - 1


def frame_boxes(path: Path) -> tuple[list[tuple[float, float, float, float]], list[int]]:
    variables = matlab.load_mat(path, "the PRW boxes of a frame ([pid, x, y, w, h] per person)")
    key = next((k for k in BOX_KEYS if k in variables), None)
    if key is None:
        matlab.variable(variables, BOX_KEYS[0], path)
    values = np.asarray(variables[key])
    if values.size == 0:
        return [], []
    values = matlab.matrix(values, path, key, columns=5).astype(np.float64)
    xywh = np.clip(values[:, 1:], 0, None)
    xywh[:, 2:] += xywh[:, :2]
    return [tuple(box) for box in xywh.tolist()], values[:, 0].astype(np.int64).tolist()


def read_prw(root: Path, split: str, query_crops: bool = False) -> SplitContents:
    frames = require_directory(root / "frames", "the PRW scene frames (c<C>s<S>_<n>.jpg)")
    prefix = absolute(frames) + "/"
    if split == "query":
        return _read_queries(root, prefix, query_crops)
    file_name, key = FRAME_LISTS[split]
    path = root / file_name
    names = matlab.strings(matlab.variable(matlab.load_mat(path, f"the PRW {split} frame list ({key})"), key, path), path, key)
    annotations = require_directory(root / "annotations", "the PRW per-frame box files (<frame>.jpg.mat)")
    records = []
    for name in names:
        name = name.removesuffix(".jpg")
        boxes, pids = frame_boxes(annotations / f"{name}.jpg.mat")
        records.append(PersonRecord(f"{prefix}{name}.jpg", camid=camera_of(name, path), split=split, boxes=boxes, box_pids=pids))
    return SplitContents(records, annotation=str(path))


def _read_queries(root: Path, frame_prefix: str, query_crops: bool) -> SplitContents:
    path = root / "query_info.txt"
    if not path.is_file():
        raise PersonvlError(f"{path}: not found; expected the PRW queries ('pid x y w h frame' per line)")
    crops = absolute(root / "query_box") + "/"
    records = []
    for number, line in read_lines(path):
        fields = line.split()
        try:
            pid = int(float(fields[0]))
            x, y, w, h = (float(v) for v in fields[1:5])
        except (ValueError, IndexError):
            fields = []
        if len(fields) != 6:
            raise PersonvlError(f"{path}: line {number}: expected 'pid x y w h frame', got {line!r}")
        frame = fields[5].removesuffix(".jpg")
        frame_path = f"{frame_prefix}{frame}.jpg"
        record = PersonRecord(frame_path, pid=pid, camid=camera_of(frame, path), scene_box=(x, y, x + w, y + h), split="query")
        if query_crops:
            record.image_path = f"{crops}{pid}_{frame}.jpg"
            record.extra["frame_path"] = frame_path
        records.append(record)
    return SplitContents(records, annotation=str(path))


FORMATS = [
    DatasetFormat("prw", read_prw, ("train", "query", "gallery"),
                  "PRW: frames/, annotations/*.jpg.mat, frame_{train,test}.mat, query_info.txt (query_crops=true: query_box/)"),
]
