"""The PEDES family of text-image sets: one JSON list with a record per image and its captions.

CUHK-PEDES, ICFG-PEDES, RSTPReid and SYNTH-PEDES share the record shape; they differ in the
annotation file's name, the key holding the image path, the folder paths are relative to, and
the splits they carry. Identity numbers are kept as written (1-based in CUHK-PEDES, 0-based in
ICFG-PEDES and RSTPReid); ``load_dataset(..., relabel=True)`` gives training labels 0..N-1.
"""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from personvl.data.formats.common import (
    DatasetFormat, SplitContents, absolute, find_file, iter_json_list, require_directory, require_key,
    require_record, string_list)
from personvl.data.records import RecordTable
from personvl.errors import PersonvlError


@dataclass(frozen=True)
class PedesLayout:
    name: str
    annotation_files: tuple[str, ...]   # accepted spellings, first found wins
    path_key: str
    image_folder: str                   # paths are relative to root/image_folder
    splits: tuple[str, ...]
    split_of: Callable[[object], str | None]   # the annotation's split value -> personvl split


def _irra_split(value: object) -> str | None:
    # IRRA reads every split that is neither train nor test as val.
    return value if value in ("train", "test") else "val"


def _one_of(*names: str) -> Callable[[object], str | None]:
    return lambda value: value if value in names else None


def read_pedes(layout: PedesLayout, root: Path, split: str) -> SplitContents:
    annotation = find_file(root, layout.annotation_files, f"the {layout.name} annotation list")
    image_root = require_directory(root / layout.image_folder, f"the {layout.name} images") if layout.image_folder else root
    has_split_key = len(layout.splits) > 1
    records = RecordTable(absolute(image_root) + "/", split, extra_key="prompt_captions")
    for index, entry in enumerate(iter_json_list(annotation)):
        where = f"record {index}"
        entry = require_record(entry, annotation, where)
        if has_split_key:
            value = require_key(entry, "split", annotation, where)
            entry_split = layout.split_of(value)
            if entry_split is None:
                raise PersonvlError(f"{annotation}: {where}: unknown split {value!r} (expected {', '.join(layout.splits)})")
            if entry_split != split:
                continue
        relative = require_key(entry, layout.path_key, annotation, where, str)
        pid = require_key(entry, "id", annotation, where, int)
        captions = string_list(require_key(entry, "captions", annotation, where), annotation, where, "captions")
        prompts = entry.get("prompt_caption")
        phrases = entry.get("attributes")
        records.append(relative, pid, captions,
                       _attribute_phrases(string_list(phrases, annotation, where, "attributes")) if phrases is not None else (),
                       tuple(string_list(prompts, annotation, where, "prompt_caption")) if prompts is not None else None)
    return SplitContents(records, annotation=str(annotation))


def _attribute_phrases(slots: list[str]) -> tuple[str, ...]:
    """SYNTH-PEDES's six comma-separated slots (gender, head, upper, lower, shoes, belongings)
    as phrases; ``unknown`` slots are dropped. The phrases repeat across millions of records,
    so they are interned."""
    return tuple(sys.intern(p.strip()) for text in slots for p in text.split(",") if p.strip() and p.strip() != "unknown")


def _format(layout: PedesLayout, summary: str) -> DatasetFormat:
    return DatasetFormat(layout.name, functools.partial(read_pedes, layout), layout.splits, summary)


FORMATS = [
    _format(PedesLayout("cuhk-pedes", ("reid_raw.json",), "file_path", "imgs", ("train", "val", "test"), _irra_split),
            "CUHK-PEDES: imgs/ + reid_raw.json; ids from 1; split key (not train/test = val)"),
    _format(PedesLayout("icfg-pedes", ("ICFG-PEDES.json", "ICFG_PEDES.json"), "file_path", "imgs", ("train", "test"),
                        _one_of("train", "test")),
            "ICFG-PEDES: imgs/ + ICFG-PEDES.json (or ICFG_PEDES.json); ids from 0; train/test"),
    _format(PedesLayout("rstpreid", ("data_captions.json",), "img_path", "imgs", ("train", "val", "test"),
                        _one_of("train", "val", "test")),
            "RSTPReid: imgs/ + data_captions.json (img_path key); ids from 0"),
    _format(PedesLayout("synth-pedes", ("synthpedes_dataset.json",), "file_path", "", ("train",), _one_of("train")),
            "SYNTH-PEDES: Part*/<id>/<n>.jpg + synthpedes_dataset.json; all train"),
]
