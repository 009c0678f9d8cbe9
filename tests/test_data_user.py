"""A user's own data (jsonl, folder), conversion to JSONL and shards, and ``personvl data``."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from personvl import PersonvlError, UsageError
from personvl.cli import main
from personvl.data import PersonRecord, convert_dataset, iter_shards, load_dataset


def image(path: Path, colour=(200, 30, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 32), colour).save(path)


def write_lines(path: Path, lines) -> None:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))


def user_index(root: Path) -> list[dict]:
    lines = [{"attribute_names": ["female", "backpack"]},
             {"image": "a/1.jpg", "pid": 3, "camid": 0, "split": "train", "captions": ["a woman"], "attributes": [1, 0],
              "source": "shop camera"},
             {"image": "a/2.jpg", "pid": 3, "camid": 1, "split": "train", "caption": "the same woman", "attributes": [1, 1]},
             {"image": str(root / "b" / "3.png"), "pid": 8, "split": "test", "mask": "b/3_mask.png",
              "scene_box": [1, 2, 3, 4], "boxes": [[0, 0, 5, 5]], "box_pids": [8]}]
    for line in lines[1:]:
        image(root / line["image"] if not line["image"].startswith("/") else Path(line["image"]))
    image(root / "b" / "3_mask.png")
    write_lines(root / "records.jsonl", lines)
    return lines


def test_jsonl_schema(tmp_path):
    user_index(tmp_path)
    train = load_dataset("jsonl", tmp_path, "train")
    assert train.attribute_names == ["female", "backpack"]
    assert [(r.pid, r.camid, r.captions, r.attributes) for r in train] == [
        (3, 0, ["a woman"], [1, 0]), (3, 1, ["the same woman"], [1, 1])]
    assert train[0].image_path == str(tmp_path / "a" / "1.jpg") and train[0].extra == {"source": "shop camera"}
    test = load_dataset("jsonl", tmp_path / "records.jsonl", "test")
    assert test[0].mask_path == str(tmp_path / "b" / "3_mask.png") and test[0].scene_box == (1, 2, 3, 4)
    assert test[0].boxes == [(0, 0, 5, 5)] and test[0].box_pids == [8] and test[0].camid is None
    assert len(load_dataset("jsonl", tmp_path)) == 3  # "all"
    with pytest.raises(PersonvlError, match=r"records.jsonl: no record has split 'val' \(splits: train, test\)"):
        load_dataset("jsonl", tmp_path, "val")


@pytest.mark.parametrize("line, message", [
    ("{\"image\": \"a/1.jpg\", \"pid\": 1,}", r"records.jsonl: malformed JSON at line 2 column 31: Expecting property name"),
    ('{"pid": 1}', r"records.jsonl: line 2: missing key 'image'"),
    ('{"image": "a/1.jpg", "pid": "7"}', r"records.jsonl: line 2: 'pid' should be int, got '7'"),
    ('{"image": "a/1.jpg", "attributes": [1]}', r"records.jsonl: line 2: 1 attributes but the header names 2"),
    ('{"image": "a/1.jpg", "attributes": [1, 5]}', r"records.jsonl: line 2: 'attributes' should be a list of 0/1"),
    ('[1, 2]', r"records.jsonl: line 2: expected a JSON object, got list"),
])
def test_jsonl_errors_name_the_line(tmp_path, line, message):
    image(tmp_path / "a" / "1.jpg")
    (tmp_path / "records.jsonl").write_text(json.dumps({"attribute_names": ["x", "y"]}) + "\n" + line + "\n")
    with pytest.raises(PersonvlError, match=message):
        load_dataset("jsonl", tmp_path)


def test_a_header_keeps_its_writers_settings_and_only_the_first_line_is_one(tmp_path):
    image(tmp_path / "a" / "1.jpg")
    header = {"attribute_names": ["x", "y"], "prompts": ["A person {phrase}."], "calibration": {"images": 3}}
    record = {"image": "a/1.jpg", "attributes": [0, 1]}
    (tmp_path / "records.jsonl").write_text(json.dumps(header) + "\n" + json.dumps(record) + "\n")
    records = load_dataset("jsonl", tmp_path)
    assert records.attribute_names == ["x", "y"] and list(records[0].attributes) == [0, 1]
    (tmp_path / "records.jsonl").write_text(json.dumps(record) + "\n" + json.dumps(header) + "\n")
    with pytest.raises(PersonvlError, match="line 2: missing key 'image'"):
        load_dataset("jsonl", tmp_path)


def test_folder_with_and_without_identities(tmp_path):
    for name in ["0007/a.jpg", "0007/b.jpg", "0012/c.png"]:
        image(tmp_path / "train" / name)
    image(tmp_path / "query" / "0012" / "d.jpg")
    (tmp_path / "train" / "0007" / "notes.txt").write_text("not an image")
    everything = load_dataset("folder", tmp_path)
    assert len(everything) == 4 and all(r.pid is None for r in everything)
    train = load_dataset("folder", tmp_path, "train", pid_from_folder=True)
    assert [r.pid for r in train] == [7, 7, 12] and {r.split for r in train} == {"train"}
    names = tmp_path / "named"
    for name in ["bob/1.jpg", "alice/2.jpg", "bob/3.jpg"]:
        image(names / name)
    named = load_dataset("folder", names, pid_from_folder=True)
    assert [(r.pid, r.extra["identity"]) for r in named] == [(0, "alice"), (1, "bob"), (1, "bob")]
    image(names / "loose.jpg")
    with pytest.raises(PersonvlError, match=r"loose.jpg: not in an identity sub-folder"):
        load_dataset("folder", names, pid_from_folder=True)
    from personvl.data import dataset_splits
    assert dataset_splits("folder", tmp_path) == ("all", "train", "query")


def test_convert_to_jsonl_round_trips(tmp_path):
    lines = user_index(tmp_path / "src")
    summary = convert_dataset("jsonl", tmp_path / "src", tmp_path / "out.jsonl", to="jsonl")
    assert summary["records"] == {"train": 2, "test": 1}
    for split in ("train", "test"):
        original, converted = load_dataset("jsonl", tmp_path / "src", split), load_dataset("jsonl", tmp_path / "out.jsonl", split)
        assert [r.to_dict() for r in converted] == [r.to_dict() for r in original]
        assert converted.attribute_names == original.attribute_names == lines[0]["attribute_names"]


def test_shards_hold_the_same_records_and_image_bytes(tmp_path):
    user_index(tmp_path / "src")
    summary = convert_dataset("jsonl", tmp_path / "src", tmp_path / "shards", to="shards", shard_size=1)
    assert summary["shards"] == 3
    manifest = json.loads((tmp_path / "shards" / "manifest.json").read_text())
    assert manifest["splits"]["train"] == {"samples": 2, "shards": [{"file": "train-000000.tar", "samples": 1},
                                                                     {"file": "train-000001.tar", "samples": 1}]}
    assert manifest["attribute_names"] == ["female", "backpack"]
    original = load_dataset("jsonl", tmp_path / "src", "train")
    samples = list(iter_shards(tmp_path / "shards", "train"))
    assert [s.record for s in samples] == list(original) and [s.index for s in samples] == [0, 1]
    assert samples[0].image == Path(original[0].image_path).read_bytes() and samples[0].mask is None
    test_sample = next(iter_shards(tmp_path / "shards", "test"))
    assert test_sample.mask == (tmp_path / "src" / "b" / "3_mask.png").read_bytes()


def test_data_commands(tmp_path, capsys, caplog):
    user_index(tmp_path)
    assert main(["data", "stats", "jsonl", str(tmp_path)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["split", "images", "identities", "cameras", "captions", "attributes"]
    assert table[2].split() == ["train", "2", "1", "2", "2", "2"] and table[3].split() == ["test", "1", "1", "0", "0", "2"]
    assert main(["data", "convert", "jsonl", str(tmp_path), "--to", "shards", str(tmp_path / "shards"), "--shard-size", "2",
                 "--split", "train"]) == 0
    assert "train 2 records in 1 shard(s)" in capsys.readouterr().out
    (tmp_path / "a" / "2.jpg").unlink()
    assert main(["data", "stats", "jsonl", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "1 file(s) listed by" in err and "a/2.jpg" in err
    with caplog.at_level("WARNING", logger="personvl.data"):
        assert main(["data", "stats", "jsonl", str(tmp_path), "--skip-missing"]) == 0
    assert "left out 1 record(s)" in caplog.text and "left out for missing images: train: 1" in capsys.readouterr().out
    assert main(["data", "stats", "msmt17", str(tmp_path), "combineall=true"]) == 2
    assert "msmt17 has no option 'combineall'" in capsys.readouterr().err


def test_data_command_help_and_one_line_errors(tmp_path):
    result = subprocess.run([sys.executable, "-m", "personvl", "data", "stats", "market1501", str(tmp_path / "none")],
                            capture_output=True, text=True)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("personvl data: error: ") and "none: not found; expected the market1501 dataset" in result.stderr
    user_index(tmp_path)
    (tmp_path / "a" / "1.jpg").unlink()
    result = subprocess.run([sys.executable, "-m", "personvl", "data", "stats", "jsonl", str(tmp_path), "--skip-missing"],
                            capture_output=True, text=True)
    assert result.returncode == 0 and "a/1.jpg; left out 1 record(s)" in result.stderr  # the warning reaches the terminal
    for action in ("stats", "convert"):
        with pytest.raises(SystemExit) as exit_info:
            main(["data", action, "--help"])
        assert exit_info.value.code == 0


def test_unknown_dataset_and_split_are_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="unknown dataset 'market'; known: cuhk-pedes, icfg-pedes"):
        load_dataset("market", tmp_path)
    with pytest.raises(UsageError, match="market1501 has splits train, query, gallery; got 'test'"):
        load_dataset("market1501", tmp_path, "test")
    with pytest.raises(UsageError, match="convert to one of jsonl, shards, got 'parquet'"):
        convert_dataset("folder", tmp_path, tmp_path / "x", to="parquet")


def test_records_with_boxes_round_trip():
    record = PersonRecord("f.jpg", boxes=[(1.0, 2.0, 3.0, 4.0)], box_pids=[-2])
    values = record.to_dict()
    assert values["boxes"] == [[1.0, 2.0, 3.0, 4.0]] and json.loads(json.dumps(values)) == values
    assert PersonRecord.from_dict(values) == record
    assert np.asarray(record.boxes).shape == (1, 4)
