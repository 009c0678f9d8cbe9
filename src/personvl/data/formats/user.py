"""A user's own data: a JSONL index (``jsonl``) or a folder tree of images (``folder``).

JSONL schema, one JSON object per line:

- ``image`` (required): image path, relative to the JSONL file's folder or absolute;
- ``pid``, ``camid``: integers or null; ``split``: any name (``train``, ``query`` ...);
- ``captions``: list of strings (or ``caption``: one string);
- ``attributes``: list of 0/1, aligned with the header's ``attribute_names``;
- ``attribute_phrases``, ``mask`` (part-mask path, relative like ``image``), ``scene_box``,
  ``boxes``, ``box_pids``: as the PersonRecord fields;
- any other key is kept in ``record.extra``.

An optional first line ``{"attribute_names": [...], "part_names": [...]}`` (no ``image``
key) names the attribute vector's entries and the mask values; its other keys are settings of
the program that wrote the file (``personvl caption`` keeps its prompts and calibration there)
and are not read. ``root`` is the .jsonl file or a
folder holding ``records.jsonl``. ``split="all"`` reads every line; another split reads the
lines with that ``split``. ``personvl data convert --to jsonl`` writes this schema.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

from personvl.data.formats.common import (
    IMAGE_EXTENSIONS, DatasetFormat, SplitContents, absolute, iter_jsonl, require_directory, require_key, string_list)
from personvl.data.records import PersonRecord
from personvl.errors import PersonvlError

INDEX_FILE = "records.jsonl"
HEADER_KEYS = frozenset({"attribute_names", "part_names"})
ALL = "all"
SPLIT_FOLDERS = ("train", "val", "test", "query", "gallery")
_RECORD_KEYS = {"image", "pid", "camid", "split", "captions", "caption", "attributes", "attribute_phrases", "mask",
                "scene_box", "boxes", "box_pids", "extra"}


def index_path(root: Path) -> Path:
    if root.is_file():
        return root
    path = root / INDEX_FILE
    if not path.is_file():
        raise PersonvlError(f"{path}: not found; expected a JSONL index (or pass the .jsonl file itself)")
    return path


def read_jsonl_records(path: Path, split: str = ALL, image_root: Path | None = None) -> SplitContents:
    """Records of a JSONL index; relative paths are relative to ``image_root`` (default: the
    file's folder)."""
    prefix = absolute(image_root if image_root is not None else path.parent) + "/"
    header: dict[str, Any] = {}
    records: list[PersonRecord] = []
    seen_splits: dict[str, None] = {}
    for position, (number, entry) in enumerate(iter_jsonl(path)):
        where = f"line {number}"
        if position == 0 and "image" not in entry:
            header = {k: string_list(v, path, where, k) for k, v in entry.items() if k in HEADER_KEYS}
            continue
        entry_split = entry.get("split")
        if entry_split is not None:
            seen_splits[str(entry_split)] = None
        if split != ALL and entry_split != split:
            continue
        records.append(_record(entry, path, where, prefix, header.get("attribute_names")))
    if not records and split != ALL and seen_splits:
        raise PersonvlError(f"{path}: no record has split {split!r} (splits: {', '.join(seen_splits)})")
    return SplitContents(records, attribute_names=header.get("attribute_names"), part_names=header.get("part_names"),
                         annotation=str(path))


def _optional_int(entry: dict[str, Any], key: str, path: Path, where: str) -> int | None:
    return require_key(entry, key, path, where, int) if entry.get(key) is not None else None


def _record(entry: dict[str, Any], path: Path, where: str, prefix: str, attribute_names: list[str] | None) -> PersonRecord:
    image = require_key(entry, "image", path, where, str)
    captions = string_list(entry["captions"] if "captions" in entry else entry.get("caption", []), path, where, "captions")
    attributes = entry.get("attributes")
    if attributes is not None:
        if not isinstance(attributes, list) or any(v not in (0, 1) or isinstance(v, float) for v in attributes):
            raise PersonvlError(f"{path}: {where}: 'attributes' should be a list of 0/1")
        if attribute_names is not None and len(attributes) != len(attribute_names):
            raise PersonvlError(f"{path}: {where}: {len(attributes)} attributes but the header names {len(attribute_names)}")
    mask = entry.get("mask")
    extra = dict(entry.get("extra") or {})
    extra.update((k, v) for k, v in entry.items() if k not in _RECORD_KEYS)
    try:
        return PersonRecord.from_dict({
            "image_path": _resolve(image, prefix), "pid": _optional_int(entry, "pid", path, where),
            "camid": _optional_int(entry, "camid", path, where), "captions": captions,
            "attributes": [int(v) for v in attributes] if attributes is not None else None,
            "attribute_phrases": string_list(entry.get("attribute_phrases", []), path, where, "attribute_phrases"),
            "mask_path": _resolve(mask, prefix) if mask else None, "scene_box": entry.get("scene_box"),
            "split": entry.get("split"), "extra": extra, "boxes": entry.get("boxes"), "box_pids": entry.get("box_pids")})
    except (TypeError, ValueError) as exc:
        raise PersonvlError(f"{path}: {where}: malformed box fields ({exc})") from None


def _resolve(path: str, prefix: str) -> str:
    return path if os.path.isabs(path) else prefix + path


def jsonl_entry(record: PersonRecord) -> dict[str, Any]:
    """A record in the JSONL schema (absolute paths; empty fields left out)."""
    values = record.to_dict()
    entry: dict[str, Any] = {"image": values.pop("image_path")}
    mask = values.pop("mask_path")
    if mask:
        entry["mask"] = mask
    entry.update((k, v) for k, v in values.items() if v not in (None, [], {}))
    return entry


def write_jsonl(records: Iterable[PersonRecord], path: Path, attribute_names: Sequence[str] | None = None,
                part_names: Sequence[str] | None = None) -> int:
    """Write a JSONL index (atomically); returns the number of records written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = {k: list(v) for k, v in (("attribute_names", attribute_names), ("part_names", part_names)) if v}
    tmp = path.with_name(f".{path.name}.tmp")
    count = 0
    with tmp.open("w", encoding="utf-8") as handle:
        if header:
            handle.write(json.dumps(header, ensure_ascii=False) + "\n")
        for record in records:
            handle.write(json.dumps(jsonl_entry(record), ensure_ascii=False) + "\n")
            count += 1
    os.replace(tmp, path)
    return count


def jsonl_splits(root: Path, **_options: Any) -> tuple[str, ...]:
    splits: dict[str, None] = {}
    unsplit = False
    for _, entry in iter_jsonl(index_path(root)):
        if "image" not in entry:
            continue
        if entry.get("split") is None:
            unsplit = True
        else:
            splits[str(entry["split"])] = None
    return (ALL,) + tuple(splits) if unsplit or not splits else tuple(splits)


def read_jsonl(root: Path, split: str = ALL) -> SplitContents:
    return read_jsonl_records(index_path(root), split)


# ----------------------------------------------------------------------------- folder tree


def walk_images(folder: Path) -> list[str]:
    """Every image under ``folder``, sorted; os.walk, because a million-file tree is too slow
    for Path.glob."""
    found = []
    for directory, subdirectories, files in os.walk(absolute(folder)):
        subdirectories.sort()
        found.extend(os.path.join(directory, f) for f in files if os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS)
    found.sort()
    return found


def read_folder(root: Path, split: str = ALL, pid_from_folder: bool = False) -> SplitContents:
    """Images in a tree. ``split="all"`` reads the whole tree, another split the sub-folder of
    that name. With ``pid_from_folder`` the image's folder names its identity: a number is
    the pid, other names get 0..N-1 in sorted order (the name kept in ``extra["identity"]``)."""
    base = require_directory(root if split == ALL else root / split, f"a folder of images{'' if split == ALL else f' ({split})'}")
    paths = walk_images(base)
    if not paths:
        raise PersonvlError(f"{base}: no images found (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})")
    records = [PersonRecord(p, split=None if split == ALL else split) for p in paths]
    if pid_from_folder:
        loose = next((p for p in paths if os.path.dirname(p) == absolute(base)), None)
        if loose is not None:
            raise PersonvlError(f"{loose}: not in an identity sub-folder (pid_from_folder needs <root>/<identity>/<image>)")
        folders = [os.path.basename(os.path.dirname(p)) for p in paths]
        numeric = all(f.lstrip("-").isdigit() for f in folders)
        labels = {name: i for i, name in enumerate(sorted(set(folders)))}
        for record, name in zip(records, folders):
            record.pid = int(name) if numeric else labels[name]
            if not numeric:
                record.extra["identity"] = name
    return SplitContents(records, annotation=str(base))


def folder_splits(root: Path, **_options: Any) -> tuple[str, ...]:
    return (ALL,) + tuple(name for name in SPLIT_FOLDERS if (root / name).is_dir())


FORMATS = [
    DatasetFormat("jsonl", read_jsonl, (ALL,),
                  "your data as a JSONL index: one {\"image\", \"pid\", \"camid\", \"captions\", \"attributes\", ...} per line",
                  discover_splits=jsonl_splits),
    DatasetFormat("folder", read_folder, (ALL,),
                  "a folder tree of images; split = a sub-folder (train/, query/ ...); pid_from_folder=true reads "
                  "<identity>/<image>", discover_splits=folder_splits),
]
