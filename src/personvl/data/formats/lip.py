"""LIP (Look into Person): images, index-PNG part masks (0 background .. 19) and id lists.

Three layouts are found on users' disks and all are read: the official unzipped one
(``TrainVal_images/{train,val}_images/``, ``TrainVal_images/{train,val}_id.txt``,
``TrainVal_parsing_annotations/{train,val}_segmentations/``, ``Testing_images/testing_images/``
and ``test_id.txt``), the same with each archive folder nested twice
(``TrainVal_images/TrainVal_images/...``), and SCHP's flattened copy (``train_images/``,
``train_segmentations/``, ``train_id.txt`` ... at the root). The test split has no masks.
"""

from __future__ import annotations

from pathlib import Path

from personvl.data.formats.common import DatasetFormat, SplitContents, find_directory, find_file, image_mask_records, read_id_list

PART_NAMES = ["Background", "Hat", "Hair", "Glove", "Sunglasses", "Upper-clothes", "Dress", "Coat", "Socks", "Pants",
              "Jumpsuits", "Scarf", "Skirt", "Face", "Left-arm", "Right-arm", "Left-leg", "Right-leg", "Left-shoe",
              "Right-shoe"]


def _nested(archive: str, inner: str) -> tuple[str, ...]:
    return (f"{archive}/{inner}", f"{archive}/{archive}/{inner}", inner)


def read_lip(root: Path, split: str) -> SplitContents:
    if split == "test":
        ids_path = find_file(root, _nested("Testing_images", "test_id.txt"), "the LIP test id list")
        images = find_directory(root, _nested("Testing_images", "testing_images") + ("test_images",), "the LIP test images")
        masks = None
    else:
        ids_path = find_file(root, _nested("TrainVal_images", f"{split}_id.txt"), f"the LIP {split} id list")
        images = find_directory(root, _nested("TrainVal_images", f"{split}_images"), f"the LIP {split} images")
        masks = find_directory(root, _nested("TrainVal_parsing_annotations", f"{split}_segmentations"), f"the LIP {split} part masks")
    records = image_mask_records(read_id_list(ids_path), images, ".jpg", masks, split)
    return SplitContents(records, part_names=PART_NAMES, annotation=str(ids_path))


FORMATS = [
    DatasetFormat("lip", read_lip, ("train", "val", "test"),
                  "LIP: TrainVal_images/, TrainVal_parsing_annotations/, Testing_images/ + id lists "
                  "(also doubly nested, or SCHP's flat copy)"),
]
