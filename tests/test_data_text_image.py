"""Text-image readers (CUHK-PEDES, ICFG-PEDES, RSTPReid, SYNTH-PEDES, LUPerson) on fixtures in
the exact on-disk formats, and the streaming JSON reader's errors."""

import json
from pathlib import Path

import pytest

from personvl import PersonvlError
from personvl.data import load_dataset
from personvl.data.formats import common

from fixture_files import touch


def cuhk_pedes(root: Path) -> list[dict]:
    """Train ids 1..3 (one image with three captions), val 4, test 5..6; VIPeR's .bmp too."""
    entries = []
    layout = [("train", 1, "CUHK01/0001001.png"), ("train", 1, "CUHK01/0001002.png"), ("train", 2, "Market/0002_c1s1_01.jpg"),
              ("train", 3, "cam_a/003_45.bmp"), ("val", 4, "CUHK03/4_1.png"), ("test", 5, "test_query/p5_s1.jpg"),
              ("test", 6, "test_query/p6_s1.jpg"), ("test", 6, "cam_b/006_90.bmp")]
    for n, (split, pid, path) in enumerate(layout):
        captions = [f"caption {n} a", f"caption {n} b"] + ([f"caption {n} c"] if n == 2 else [])
        entries.append({"split": split, "captions": captions, "file_path": path,
                        "processed_tokens": [c.split() for c in captions], "id": pid})
        touch(root / "imgs" / path)
    (root / "reid_raw.json").write_text(json.dumps(entries))
    return entries


def test_cuhk_pedes_splits_paths_ids_and_captions(tmp_path):
    entries = cuhk_pedes(tmp_path)
    train = load_dataset("cuhk-pedes", tmp_path, "train")
    assert [r.image_path for r in train] == [str(tmp_path / "imgs" / e["file_path"]) for e in entries[:4]]
    assert [r.pid for r in train] == [1, 1, 2, 3] and all(r.camid is None for r in train)
    assert train[2].captions == ["caption 2 a", "caption 2 b", "caption 2 c"]
    assert {r.split for r in train} == {"train"} and train.attribute_names is None
    val, test = load_dataset("cuhk-pedes", tmp_path, "val"), load_dataset("cuhk-pedes", tmp_path, "test")
    assert [r.pid for r in val] == [4] and [r.pid for r in test] == [5, 6, 6]
    assert sum(len(r.captions) for r in test) == 6
    paths = [set(r.image_path for r in d) for d in (train, val, test)]
    assert not (paths[0] & paths[1] or paths[0] & paths[2] or paths[1] & paths[2])


def test_cuhk_pedes_relabels_train_as_id_minus_one_keeping_the_mapping(tmp_path):
    cuhk_pedes(tmp_path)
    train = load_dataset("cuhk-pedes", tmp_path, "train", relabel=True)
    assert [r.pid for r in train] == [0, 0, 1, 2]
    assert train.identity_mapping == {1: 0, 2: 1, 3: 2}


def test_cuhk_pedes_reads_other_split_names_as_val(tmp_path):
    entries = cuhk_pedes(tmp_path)
    entries[4]["split"] = "validation"
    (tmp_path / "reid_raw.json").write_text(json.dumps(entries))
    assert [r.pid for r in load_dataset("cuhk-pedes", tmp_path, "val")] == [4]


@pytest.mark.parametrize("annotation_name", ["ICFG-PEDES.json", "ICFG_PEDES.json"])
def test_icfg_pedes_accepts_both_spellings_and_keeps_zero_based_ids(tmp_path, annotation_name):
    entries = []
    for n, (split, pid, folder) in enumerate([("train", 0, "train"), ("train", 1, "train"), ("test", 2, "test"),
                                              ("test", 2, "train")]):  # the folder does not tell the split
        path = f"{folder}/{pid:04d}/{pid:04d}_{n:03d}_01_0303morning_0001_0.jpg"
        touch(tmp_path / "imgs" / path)
        entries.append({"id": pid, "file_path": path, "captions": [f"person {n}"], "processed_tokens": [["person"]], "split": split})
    (tmp_path / annotation_name).write_text(json.dumps(entries, indent=2))
    train, test = load_dataset("icfg-pedes", tmp_path, "train"), load_dataset("icfg-pedes", tmp_path, "test")
    assert [r.pid for r in train] == [0, 1] and [r.pid for r in test] == [2, 2]
    assert test[1].image_path.endswith("imgs/train/0002/0002_003_01_0303morning_0001_0.jpg")
    with pytest.raises(Exception, match="icfg-pedes has splits train, test; got 'val'"):
        load_dataset("icfg-pedes", tmp_path, "val")


def test_icfg_pedes_refuses_an_unknown_split_value(tmp_path):
    touch(tmp_path / "imgs" / "a.jpg")
    (tmp_path / "ICFG-PEDES.json").write_text(json.dumps([{"id": 0, "file_path": "a.jpg", "captions": ["x"], "split": "val"}]))
    with pytest.raises(PersonvlError, match=r"ICFG-PEDES.json: record 0: unknown split 'val' \(expected train, test\)"):
        load_dataset("icfg-pedes", tmp_path, "train")


