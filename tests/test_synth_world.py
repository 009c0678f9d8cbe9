import hashlib
import itertools
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from personvl.data.synth import WorldConfig, generate_world, read_world_records
from personvl.data.synth import vocabulary as vocab
from personvl.data.synth.captions import visible_slots, write_captions
from personvl.data.synth.render import CameraStyle, Pose, ShotSpec, render_shot
from personvl.data.synth.world import plan_world, split_identities
from personvl.errors import PersonvlError, UsageError

from conftest import SMALL_WORLD


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_arguments_give_byte_identical_worlds(small_world, tmp_path):
    out, _ = small_world
    again = tmp_path / "again"
    generate_world(again, workers=1, progress=False, preview=True, **SMALL_WORLD)
    first, second = tree_digest(out), tree_digest(again)
    assert first.keys() == second.keys()
    assert first == second
    assert any(name.endswith(".mat") for name in first)  # .mat headers carry no timestamp


def test_another_seed_gives_another_world(small_world, tmp_path):
    out, _ = small_world
    other = generate_world(tmp_path / "o", workers=1, progress=False, **{**SMALL_WORLD, "seed": 4})
    assert (tmp_path / "o" / "images" / "00001_00.jpg").read_bytes() != (out / "images" / "00001_00.jpg").read_bytes()
    assert other["counts"]["images"] == SMALL_WORLD["identities"] * SMALL_WORLD["images_per_identity"]


def test_interrupted_generation_completes_identically(small_world, tmp_path):
    out, _ = small_world
    partial = tmp_path / "partial"
    shutil.copytree(out, partial)
    # what a kill leaves: missing images, a half-written temporary, no world.json
    for image in sorted((partial / "images").glob("*.jpg"))[::3]:
        image.unlink()
    (partial / "images" / ".00002_01.jpg.tmp").write_bytes(b"\xff\xd8 half")
    (partial / "world.json").unlink()
    (partial / "cuhk-pedes" / "reid_raw.json").unlink()
    shutil.rmtree(partial / "prw")
    generate_world(partial, workers=2, progress=False, preview=True, **SMALL_WORLD)
    digest = {k: v for k, v in tree_digest(partial).items() if not k.endswith(".tmp")}
    assert digest == tree_digest(out)


def test_other_settings_in_an_existing_world_are_refused(small_world, tmp_path):
    out, _ = small_world
    with pytest.raises(PersonvlError, match="differs in: seed"):
        generate_world(out, **{**SMALL_WORLD, "seed": 99})
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(PersonvlError, match="not empty and is not a synthetic world"):
        generate_world(tmp_path, identities=5)


@pytest.mark.parametrize("kwargs, message", [
    (dict(identities=0), "identities must be at least 3"),
    (dict(identities=10, cameras=10), "cameras must be between 2 and 9"),
    (dict(identities=10, images_per_identity=1), "images_per_identity must be at least 2"),
    (dict(identities=10, mention_rate=1.5), "rates must lie in"),
])
def test_bad_settings_fail_before_any_file_is_written(tmp_path, kwargs, message):
    target = tmp_path / "never"
    with pytest.raises(UsageError, match=message):
        generate_world(target, **kwargs)
    assert not target.exists()


def test_unwritable_directory_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(PersonvlError, match="cannot write to"):
        generate_world(blocker / "world", identities=5)


def test_identity_splits_are_disjoint_and_cover_everyone():
    splits = split_identities(WorldConfig())
    assert (len(splits.train), len(splits.val), len(splits.test)) == (900, 100, 1000)
    small = split_identities(WorldConfig(identities=3))
    assert [len(small.train), len(small.val), len(small.test)] == [1, 1, 1]


