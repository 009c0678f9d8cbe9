"""Pedestrian-attribute readers (PA-100K, PETA, RAPv2, RAPv1) on .mat files with the real
variable names, struct layouts and stored dtypes."""

from pathlib import Path

import numpy as np
import pytest
import scipy.io

from personvl import PersonvlError
from personvl.data import load_dataset

from fixture_files import touch, cell


PA100K_NAMES = ["Female", "AgeOver60", "Age18-60", "AgeLess18", "Front", "Side", "Back", "Hat", "Glasses", "HandBag",
                "ShoulderBag", "Backpack", "HoldObjectsInFront", "ShortSleeve", "LongSleeve", "UpperStride", "UpperLogo",
                "UpperPlaid", "UpperSplice", "LowerStripe", "LowerPattern", "LongCoat", "Trousers", "Shorts",
                "Skirt&Dress", "boots"]


@pytest.mark.parametrize("image_folder", ["data", "data/release_data/release_data"])
def test_pa100k_splits_and_vectors(tmp_path, image_folder):
    rng = np.random.default_rng(0)
    sizes = {"train": 8, "val": 2, "test": 3}
    variables = {"attributes": cell(PA100K_NAMES)}
    start = 1
    labels = {}
    for split, n in sizes.items():
        names = [f"{i:06d}.jpg" for i in range(start, start + n)]
        start += n
        labels[split] = rng.integers(0, 2, size=(n, 26)).astype(np.uint8)
        variables[f"{split}_images_name"] = cell(names)
        variables[f"{split}_label"] = labels[split]
        for name in names:
            touch(tmp_path / image_folder / name)
    scipy.io.savemat(tmp_path / "annotation.mat", variables)
    for split, n in sizes.items():
        records = load_dataset("pa100k", tmp_path, split)
        assert len(records) == n and records.attribute_names == PA100K_NAMES
        assert [r.attributes for r in records] == labels[split].tolist()
        assert all(isinstance(v, int) for v in records[0].attributes)
    assert Path(load_dataset("pa100k", tmp_path, "val")[0].image_path) == tmp_path / image_folder / "000009.jpg"


def test_pa100k_label_rows_must_match_names(tmp_path):
    scipy.io.savemat(tmp_path / "annotation.mat", {
        "attributes": cell(PA100K_NAMES), "train_images_name": cell(["000001.jpg"]), "train_label": np.zeros((2, 26), np.uint8)})
    (tmp_path / "data").mkdir()
    with pytest.raises(PersonvlError, match="train_label has 2 rows but train_images_name has 1 names"):
        load_dataset("pa100k", tmp_path, "train")
    scipy.io.savemat(tmp_path / "annotation.mat", {
        "attributes": cell(PA100K_NAMES), "train_images_name": cell(["000001.jpg"]), "train_label": np.zeros((1, 25), np.uint8)})
    with pytest.raises(PersonvlError, match="train_label: expected 26 columns, got 25"):
        load_dataset("pa100k", tmp_path, "train")


