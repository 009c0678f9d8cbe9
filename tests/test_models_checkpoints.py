"""Saving and loading models, strict key checks, mixing weight sources, position embeddings."""

import json
from pathlib import Path

import pytest
import timm
import torch
from transformers import BertConfig, BertModel

from personvl import PersonvlError, UsageError
from personvl.models import (
    WeightsMismatchError, create_model, load_model, open_model, resize_position_embedding, save_model,
)
from personvl.models.tokenization import tiny_vocab_path

TEXTS = ["a woman in a red coat", "a man with a black backpack"]


def _perturbed(name, **overrides):
    """A tiny model whose every parameter and buffer differs from a fresh one."""
    torch.manual_seed(11)
    model = create_model(name, **overrides)
    with torch.no_grad():
        for key, value in model.state_dict().items():
            if value.is_floating_point():
                value.add_(torch.randn_like(value) * 0.01)
    return model


@pytest.mark.parametrize("name, overrides", [("tiny-plip-rn50", {}), ("tiny-clip-vitb16-reid", {"patch_stride": 12}),
                                             ("tiny-valpat-rn50", {})])
def test_save_then_load_is_an_exact_round_trip(name, overrides, tmp_path):
    model = _perturbed(name, **overrides)
    save_model(model, tmp_path / "m")
    assert {p.name for p in (tmp_path / "m").iterdir()} == {"config.json", "model.safetensors", "tokenizer"}
    document = json.loads((tmp_path / "m" / "config.json").read_text())
    assert document["architecture"] == name and document["overrides"] == overrides
    assert document["preprocess"]["input_size"] == list(model.image_transform.size)
    loaded = load_model(tmp_path / "m")
    assert loaded.config == model.config
    assert loaded.state_dict().keys() == model.state_dict().keys()
    assert all(torch.equal(a, loaded.state_dict()[k]) for k, a in model.state_dict().items())
    images = torch.randn(2, 3, *model.image_transform.size)
    with torch.no_grad():
        assert torch.equal(model.encode_image(images), loaded.encode_image(images))
        assert torch.equal(model.encode_text(TEXTS), loaded.encode_text(TEXTS))
    assert torch.equal(model.tokenize(TEXTS).input_ids, loaded.tokenize(TEXTS).input_ids)
    # the same folder as weights= of the named architecture
    again = create_model(name, weights=tmp_path / "m", **overrides)
    assert all(torch.equal(a, again.state_dict()[k]) for k, a in model.state_dict().items())


def test_saved_tokenizer_is_used_offline_instead_of_the_default(tmp_path):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(tiny_vocab_path().read_text().splitlines()[:120]) + "\n")
    model = create_model("tiny-plip-rn50", tokenizer=vocab)
    save_model(model, tmp_path / "m")
    assert load_model(tmp_path / "m").tokenizer.vocab_size == 120


def test_a_saved_folder_of_another_architecture_is_refused_by_setting(tmp_path):
    save_model(create_model("tiny-clip-vitb16-reid", patch_stride=12), tmp_path / "m")
    with pytest.raises(PersonvlError, match="differs from tiny-clip-vitb16-reid's in patch_stride: load it with load_model"):
        create_model("tiny-clip-vitb16-reid", weights=tmp_path / "m")


def _plip_layout(model):
    """A tiny model's weights under the official PLIP release's names."""
    state = model.state_dict()
    image = {k[len("visual."):]: v for k, v in state.items() if k.startswith("visual.")}
    text = {"encoder." + k[len("text.bert."):]: v for k, v in state.items() if k.startswith("text.bert.")}
    text["encoder.embeddings.position_ids"] = torch.arange(128).unsqueeze(0)
    return {"ImgEncoder_state_dict": image, "TxtEncoder_state_dict": text, "epoch": 3}


def test_strict_loading_lists_missing_unexpected_and_reshaped_keys(tmp_path):
    source = _perturbed("tiny-plip-rn50")
    checkpoint = _plip_layout(source)
    image = checkpoint["ImgEncoder_state_dict"]
    del image["attnpool.q_proj.bias"]
    image["attnpool.temperature"] = torch.ones(1)
    image["conv1.weight"] = torch.zeros(5, 3, 3, 3)
    torch.save(checkpoint, tmp_path / "PLIP.pth.tar")
    with pytest.raises(WeightsMismatchError) as error:
        create_model("tiny-plip-rn50", weights=tmp_path / "PLIP.pth.tar")
    message = str(error.value)
    assert "\n" not in message
    assert "1 missing [visual.attnpool.q_proj.bias]" in message
    assert "1 unexpected [visual.attnpool.temperature]" in message
    assert "1 with another shape [visual.conv1.weight file [5, 3, 3, 3] vs model [4, 3, 3, 3]]" in message
    assert error.value.report.missing == ["visual.attnpool.q_proj.bias"]

    with pytest.warns(UserWarning, match="1 missing \\[visual.attnpool.q_proj.bias\\]"):
        partial = create_model("tiny-plip-rn50", weights=tmp_path / "PLIP.pth.tar", strict=False)
    assert torch.equal(partial.visual.layer1[0].conv1.weight, source.visual.layer1[0].conv1.weight)
    assert torch.equal(partial.text.bert.pooler.dense.weight, source.text.bert.pooler.dense.weight)
    assert not torch.equal(partial.visual.conv1.weight, source.visual.conv1.weight)
    assert partial.load_report.unexpected == ["visual.attnpool.temperature"]