def test_world_json_documents_the_world(small_world):
    out, world = small_world
    on_disk = json.loads((out / "world.json").read_text())
    assert on_disk == world
    assert world["vocabulary"]["attribute_names"] == vocab.attribute_names()
    assert world["vocabulary"]["part_labels"][20:] == ["bag", "umbrella", "phone"]
    calibration = world["calibration"]
    for key in ("chance_t2i_R1", "oracle_t2i_R1", "color_histogram_reid_mAP"):
        assert 0.0 <= calibration[key] <= 100.0
    test_ids = world["splits"]["test"]["identities"]
    per_id = SMALL_WORLD["images_per_identity"]
    # every caption has exactly per_id matches among test_ids * per_id gallery images
    assert calibration["chance_t2i_R1"] == pytest.approx(100 * per_id / (test_ids * per_id), abs=1e-3)
    assert calibration["oracle_t2i_R1"] > calibration["chance_t2i_R1"]
    assert (out / world["preview"]).exists()
    assert Image.open(out / world["preview"]).width > 4 * 96


# ----------------------------------------------------------------------------- formats


def test_cuhk_pedes_format(small_world):
    out, world = small_world
    entries = json.loads((out / "cuhk-pedes" / "reid_raw.json").read_text())
    assert len(entries) == world["counts"]["images"]
    assert set(entries[0]) == {"split", "captions", "file_path", "processed_tokens", "id"}
    by_split = {s: {e["id"] for e in entries if e["split"] == s} for s in ("train", "val", "test")}
    assert not (by_split["train"] & by_split["test"]) and not (by_split["val"] & by_split["test"])
    assert not (by_split["train"] & by_split["val"])
    assert sorted(by_split["train"]) == list(range(1, len(by_split["train"]) + 1))  # 1-based, contiguous
    assert len(by_split["test"]) == world["splits"]["test"]["identities"]
    for e in entries:
        assert (out / "cuhk-pedes" / "imgs" / e["file_path"]).is_file()
        assert len(e["processed_tokens"]) == len(e["captions"])
        assert e["processed_tokens"][0] == re.findall(r"[a-z0-9]+(?:-[a-z0-9]+)*", e["captions"][0].lower())


def test_synth_pedes_format(small_world):
    out, world = small_world
    entries = json.loads((out / "synth-pedes" / "synthpedes_dataset.json").read_text())
    test_first = world["splits"]["test"]["first_pid"]
    assert entries and all(e["id"] < test_first for e in entries)  # the test split stays unseen
    for e in entries:
        assert re.fullmatch(r"Part\d+/\d+/\d+\.jpg", e["file_path"])
        assert (out / "synth-pedes" / e["file_path"]).is_file()
        slots = e["attributes"][0].split(",")
        assert len(slots) == 6 and slots[0] in ("man", "woman")
        assert e["captions"] and e["prompt_caption"]


def test_market1501_format(small_world):
    out, world = small_world
    root = out / "market1501"
    pattern = re.compile(r"([-\d]+)_c(\d)")

    def parse(folder):
        names = sorted(p.name for p in (root / folder).glob("*.jpg"))
        return [(int(pattern.search(n).group(1)), int(pattern.search(n).group(2)) - 1) for n in names]

    train, query, gallery = parse("bounding_box_train"), parse("query"), parse("bounding_box_test")
    per_id = SMALL_WORLD["images_per_identity"]
    n_train, n_val, n_test = (world["splits"][s]["identities"] for s in ("train", "val", "test"))
    assert len(train) == n_train * per_id and len({p for p, _ in train}) == n_train
    assert len(query) == n_test
    assert sum(p > 0 for p, _ in gallery) == n_test * (per_id - 1)
    assert sum(p == 0 for p, _ in gallery) == n_val * per_id          # distractors
    assert sum(p == -1 for p, _ in gallery) == world["counts"]["junk_images"]
    assert all(0 <= c < SMALL_WORLD["cameras"] for _, c in train + query + gallery)
    assert not ({p for p, _ in train} & {p for p, _ in query})
    # every query has a gallery match in another camera
    for pid, cam in query:
        assert any(p == pid and c != cam for p, c in gallery)
    assert (root / "bounding_box_test" / "Thumbs.db").exists()