def peta(root: Path, rows: int = 20, attributes: int = 40):
    """PETA.mat with ``attributes`` names (35 evaluated), 5 partitions; uint8-stored indices."""
    rng = np.random.default_rng(1)
    names = [f"attr{j:03d}" for j in range(attributes)]
    labels = rng.integers(0, 2, size=(rows, attributes))
    ids = np.stack([np.arange(1, rows + 1), 100 + np.arange(rows) // 2, np.full(rows, 3), np.arange(rows) // 2 + 1], axis=1)
    partitions = np.empty((5, 1), dtype=object)
    for p in range(5):
        order = np.random.default_rng(p).permutation(rows) + 1
        partitions[p, 0] = {"train": order[:10, None].astype(np.uint8), "val": order[10:12, None].astype(np.uint8),
                            "test": order[12:, None].astype(np.uint8)}
    peta_struct = {"data": np.concatenate([ids, labels], axis=1).astype(np.float64), "attribute": cell(names),
                   "selected_attribute": np.arange(5, 40, dtype=np.uint8)[None, :], "partion_attribute": partitions}
    scipy.io.savemat(root / "PETA.mat", {"peta": peta_struct})
    for r in range(rows):
        touch(root / "images" / f"{r + 1:05d}.png")
    return names, labels, ids, partitions


def test_peta_35_attributes_partition_one(tmp_path):
    names, labels, ids, partitions = peta(tmp_path)
    train = load_dataset("peta", tmp_path, "train")
    rows = partitions[0, 0]["train"].reshape(-1).astype(int) - 1
    assert train.attribute_names == names[:35]
    assert [Path(r.image_path).name for r in train] == [f"{r + 1:05d}.png" for r in rows]
    assert [r.attributes for r in train] == labels[rows][:, :35].tolist()
    assert [r.pid for r in train] == ids[rows, 1].tolist()
    splits = [{r.image_path for r in load_dataset("peta", tmp_path, s)} for s in ("train", "val", "test")]
    assert [len(s) for s in splits] == [10, 2, 8] and not (splits[0] & splits[1] or splits[0] & splits[2] or splits[1] & splits[2])
    other = load_dataset("peta", tmp_path, "train", partition=3)
    assert [Path(r.image_path).name for r in other] == [f"{r:05d}.png" for r in partitions[3, 0]["train"].reshape(-1)]
    assert len(load_dataset("peta", tmp_path, "test", all_attributes=True).attribute_names) == 40


def test_peta_fields_are_also_read_by_position(tmp_path):
    names, labels, _, partitions = peta(tmp_path)
    variables = scipy.io.loadmat(tmp_path / "PETA.mat")
    s = variables["peta"][0, 0]
    renamed = {"D": s["data"], "A": s["attribute"], "S": s["selected_attribute"], "P": s["partion_attribute"]}
    for k in range(5):  # partition fields renamed as well
        p = renamed["P"][k, 0][0, 0]
        renamed["P"][k, 0] = {"a": p["train"], "b": p["val"], "c": p["test"]}
    scipy.io.savemat(tmp_path / "PETA.mat", {"peta": renamed})
    val = load_dataset("peta", tmp_path, "val")
    assert [Path(r.image_path).name for r in val] == [f"{r:05d}.png" for r in partitions[0, 0]["val"].reshape(-1)]


def test_peta_errors(tmp_path):
    with pytest.raises(PersonvlError, match=r"PETA.mat: not found; expected the PETA annotation \(struct peta\)"):
        load_dataset("peta", tmp_path, "train")
    peta(tmp_path)
    with pytest.raises(PersonvlError, match="PETA partition must be in 0..4, got 5"):
        load_dataset("peta", tmp_path, "train", partition=5)
    variables = scipy.io.loadmat(tmp_path / "PETA.mat")
    s = variables["peta"][0, 0]
    scipy.io.savemat(tmp_path / "PETA.mat", {"peta": {"data": s["data"][:, :30], "attribute": s["attribute"]}})
    with pytest.raises(PersonvlError, match="peta.data has 30 columns; expected 4 ids \\+ 40 attributes"):
        load_dataset("peta", tmp_path, "train")


def rap_v2(root: Path, rows: int = 30, attributes: int = 60):
    rng = np.random.default_rng(2)
    names = [f"hs-{j}" for j in range(attributes)]
    labels = rng.integers(0, 3, size=(rows, attributes)).astype(np.uint8)  # 2 = uncertain
    images = [f"CAM{n % 3:02d}_2014-02-15_{n:08d}.png" for n in range(rows)]
    partitions = np.empty((1, 5), dtype=object)
    for p in range(5):
        order = np.random.default_rng(10 + p).permutation(rows) + 1
        partitions[0, p] = {"train_index": order[None, :18].astype(np.uint16), "val_index": order[None, 18:24].astype(np.uint16),
                            "test_index": order[None, 24:].astype(np.uint16)}
    selected = np.arange(3, 57, dtype=np.uint8)[None, :]  # 54 evaluated, 1-based
    (root / "RAP_annotation").mkdir()
    scipy.io.savemat(root / "RAP_annotation" / "RAP_annotation.mat", {"RAP_annotation": {
        "name": cell(images), "data": labels, "attribute": cell(names), "selected_attribute": selected,
        "partition_attribute": partitions, "attribute_exp": cell(names)}})
    for name in images:
        touch(root / "RAP_dataset" / name)
    return names, labels, images, partitions, selected.reshape(-1).astype(int) - 1


def test_rapv2_54_attributes_with_uncertain_labels_as_zero(tmp_path):
    names, labels, images, partitions, selected = rap_v2(tmp_path)
    test = load_dataset("rap", tmp_path, "test")
    rows = partitions[0, 0]["test_index"].reshape(-1).astype(int) - 1
    assert test.attribute_names == [names[c] for c in selected] and len(test.attribute_names) == 54
    expected = labels[rows][:, selected].astype(int)
    expected[expected == 2] = 0
    assert [r.attributes for r in test] == expected.tolist()
    assert [Path(r.image_path).name for r in test] == [images[r] for r in rows]
    counts = [len(load_dataset("rap", tmp_path, s)) for s in ("train", "val", "test")]
    assert counts == [18, 6, 6]


def test_rapv1_by_position_has_train_and_test(tmp_path):
    rows = 12
    labels = np.random.default_rng(3).integers(0, 2, size=(rows, 92)).astype(np.uint8)
    images = [f"CAM01-2013-12-23-{n:04d}.png" for n in range(rows)]
    partitions = np.empty((5, 1), dtype=object)
    for p in range(5):
        order = np.random.default_rng(20 + p).permutation(rows) + 1
        partitions[p, 0] = {"trainval": order[None, :8].astype(np.uint8), "test": order[None, 8:].astype(np.uint8)}
    (tmp_path / "RAP_annotation").mkdir()
    scipy.io.savemat(tmp_path / "RAP_annotation" / "RAP_annotation.mat", {"RAP_annotation": {
        "partion": partitions, "label": labels, "attribute_chinese": cell([f"c{j}" for j in range(92)]),
        "attribute_eng": cell([f"attr{j}" for j in range(92)]), "position": np.zeros((rows, 4)), "imagesname": cell(images)}})
    for name in images:
        touch(tmp_path / "RAP_dataset" / name)
    train = load_dataset("rap", tmp_path, "train")
    trainval = partitions[0, 0]["trainval"].reshape(-1).astype(int) - 1
    assert train.attribute_names == [f"attr{j}" for j in range(51)]
    assert [r.attributes for r in train] == labels[trainval][:, :51].tolist()
    assert [Path(r.image_path).name for r in train] == [images[r] for r in trainval]
    assert len(load_dataset("rap", tmp_path, "test")) == 4
    with pytest.raises(PersonvlError, match="RAPv1 has no val split"):
        load_dataset("rap", tmp_path, "val")
    from personvl.data import dataset_statistics
    assert [s.split for s in dataset_statistics("rap", tmp_path)] == ["train", "test"]


def test_rap_label_values_are_checked(tmp_path):
    names, labels, images, partitions, selected = rap_v2(tmp_path)
    mat = scipy.io.loadmat(tmp_path / "RAP_annotation" / "RAP_annotation.mat")
    s = mat["RAP_annotation"][0, 0]
    data = s["data"].copy()
    train_row = int(partitions[0, 0]["train_index"][0, 0]) - 1
    data[train_row, selected[0]] = 7
    scipy.io.savemat(tmp_path / "RAP_annotation" / "RAP_annotation.mat", {"RAP_annotation": {
        "name": s["name"], "data": data, "attribute": s["attribute"], "selected_attribute": s["selected_attribute"],
        "partition_attribute": s["partition_attribute"]}})
    with pytest.raises(PersonvlError, match=rf"row {train_row + 1}, column {selected[0] + 1} holds 7 \(expected 0, 1 or 2\)"):
        load_dataset("rap", tmp_path, "train")
