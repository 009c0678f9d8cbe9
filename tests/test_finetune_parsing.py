"""Human parsing fine-tuning end to end on a synthetic world's LIP (and a PASCAL-Person-Part
copy of it), through the real readers."""

import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from personvl.data import load_dataset
from personvl.errors import UsageError
from personvl.evaluation import parsing_metrics
from personvl.models.heads import SegmentationHead
from personvl.tasks import parsing
from personvl.tasks.parsing import ParsingModel, evaluate, finetune, flip_permutation, load_parsing_config

CONFIG = "configs/finetune/parsing_tiny.yaml"
QUIET = ["trainer.progress_bar=false"]

# LIP classes merged into PASCAL-Person-Part's head, torso, upper/lower arms, upper/lower legs.
LIP_TO_PASCAL = np.array([0, 1, 1, 4, 1, 2, 2, 2, 6, 5, 2, 2, 5, 1, 3, 3, 6, 6, 6, 6], dtype=np.uint8)


# One intra-op thread: two threads on two shared cores spend more time waiting than computing.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def majority_class_miou(dataset, root, split):
    """mIoU of predicting the most frequent training class everywhere (chance level)."""
    train = load_dataset(dataset, root, "train")
    counts = np.bincount(np.concatenate([np.asarray(Image.open(r.mask_path)).ravel() for r in train]))
    masks = [np.asarray(Image.open(r.mask_path)) for r in load_dataset(dataset, root, split)]
    guesses = [np.full_like(mask, counts.argmax()) for mask in masks]
    return parsing_metrics(guesses, masks, len(train.part_names))["mIoU"]


