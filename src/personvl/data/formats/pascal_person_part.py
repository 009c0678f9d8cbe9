"""PASCAL-Person-Part as the parsing codebases (Graphonomy, SCHP-style loaders) lay it out.

Layout: ``JPEGImages/<id>.jpg``, ``SegmentationPart/<id>.png`` (index PNG, 0 background ..
6 lower legs, same size as the image) and ``train_id.txt`` / ``val_id.txt`` with one id per
line, at the root or in ``list/``. The set has 1,716 train and 1,817 val (test) images; the
6 parts merge the PASCAL-Part labels as in the field's papers.
"""

from __future__ import annotations

from pathlib import Path

from personvl.data.formats.common import DatasetFormat, SplitContents, find_file, image_mask_records, read_id_list, require_directory

PART_NAMES = ["Background", "Head", "Torso", "Upper-arms", "Lower-arms", "Upper-legs", "Lower-legs"]


def read_pascal_person_part(root: Path, split: str) -> SplitContents:
    ids_path = find_file(root, (f"{split}_id.txt", f"list/{split}_id.txt"), f"the PASCAL-Person-Part {split} id list")
    images = require_directory(root / "JPEGImages", "the PASCAL-Person-Part images (<id>.jpg)")
    masks = require_directory(root / "SegmentationPart", "the PASCAL-Person-Part part masks (<id>.png)")
    records = image_mask_records(read_id_list(ids_path), images, ".jpg", masks, split)
    return SplitContents(records, part_names=PART_NAMES, annotation=str(ids_path))


FORMATS = [
    DatasetFormat("pascal-person-part", read_pascal_person_part, ("train", "val"),
                  "PASCAL-Person-Part: JPEGImages/ + SegmentationPart/ index PNGs + {train,val}_id.txt (or list/)"),
]
