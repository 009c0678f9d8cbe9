"""The published recipes (plip_rn50, valpat_rn50, unipt_vitb16) start: at full architecture size,
from per-tower weights in the files' own formats (random, written here), on their datasets'
formats; without their weights they refuse. And the data rules they rely on: reader options,
instance-level records."""

import json
import shutil

import open_clip
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import BertConfig, BertModel

from personvl.cli import main
from personvl.errors import PersonvlError, UsageError
from personvl.models.text import BERT_BASE
from personvl.models.tokenization import tiny_vocab_path
from personvl.training.pretrain import (
    LOAD_REPORT_FILE, DataConfig, _training_split, pretrain,
)
from test_models_hub import fill_hub_cache, hub_cache  # noqa: F401 (a fixture)

# Two steps of a batch of two on one CPU process, no checkpoint before the end.
TWO_STEPS = ["trainer.max_steps=2", "trainer.accelerator=cpu", "trainer.devices=1", "trainer.strategy=auto",
             "trainer.precision=32-true", "trainer.progress_bar=false", "trainer.checkpoint_every_n_steps=1000",
             "trainer.log_every_n_steps=1", "data.workers=0", "data.identities_per_batch=2",
             "data.images_per_identity=1"]
ATTRIBUTES = ["female", "backpack", "hat"]


@pytest.fixture(scope="module")
def bert_base(tmp_path_factory):
    """A BERT-base folder as Hugging Face writes it (random weights), with a vocab.txt."""
    folder = tmp_path_factory.mktemp("bert") / "bert-base-uncased"
    torch.manual_seed(0)
    BertModel(BertConfig(**BERT_BASE)).save_pretrained(folder)
    shutil.copyfile(tiny_vocab_path(), folder / "vocab.txt")
    return folder


@pytest.fixture(scope="module")
def luperson(tmp_path_factory):
    """LUPerson crops without identities, with LUPerson-T and LUPerson-TA annotation files
    named as the recipes name them."""
    root = tmp_path_factory.mktemp("luperson") / "LUPerson"
    lines_t, lines_ta = [], [json.dumps({"attribute_names": ATTRIBUTES})]
    captions = ["a woman in a red coat with a black backpack", "a man in blue jeans and a white hat"]
    for index in range(6):
        path = f"{index // 3:04d}/{index:04d}_000.jpg"
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (48, 96), (40 * index, 200 - 30 * index, 90)).save(root / path)
        lines_t.append(json.dumps({"image": path, "captions": [captions[index % 2]]}))
        lines_ta.append(json.dumps({"image": path, "captions": [captions[index % 2]],
                                    "attributes": [index % 2, 1 - index % 2, index % 3 == 0]}))
    (root / "luperson_t.jsonl").write_text("\n".join(lines_t) + "\n")
    (root / "luperson_ta.jsonl").write_text("\n".join(lines_ta).replace("true", "1").replace("false", "0") + "\n")
    return root


@pytest.fixture(scope="module")
def synth_pedes(tmp_path_factory):
    from personvl.data.synth import generate_world

    out = tmp_path_factory.mktemp("world") / "w"
    generate_world(out, identities=4, images_per_identity=2, cameras=2, seed=3, scene_identities=0, workers=1,
                   progress=False, preview=False)
    return out / "synth-pedes"


def _open_clip_state(name, seed):
    torch.manual_seed(seed)
    return {k: v.contiguous() for k, v in open_clip.create_model(name).state_dict().items()}


def _report(run):
    return json.loads((run / LOAD_REPORT_FILE).read_text())


def test_plip_rn50_starts_from_the_clip_and_bert_weights_its_recipe_names(synth_pedes, bert_base, hub_cache,
                                                                         tmp_path):
    clip = _open_clip_state("RN50", seed=1)
    save_file(clip, str(tmp_path / "open_clip_model.safetensors"))
    fill_hub_cache(hub_cache, "timm/resnet50_clip.openai",
                   {"open_clip_model.safetensors": tmp_path / "open_clip_model.safetensors"})
    fill_hub_cache(hub_cache, "bert-base-uncased",
                   {name: bert_base / name for name in ("config.json", "model.safetensors", "vocab.txt")})
    del clip["visual.attnpool.c_proj.weight"]
    run = tmp_path / "run"
    # The colorization decoder is the method's head, not the encoder: a narrow one keeps the
    # test's two CPU steps to seconds (at 1024 channels it costs most of a minute).
    summary = pretrain("configs/pretrain/plip_rn50.yaml", [f"data.root={synth_pedes}", f"output_dir={run}",
                                                           "plip.decoder_width=64", *TWO_STEPS], echo=lambda *_: None)
    assert summary["steps"] == 2
    report = _report(run)
    openai, bert = "openai (open_clip RN50 'openai')", "bert-base-uncased (Hugging Face bert-base-uncased)"
    assert report["filled"] == {openai: ["image tower except visual.attnpool"], bert: ["text tower"]}
    assert report["left_as_initialised"] == ["visual.attnpool"]
    assert any("(32 heads to 1024-d) is not this model's (8 heads to 768-d)" in note for note in report["notes"])
    trained, given = load_file(run / "model" / "model.safetensors"), load_file(bert_base / "model.safetensors")
    frozen = [k for k in given if k.startswith(("embeddings.", *(f"encoder.layer.{i}." for i in range(8))))]
    assert len(frozen) == 5 + 8 * 16
    assert all(torch.equal(trained[f"text.bert.{k}"], given[k]) for k in frozen)
    moved = [k for k in given if k.startswith("encoder.layer.11.")]
    assert any(not torch.equal(trained[f"text.bert.{k}"], given[k]) for k in moved)   # the trained layers trained


