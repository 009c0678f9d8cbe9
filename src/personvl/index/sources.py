"""What a gallery is made of: a folder of images, a dataset split, or a JSONL of records.

Each source yields ``GalleryItem``s whose paths are relative to one gallery root; the index
stores only those relative paths, and the service only ever opens files under that root.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from personvl.errors import PersonvlError, UsageError
from personvl.index.images import IMAGE_SUFFIXES


@dataclass
class GalleryItem:
    """One image to index and what is known about it."""

    path: str  # relative to the gallery root, with forward slashes
    pid: int | None = None
    camid: int | None = None
    captions: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"path": self.path, "pid": self.pid, "camid": self.camid, "captions": list(self.captions)}


@dataclass
class GallerySource:
    """A gallery root and its items, in a fixed order (so re-runs see the same sequence)."""

    root: Path
    items: list[GalleryItem]
    description: str


def _relative_inside(root: Path, path: Path) -> str | None:
    """``path`` relative to ``root`` after resolving links; None when it lies outside."""
    resolved = path.resolve()
    try:
        return resolved.relative_to(root).as_posix()
    except ValueError:
        return None


def folder_source(folder: str | os.PathLike) -> GallerySource:
    """Every image under ``folder`` (recursively, hidden entries skipped), sorted by path."""
    root = Path(folder).resolve()
    if not root.is_dir():
        raise PersonvlError(f"{folder}: not a directory")
    items = []
    for directory, subdirectories, files in os.walk(root):
        subdirectories[:] = sorted(d for d in subdirectories if not d.startswith("."))
        for name in sorted(files):
            if name.startswith(".") or not name.lower().endswith(IMAGE_SUFFIXES):
                continue
            relative = _relative_inside(root, Path(directory, name))
            if relative is not None:  # a link leading out of the gallery is not part of it
                items.append(GalleryItem(relative))
    items.sort(key=lambda item: item.path)
    return GallerySource(root, items, f"folder {root}")


def dataset_source(name: str, location: str | os.PathLike, split: str | None = None,
                   root: str | os.PathLike | None = None) -> GallerySource:
    """A split of a dataset read by ``personvl.data.load_dataset`` (``split`` None: the
    format's default split). ``root``, the gallery root, defaults to ``location``."""
    from personvl.data.loading import load_dataset

    resolved_root = Path(root if root is not None else location).resolve()
    items = []
    records = load_dataset(name, location, split)
    for record in records:
        relative = _relative_inside(resolved_root, resolved_root / record.image_path)
        if relative is None:
            raise PersonvlError(f"{record.image_path} lies outside the gallery root {resolved_root}")
        items.append(GalleryItem(relative, record.pid, record.camid, list(record.captions)))
    return GallerySource(resolved_root, items, f"{name} {records.split} split of {Path(location).resolve()}")


def jsonl_source(jsonl: str | os.PathLike, split: str | None = None) -> GallerySource:
    """Records of a JSONL file in the ``jsonl`` dataset schema (``image``, ``pid``, ``camid``,
    ``captions`` ...; see ``personvl.data.formats.user``), all lines unless ``split`` names
    one. The file's folder is the gallery root: every image must lie inside it."""
    return dataset_source("jsonl", jsonl, split or "all", root=Path(jsonl).parent)


def resolve_source(images: str | os.PathLike, dataset: str | None = None,
                   split: str | None = None) -> GallerySource:
    """The source ``images`` names: a dataset root when ``dataset`` is given, else a JSONL
    file (``split`` picks its lines) or a folder of images."""
    path = Path(images)
    if dataset is not None:
        return dataset_source(dataset, path, split)
    if path.is_file() and path.suffix.lower() == ".jsonl":
        return jsonl_source(path, split)
    if split is not None:
        raise UsageError("a split applies to a dataset or a JSONL file, not to a folder of images")
    if path.is_dir():
        return folder_source(path)
    if not path.exists():
        raise PersonvlError(f"{images}: no such file or directory")
    raise UsageError(f"{images}: expected a folder of images, a .jsonl file, or a dataset root with a dataset name")