def test_segmentation_head_styles():
    maps = [torch.randn(2, c, 32 // s, 16 // s) for c, s in ((8, 1), (16, 2), (32, 4), (64, 8))]
    for style in ("upernet", "fpn"):
        head = SegmentationHead([8, 16, 32, 64], 5, style=style, width=16, pool_scales=(1, 2))
        assert head(maps).shape == (2, 5, 32, 16)
    with pytest.raises(ValueError, match="style must be one of"):
        SegmentationHead([8, 16], 3, style="deeplab")


def test_flip_swaps_left_and_right_parts():
    from personvl.data.formats.lip import PART_NAMES

    permutation = flip_permutation(PART_NAMES)
    assert [PART_NAMES[permutation[PART_NAMES.index(n)]] for n in ("Left-arm", "Right-leg", "Right-shoe", "Face")] == [
        "Right-arm", "Left-leg", "Left-shoe", "Face"]


def test_lip_parsing_beats_the_majority_class(small_world, tmp_path):
    world, _ = small_world
    root = world / "lip"
    out = tmp_path / "run"
    summary = finetune(CONFIG, [f"data.root={root}", f"output_dir={out}", *QUIET], echo=lambda *a: None)
    chance = majority_class_miou("lip", root, "val")
    report = json.loads((out / "metrics.json").read_text())
    metrics = report["metrics"]
    assert report["task"] == "parsing" and metrics["split"] == "val"
    # Background everywhere scores about 6.5 mIoU here; the tiny model about 18 after 150 steps.
    assert metrics["mIoU"] >= chance + 7 and metrics["mIoU"] >= 2 * chance, (metrics["mIoU"], chance)
    selection = summary["selection"]
    assert selection["split"] == "holdout 0.1 of train" and selection["metric"] == "mIoU"
    assert selection["kept_step"] == max(selection["history"], key=lambda h: h["mIoU"])["step"]
    assert [h["step"] for h in selection["history"]] == [50, 100, 150]
    assert (out / "plots" / "parsing_overlays.png").stat().st_size > 0
    assert (out / "plots" / "per_class_iou.png").stat().st_size > 0
    assert (out / "checkpoints" / "last.ckpt").exists()
    assert yaml.safe_load((out / "config.yaml").read_text())["data"]["root"] == str(root)
    # The saved model scores the same through evaluate(), and predicts maps at the image's size.
    model = ParsingModel.load(out / "model")
    assert evaluate(out / "model", "lip", root)["mIoU"] == pytest.approx(metrics["mIoU"])
    record = load_dataset("lip", root, "val")[0]
    prediction = model.predict([record.image_path])[0]
    assert prediction.shape == np.asarray(Image.open(record.mask_path)).shape


def pascal_person_part_from(lip_root, out):
    """The world's LIP images as a PASCAL-Person-Part release (LIP train -> train, val -> val)."""
    for split in ("train", "val"):
        ids = []
        for record in load_dataset("lip", lip_root, split):
            name = record.image_path.rsplit("/", 1)[-1][:-4]
            ids.append(name)
            (out / "JPEGImages").mkdir(parents=True, exist_ok=True)
            (out / "SegmentationPart").mkdir(parents=True, exist_ok=True)
            Image.open(record.image_path).save(out / "JPEGImages" / f"{name}.jpg")
            mask = LIP_TO_PASCAL[np.asarray(Image.open(record.mask_path))]
            Image.fromarray(mask, "L").save(out / "SegmentationPart" / f"{name}.png")
        (out / f"{split}_id.txt").write_text("".join(f"{i}\n" for i in ids))
    return out


def test_pascal_person_part_and_the_test_split_is_read_last(small_world, tmp_path, monkeypatch):
    import personvl.data
    import personvl.models

    world, _ = small_world
    root = pascal_person_part_from(world / "lip", tmp_path / "ppp")
    reads, before_saving = [], []
    real_load = personvl.data.load_dataset
    real_save = personvl.models.save_model

    def recording(name, path, split=None, **kwargs):
        reads.append(split)
        return real_load(name, path, split, **kwargs)

    def saving(*args, **kwargs):
        before_saving.append(list(reads))
        return real_save(*args, **kwargs)

    monkeypatch.setattr(personvl.data, "load_dataset", recording)
    monkeypatch.setattr(personvl.models, "save_model", saving)
    out = tmp_path / "run"
    finetune(CONFIG, [f"data.root={root}", "data.dataset=pascal-person-part", f"output_dir={out}",
                      "trainer.max_steps=100", "head.style=fpn", "selection.every_n_steps=50", *QUIET],
             echo=lambda *a: None)
    # Selection ran on held-out training images; PASCAL-Person-Part's val (its test) came after.
    assert before_saving == [["train"]] and reads == ["train", "val"]
    monkeypatch.undo()
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    chance = majority_class_miou("pascal-person-part", root, "val")
    assert len(metrics["per_class_iou"]) == 7
    assert metrics["mIoU"] >= chance + 10, (metrics["mIoU"], chance)


def test_parsing_configs_and_protocol_splits():
    with pytest.raises(UsageError, match="holdout_fraction must be in"):
        load_parsing_config(CONFIG, ["data.holdout_fraction=1.5"])
    assert parsing.resolve_split("lip", "test") == "val" and parsing.resolve_split("lip", "train") == "train"
    paper = load_parsing_config("configs/finetune/parsing_paper.yaml")
    assert paper.model.name == "plip-rn50" and paper.head.style == "upernet"


def test_parsing_starts_from_a_saved_model_folder(small_world, tmp_path):
    from personvl.models import create_model, save_model

    world, _ = small_world
    folder = save_model(create_model("tiny-plip-rn50", text_pooling="max", image_width=16, image_size=(64, 32)),
                        tmp_path / "pretrained")
    summary = finetune(CONFIG, [f"data.root={world / 'lip'}", f"output_dir={tmp_path / 'run'}", f"model.name={folder}",
                                "trainer.max_steps=2", *QUIET], echo=lambda *a: None)
    saved = json.loads((tmp_path / "run" / "model" / "config.json").read_text())
    assert summary["steps"] == 2 and saved["preprocess"]["input_size"] == [64, 32]
    with pytest.raises(UsageError, match="its architecture is fixed"):
        finetune(CONFIG, [f"data.root={world / 'lip'}", f"output_dir={tmp_path / 'run2'}", f"model.name={folder}",
                          "model.options={image_width: 32}", *QUIET], echo=lambda *a: None)


def test_lip_model_scored_on_pascal_person_part_through_a_class_merge(small_world, tmp_path):
    """Domain generalisation across label sets: each LIP prediction counts as its PASCAL part."""
    world, _ = small_world
    root = pascal_person_part_from(world / "lip", tmp_path / "ppp")
    out = tmp_path / "run"
    finetune(CONFIG, [f"data.root={world / 'lip'}", f"output_dir={out}", "trainer.max_steps=30", "head.width=16",
                      "evaluation.dataset=pascal-person-part", f"evaluation.root={root}",
                      f"evaluation.class_merge={LIP_TO_PASCAL.tolist()}", "evaluation.plot_images=2", *QUIET],
             echo=lambda *a: None)
    report = json.loads((out / "metrics.json").read_text())["metrics"]
    assert report["setting"] == "domain generalisation: trained on lip, tested on pascal-person-part"
    # The same figures by hand: the LIP model's maps of PASCAL's val frames, merged, against its masks.
    model = ParsingModel.load(out / "model")
    records = load_dataset("pascal-person-part", root, "val")
    merged = [LIP_TO_PASCAL[p] for p in model.predict([r.image_path for r in records])]
    truth = [np.asarray(Image.open(r.mask_path)) for r in records]
    assert report["mIoU"] == pytest.approx(parsing_metrics(merged, truth, 7)["mIoU"], abs=1e-6)
    with pytest.raises(UsageError, match="give evaluation.class_merge"):
        evaluate(out / "model", "pascal-person-part", root)
