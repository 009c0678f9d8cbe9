"""The encoder commands: models, embed, embed-text, export onnx."""

import json
import numpy as np
import onnxruntime
import pytest
import torch
from PIL import Image

from personvl.cli import main
from personvl.models import create_model, list_models, load_model, save_model


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    for name in ("tiny-plip-rn50", "tiny-clip-rn50"):
        torch.manual_seed(0)
        save_model(create_model(name), root / name)
    return root


@pytest.fixture
def image_folder(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("b/2.png", "a.jpg", "b/1.jpg", "c.JPEG"):
        path = tmp_path / "photos" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (90, 40, 3), dtype=np.uint8)).save(path)
    (tmp_path / "photos" / "notes.txt").write_text("not an image")
    return tmp_path / "photos"


def test_models_lists_every_name_with_its_geometry(capsys):
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == list_models()
    assert next(line for line in lines if line.startswith("plip-rn50 ")).split()[1:3] == ["256x128", "768-d"]
    assert main(["models", "tiny-plip-*", "--parameters"]) == 0
    rows = capsys.readouterr().out.splitlines()
    count = sum(p.numel() for p in create_model("tiny-plip-rn50").parameters())
    assert rows[0].split()[:4] == ["tiny-plip-rn50", "128x64", "32-d", f"{count / 1e6:.2f}M"]


def test_embed_writes_the_features_and_the_paths(saved_models, image_folder, tmp_path, capsys):
    out = tmp_path / "feats.npy"
    assert main(["embed", str(saved_models / "tiny-plip-rn50"), str(image_folder), "--out", str(out),
                 "--batch-size", "3", "--no-progress"]) == 0
    assert "4 images x 32-d" in capsys.readouterr().out
    paths = (tmp_path / "feats.paths.txt").read_text().splitlines()
    assert paths == ["a.jpg", "b/1.jpg", "b/2.png", "c.JPEG"]
    features = np.load(out)
    model = load_model(saved_models / "tiny-plip-rn50")
    with torch.no_grad():
        expected = model.encode_image([image_folder / p for p in paths]).numpy()
    assert features.shape == (4, 32) and features.dtype == np.float32
    assert np.abs(features - expected).max() < 1e-5


def test_embed_names_an_unreadable_image_in_one_line(saved_models, image_folder, tmp_path, capsys):
    (image_folder / "broken.jpg").write_bytes(b"not a jpeg")
    assert main(["embed", str(saved_models / "tiny-plip-rn50"), str(image_folder), "--out", str(tmp_path / "f.npy"),
                 "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("personvl embed: error: cannot read image") and "broken.jpg" in err
    assert err.count("\n") == 1 and not (tmp_path / "f.npy").exists()


def test_embed_text_prints_one_json_line_per_text(saved_models, capsys):
    texts = ["a woman in a red coat", "a man in black"]
    assert main(["embed-text", str(saved_models / "tiny-clip-rn50"), *texts]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    model = load_model(saved_models / "tiny-clip-rn50")
    with torch.no_grad():
        expected = model.encode_text(texts).numpy()
    assert [row["text"] for row in rows] == texts
    assert np.abs(np.array([row["embedding"] for row in rows]) - expected).max() < 1e-5


def test_embed_text_by_name_with_bert_weights(tmp_path, capsys):
    from transformers import BertConfig, BertModel

    from personvl.models.tokenization import tiny_vocab_path

    vocab = tiny_vocab_path().read_text().splitlines()
    BertModel(BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=128)).save_pretrained(tmp_path / "bert")
    (tmp_path / "bert" / "vocab.txt").write_text("\n".join(vocab) + "\n")
    assert main(["embed-text", "tiny-plip-rn50", "a man", "--weights", str(tmp_path / "bert"),
                 "--out", str(tmp_path / "t.npy")]) == 0
    expected = create_model("tiny-plip-rn50", weights=tmp_path / "bert").encode_text(["a man"]).detach().numpy()
    assert np.abs(np.load(tmp_path / "t.npy") - expected).max() < 1e-6


@pytest.mark.parametrize("name", ["tiny-plip-rn50", "tiny-clip-rn50"])
def test_export_onnx_graphs_match_pytorch(name, saved_models, tmp_path, capsys):
    out = tmp_path / "onnx"
    assert main(["export", "onnx", str(saved_models / name), str(out)]) == 0
    assert "max abs difference" in capsys.readouterr().out
    config = json.loads((out / "onnx_config.json").read_text())
    model = load_model(saved_models / name)
    assert config["image_encoder"]["input_size"] == list(model.image_transform.size)
    images = torch.randn(5, 3, *model.image_transform.size)
    texts = ["a woman in a red coat", "a man", "a child with a yellow umbrella"]
    tokens = model.tokenize(texts)
    with torch.no_grad():
        expected_image, expected_text = model.encode_image(images).numpy(), model.encode_text(texts).numpy()
    image_session = onnxruntime.InferenceSession(str(out / config["image_encoder"]["file"]))
    (image,) = image_session.run(None, {"images": images.numpy()})
    text_session = onnxruntime.InferenceSession(str(out / config["text_encoder"]["file"]))
    feeds = {"input_ids": tokens.input_ids.numpy(), "attention_mask": tokens.attention_mask.numpy()}
    (text,) = text_session.run(None, {k: v for k, v in feeds.items() if k in config["text_encoder"]["inputs"]})
    assert np.abs(image - expected_image).max() <= 1e-4
    assert np.abs(text - expected_text).max() <= 1e-4


def test_export_of_a_folder_that_is_not_a_model_fails_in_one_line(tmp_path, capsys):
    assert main(["export", "onnx", str(tmp_path), str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("personvl export: error:") and "is not a personvl model folder" in err
    assert main(["export"]) == 2
