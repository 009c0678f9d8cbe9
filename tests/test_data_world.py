"""The synthetic world's datasets read back through the readers with the statistics the world
generated (records.jsonl and world.json are the ground truth)."""

import collections
from pathlib import Path

from personvl.data import dataset_statistics, load_dataset
from personvl.data.synth import read_world_records


def by_split(records):
    groups = collections.defaultdict(list)
    for r in records:
        groups[r["split"]].append(r)
    return groups


def test_cuhk_pedes_and_synth_pedes(small_world):
    out, world = small_world
    truth = by_split(read_world_records(out))
    for split in ("train", "val", "test"):
        records = load_dataset("cuhk-pedes", out / "cuhk-pedes", split)
        assert [r.pid for r in records] == [t["pid"] for t in truth[split]]
        assert [r.captions for r in records] == [t["captions"] for t in truth[split]]
        assert [Path(r.image_path).name for r in records] == [Path(t["image"]).name for t in truth[split]]
        assert {r.pid for r in records} == set(range(world["splits"][split]["first_pid"], world["splits"][split]["last_pid"] + 1))
    pretraining = load_dataset("synth-pedes", out / "synth-pedes")
    expected = truth["train"] + truth["val"]
    assert len(pretraining) == len(expected) and [r.pid for r in pretraining] == [t["pid"] for t in expected]
    assert [r.extra["prompt_captions"] for r in pretraining] == [t["prompt_captions"] for t in expected]
    assert all(Path(r.image_path).read_bytes() == (out / t["image"]).read_bytes() for r, t in zip(pretraining[:5], expected))


def test_market1501(small_world):
    out, world = small_world
    truth = by_split(read_world_records(out))
    train = load_dataset("market1501", out / "market1501", "train")
    assert sorted((r.pid, r.camid) for r in train) == sorted((t["pid"], t["camid"]) for t in truth["train"])
    query = load_dataset("market1501", out / "market1501", "query")
    assert sorted(r.pid for r in query) == sorted({t["pid"] for t in truth["test"]})
    gallery = load_dataset("market1501", out / "market1501", "gallery")
    distractors = [r for r in gallery if r.pid == 0]
    assert len(distractors) == len(truth["val"])  # val identities are the pid 0 distractors; junk (-1) dropped
    assert len(gallery) == len(truth["test"]) - len(query) + len(truth["val"])
    assert {r.camid for r in gallery} <= set(range(world["config"]["cameras"]))


def test_pa100k_attribute_vectors(small_world):
    out, world = small_world
    truth = by_split(read_world_records(out))
    for split in ("train", "val", "test"):
        records = load_dataset("pa100k", out / "pa100k", split)
        assert records.attribute_names == world["vocabulary"]["attribute_names"]
        assert [r.attributes for r in records] == [t["attributes"] for t in truth[split]]


def test_lip_and_prw(small_world):
    out, world = small_world
    truth = by_split(read_world_records(out))
    lip = {s: load_dataset("lip", out / "lip", s) for s in ("train", "val", "test")}
    assert [len(lip[s]) for s in ("train", "val", "test")] == [len(truth["train"]), len(truth["test"]), len(truth["val"])]
    assert all(r.mask_path and Path(r.mask_path).exists() for r in lip["val"]) and all(r.mask_path is None for r in lip["test"])
    stats = {s.split: s for s in dataset_statistics("prw", out / "prw")}
    assert stats["train"].images + stats["gallery"].images == world["counts"]["scenes"]
    assert stats["train"].identities == stats["gallery"].identities == world["config"]["scene_identities"]
    assert stats["query"].images == stats["gallery"].identities
    gallery = load_dataset("prw", out / "prw", "gallery")
    test_pids = {t["pid"] for t in truth["test"]}
    assert {p for r in gallery for p in r.box_pids if p > 0} <= test_pids
    for record in gallery:
        for x1, y1, x2, y2 in record.boxes:
            assert 0 <= x1 < x2 <= world["config"]["scene_width"] and 0 <= y1 < y2 <= world["config"]["scene_height"]


def test_world_records_read_as_jsonl(small_world):
    out, world = small_world
    everything = load_dataset("jsonl", out)
    assert len(everything) == world["counts"]["images"]
    assert sum(len(r.captions) for r in everything) == world["counts"]["captions"]
    assert all(r.mask_path.endswith(".png") and "view" in r.extra for r in everything[:5])
    stats = {s.split: s for s in dataset_statistics("jsonl", out)}
    assert {s: stats[s].identities for s in ("train", "val", "test")} == {s: world["splits"][s]["identities"] for s in ("train", "val", "test")}
    assert stats["test"].cameras == world["config"]["cameras"]