def test_position_embedding_interpolation_keeps_the_class_token_and_shapes():
    embedding = torch.randn(1 + 14 * 14, 8)
    resized = resize_position_embedding(embedding, (24, 8))
    assert resized.shape == (1 + 24 * 8, 8)
    assert torch.equal(resized[0], embedding[0])
    assert torch.equal(resize_position_embedding(embedding, (14, 14)), embedding)
    with pytest.raises(ValueError, match="not a square grid: pass old_grid"):
        resize_position_embedding(torch.randn(1 + 24 * 8, 8), (14, 14))
    back = resize_position_embedding(resized, (12, 4), old_grid=(24, 8))
    assert back.shape == (1 + 12 * 4, 8) and torch.equal(back[0], embedding[0])


def test_position_embedding_interpolation_reproduces_a_smooth_field():
    # A field linear in the grid coordinates (a different plane per channel): bilinear
    # interpolation must reproduce it exactly at each new token centre (clamped at the border).
    old, new = (14, 14), (24, 8)
    slopes = torch.tensor([[1.0, 0.5], [-0.3, 2.0], [0.0, -1.0]])

    def field(rows, cols):
        grid_r, grid_c = torch.meshgrid(rows, cols, indexing="ij")
        return torch.stack([a * grid_r + b * grid_c for a, b in slopes], dim=-1).reshape(-1, len(slopes))

    embedding = torch.cat([torch.full((1, 3), 7.0), field(torch.arange(14.0), torch.arange(14.0))])
    centres = [((torch.arange(n_new) + 0.5) * n_old / n_new - 0.5).clamp(0, n_old - 1) for n_old, n_new in zip(old, new)]
    expected = field(*centres)
    resized = resize_position_embedding(embedding, new)
    assert torch.allclose(resized[1:], expected, atol=1e-5)
    assert torch.equal(resized[0], embedding[0])
    assert not torch.allclose(resized[1:], field(torch.linspace(0, 13, 24), torch.linspace(0, 13, 8)), atol=1e-3)


def test_timm_backbone_weights_fill_the_trunk_and_its_classifier_is_ignored(tmp_path):
    torch.manual_seed(5)
    backbone = timm.create_model("resnet50", pretrained=False, layers=(1, 1, 1, 1), channels=(8, 16, 32, 64),
                                 num_classes=10)
    torch.save(backbone.state_dict(), tmp_path / "resnet50.pth")
    model = create_model("tiny-valpat-rn50", weights={"image": tmp_path / "resnet50.pth"})
    report = model.load_report
    assert report.fits and report.ignored == ["visual.trunk.fc.bias", "visual.trunk.fc.weight"]
    assert report.not_covered == ["visual.head", "text tower", "logit scale"]
    assert all(torch.equal(v, backbone.state_dict()[k]) for k, v in model.visual.trunk.state_dict().items())


def _tiny_clip_file(path, name="tiny-clip-vitb16", seed=2):
    """A CLIP state dict with open_clip's names (text tower at the top level)."""
    torch.manual_seed(seed)
    clip = create_model(name)
    state = {(k[len("text."):] if k.startswith("text.") else k): v for k, v in clip.state_dict().items()}
    torch.save(state, path)
    return clip


def _tiny_bert_folder(path):
    vocab = len(tiny_vocab_path().read_text().splitlines())
    bert = BertModel(BertConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                intermediate_size=64, max_position_embeddings=128))
    bert.save_pretrained(path)
    return bert


def test_image_and_text_towers_from_two_sources(tmp_path):
    clip = _tiny_clip_file(tmp_path / "clip.pt")
    bert = _tiny_bert_folder(tmp_path / "bert")
    with pytest.raises(PersonvlError, match="two weight sources for text.*weights=\\{'image': ..., 'text': ...\\}"):
        create_model("tiny-unipt-vitb16", embed_dim=64, weights=[tmp_path / "clip.pt", tmp_path / "bert"])
    model = create_model("tiny-unipt-vitb16", embed_dim=64,
                         weights={"image": tmp_path / "clip.pt", "text": tmp_path / "bert"})
    report = model.load_report
    assert report.fits and report.not_covered == ["text.projection", "logit scale"]
    assert f"text tower of {tmp_path / 'clip.pt'} not used" in report.notes
    assert "visual.positional_embedding interpolated from 4x4 to 8x4" in report.notes
    assert torch.equal(model.visual.transformer.resblocks[1].attn.in_proj_weight,
                       clip.visual.transformer.resblocks[1].attn.in_proj_weight)
    assert torch.equal(model.text.bert.encoder.layer[1].output.dense.weight, bert.encoder.layer[1].output.dense.weight)


