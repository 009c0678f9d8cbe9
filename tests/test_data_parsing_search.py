"""Human parsing (LIP, PASCAL-Person-Part) and person search (PRW, CUHK-SYSU) readers on
fixtures in the exact on-disk formats."""

from pathlib import Path

import numpy as np
import pytest
import scipy.io

from personvl import PersonvlError
from personvl.data import UNLABELLED_PID, dataset_statistics, load_dataset

from fixture_files import touch, cell


LIP_IDS = {"train": ["77_471474", "100034_483681"], "val": ["10004_1187406"], "test": ["100012_501646", "1_2"]}


def lip(root: Path, layout: str) -> None:
    for split, ids in LIP_IDS.items():
        if layout == "flat":  # SCHP's copy
            images, masks, id_file = root / f"{split}_images", root / f"{split}_segmentations", root / f"{split}_id.txt"
        else:
            nest = 2 if layout == "nested" else 1
            archive = "Testing_images" if split == "test" else "TrainVal_images"
            base = root.joinpath(*[archive] * nest)
            images = base / ("testing_images" if split == "test" else f"{split}_images")
            masks = root.joinpath(*["TrainVal_parsing_annotations"] * nest) / f"{split}_segmentations"
            id_file = base / f"{split}_id.txt"
        for i in ids:
            touch(images / f"{i}.jpg")
            if split != "test":
                touch(masks / f"{i}.png")
        id_file.parent.mkdir(parents=True, exist_ok=True)
        id_file.write_text("".join(f"{i}\r\n" if split == "val" else f"{i}\n" for i in ids))


@pytest.mark.parametrize("layout", ["official", "nested", "flat"])
def test_lip_layouts(tmp_path, layout):
    lip(tmp_path, layout)
    train = load_dataset("lip", tmp_path, "train")
    assert [Path(r.image_path).stem for r in train] == LIP_IDS["train"]
    assert [Path(r.mask_path).name for r in train] == ["77_471474.png", "100034_483681.png"]
    assert Path(train[0].image_path).parent.name == "train_images" and train[0].pid is None and train[0].camid is None
    assert train.part_names[0] == "Background" and len(train.part_names) == 20 and train.part_names[19] == "Right-shoe"
    assert [Path(r.image_path).stem for r in load_dataset("lip", tmp_path, "val")] == LIP_IDS["val"]
    test = load_dataset("lip", tmp_path, "test")
    assert [Path(r.image_path).stem for r in test] == LIP_IDS["test"] and all(r.mask_path is None for r in test)


def test_lip_missing_mask_is_reported(tmp_path):
    lip(tmp_path, "official")
    (tmp_path / "TrainVal_parsing_annotations" / "train_segmentations" / "77_471474.png").unlink()
    with pytest.raises(PersonvlError, match=r"1 file\(s\) listed by .*train_id.txt \(train\) are missing, e.g. .*77_471474.png"):
        load_dataset("lip", tmp_path, "train")
    assert len(load_dataset("lip", tmp_path, "train", skip_missing=True)) == 1


def test_lip_missing_id_list_names_the_candidates(tmp_path):
    with pytest.raises(PersonvlError, match=r"TrainVal_images/val_id.txt or TrainVal_images/TrainVal_images/val_id.txt or "
                                            r"val_id.txt not found; expected the LIP val id list"):
        load_dataset("lip", tmp_path, "val")
    (tmp_path / "val_id.txt").write_text("a b\n")
    (tmp_path / "val_images").mkdir()
    (tmp_path / "val_segmentations").mkdir()
    with pytest.raises(PersonvlError, match=r"val_id.txt: line 1: expected one image id, got 'a b'"):
        load_dataset("lip", tmp_path, "val")


@pytest.mark.parametrize("lists", ["", "list/"])
def test_pascal_person_part(tmp_path, lists):
    ids = {"train": ["2008_000003", "2008_000008"], "val": ["2008_000002"]}
    for split, names in ids.items():
        for i in names:
            touch(tmp_path / "JPEGImages" / f"{i}.jpg")
            touch(tmp_path / "SegmentationPart" / f"{i}.png")
        touch(tmp_path / f"{lists}{split}_id.txt")
        (tmp_path / f"{lists}{split}_id.txt").write_text("\n".join(names) + "\n")
    train = load_dataset("pascal-person-part", tmp_path, "train")
    assert [(Path(r.image_path).name, Path(r.mask_path).name) for r in train] == [
        ("2008_000003.jpg", "2008_000003.png"), ("2008_000008.jpg", "2008_000008.png")]
    assert train.part_names == ["Background", "Head", "Torso", "Upper-arms", "Lower-arms", "Upper-legs", "Lower-legs"]
    assert len(load_dataset("pascal-person-part", tmp_path, "val")) == 1


# ----------------------------------------------------------------------------- PRW


