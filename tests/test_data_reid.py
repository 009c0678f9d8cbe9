"""Image re-ID readers (Market-1501, DukeMTMC-reID, MSMT17, CUHK03) on fixtures in the exact
on-disk formats."""

from pathlib import Path

import numpy as np
import pytest
import scipy.io

from personvl import PersonvlError, UsageError
from personvl.data import dataset_statistics, load_dataset

from fixture_files import touch, cell


def market(root: Path) -> None:
    names = {
        "bounding_box_train": ["0002_c1s1_000451_03.jpg", "0002_c2s1_000301_01.jpg", "0007_c3s3_015526_02.jpg"],
        "query": ["0001_c1s1_001051_00.jpg", "0003_c6s2_070018_00.jpg"],
        "bounding_box_test": ["0001_c2s1_000301_01.jpg", "0001_c1s1_001051_03.jpg", "0000_c1s1_000151_01.jpg",
                              "0000_c5s1_000501_06.jpg", "-1_c1s1_000401_03.jpg", "-1_c3s1_000401_01.jpg",
                              "0003_c4s2_033801_02.jpg", "0009_c2s1_000976_01.jpg"],
        "gt_bbox": ["0001_c1s1_001051_00.jpg"],
    }
    for folder, files in names.items():
        for name in files:
            touch(root / folder / name)
    touch(root / "bounding_box_train" / "Thumbs.db")
    touch(root / "bounding_box_test" / "Thumbs.db")


def test_market1501_conventions(tmp_path):
    market(tmp_path)
    train = load_dataset("market1501", tmp_path, "train")
    assert [(r.pid, r.camid) for r in train] == [(2, 0), (2, 1), (7, 2)]
    query = load_dataset("market1501", tmp_path, "query")
    assert [(r.pid, r.camid) for r in query] == [(1, 0), (3, 5)]
    gallery = load_dataset("market1501", tmp_path, "gallery")
    assert len(gallery) == 6  # junk (-1) dropped, Thumbs.db ignored
    assert sorted(r.pid for r in gallery) == [0, 0, 1, 1, 3, 9]  # distractors kept
    assert all(r.split == "gallery" for r in gallery) and all(Path(r.image_path).parent.name == "bounding_box_test" for r in gallery)
    stats = {s.split: s for s in dataset_statistics("market1501", tmp_path)}
    assert (stats["train"].images, stats["train"].identities, stats["train"].cameras) == (3, 2, 3)
    assert (stats["query"].images, stats["gallery"].images, stats["gallery"].identities) == (2, 6, 4)


def test_market1501_versioned_subfolder_and_relabelled_train(tmp_path):
    market(tmp_path / "Market-1501-v15.09.15")
    train = load_dataset("market1501", tmp_path, "train", relabel=True)
    assert [r.pid for r in train] == [0, 0, 1] and train.identity_mapping == {2: 0, 7: 1}


def test_dukemtmc_has_eight_cameras_and_checks_them(tmp_path):
    for name in ["0001_c2_f0046182.jpg", "0001_c8_f0046999.jpg"]:
        touch(tmp_path / "bounding_box_train" / name)
    assert [r.camid for r in load_dataset("dukemtmc", tmp_path, "train")] == [1, 7]
    touch(tmp_path / "query" / "0005_c7_f0000001.jpg")
    assert load_dataset("dukemtmc", tmp_path, "query")[0].camid == 6
    touch(tmp_path / "query" / "0005_c9_f0000002.jpg")
    with pytest.raises(PersonvlError, match="0005_c9_f0000002.jpg: camera c9 is outside c1..c8 of dukemtmc"):
        load_dataset("dukemtmc", tmp_path, "query")


def test_reid_folder_errors(tmp_path):
    with pytest.raises(PersonvlError, match=r"bounding_box_train: not found; expected the market1501 train images"):
        load_dataset("market1501", tmp_path, "train")
    touch(tmp_path / "query" / "holiday.jpg")
    with pytest.raises(PersonvlError, match=r"holiday.jpg: file name does not match the dataset's naming pattern"):
        load_dataset("market1501", tmp_path, "query")


def msmt17(root: Path, version: str = "V1") -> None:
    train_dir, test_dir = ("train", "test") if version == "V1" else ("mask_train_v2", "mask_test_v2")
    lists = {
        "list_train.txt": [("0000/0000_000_01_0303morning_0015_0.jpg", 0), ("0000/0000_001_05_0303noon_0016_0.jpg", 0),
                           ("0001/0001_000_15_0303afternoon_0100_1.jpg", 1)],
        "list_val.txt": [("0002/0002_000_03_0303morning_0200_0.jpg", 2)],
        "list_query.txt": [("0000/0000_000_02_0113morning_0001_0.jpg", 0)],
        "list_gallery.txt": [("0000/0000_003_07_0113noon_0002_0.jpg", 0), ("0001/0001_000_11_0113noon_0003_0.jpg", 1)],
    }
    for list_name, entries in lists.items():
        folder = train_dir if list_name in ("list_train.txt", "list_val.txt") else test_dir
        for relative, _ in entries:
            touch(root / folder / relative)
        (root / list_name).write_text("".join(f"{p} {pid}\n" for p, pid in entries))