def test_valpat_rn50_starts_from_timm_and_bert_files_given_on_the_command_line(luperson, bert_base, tmp_path):
    torch.manual_seed(2)
    torch.save(timm.create_model("resnet50", pretrained=False).state_dict(), tmp_path / "resnet50.pth")
    run = tmp_path / "run"
    assert main(["pretrain", "configs/pretrain/valpat_rn50.yaml", f"data.root={luperson}", f"output_dir={run}",
                 f"model.weights.image={tmp_path / 'resnet50.pth'}", f"model.weights.text={bert_base}",
                 "valpat.queue_size=8", *TWO_STEPS]) == 0
    report = _report(run)
    assert report["filled"] == {str(tmp_path / "resnet50.pth"): ["image tower except visual.head"],
                                str(bert_base): ["text tower except text.projection"]}
    assert report["left_as_initialised"] == ["visual.head", "text.projection", "logit scale"]


def test_unipt_vitb16_starts_from_a_clip_vit_and_bert_at_its_own_input_size(luperson, bert_base, tmp_path):
    torch.save(_open_clip_state("ViT-B-16", seed=3), tmp_path / "ViT-B-16.pt")
    run = tmp_path / "run"
    summary = pretrain("configs/pretrain/unipt_vitb16.yaml", [
        f"data.root={luperson}", f"output_dir={run}", f"model.weights.image={tmp_path / 'ViT-B-16.pt'}",
        f"model.weights.text={bert_base}", *TWO_STEPS], echo=lambda *_: None)
    assert summary["steps"] == 2
    report = _report(run)
    assert report["filled"] == {str(tmp_path / "ViT-B-16.pt"): ["image tower"],
                                str(bert_base): ["text tower except text.projection"]}
    assert "visual.positional_embedding interpolated from 14x14 to 24x8" in report["notes"]
    assert report["left_as_initialised"] == ["text.projection", "logit scale"]


@pytest.mark.parametrize("recipe, image, text", [
    ("plip_rn50", "open_clip RN50 'openai'", "bert-base-uncased"),
    ("valpat_rn50", "timm resnet50.tv_in1k", "bert-base-uncased"),
    ("unipt_vitb16", "open_clip ViT-B-16 'openai'", "bert-base-uncased"),
])
def test_published_recipes_without_their_weights_refuse_saying_what_to_download(recipe, image, text, hub_cache,
                                                                               tmp_path):
    with pytest.raises(PersonvlError, match=rf"image weights .* \({image}\) are not in the Hugging Face cache .*"
                                            r"model\.weights\.image="):
        pretrain(f"configs/pretrain/{recipe}.yaml", [f"output_dir={tmp_path / 'a'}", *TWO_STEPS], echo=lambda *_: None)
    with pytest.raises(PersonvlError, match=rf"text weights '{text}' .* not in the Hugging Face cache .*"
                                            r"model\.weights\.text=FOLDER"):
        pretrain(f"configs/pretrain/{recipe}.yaml", [f"output_dir={tmp_path / 'b'}", "model.weights.image=null",
                                                     *TWO_STEPS], echo=lambda *_: None)


def test_plip_rn50_without_text_weights_refuses_to_train_frozen_random_layers(tmp_path):
    with pytest.raises(UsageError) as refused:
        pretrain("configs/pretrain/plip_rn50.yaml", [f"output_dir={tmp_path / 'run'}", "model.weights=null",
                                                     *TWO_STEPS], echo=lambda *_: None)
    message = str(refused.value)
    assert message.startswith("plip-rn50 freezes 133 parameters that no weights fill (text.bert.embeddings.LayerNorm")
    assert "Name the weights to start from (model.weights.text=...)" in message
    assert message.endswith("or, to train from scratch, unfreeze them: model.options.frozen_text_layers=0")


# ----------------------------------------------------------------------------- data rules


def test_reader_options_reach_the_reader_and_unlabelled_images_become_their_own_identities(luperson):
    records, size, attribute_names, ratio = _training_split(DataConfig(
        dataset="luperson", root=str(luperson), options={"annotations": "luperson_ta.jsonl"}, images_per_identity=1))
    assert size == 6 and attribute_names == ATTRIBUTES and ratio is not None
    assert [r.pid for r in records] == list(range(6))
    assert records[1].captions == ["a man in blue jeans and a white hat"] and records[1].attributes == [1, 0, 0]
    with pytest.raises(UsageError, match="luperson has no option 'annotation' .*annotations"):
        _training_split(DataConfig(dataset="luperson", root=str(luperson), options={"annotation": "x.jsonl"}))


def test_instance_level_data_takes_one_image_per_identity(luperson):
    with pytest.raises(UsageError, match="has no identities: each image is its own, so data.images_per_identity=2 "
                                         "would repeat every image in its batch; set data.images_per_identity=1"):
        _training_split(DataConfig(dataset="luperson", root=str(luperson), options={"annotations": "luperson_t.jsonl"},
                                   images_per_identity=2))


def test_a_split_with_some_identities_missing_is_refused(tmp_path, luperson):
    lines = [json.dumps({"image": str(luperson / "0000" / f"{i:04d}_000.jpg"), "captions": ["a man"],
                         **({"pid": 7} if i else {})}) for i in range(3)]
    (tmp_path / "records.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(PersonvlError, match=r"\(all\): 1 of 3 records have no identity .*0000_000.jpg.* give every record an "
                                            "identity, or none"):
        _training_split(DataConfig(dataset="jsonl", root=str(tmp_path), split="all", images_per_identity=1))


def test_shards_take_no_reader_options(tmp_path):
    with pytest.raises(UsageError, match=r"data.options \(annotations\) are a dataset reader's"):
        _training_split(DataConfig(dataset="shards", root=str(tmp_path), options={"annotations": "x.jsonl"}))