def prw(root: Path) -> None:
    frames = {"c1s1_000151": [[1, 10, 20, 30, 80], [-2, 100.5, 5, 20, 60]],
              "c3s1_002001": [[2, -4, 10, 40, 90]],
              "c6s2_010101": [[1, 50, 60, 25, 70], [3, 200, 10, 30, 80]],
              "c2s2_020202": [[3, 5, 5, 20, 50]]}
    keys = {"c1s1_000151": "box_new", "c3s1_002001": "anno_file", "c6s2_010101": "box_new", "c2s2_020202": "anno_previous"}
    for name, boxes in frames.items():
        touch(root / "frames" / f"{name}.jpg")
        matrix = np.asarray(boxes, dtype=np.float64)
        if np.array_equal(matrix, matrix.round()) and matrix.min() >= -32768:
            matrix = matrix.astype(np.int16)  # how MATLAB stores integer-valued boxes
        (root / "annotations").mkdir(exist_ok=True)
        scipy.io.savemat(root / "annotations" / f"{name}.jpg.mat", {keys[name]: matrix})
    scipy.io.savemat(root / "frame_train.mat", {"img_index_train": cell(["c1s1_000151", "c3s1_002001"])})
    scipy.io.savemat(root / "frame_test.mat", {"img_index_test": cell(["c6s2_010101", "c2s2_020202"])})
    (root / "query_info.txt").write_bytes(b"1 50 60 25 70 c6s2_010101\r\n3 5.5 5 20 50 c2s2_020202\r\n")
    touch(root / "query_box" / "1_c6s2_010101.jpg")
    touch(root / "query_box" / "3_c2s2_020202.jpg")


def test_prw_frames_boxes_and_queries(tmp_path):
    prw(tmp_path)
    train = load_dataset("prw", tmp_path, "train")
    assert [Path(r.image_path).name for r in train] == ["c1s1_000151.jpg", "c3s1_002001.jpg"]
    assert [r.camid for r in train] == [0, 2] and all(r.pid is None for r in train)
    assert train[0].boxes == [(10, 20, 40, 100), (100.5, 5, 120.5, 65)] and train[0].box_pids == [1, UNLABELLED_PID]
    assert train[1].boxes == [(0, 10, 40, 100)]  # negative x clipped to 0 before x2 = x + w
    gallery = load_dataset("prw", tmp_path, "gallery")
    assert [r.box_pids for r in gallery] == [[1, 3], [3]] and [r.camid for r in gallery] == [5, 1]
    query = load_dataset("prw", tmp_path, "query")
    assert [(r.pid, r.camid, r.scene_box) for r in query] == [(1, 5, (50, 60, 75, 130)), (3, 1, (5.5, 5, 25.5, 55))]
    assert Path(query[0].image_path).name == "c6s2_010101.jpg"
    crops = load_dataset("prw", tmp_path, "query", query_crops=True)
    assert Path(crops[1].image_path).name == "3_c2s2_020202.jpg" and crops[1].extra["frame_path"] == query[1].image_path
    stats = {s.split: s for s in dataset_statistics("prw", tmp_path)}
    assert (stats["train"].images, stats["train"].identities, stats["gallery"].identities, stats["query"].images) == (2, 2, 2, 2)


def test_prw_errors(tmp_path):
    prw(tmp_path)
    (tmp_path / "query_info.txt").write_text("1 50 60 25 c6s2_010101\n")
    with pytest.raises(PersonvlError, match=r"query_info.txt: line 1: expected 'pid x y w h frame', got '1 50 60 25 c6s2_010101'"):
        load_dataset("prw", tmp_path, "query")
    scipy.io.savemat(tmp_path / "annotations" / "c1s1_000151.jpg.mat", {"boxes": np.zeros((1, 5))})
    with pytest.raises(PersonvlError, match=r"c1s1_000151.jpg.mat: variable 'box_new' not found \(the file holds: boxes\)"):
        load_dataset("prw", tmp_path, "train")
    scipy.io.savemat(tmp_path / "annotations" / "c1s1_000151.jpg.mat", {"box_new": np.zeros((1, 4))})
    with pytest.raises(PersonvlError, match=r"c1s1_000151.jpg.mat: box_new: expected 5 columns, got 4"):
        load_dataset("prw", tmp_path, "train")


# ----------------------------------------------------------------------------- CUHK-SYSU


def struct_array(rows: list[dict], fields: list[str]) -> np.ndarray:
    """A 1 x N MATLAB struct array."""
    array = np.empty((1, len(rows)), dtype=[(f, object) for f in fields])
    for i, row in enumerate(rows):
        for f in fields:
            array[0, i][f] = row[f]
    return array


