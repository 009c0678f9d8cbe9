"""LUPerson-style pre-training data: a folder of unlabeled person crops, optionally with a
LUPerson-T / LUPerson-TA style annotation file.

The annotation (``annotations=FILE``, relative to the root or absolute) uses the ``jsonl``
schema with image paths relative to the root: LUPerson-T lines carry ``captions``, LUPerson-TA
lines add an ``attributes`` 0/1 vector named by a header line ``{"attribute_names": [...]}``::

    {"attribute_names": ["female", "backpack", "hat"]}
    {"image": "0001/0001_000.jpg", "captions": ["a woman in a red coat ..."], "attributes": [1, 0, 0]}

Without an annotation, every image under the root is a record without identity. All records
are ``train``. At LUPerson's scale, convert once to shards (``personvl data convert luperson
ROOT --to shards OUT``) so that training never walks the folder.
"""

from __future__ import annotations

from pathlib import Path

from personvl.data.formats.common import DatasetFormat, SplitContents
from personvl.data.formats.user import ALL, read_folder, read_jsonl_records
from personvl.errors import PersonvlError


def read_luperson(root: Path, split: str = "train", annotations: str | None = None) -> SplitContents:
    if annotations is None:
        contents = read_folder(root, ALL)
    else:
        path = Path(annotations) if Path(annotations).is_absolute() else root / annotations
        if not path.is_file():
            raise PersonvlError(f"{path}: not found; expected a LUPerson-T/-TA annotation file (JSONL, one image per line)")
        contents = read_jsonl_records(path, ALL, image_root=root)
    for record in contents.records:
        record.split = split
    return contents


FORMATS = [
    DatasetFormat("luperson", read_luperson, ("train",),
                  "LUPerson: a folder of unlabeled crops; annotations=FILE adds LUPerson-T/-TA captions and attributes (JSONL)"),
]
