"""The official PLIP checkpoint layout (PLIP_RN50.pth.tar), built here at full size with the
release's key names, loads strictly and gives the embeddings of an independent computation."""

import numpy as np
import pytest
import torch
from open_clip.modified_resnet import ModifiedResNet
from PIL import Image
from torch import nn
from transformers import BertConfig, BertModel

from personvl.models import create_model

from fixture_files import randomise_batch_norms

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "woman", "in", "red", "coat", "with", "black",
         "backpack", "man", "blue", "jeans"]
TEXTS = ["A woman in a red coat with a black backpack", "a man in blue jeans"]
IDS = [[2, 5, 6, 7, 5, 8, 9, 10, 5, 11, 12, 3], [2, 5, 13, 7, 14, 15, 3]]
MEAN, STD = np.array([0.357, 0.323, 0.328]), np.array([0.252, 0.242, 0.239])


@pytest.fixture(scope="module")
def official_checkpoint(tmp_path_factory):
    generator = torch.Generator().manual_seed(7)
    torch.manual_seed(7)
    image_encoder = ModifiedResNet(layers=[3, 4, 6, 3], output_dim=768, heads=8, image_size=256, width=64)
    image_encoder.attnpool.positional_embedding = nn.Parameter(torch.randn(33, 2048, generator=generator) / 2048 ** 0.5)
    randomise_batch_norms(image_encoder, generator)
    text_encoder = BertModel(BertConfig())   # bert-base-uncased geometry, random weights
    image_state = image_encoder.state_dict()
    text_state = {f"encoder.{k}": v for k, v in text_encoder.state_dict().items()}
    text_state["encoder.embeddings.position_ids"] = torch.arange(512).unsqueeze(0)   # what transformers < 4.31 saved
    path = tmp_path_factory.mktemp("plip") / "PLIP_RN50.pth.tar"
    torch.save({"ImgEncoder_state_dict": image_state, "TxtEncoder_state_dict": text_state, "epoch": 59}, path)
    vocab = path.parent / "bert-base-uncased"
    vocab.mkdir()
    (vocab / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    return path, vocab, image_encoder.eval(), text_encoder.eval(), len(image_state), len(text_state)


def test_checkpoint_has_the_release_layout(official_checkpoint):
    path, _, _, _, image_entries, text_entries = official_checkpoint
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    assert (image_entries, text_entries) == (339, 200)
    assert {"conv1.weight", "layer1.0.downsample.0.weight", "attnpool.positional_embedding",
            "attnpool.q_proj.weight", "bn1.num_batches_tracked"} <= set(checkpoint["ImgEncoder_state_dict"])
    assert "encoder.embeddings.position_ids" in checkpoint["TxtEncoder_state_dict"]


def test_official_plip_checkpoint_loads_and_reproduces_an_independent_computation(official_checkpoint):
    path, vocab, image_encoder, text_encoder, *_ = official_checkpoint
    model = create_model("plip-rn50", weights=path, tokenizer=vocab)
    report = model.load_report
    assert report.fits and report.loaded == 339 + 199 and report.not_covered == []
    assert any("encoder.embeddings.position_ids" in note for note in report.notes)

    photo = Image.fromarray(np.random.default_rng(3).integers(0, 256, (203, 97, 3), dtype=np.uint8))
    pixels = (np.asarray(photo.resize((128, 256), Image.BICUBIC), dtype=np.float64) / 255 - MEAN) / STD
    batch = torch.tensor(pixels, dtype=torch.float32).permute(2, 0, 1).unsqueeze(0)
    ids = torch.zeros(2, 64, dtype=torch.long)
    for row, token_ids in enumerate(IDS):
        ids[row, :len(token_ids)] = torch.tensor(token_ids)
    with torch.no_grad():
        expected_image = torch.nn.functional.normalize(image_encoder(batch), dim=-1)
        expected_text = torch.nn.functional.normalize(
            text_encoder(input_ids=ids, attention_mask=(ids > 0).long()).pooler_output, dim=-1)
        image = model.encode_image([photo])
        text = model.encode_text(TEXTS)
    assert torch.equal(model.tokenize(TEXTS).input_ids, ids)
    assert (image - expected_image).abs().max() <= 1e-5
    assert (text - expected_text).abs().max() <= 1e-5