def test_rstpreid_uses_img_path_and_three_splits(tmp_path):
    entries = []
    for pid, split in [(0, "train"), (1, "val"), (2, "test")]:
        for n in range(5):
            name = f"{pid:04d}_c{n + 10}_{n:04d}.jpg"
            touch(tmp_path / "imgs" / name)
            entries.append({"id": pid, "img_path": name, "captions": [f"{pid} {n} one", f"{pid} {n} two"], "split": split})
    (tmp_path / "data_captions.json").write_text(json.dumps(entries))
    counts = {s: len(load_dataset("rstpreid", tmp_path, s)) for s in ("train", "val", "test")}
    assert counts == {"train": 5, "val": 5, "test": 5}
    test = load_dataset("rstpreid", tmp_path, "test")
    assert {r.pid for r in test} == {2} and test[0].captions == ["2 0 one", "2 0 two"]
    assert test[0].image_path == str(tmp_path / "imgs" / "0002_c10_0000.jpg")


def test_synth_pedes_keeps_prompt_captions_apart_and_reads_attribute_phrases(tmp_path):
    entries = [{"id": 7, "file_path": "Part1/7/1.jpg", "attributes": ["man,black hair,black shirt,pink shorts,black shoes,unknown"],
                "captions": ["a man in black", "a man in pink shorts", "black shoes"], "prompt_caption": ["the man wears black"]},
               {"id": 1003, "file_path": "Part2/1003/2.jpg", "attributes": ["woman,unknown,red coat,unknown,unknown,backpack"],
                "captions": ["a woman in a red coat", "she has a backpack"], "prompt_caption": ["red coat"]}]
    for e in entries:
        touch(tmp_path / e["file_path"])
    (tmp_path / "synthpedes_dataset.json").write_text(json.dumps(entries))
    records = load_dataset("synth-pedes", tmp_path)
    assert records.split == "train" and [r.pid for r in records] == [7, 1003]
    assert records[0].image_path == str(tmp_path / "Part1" / "7" / "1.jpg")
    assert records[0].captions == entries[0]["captions"] and records[0].extra["prompt_captions"] == ["the man wears black"]
    assert records[0].attribute_phrases == ["man", "black hair", "black shirt", "pink shorts", "black shoes"]
    assert records[1].attribute_phrases == ["woman", "red coat", "backpack"]


def test_luperson_folder_and_caption_attribute_file(tmp_path):
    for name in ["0001/a.jpg", "0001/b.jpg", "0002/c.png", "notes.txt"]:
        touch(tmp_path / name)
    crops = load_dataset("luperson", tmp_path)
    assert [Path(r.image_path).name for r in crops] == ["a.jpg", "b.jpg", "c.png"]
    assert all(r.pid is None and r.split == "train" and not r.captions for r in crops)
    lines = [{"attribute_names": ["female", "backpack"]},
             {"image": "0001/a.jpg", "captions": ["a woman with a backpack"], "attributes": [1, 1]},
             {"image": "0002/c.png", "captions": ["a man"], "attributes": [0, 0]}]
    (tmp_path / "luperson-ta.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    annotated = load_dataset("luperson", tmp_path, annotations="luperson-ta.jsonl")
    assert annotated.attribute_names == ["female", "backpack"]
    assert [(Path(r.image_path).name, r.captions, r.attributes) for r in annotated] == [
        ("a.jpg", ["a woman with a backpack"], [1, 1]), ("c.png", ["a man"], [0, 0])]
    with pytest.raises(PersonvlError, match="nothing.jsonl: not found; expected a LUPerson-T/-TA annotation"):
        load_dataset("luperson", tmp_path, annotations="nothing.jsonl")


# ----------------------------------------------------------------------------- bad input


def test_missing_root_and_annotation_are_named(tmp_path):
    with pytest.raises(PersonvlError, match=r"nowhere: not found; expected the cuhk-pedes dataset \(CUHK-PEDES: imgs/ \+ reid_raw.json"):
        load_dataset("cuhk-pedes", tmp_path / "nowhere", "train")
    with pytest.raises(PersonvlError, match=r": reid_raw.json not found; expected the cuhk-pedes annotation list"):
        load_dataset("cuhk-pedes", tmp_path, "train")
    (tmp_path / "reid_raw.json").write_text("[]")
    with pytest.raises(PersonvlError, match=r"imgs: not found; expected the cuhk-pedes images"):
        load_dataset("cuhk-pedes", tmp_path, "train")
    with pytest.raises(PersonvlError, match=r"ICFG-PEDES.json or ICFG_PEDES.json not found"):
        load_dataset("icfg-pedes", tmp_path, "train")


def test_record_missing_a_key_names_the_key_and_the_record(tmp_path):
    cuhk_pedes(tmp_path)
    entries = json.loads((tmp_path / "reid_raw.json").read_text())
    del entries[3]["captions"]
    (tmp_path / "reid_raw.json").write_text(json.dumps(entries))
    with pytest.raises(PersonvlError, match=r"reid_raw.json: record 3: missing key 'captions'"):
        load_dataset("cuhk-pedes", tmp_path, "train")
    entries[3]["captions"] = ["x"]
    entries[5]["id"] = "5"
    (tmp_path / "reid_raw.json").write_text(json.dumps(entries))
    with pytest.raises(PersonvlError, match=r"record 5: 'id' should be int, got '5'"):
        load_dataset("cuhk-pedes", tmp_path, "test")


@pytest.mark.parametrize("text, message", [
    ('[{"id": 1, "file_path": "a.jpg"},\n {"id": 2,, "x": 1}]', r"malformed JSON at line 2 column 11 \(record 1\): Expecting property name"),
    ('{"id": 1}', r"malformed JSON at line 1 column 1: expected a JSON list of records"),
    ('[{"id": 1} {"id": 2}]', r"line 1 column 12: expected ',' or ']' after record 0"),
    ('[{"id": 1}, {"id": 2}', r"line 1 column 22: the file ends before the list is closed"),
    ('[{"id": 1}] x', r"line 1 column 13: extra data after the closing"),
])
def test_malformed_json_is_located(tmp_path, text, message):
    path = tmp_path / "reid_raw.json"
    path.write_text(text)
    with pytest.raises(PersonvlError, match=message):
        list(common.iter_json_list(path))


def test_a_record_that_is_not_an_object_is_named(tmp_path):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "reid_raw.json").write_text('[{"split": "test", "id": 1, "file_path": "a.jpg", "captions": []}, 5]')
    with pytest.raises(PersonvlError, match=r"reid_raw.json: record 1: expected a JSON object, got int"):
        load_dataset("cuhk-pedes", tmp_path, "train")


