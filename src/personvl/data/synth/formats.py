"""Writing the world in the real datasets' on-disk formats (shared/FORMATS.md).

Images are hard links to the world's own crops where the file system allows (no extra disk),
copies otherwise. Every file is written atomically and deterministically; .mat headers carry
a fixed text instead of MATLAB's creation time so that reruns are byte-identical.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.io
from PIL import Image

from personvl.data.synth import vocabulary as vocab
from personvl.data.synth.parallel import run_parallel

if TYPE_CHECKING:
    from personvl.data.synth.scenes import SceneSpec
    from personvl.data.synth.world import WorldPlan

_MAT_HEADER = b"MATLAB 5.0 MAT-file, written by personvl synthetic world"


def link_or_copy(source: Path, target: Path) -> None:
    if target.exists():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    if tmp.exists():
        tmp.unlink()
    try:
        os.link(source, tmp)
    except OSError:
        shutil.copyfile(source, tmp)
    os.replace(tmp, target)


def write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_json(path: Path, value: Any) -> None:
    write_bytes(path, (json.dumps(value, ensure_ascii=False) + "\n").encode("utf-8"))


def write_mat(path: Path, variables: dict[str, Any]) -> None:
    """A MATLAB 5 file as scipy writes it, with a deterministic 116-byte header text."""
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, variables, format="5", do_compression=False, oned_as="column")
    data = bytearray(buffer.getvalue())
    data[:116] = _MAT_HEADER.ljust(116, b" ")
    write_bytes(path, bytes(data))


def cell_column(strings: list[str]) -> np.ndarray:
    """An N x 1 MATLAB cell array of strings."""
    cell = np.empty((len(strings), 1), dtype=object)
    for i, text in enumerate(strings):
        cell[i, 0] = text
    return cell


def tokenize(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+(?:-[a-z0-9]+)*", text.lower())


# ----------------------------------------------------------------------------- per dataset


def write_cuhk_pedes(out: Path, plan: "WorldPlan") -> str:
    root = out / "cuhk-pedes"
    entries = []
    for r in plan.records:
        relative = f"cam{r['camid'] + 1}/{Path(r['image']).name}"
        link_or_copy(out / r["image"], root / "imgs" / relative)
        entries.append({"split": r["split"], "captions": r["captions"], "file_path": relative,
                        "processed_tokens": [tokenize(c) for c in r["captions"]], "id": r["pid"]})
    write_json(root / "reid_raw.json", entries)
    return "cuhk-pedes"


def write_synth_pedes(out: Path, plan: "WorldPlan") -> str:
    """Pre-training set: train and val identities only, so the test split stays unseen."""
    root = out / "synth-pedes"
    entries = []
    for r in plan.records:
        if r["split"] == "test":
            continue
        part = 1 + (r["pid"] - 1) // 1000
        relative = f"Part{part}/{r['pid']}/{int(Path(r['image']).stem.split('_')[1]) + 1}.jpg"
        link_or_copy(out / r["image"], root / relative)
        entries.append({"id": r["pid"], "file_path": relative, "attributes": [r["attribute_string"]],
                        "captions": r["captions"], "prompt_caption": r["prompt_captions"]})
    write_json(root / "synthpedes_dataset.json", entries)
    return "synth-pedes"


def market_name(pid: int, camid: int, sequence: int, frame: int) -> str:
    prefix = "-1" if pid < 0 else f"{pid:04d}"
    return f"{prefix}_c{camid + 1}s{sequence}_{frame:06d}_01.jpg"


def write_market1501(out: Path, plan: "WorldPlan") -> str:
    """train = train identities; query = each test identity's first image, gallery = the rest;
    val identities become pid 0 distractors and background crops pid -1 junk, as in Market."""
    root = out / "market1501"
    for frame, r in enumerate(plan.records):
        k = int(Path(r["image"]).stem.split("_")[1])
        if r["split"] == "train":
            folder, pid = "bounding_box_train", r["pid"]
        elif r["split"] == "val":
            folder, pid = "bounding_box_test", 0
        else:
            folder, pid = ("query" if k == 0 else "bounding_box_test"), r["pid"]
        link_or_copy(out / r["image"], root / folder / market_name(pid, r["camid"], 1 + k, frame))
    for j, (name, spec) in enumerate(plan.junk):
        link_or_copy(out / name, root / "bounding_box_test" / market_name(-1, spec.camera, 1, len(plan.records) + j))
    for folder in ("bounding_box_train", "bounding_box_test"):
        write_bytes(root / folder / "Thumbs.db", b"\xd0\xcf\x11\xe0 not an image")
    return "market1501"


def write_pa100k(out: Path, plan: "WorldPlan") -> str:
    root = out / "pa100k"
    names: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    labels: dict[str, list[list[int]]] = {"train": [], "val": [], "test": []}
    for index, r in enumerate(plan.records):
        name = f"{index + 1:06d}.jpg"
        link_or_copy(out / r["image"], root / "data" / name)
        names[r["split"]].append(name)
        labels[r["split"]].append(r["attributes"])
    attribute_count = len(vocab.attribute_names())
    variables = {"attributes": cell_column(vocab.attribute_names())}
    for split in ("train", "val", "test"):
        variables[f"{split}_images_name"] = cell_column(names[split])
        variables[f"{split}_label"] = np.asarray(labels[split], dtype=np.uint8).reshape(-1, attribute_count)
    write_mat(root / "annotation.mat", variables)
    return "pa100k"


_LIP_TABLE = np.arange(256, dtype=np.uint8)
_LIP_TABLE[vocab.LIP_NUM_CLASSES:] = 0  # carried objects are background in LIP


def _write_lip_mask(task: tuple[str, str]) -> None:
    source, target = task
    mask = _LIP_TABLE[np.asarray(Image.open(source))]
    buffer = io.BytesIO()
    Image.fromarray(mask, "L").save(buffer, format="PNG", compress_level=1)
    write_bytes(Path(target), buffer.getvalue())


def write_lip(out: Path, plan: "WorldPlan", workers: int = 1, progress: bool = False) -> str:
    """LIP layout. World train -> LIP train, world test -> LIP val (the split LIP results are
    reported on), world val -> LIP test (images only, like LIP's unannotated test set)."""
    root = out / "lip"
    mask_tasks = []
    ids: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    lip_split = {"train": "train", "test": "val", "val": "test"}
    for r in plan.records:
        split = lip_split[r["split"]]
        name = Path(r["image"]).stem
        ids[split].append(name)
        if split == "test":
            link_or_copy(out / r["image"], root / "Testing_images" / "testing_images" / f"{name}.jpg")
            continue
        link_or_copy(out / r["image"], root / "TrainVal_images" / f"{split}_images" / f"{name}.jpg")
        target = root / "TrainVal_parsing_annotations" / f"{split}_segmentations" / f"{name}.png"
        if not target.exists():
            mask_tasks.append((str(out / r["mask"]), str(target)))
    run_parallel(_write_lip_mask, mask_tasks, workers, "LIP masks", progress)
    for split, folder in (("train", "TrainVal_images"), ("val", "TrainVal_images"), ("test", "Testing_images")):
        write_bytes(root / folder / f"{split}_id.txt", "".join(f"{i}\n" for i in ids[split]).encode())
    return "lip"


def write_prw(out: Path, plan: "WorldPlan", scenes: list[tuple["SceneSpec", list[tuple[int, ...]]]]) -> str:
    """PRW layout: frames, one .mat of boxes per frame, train/test frame lists, and a query per
    test identity (its first appearance) in query_info.txt (CRLF) and query_box/."""
    root = out / "prw"
    frame_lists: dict[str, list[str]] = {"train": [], "test": []}
    queried: set[int] = set()
    query_lines = []
    for scene, boxes in scenes:
        split = "train" if "s1_" in scene.name else "test"
        frame_lists[split].append(scene.name)
        link_or_copy(out / "scenes" / f"{scene.name}.jpg", root / "frames" / f"{scene.name}.jpg")
        box_new = np.asarray(boxes, dtype=np.float64).reshape(-1, 5)
        write_mat(root / "annotations" / f"{scene.name}.jpg.mat", {"box_new": box_new})
        if split != "test":
            continue
        for pid, x, y, w, h in boxes:
            if pid > 0 and pid not in queried:
                queried.add(pid)
                query_lines.append(f"{pid} {x:.4f} {y:.4f} {w:.4f} {h:.4f} {scene.name}\r\n")
                crop_path = root / "query_box" / f"{pid}_{scene.name}.jpg"
                if not crop_path.exists():
                    with Image.open(out / "scenes" / f"{scene.name}.jpg") as frame:
                        crop = frame.crop((x, y, x + w, y + h))
                        buffer = io.BytesIO()
                        crop.save(buffer, format="JPEG", quality=plan.config.jpeg_quality)
                    write_bytes(crop_path, buffer.getvalue())
    write_mat(root / "frame_train.mat", {"img_index_train": cell_column(frame_lists["train"])})
    write_mat(root / "frame_test.mat", {"img_index_test": cell_column(frame_lists["test"])})
    write_bytes(root / "query_info.txt", "".join(query_lines).encode())
    return "prw"


def write_all_formats(out: Path, plan: "WorldPlan", scenes, workers: int = 1, progress: bool = False) -> dict[str, str]:
    """Write every dataset layout; returns dataset name -> folder relative to ``out``."""
    written = {}
    for name, writer in (("cuhk-pedes", write_cuhk_pedes), ("synth-pedes", write_synth_pedes),
                         ("market1501", write_market1501), ("pa100k", write_pa100k)):
        written[name] = writer(out, plan)
    written["lip"] = write_lip(out, plan, workers, progress)
    written["prw"] = write_prw(out, plan, scenes)
    return written