def test_pa100k_format(small_world):
    out, world = small_world
    mat = scipy.io.loadmat(out / "pa100k" / "annotation.mat")
    names = [mat["attributes"][i][0][0] for i in range(len(mat["attributes"]))]
    assert names == vocab.attribute_names()
    total = 0
    for split in ("train", "val", "test"):
        labels = mat[f"{split}_label"]
        files = [mat[f"{split}_images_name"][i][0][0] for i in range(len(mat[f"{split}_images_name"]))]
        assert labels.dtype == np.uint8 and labels.shape == (len(files), len(names))
        assert set(np.unique(labels)) <= {0, 1}
        assert all((out / "pa100k" / "data" / f).is_file() for f in files)
        total += len(files)
    assert total == world["counts"]["images"]
    records = read_world_records(out)
    first_train = mat["train_images_name"][0][0][0]
    assert mat["train_label"][0].tolist() == records[int(first_train[:6]) - 1]["attributes"]


def test_lip_format(small_world):
    out, _ = small_world
    root = out / "lip"
    for split in ("train", "val"):
        ids = (root / "TrainVal_images" / f"{split}_id.txt").read_text().split()
        assert ids
        for name in ids[:10]:
            image = Image.open(root / "TrainVal_images" / f"{split}_images" / f"{name}.jpg")
            mask = Image.open(root / "TrainVal_parsing_annotations" / f"{split}_segmentations" / f"{name}.png")
            assert mask.mode == "L" and mask.size == image.size
            values = np.unique(np.asarray(mask))
            assert values.max() < vocab.LIP_NUM_CLASSES and 0 in values and len(values) > 5
    test_ids = (root / "Testing_images" / "test_id.txt").read_text().split()
    assert all((root / "Testing_images" / "testing_images" / f"{n}.jpg").is_file() for n in test_ids)


def test_prw_format(small_world):
    out, world = small_world
    root = out / "prw"
    train = scipy.io.loadmat(root / "frame_train.mat")["img_index_train"]
    test = scipy.io.loadmat(root / "frame_test.mat")["img_index_test"]
    frames = [row[0][0] for row in train] + [row[0][0] for row in test]
    assert len(frames) == world["counts"]["scenes"]
    for name in frames:
        assert re.fullmatch(r"c\d+s\d+_\d{6}", name)
        boxes = scipy.io.loadmat(root / "annotations" / f"{name}.jpg.mat")["box_new"]
        assert boxes.ndim == 2 and boxes.shape[1] == 5 and len(boxes) >= 1
        with Image.open(root / "frames" / f"{name}.jpg") as frame:
            width, height = frame.size
        assert np.all(boxes[:, 1] >= 0) and np.all(boxes[:, 1] + boxes[:, 3] <= width)
        assert np.all(boxes[:, 2] >= 0) and np.all(boxes[:, 2] + boxes[:, 4] <= height)
        assert set(boxes[:, 0].astype(int)) <= set(range(1, SMALL_WORLD["identities"] + 1)) | {-2}
    raw = (root / "query_info.txt").read_bytes()
    lines = raw.split(b"\r\n")
    assert raw.endswith(b"\r\n") and len(lines) - 1 == min(6, world["splits"]["test"]["identities"])
    test_frames = {row[0][0] for row in test}
    for line in lines[:-1]:
        pid, x, y, w, h, frame = line.decode().split()
        assert frame in test_frames
        assert (root / "query_box" / f"{pid}_{frame}.jpg").is_file()


# ----------------------------------------------------------------------------- captions