def cuhk_sysu(root: Path, with_pool: bool = True) -> None:
    boxes = {"s1.jpg": [[10, 10, 20, 50], [50, 10, 20, 50], [90, 5, 0, 40]],   # last: zero width, dropped
             "s2.jpg": [[5, 5, 30, 60]], "s3.jpg": [[15, 20, 25, 55], [60, 20, 25, 55]], "s4.jpg": [[1, 2, 10, 30]],
             "s5.jpg": [[7, 7, 14, 28]]}
    for name in boxes:
        touch(root / "Image" / "SSM" / name)
    images = struct_array([{"imname": name, "nAppear": float(len(b)),
                            "box": struct_array([{"idlocate": np.array([v], dtype=np.float64)} for v in b], ["idlocate"])}
                           for name, b in boxes.items()], ["imname", "nAppear", "box"])
    (root / "annotation" / "test" / "train_test").mkdir(parents=True)
    scipy.io.savemat(root / "annotation" / "Images.mat", {"Img": images})
    if with_pool:
        scipy.io.savemat(root / "annotation" / "pool.mat", {"pool": cell(["s3.jpg", "s4.jpg", "s5.jpg"])})
    train = np.empty((2, 1), dtype=object)  # one cell per identity, each a 1x1 struct
    train[0, 0] = {"idname": "p00001", "nAppear": 2.0, "scene": struct_array(
        [{"imname": "s1.jpg", "idlocate": np.array([[10, 10, 20, 50]], np.float64), "ishard": 0.0},
         {"imname": "s2.jpg", "idlocate": np.array([[5, 5, 30, 60]], np.float64), "ishard": 0.0}], ["imname", "idlocate", "ishard"])}
    train[1, 0] = {"idname": "p00002", "nAppear": 1.0, "scene": struct_array(
        [{"imname": "s1.jpg", "idlocate": np.array([[50, 10, 20, 50]], np.float64), "ishard": 1.0}], ["imname", "idlocate", "ishard"])}
    scipy.io.savemat(root / "annotation" / "test" / "train_test" / "Train.mat", {"Train": train})
    gallery_fields = ["imname", "idlocate", "ishard"]
    protocol = struct_array([
        {"Query": {"imname": "s3.jpg", "idlocate": np.array([[15, 20, 25, 55]], np.float64), "ishard": 0.0, "idname": "p09001"},
         "Gallery": struct_array([{"imname": "s4.jpg", "idlocate": np.array([[1, 2, 10, 30]], np.float64), "ishard": 0.0},
                                  {"imname": "s5.jpg", "idlocate": np.zeros((0, 0)), "ishard": 0.0}], gallery_fields)},
        {"Query": {"imname": "s3.jpg", "idlocate": np.array([[60, 20, 25, 55]], np.float64), "ishard": 0.0, "idname": "p09002"},
         "Gallery": struct_array([{"imname": "s5.jpg", "idlocate": np.array([[7, 7, 14, 28]], np.float64), "ishard": 0.0},
                                  {"imname": "s4.jpg", "idlocate": np.zeros((0, 0)), "ishard": 0.0}], gallery_fields)},
    ], ["Query", "Gallery"])
    scipy.io.savemat(root / "annotation" / "test" / "train_test" / "TestG100.mat", {"TestG100": protocol})


@pytest.mark.parametrize("with_pool", [True, False])
def test_cuhk_sysu_splits_boxes_and_identities(tmp_path, with_pool):
    cuhk_sysu(tmp_path, with_pool)
    train = load_dataset("cuhk-sysu", tmp_path, "train")
    assert [Path(r.image_path).name for r in train] == ["s1.jpg", "s2.jpg"]
    assert train[0].boxes == [(10, 10, 30, 60), (50, 10, 70, 60)] and train[0].box_pids == [1, 2]
    assert train[1].box_pids == [1]
    gallery = load_dataset("cuhk-sysu", tmp_path, "gallery")
    assert [Path(r.image_path).name for r in gallery] == ["s3.jpg", "s4.jpg", "s5.jpg"]
    assert [r.box_pids for r in gallery] == [[1, 2], [1], [2]]
    query = load_dataset("cuhk-sysu", tmp_path, "query")
    assert [(r.pid, r.scene_box) for r in query] == [(1, (15, 20, 40, 75)), (2, (60, 20, 85, 75))]
    assert query[0].extra["gallery"] == ["s4.jpg", "s5.jpg"]
    train_names = {r.image_path for r in train}
    assert not train_names & {r.image_path for r in gallery}


def test_cuhk_sysu_unlabelled_boxes_and_missing_protocol(tmp_path):
    cuhk_sysu(tmp_path)
    scipy.io.savemat(tmp_path / "annotation" / "test" / "train_test" / "Train.mat",
                     {"Train": np.empty((0, 1), dtype=object)})
    train = load_dataset("cuhk-sysu", tmp_path, "train")
    assert train[0].box_pids == [UNLABELLED_PID, UNLABELLED_PID]
    with pytest.raises(PersonvlError, match=r"TestG50.mat: not found; expected the CUHK-SYSU test protocol \(TestG50\)"):
        load_dataset("cuhk-sysu", tmp_path, "query", protocol="TestG50")
