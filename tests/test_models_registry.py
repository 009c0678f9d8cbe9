"""The model zoo: names, options, geometry, and the encoder API on every tiny variant."""

import numpy as np
import pytest
import torch
from open_clip.transformer import QuickGELU
from PIL import Image

from personvl import UsageError
from personvl.models import create_model, describe_model, list_models, model_config
from personvl.models.config import PLIP_MEAN, PLIP_STD
from personvl.models.image import build_image_tower

FAMILIES = ["plip-rn50", "plip-swinb", "clip-rn50", "clip-vitb16", "clip-vitb16-reid", "unipt-vitb16", "valpat-rn50"]


def test_every_family_has_a_tiny_variant_and_nothing_else_is_listed():
    assert list_models() == sorted(FAMILIES + [f"tiny-{name}" for name in FAMILIES])
    assert list_models("tiny-clip-*") == ["tiny-clip-rn50", "tiny-clip-vitb16", "tiny-clip-vitb16-reid"]


@pytest.mark.parametrize("name", list_models("tiny-*"))
def test_tiny_model_embeds_images_and_texts_into_one_normalised_space(name):
    torch.manual_seed(0)
    model = create_model(name)
    assert not model.training
    height, width = model.image_transform.size
    images = torch.randn(3, 3, height, width)
    with torch.no_grad():
        image_embeddings = model.encode_image(images)
        text_embeddings = model.encode_text(["a woman in a red coat", "a man with a black backpack"])
        features = model.image_features(images)
        text_features = model.text_features(["a woman in a red coat"])
        raw = model.visual(images)
    assert image_embeddings.shape == (3, model.embed_dim) and text_embeddings.shape == (2, model.embed_dim)
    assert torch.allclose(image_embeddings.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert torch.allclose(text_embeddings.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert not torch.allclose(text_embeddings[0], text_embeddings[1])
    # the pyramid: strides 4..32 of the input, the tower's channel counts, and the same embedding
    assert [tuple(m.shape) for m in features.maps] == [
        (3, c, height // s, width // s) for c, s in zip(model.visual.pyramid_channels, (4, 8, 16, 32))]
    assert torch.allclose(features.embedding, raw, atol=1e-5)
    assert text_features.tokens.shape[:2] == text_features.attention_mask.shape
    assert torch.allclose(torch.nn.functional.normalize(text_features.embedding, dim=-1), text_embeddings[:1], atol=1e-5)


def _meta_tower(name, **overrides):
    # Full-size geometry without the cost of full-size weights: shapes only, on the meta device.
    with torch.device("meta"):
        return build_image_tower(model_config(name, **overrides).image_tower).eval()


def _meta_pyramid(tower, height, width):
    with torch.device("meta"):
        maps, embedding = tower.forward_pyramid(torch.empty(1, 3, height, width))
    return [tuple(m.shape[1:]) for m in maps], tuple(embedding.shape)


def test_plip_rn50_image_tower_has_the_published_geometry():
    tower = _meta_tower("plip-rn50")
    assert tuple(tower.attnpool.positional_embedding.shape) == (33, 2048)
    assert tower.attnpool.num_heads == 8 and tower.attnpool.c_proj.out_features == 768
    maps, embedding = _meta_pyramid(tower, 256, 128)
    assert maps == [(256, 64, 32), (512, 32, 16), (1024, 16, 8), (2048, 8, 4)] and embedding == (1, 768)


@pytest.mark.parametrize("stride, grid", [(16, (24, 8)), (12, (31, 10))])
def test_reid_vit_grid_follows_the_patch_stride(stride, grid):
    tower = _meta_tower("clip-vitb16-reid", patch_stride=stride)
    assert tower.grid_size == grid
    assert tuple(tower.positional_embedding.shape) == (1 + grid[0] * grid[1], 768)
    assert tower.conv1.stride == (stride, stride) and tower.conv1.kernel_size == (16, 16)
    maps, embedding = _meta_pyramid(tower, 384, 128)
    assert maps == [(768, 96, 32), (768, 48, 16), (768, 24, 8), (768, 12, 4)] and embedding == (1, 512)


def test_swin_b_runs_at_256x128_with_four_stages():
    tower = _meta_tower("plip-swinb")
    assert tuple(tower.trunk.patch_embed.img_size) == (256, 128)
    maps, embedding = _meta_pyramid(tower, 256, 128)
    assert maps == [(128, 64, 32), (256, 32, 16), (512, 16, 8), (1024, 8, 4)] and embedding == (1, 768)


def test_plip_text_tower_trains_only_the_last_layers_unless_told():
    model = create_model("tiny-plip-rn50")
    bert = model.text.bert
    assert not any(p.requires_grad for p in bert.embeddings.parameters())
    assert not any(p.requires_grad for p in bert.encoder.layer[0].parameters())
    assert all(p.requires_grad for p in bert.encoder.layer[1].parameters())
    assert all(p.requires_grad for p in bert.pooler.parameters())
    assert model_config("plip-rn50").text_tower["frozen_layers"] == 8
    unfrozen = create_model("tiny-plip-rn50", frozen_text_layers=0)
    assert all(p.requires_grad for p in unfrozen.text.parameters())


def test_plip_sizes_and_text_pooling_are_options_that_survive_a_save(tmp_path):
    from personvl.models import load_model, save_model

    torch.manual_seed(0)
    model = create_model("tiny-plip-rn50", image_width=16, text_width=64, text_pooling="max", frozen_text_layers=0)
    assert model.embed_dim == 64 and model.text.width == 64 and model.text.pooling == "max"
    assert model.text.bert.config.intermediate_size == 128      # the tiny BERT's 2x feed-forward ratio kept
    assert model.visual.conv1.out_channels == 8                 # the stem has half the base width
    assert not hasattr(model.text.bert, "pooler") or model.text.bert.pooler is None
    reloaded = load_model(save_model(model, tmp_path / "model"))
    assert reloaded.config.overrides == {"image_width": 16, "text_width": 64, "text_pooling": "max",
                                         "frozen_text_layers": 0}
    captions = ["a man in a red coat", "a woman carrying a backpack"]
    with torch.no_grad():
        assert torch.equal(model.encode_text(captions), reloaded.encode_text(captions))
    with pytest.raises(UsageError, match="text_width must be a positive multiple of the 2 attention heads, got 63"):
        create_model("tiny-plip-rn50", text_width=63)
    with pytest.raises(UsageError, match="image_width must be an even number"):
        create_model("tiny-plip-rn50", image_width=7)


def test_plip_text_dropout_is_an_option():
    torch.manual_seed(0)
    default = create_model("tiny-plip-rn50")
    assert default.text.bert.config.hidden_dropout_prob == 0.1
    model = create_model("tiny-plip-rn50", text_dropout=0.0).train()
    assert model.text.bert.config.hidden_dropout_prob == model.text.bert.config.attention_probs_dropout_prob == 0.0
    captions = ["a man in a red coat", "a woman carrying a backpack"]
    with torch.no_grad():    # in training mode, without dropout, two passes agree
        assert torch.equal(model.encode_text(captions), model.encode_text(captions))
        default.train()
        assert not torch.equal(default.encode_text(captions), default.encode_text(captions))
    with pytest.raises(UsageError, match=r"text_dropout must be in \[0, 1\), got 1.5"):
        create_model("tiny-plip-rn50", text_dropout=1.5)


def test_tiny_vocabulary_holds_every_word_of_the_synthetic_captions(small_world):
    import re

    from personvl.data import load_dataset

    world_dir, _ = small_world
    tokenizer = create_model("tiny-plip-rn50").tokenizer.hf
    words = {w for r in load_dataset("cuhk-pedes", world_dir / "cuhk-pedes", "train") for c in r.captions
             for w in re.findall(r"[a-z]+", c.lower())}
    split = sorted(w for w in words if len(tokenizer.tokenize(w)) > 1)
    assert split == []


def test_quick_gelu_option_switches_the_activation_of_both_towers():
    model = create_model("tiny-clip-vitb16", quick_gelu=True)
    assert isinstance(model.visual.transformer.resblocks[0].mlp.gelu, QuickGELU)
    assert isinstance(model.text.transformer.resblocks[0].mlp.gelu, QuickGELU)
    plain = create_model("tiny-clip-vitb16")
    assert not isinstance(plain.visual.transformer.resblocks[0].mlp.gelu, QuickGELU)


def test_unknown_names_and_options_are_refused_with_the_alternatives():
    with pytest.raises(UsageError, match="unknown model 'plip-rn51' \\(did you mean plip-rn50"):
        create_model("plip-rn51")
    with pytest.raises(UsageError, match="has no option 'patch_strde' \\(its options: image_size, patch_stride"):
        create_model("tiny-clip-vitb16-reid", patch_strde=12)
    with pytest.raises(UsageError, match="patch_stride must be between 1 and the patch size 16"):
        create_model("tiny-clip-vitb16-reid", patch_stride=20)


def test_image_transform_resizes_the_whole_image_and_normalises_with_the_model_numbers():
    model = create_model("tiny-plip-rn50", image_size=(96, 32))
    transform = model.image_transform
    assert transform.size == (96, 32) and transform.mean == PLIP_MEAN and transform.std == PLIP_STD
    colour = (200, 30, 90)
    tensor = transform(Image.new("RGB", (50, 170), colour))
    expected = (np.array(colour) / 255 - np.array(PLIP_MEAN)) / np.array(PLIP_STD)
    assert tensor.shape == (3, 96, 32)
    assert np.allclose(tensor.mean(dim=(1, 2)).numpy(), expected, atol=1e-5)
    grey = transform(Image.new("L", (40, 100), 128))   # grayscale files become RGB
    assert grey.shape == (3, 96, 32) and torch.allclose(grey[0] * PLIP_STD[0] + PLIP_MEAN[0],
                                                         grey[2] * PLIP_STD[2] + PLIP_MEAN[2], atol=1e-5)


def test_images_can_be_given_as_files_and_pil_images(tmp_path):
    model = create_model("tiny-valpat-rn50")
    image = Image.fromarray((np.random.default_rng(0).random((150, 60, 3)) * 255).astype("uint8"))
    image.save(tmp_path / "p.png")
    with torch.no_grad():
        from_file = model.encode_image(tmp_path / "p.png")
        from_pil = model.encode_image([image])
        from_tensor = model.encode_image(model.image_transform(image))
    assert torch.allclose(from_file, from_pil) and torch.allclose(from_pil, from_tensor)


def test_describe_model_counts_parameters_of_the_built_model():
    summary = describe_model("tiny-plip-rn50", count_parameters=True)
    model = create_model("tiny-plip-rn50")
    assert summary.parameters == sum(p.numel() for p in model.parameters())
    assert summary.input_size == (128, 64) and summary.embed_dim == 32
    assert "official PLIP checkpoint (PLIP_RN50.pth.tar)" in describe_model("plip-rn50").weights


def test_open_model_passes_options_to_a_name_and_refuses_them_for_a_folder(tmp_path):
    from personvl.models import open_model, save_model

    model = open_model("tiny-plip-rn50", text_pooling="max", text_width=64)
    assert model.text.pooling == "max" and model.embed_dim == 64
    folder = save_model(model, tmp_path / "model")
    assert open_model(folder).text.pooling == "max"
    with pytest.raises(UsageError, match="its architecture is fixed, so options \\(text_width\\) do not apply"):
        open_model(folder, text_width=32)