def test_streaming_reader_is_exact_across_chunk_boundaries(tmp_path, monkeypatch):
    values = [{"id": n, "caption": "x" * (n % 7), "score": n * 1001} for n in range(200)]
    path = tmp_path / "list.json"
    path.write_text(json.dumps(values, indent=1))
    for chunk in (1, 5, 64):
        monkeypatch.setattr(common, "_JSON_CHUNK", chunk)
        assert list(common.iter_json_list(path)) == values
    broken = json.dumps(values, indent=1).replace('"id": 150', '"id" 150')
    path.write_text(broken)
    monkeypatch.setattr(common, "_JSON_CHUNK", 64)
    line = broken[: broken.index('"id" 150')].count("\n") + 1
    with pytest.raises(PersonvlError, match=rf"line {line} column 8 \(record 150\): Expecting ':' delimiter"):
        list(common.iter_json_list(path))


def test_missing_images_are_counted_and_skippable(tmp_path, caplog):
    cuhk_pedes(tmp_path)
    for name in ("CUHK01/0001001.png", "Market/0002_c1s1_01.jpg"):
        (tmp_path / "imgs" / name).unlink()
    with pytest.raises(PersonvlError) as error:
        load_dataset("cuhk-pedes", tmp_path, "train")
    message = str(error.value)
    assert message.startswith("2 file(s) listed by ") and "reid_raw.json (train) are missing, e.g. " in message
    assert "CUHK01/0001001.png" in message and "--skip-missing" in message and "\n" not in message
    with caplog.at_level("WARNING", logger="personvl.data"):
        train = load_dataset("cuhk-pedes", tmp_path, "train", skip_missing=True)
    assert len(train) == 2 and train.missing_images == 2
    assert "2 file(s) listed by" in caplog.text and "left out 2 record(s)" in caplog.text
    assert len(load_dataset("cuhk-pedes", tmp_path, "train", check_images=False)) == 4


def test_large_caption_sets_are_a_table_that_reads_like_a_list(tmp_path):
    entries = [{"id": 10 + n % 3, "file_path": f"Part1/{n}.jpg", "captions": [f"caption {n}"]} for n in range(7)]
    for e in entries:
        touch(tmp_path / e["file_path"])
    (tmp_path / "synthpedes_dataset.json").write_text(json.dumps(entries))
    records = load_dataset("synth-pedes", tmp_path)
    assert [r.captions[0] for r in records[2:5]] == ["caption 2", "caption 3", "caption 4"]
    assert records[-1].image_path == str(tmp_path / "Part1" / "6.jpg") and records[-1].extra == {}
    with pytest.raises(IndexError):
        records[7]
    relabelled = load_dataset("synth-pedes", tmp_path, relabel=True)
    assert [r.pid for r in relabelled] == [0, 1, 2, 0, 1, 2, 0] and relabelled.identity_mapping == {10: 0, 11: 1, 12: 2}
    assert [r.pid for r in records] == [10, 11, 12, 10, 11, 12, 10]  # the original is unchanged