def test_captions_state_only_visible_facts_apart_from_colour_mistakes():
    plan = plan_world(WorldConfig(identities=300, caption_error_rate=0.1, seed=5))
    colour_slots = {s for s in vocab.CAPTION_SLOTS if s.endswith("colour")}
    wrong = stated_colours = 0
    for record in plan.records:
        seen = record["visible"]
        for mentions in record["mentions"]:
            for slot, value, correct in mentions:
                assert slot in seen, f"{slot} mentioned but not visible"
                assert correct == (seen[slot] == value)
                if not correct:
                    assert slot in colour_slots and value in vocab.APPEARANCE_SLOTS[slot]
                stated_colours += slot in colour_slots
                wrong += not correct
    assert wrong / stated_colours == pytest.approx(0.1, abs=0.015)


def test_without_mistakes_every_statement_is_true():
    plan = plan_world(WorldConfig(identities=60, caption_error_rate=0.0))
    assert all(correct for r in plan.records for ms in r["mentions"] for _, _, correct in ms)


def test_caption_words_match_its_mentions_and_captions_differ():
    plan = plan_world(WorldConfig(identities=60))
    for record in plan.records:
        assert len(set(record["captions"])) == len(record["captions"]) == 2
        for text, mentions in zip(record["captions"], record["mentions"]):
            lowered = text.lower()
            for slot, value, _ in mentions:
                if slot.endswith("colour"):
                    words = ("grey", "gray") if value == "grey" else (value,)
                    assert any(w in lowered for w in words), (text, slot, value)


def test_captions_vary_in_structure_and_mention_part_of_what_is_visible():
    plan = plan_world(WorldConfig(identities=200))
    starts = {" ".join(c.split()[:2]) for r in plan.records for c in r["captions"]}
    assert len(starts) > 15
    shares = [len({m[0] for m in ms}) / len(r["visible"]) for r in plan.records for ms in r["mentions"]]
    assert 0.3 < np.mean(shares) < 0.9


def test_occluded_feet_are_not_described():
    appearance = plan_world(WorldConfig(identities=3)).identities[0]
    seen = visible_slots(appearance, "front", feet_hidden=True, legs_hidden=False)
    assert "shoes_colour" not in seen
    rng = np.random.default_rng(0)
    for caption in write_captions(rng, seen, "front", 20, 1.0, 0.0):
        assert all(m.slot != "shoes_colour" for m in caption.mentions)


# ----------------------------------------------------------------------------- masks

_NEUTRAL = CameraStyle(((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)), (0.0, 0.0, 0.0), 1.0, 0.0, 0.0, 1)


def _appearance(**changes):
    base = dict(gender="woman", build="average", skin="medium", hair_length="long", hair_colour="black",
                upper_type="t-shirt", upper_colour="red", upper_pattern="plain", sleeve="short",
                lower_type="trousers", lower_colour="blue", shoes_colour="white", bag="handbag",
                bag_colour="yellow", hat="yes", hat_colour="green", glasses="yes", umbrella="no",
                umbrella_colour="none", phone="no")
    base.update(changes)
    return base


@pytest.mark.parametrize("view", ["front", "back", "side"])
def test_mask_labels_cover_exactly_the_drawn_parts(view):
    appearance = _appearance()
    pose = Pose(height=220, centre_x=64, foot_y=250, lean=0.02, phase=0.7, facing=1, view=view)
    spec = ShotSpec(tuple(appearance.items()), pose, 0, None, 1.0, 1.0, (0, 0), 0)
    image, mask = render_shot(spec, _NEUTRAL, (128, 256))
    pixels, labels = np.asarray(image).astype(int), np.asarray(mask)
    present = {vocab.PART_LABELS[v] for v in np.unique(labels)}
    expected = {"background", "hat", "hair", "upper_clothes", "pants", "left_arm", "right_arm",
                "left_shoe", "right_shoe", "bag"}
    if view != "back":
        expected |= {"face", "sunglasses"}
    assert expected <= present
    assert not present & {"coat", "dress", "skirt", "umbrella", "phone"}
    # the mask is exact: every pixel labelled with a garment has that garment's colour
    for part, colour in (("upper_clothes", "red"), ("pants", "blue"), ("hat", "green"), ("bag", "yellow")):
        assert np.all(pixels[labels == vocab.LABEL[part]] == vocab.COLOURS[colour]), part