def test_loading_never_runs_code_from_the_file(tmp_path):
    marker = tmp_path / "code-ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    torch.save({"visual.conv1.weight": torch.zeros(1), "payload": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(PersonvlError, match="cannot read .*evil.pt as a weights file without running code"):
        create_model("tiny-plip-rn50", weights=tmp_path / "evil.pt")
    assert not marker.exists()


def test_weights_that_are_not_there_or_not_weights_are_named(tmp_path):
    with pytest.raises(PersonvlError, match="weights .*nothing.pt do not exist"):
        create_model("tiny-plip-rn50", weights=tmp_path / "nothing.pt")
    (tmp_path / "folder").mkdir()
    with pytest.raises(PersonvlError, match="neither a personvl model folder nor a Hugging Face BERT folder"):
        create_model("tiny-plip-rn50", weights=tmp_path / "folder")
    with pytest.raises(PersonvlError, match="not a personvl model folder"):
        load_model(tmp_path / "folder")
    with pytest.raises(PersonvlError, match="weights parts are 'image' and 'text', got 'txt'"):
        create_model("tiny-plip-rn50", weights={"txt": tmp_path})
    save_model(create_model("tiny-plip-rn50"), tmp_path / "m")
    with pytest.raises(UsageError, match="saved model folder: it brings its own weights"):
        open_model(tmp_path / "m", weights=tmp_path / "x.pt")
    with pytest.raises(UsageError, match="model folder runs/typo does not exist"):
        open_model("runs/typo")


def _tiny_clip_rn50_file(path):
    """A CLIP ModifiedResNet state dict with open_clip's names: 4 heads to a 64-d pool."""
    return _tiny_clip_file(path, "tiny-clip-rn50", seed=6)


def test_clip_resnet_file_for_another_attention_pool_fills_the_trunk_and_names_the_pool(tmp_path):
    clip = _tiny_clip_rn50_file(tmp_path / "RN50.pt")
    model = create_model("tiny-plip-rn50", weights={"image": tmp_path / "RN50.pt"})   # 2 heads to 32-d
    report = model.load_report
    assert report.fits
    assert report.not_covered == ["visual.attnpool", "text tower"]
    assert report.filled == {str(tmp_path / "RN50.pt"): ["image tower except visual.attnpool"]}
    assert ("visual.attnpool from " + str(tmp_path / "RN50.pt") + ": the file's attention pool (4 heads to 64-d) is not "
            "this model's (2 heads to 32-d): left as initialised") in report.notes
    ours, theirs = model.visual.state_dict(), clip.visual.state_dict()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours if not k.startswith("attnpool."))
    assert not torch.equal(ours["attnpool.q_proj.weight"], theirs["attnpool.q_proj.weight"])   # same shape, not taken
    assert "visual.attnpool.q_proj.weight" not in report.loaded_keys


def test_clip_resnet_file_for_the_same_attention_pool_fills_it_too(tmp_path):
    clip = _tiny_clip_rn50_file(tmp_path / "RN50.pt")
    model = create_model("tiny-clip-rn50", weights=tmp_path / "RN50.pt")
    assert model.load_report.fits and model.load_report.not_covered == []
    assert torch.equal(model.visual.attnpool.c_proj.weight, clip.visual.attnpool.c_proj.weight)


def test_report_lists_what_each_source_filled_and_what_stayed_initialised(tmp_path):
    _tiny_clip_rn50_file(tmp_path / "RN50.pt")
    _tiny_bert_folder(tmp_path / "bert")
    model = create_model("tiny-plip-rn50", weights={"image": tmp_path / "RN50.pt", "text": tmp_path / "bert"})
    report = model.load_report
    assert report.filled == {str(tmp_path / "RN50.pt"): ["image tower except visual.attnpool"],
                             str(tmp_path / "bert"): ["text tower"]}
    lines = report.summary_lines()
    assert lines[:3] == [f"{tmp_path / 'RN50.pt'}: image tower except visual.attnpool", f"{tmp_path / 'bert'}: text tower",
                         "left as initialised: visual.attnpool"]
    document = json.loads(json.dumps(report.to_dict()))
    assert document["left_as_initialised"] == ["visual.attnpool"] and document["loaded"] == report.loaded