@pytest.mark.parametrize("version", ["V1", "V2"])
def test_msmt17_train_is_list_train_plus_list_val(tmp_path, version):
    msmt17(tmp_path / f"MSMT17_{version}", version)
    train = load_dataset("msmt17", tmp_path, "train")
    assert [(r.pid, r.camid) for r in train] == [(0, 0), (0, 4), (1, 14), (2, 2)]
    assert train[3].image_path.endswith(f"{'train' if version == 'V1' else 'mask_train_v2'}/0002/0002_000_03_0303morning_0200_0.jpg")
    torchreid_style = load_dataset("msmt17", tmp_path, "train", include_val=False)
    assert len(torchreid_style) == 3
    query, gallery = load_dataset("msmt17", tmp_path, "query"), load_dataset("msmt17", tmp_path, "gallery")
    assert [(r.pid, r.camid) for r in query] == [(0, 1)]  # test pids restart at 0, kept as written
    assert [(r.pid, r.camid) for r in gallery] == [(0, 6), (1, 10)]
    assert "/test/" in query[0].image_path or "/mask_test_v2/" in query[0].image_path


def test_msmt17_malformed_lists_name_file_and_line(tmp_path):
    msmt17(tmp_path)
    (tmp_path / "list_query.txt").write_text("0000/0000_000_02_0113morning_0001_0.jpg 0\n0000/x.jpg\n")
    with pytest.raises(PersonvlError, match=r"list_query.txt: line 2: expected '<relpath> <pid>', got '0000/x.jpg'"):
        load_dataset("msmt17", tmp_path, "query")
    (tmp_path / "list_query.txt").write_text("0000/0000_000.jpg 0\n")
    with pytest.raises(PersonvlError, match=r"list_query.txt: line 1: '0000_000.jpg' does not follow MSMT17's"):
        load_dataset("msmt17", tmp_path, "query")
    (tmp_path / "list_val.txt").unlink()
    with pytest.raises(PersonvlError, match=r"list_val.txt: not found; expected the MSMT17 train list"):
        load_dataset("msmt17", tmp_path, "train")
    with pytest.raises(UsageError, match=r"msmt17 has no option 'combineall' \(its options: include_val\)"):
        load_dataset("msmt17", tmp_path, "train", combineall=True)


def cuhk03(root: Path, variant: str) -> list[str]:
    """Six images of pids 1, 2 (train) and 3 (query/gallery), stored as MATLAB would."""
    names = ["1_001_1_01.png", "1_001_2_06.png", "1_002_1_01.png", "1_002_2_07.png", "3_003_1_02.png", "3_003_2_08.png"]
    for name in names:
        touch(root / f"images_{variant}" / name)
    scipy.io.savemat(root / f"cuhk03_new_protocol_config_{variant}.mat", {
        "filelist": cell(names), "labels": np.array([[1], [1], [2], [2], [3], [3]], dtype=np.uint16),
        "train_idx": np.array([[1], [2], [3], [4]], dtype=np.uint16), "query_idx": np.array([[5]], dtype=np.uint8),
        "gallery_idx": np.array([[6]], dtype=np.uint8), "camId": np.array([[1], [2], [1], [2], [1], [2]], dtype=np.uint8)})
    return names


@pytest.mark.parametrize("variant", ["detected", "labeled"])
def test_cuhk03_new_protocol(tmp_path, variant):
    names = cuhk03(tmp_path, variant)
    train = load_dataset("cuhk03", tmp_path, "train", variant=variant)
    assert [(Path(r.image_path).name, r.pid, r.camid) for r in train] == [
        (names[0], 1, 0), (names[1], 1, 1), (names[2], 2, 0), (names[3], 2, 1)]
    assert all(f"images_{variant}" in r.image_path for r in train)
    query, gallery = load_dataset("cuhk03", tmp_path, "query", variant=variant), load_dataset("cuhk03", tmp_path, "gallery", variant=variant)
    assert [(r.pid, r.camid) for r in query] == [(3, 0)] and [(r.pid, r.camid) for r in gallery] == [(3, 1)]


def test_cuhk03_errors(tmp_path):
    with pytest.raises(PersonvlError, match=r"cuhk03_new_protocol_config_detected.mat: not found; expected the CUHK03 new-protocol"):
        load_dataset("cuhk03", tmp_path, "train")
    with pytest.raises(UsageError, match="cuhk03 variant must be one of detected, labeled, got 'both'"):
        load_dataset("cuhk03", tmp_path, "train", variant="both")
    cuhk03(tmp_path, "labeled")
    scipy.io.savemat(tmp_path / "cuhk03_new_protocol_config_labeled.mat", {
        "filelist": cell(["1_001_1_01.png"]), "labels": np.array([[1]]), "train_idx": np.array([[2]]),
        "query_idx": np.array([[1]]), "gallery_idx": np.array([[1]])})
    with pytest.raises(PersonvlError, match=r"train_idx: index 2 is outside 1..1"):
        load_dataset("cuhk03", tmp_path, "train", variant="labeled")
    scipy.io.savemat(tmp_path / "cuhk03_new_protocol_config_labeled.mat", {"filelist": cell(["a.png"])})
    with pytest.raises(PersonvlError, match=r"variable 'labels' not found \(the file holds: filelist\)"):
        load_dataset("cuhk03", tmp_path, "train", variant="labeled")
    (tmp_path / "cuhk03_new_protocol_config_labeled.mat").write_bytes(b"MATLAB 5.0 but then nothing useful")
    with pytest.raises(PersonvlError, match=r"cuhk03_new_protocol_config_labeled.mat: not a readable MATLAB .mat file"):
        load_dataset("cuhk03", tmp_path, "train", variant="labeled")