def test_carried_objects_and_garment_types_get_their_labels():
    appearance = _appearance(upper_type="dress", lower_type="none", lower_colour="none", bag="none",
                             bag_colour="none", umbrella="yes", umbrella_colour="pink", hat="no", hat_colour="none")
    pose = Pose(height=200, centre_x=64, foot_y=250, lean=0.0, phase=0.0, facing=-1, view="front")
    _, mask = render_shot(ShotSpec(tuple(appearance.items()), pose, 0, None, 1.0, 1.0, (0, 0), 0), _NEUTRAL, (128, 256))
    present = {vocab.PART_LABELS[v] for v in np.unique(np.asarray(mask))}
    assert {"dress", "umbrella", "left_leg", "right_leg"} <= present
    assert not present & {"pants", "hat", "bag"}


def _render(appearance, view):
    """A 256x128 crop and its mask of a standing figure under a neutral camera."""
    pose = Pose(height=225, centre_x=64, foot_y=245, lean=0.0, phase=0.5, facing=1, view=view)
    return render_shot(ShotSpec(tuple(appearance.items()), pose, 0, None, 1.0, 1.0, (0, 0), 0), _NEUTRAL, (128, 256))


@pytest.mark.parametrize("view", ["front", "back", "side"])
def test_garment_types_of_one_silhouette_are_told_apart_at_a_quarter_of_the_resolution(view):
    # Captions and the attribute oracle state t-shirt / shirt / sweater / jacket and jeans /
    # trousers, so a picture must show them: each pair differs in what is drawn, and the
    # difference survives the 4x downscale a 64x32 model sees.
    def small(appearance):
        image, _ = _render(appearance, view)
        return np.asarray(image.resize((32, 64), Image.BICUBIC)).astype(int)

    base = _appearance(bag="none", bag_colour="none", hat="no", hat_colour="none", glasses="no")
    # A t-shirt's short sleeves already set it apart; the long-sleeved three share one outline.
    uppers = {kind: small(dict(base, upper_type=kind, sleeve="long")) for kind in ("shirt", "sweater", "jacket")}
    for first, second in itertools.combinations(uppers, 2):
        changed = (np.abs(uppers[first] - uppers[second]).sum(-1) > 60).sum()
        assert changed >= 4, (view, first, second, changed)
    jeans, trousers = small(dict(base, lower_type="jeans")), small(dict(base, lower_type="trousers"))
    assert (np.abs(jeans - trousers).sum(-1) > 60).sum() >= 4


def test_a_figure_shows_its_gender_in_the_shoulder_to_hip_ratio_whatever_its_build():
    def shoulders_over_hips(gender, build):
        _, mask = _render(_appearance(gender=gender, build=build, bag="none", bag_colour="none"), "front")
        mask = np.asarray(mask)
        upper, pants = mask == vocab.LABEL["upper_clothes"], mask == vocab.LABEL["pants"]
        shoulder_row = np.flatnonzero(upper.any(1))[2]
        return upper[shoulder_row].sum() / pants.sum(1).max()

    builds = ("slim", "average", "heavy")
    women = [shoulders_over_hips("woman", build) for build in builds]
    men = [shoulders_over_hips("man", build) for build in builds]
    # Men's shoulders are wider than their hips, women's narrower, by a margin build cannot close.
    assert max(women) < 1.0 < 1.2 < min(men)


def test_world_masks_match_the_records(small_world):
    out, _ = small_world
    for record in read_world_records(out)[:40]:
        labels = set(np.unique(np.asarray(Image.open(out / record["mask"]))).tolist())
        if record["visible"].get("bag") in ("handbag", "shoulder bag", "backpack") and record["view"] == "back":
            assert vocab.LABEL["bag"] in labels
        garment = {"coat": "coat", "dress": "dress"}.get(record["visible"]["upper_type"], "upper_clothes")
        assert vocab.LABEL[garment] in labels
