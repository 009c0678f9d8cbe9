"""``last_stride=1`` (BoT's re-ID setting) on the ResNet towers: the last map doubles, stride-2
weights load unchanged (the attention pool's position grid interpolated), the option survives
save/load, and ViTs refuse it in favour of patch_stride."""

import copy
import json

import pytest
import timm
import torch
import torch.nn.functional as F
from open_clip.modified_resnet import ModifiedResNet
from safetensors.torch import save_file
from torch import nn

from personvl import PersonvlError, UsageError
from personvl.models import create_model, load_model, open_model, save_model
from personvl.models.encoder import PersonEncoder
from personvl.models.registry import model_config, model_entry

from fixture_files import randomise_batch_norms

RESNETS = ["tiny-plip-rn50", "tiny-clip-rn50", "tiny-valpat-rn50"]


def _images(model, batch=2, seed=0):
    height, width = model.config.preprocess.input_size
    return torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))


def _trained(name: str, **options) -> PersonEncoder:
    torch.manual_seed(0)
    model = create_model(name, **options)
    randomise_batch_norms(model, torch.Generator().manual_seed(1))
    return model.eval()


@pytest.mark.parametrize("name", RESNETS)
def test_last_stride_1_doubles_only_the_last_map(name):
    two, one = create_model(name), create_model(name, last_stride=1)
    images = _images(two)
    height, width = images.shape[-2:]
    with torch.no_grad():
        maps2, maps1 = two.image_features(images).maps, one.image_features(images).maps
        embedding = one.encode_image(images)
    assert two.visual.pyramid_strides == (4, 8, 16, 32) and one.visual.pyramid_strides == (4, 8, 16, 16)
    assert [tuple(m.shape) for m in maps1[:3]] == [tuple(m.shape) for m in maps2[:3]]
    assert tuple(maps2[-1].shape[-2:]) == (height // 32, width // 32)
    assert tuple(maps1[-1].shape) == (2, maps2[-1].shape[1], height // 16, width // 16)
    for stride, features in zip(one.visual.pyramid_strides, maps1):
        assert tuple(features.shape[-2:]) == (height // stride, width // stride)
    assert embedding.shape == (2, one.embed_dim)


def test_full_size_plip_with_last_stride_1_has_a_16x8_grid_at_256x128():
    with torch.device("meta"):
        model = PersonEncoder(model_config("plip-rn50", last_stride=1))
        maps, embedding = model.visual.forward_pyramid(torch.empty(1, 3, 256, 128))
    assert model.visual.grid_size == (16, 8)
    assert tuple(model.visual.attnpool.positional_embedding.shape) == (1 + 16 * 8, 2048)
    assert [tuple(m.shape[-2:]) for m in maps] == [(64, 32), (32, 16), (16, 8), (16, 8)]
    assert tuple(embedding.shape) == (1, 768)


def test_stride_2_modified_resnet_is_still_open_clips_module():
    model = _trained("tiny-clip-rn50")   # square 64x64: open_clip's own module can run it
    reference = ModifiedResNet(layers=[1, 1, 1, 1], output_dim=64, heads=4, image_size=64, width=8).eval()
    reference.load_state_dict(model.visual.state_dict())
    images = _images(model)
    with torch.no_grad():
        maps, embedding = model.visual.forward_pyramid(images)
        x = reference.stem(images)
        for stage, features in zip((reference.layer1, reference.layer2, reference.layer3, reference.layer4), maps):
            x = stage(x)
            torch.testing.assert_close(features, x, rtol=0, atol=0)
        torch.testing.assert_close(embedding, reference.attnpool(x), rtol=0, atol=0)


def test_stride_2_timm_resnet_is_still_timms_module():
    model = _trained("tiny-valpat-rn50")
    reference = timm.create_model("resnet50", pretrained=False, num_classes=0, layers=(1, 1, 1, 1),
                                  channels=(8, 16, 32, 64)).eval()
    reference.load_state_dict(model.visual.trunk.state_dict())
    images = _images(model)
    with torch.no_grad():
        maps, embedding = model.visual.forward_pyramid(images)
        final, expected = reference.forward_intermediates(images, indices=[1, 2, 3, 4])
        torch.testing.assert_close(embedding, model.visual.head(reference.forward_head(final, pre_logits=True)))
    for features, reference_map in zip(maps, expected):
        torch.testing.assert_close(features, reference_map, rtol=0, atol=0)


def _plip_stride_1_reference(stride_2: PersonEncoder) -> nn.Module:
    """The stride-2 tower by hand at stride 1: no 2x2 pools in the last stage's first block, the
    pool's position grid resized bilinearly (mean token kept)."""
    visual = copy.deepcopy(stride_2.visual)
    first = visual.layer4[0]
    first.avgpool = nn.Identity()
    first.downsample[0] = nn.Identity()
    old = visual.attnpool.positional_embedding.detach()
    rows, cols = visual.grid_size
    grid = old[1:].reshape(1, rows, cols, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(2 * rows, 2 * cols), mode="bilinear", align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(4 * rows * cols, -1)
    visual.attnpool.positional_embedding = nn.Parameter(torch.cat([old[:1], grid]))
    return visual.eval()


def _write(model: PersonEncoder, layout: str, folder):
    if layout == "model folder":
        return save_model(model, folder / "stride2")
    if layout == "state dict":
        path = folder / "stride2.safetensors"
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
        return path
    # The official PLIP release: image and text encoders saved apart.
    path = folder / "PLIP_RN50.pth.tar"
    torch.save({"ImgEncoder_state_dict": model.visual.state_dict(),
                "TxtEncoder_state_dict": {f"encoder.{k}": v for k, v in model.text.bert.state_dict().items()}}, path)
    return path


@pytest.mark.parametrize("layout", ["model folder", "state dict", "PLIP checkpoint"])
def test_stride_2_weights_load_into_a_stride_1_tower(layout, tmp_path):
    stride_2 = _trained("tiny-plip-rn50")
    weights = _write(stride_2, layout, tmp_path)
    model = open_model("tiny-plip-rn50", weights, tokenizer=stride_2.tokenizer, last_stride=1)
    assert model.load_report.fits
    assert "visual.attnpool.positional_embedding interpolated from 4x2 to 8x4" in model.load_report.notes
    stride_2_state, state = stride_2.state_dict(), model.state_dict()
    assert set(state) == set(stride_2_state)
    for key, value in stride_2_state.items():
        if key != "visual.attnpool.positional_embedding":
            assert torch.equal(state[key], value), key
    images = _images(model)
    with torch.no_grad():
        expected = _plip_stride_1_reference(stride_2)(images)
        torch.testing.assert_close(model.visual(images), expected)
        assert not torch.allclose(stride_2.visual(images), expected, atol=1e-3)   # the stride does change it


def test_stride_2_timm_weights_load_into_a_stride_1_tower(tmp_path):
    stride_2 = _trained("tiny-valpat-rn50")
    model = create_model("tiny-valpat-rn50", weights=save_model(stride_2, tmp_path / "m"), last_stride=1)
    reference = copy.deepcopy(stride_2.visual.trunk)
    reference.layer4[0].conv2.stride = (1, 1)
    reference.layer4[0].downsample[0].stride = (1, 1)
    images = _images(model)
    with torch.no_grad():
        torch.testing.assert_close(model.visual(images), stride_2.visual.head(reference(images)))
        assert not torch.allclose(model.visual(images), stride_2.visual(images), atol=1e-3)


def test_a_folder_saved_before_the_option_loads_at_either_stride(tmp_path):
    folder = save_model(_trained("tiny-plip-rn50"), tmp_path / "m")
    config_file = folder / "config.json"
    document = json.loads(config_file.read_text())
    del document["image_tower"]["last_stride"]
    config_file.write_text(json.dumps(document))
    images = _images(load_model(folder))
    with torch.no_grad():
        torch.testing.assert_close(create_model("tiny-plip-rn50", weights=folder).encode_image(images),
                                   load_model(folder).encode_image(images))
    assert create_model("tiny-plip-rn50", weights=folder, last_stride=1).visual.grid_size == (8, 4)


def test_a_stride_1_folder_is_not_read_at_stride_2(tmp_path):
    folder = save_model(create_model("tiny-plip-rn50", last_stride=1), tmp_path / "m")
    with pytest.raises(PersonvlError, match="differs from tiny-plip-rn50's in last_stride: load it with load_model"):
        create_model("tiny-plip-rn50", weights=folder)


@pytest.mark.parametrize("name", RESNETS)
def test_a_saved_model_remembers_last_stride(name, tmp_path):
    model = _trained(name, last_stride=1)
    folder = save_model(model, tmp_path / "m")
    assert json.loads((folder / "config.json").read_text())["image_tower"]["last_stride"] == 1
    again = load_model(folder)
    assert again.visual.pyramid_strides == (4, 8, 16, 16)
    assert again.config == model.config
    images = _images(model)
    with torch.no_grad():
        torch.testing.assert_close(again.encode_image(images), model.encode_image(images), rtol=0, atol=0)
        assert again.image_features(images).maps[-1].shape == model.image_features(images).maps[-1].shape


@pytest.mark.parametrize("name", RESNETS)
def test_resnet_families_offer_last_stride_2_by_default(name):
    assert model_entry(name).options["last_stride"] == 2
    assert model_entry(name.removeprefix("tiny-")).options["last_stride"] == 2
    with pytest.raises(UsageError, match="last_stride must be 1 .* or 2, got 4"):
        create_model(name, last_stride=4)


@pytest.mark.parametrize("name", ["tiny-clip-vitb16", "clip-vitb16-reid", "tiny-unipt-vitb16"])
def test_vit_towers_refuse_last_stride_and_name_patch_stride(name):
    with pytest.raises(UsageError, match=f"model '{name}' has no option 'last_stride': a ViT .*patch_stride"):
        create_model(name, last_stride=1)


def test_every_tower_names_the_strides_of_its_maps():
    for name in ("tiny-clip-vitb16-reid", "tiny-plip-swinb", "tiny-plip-rn50", "tiny-valpat-rn50"):
        model = create_model(name)
        images = _images(model, batch=1)
        with torch.no_grad():
            maps = model.image_features(images).maps
        assert model.visual.pyramid_strides == (4, 8, 16, 32)
        assert [tuple(m.shape[-2:]) for m in maps] == [(images.shape[-2] // s, images.shape[-1] // s)
                                                       for s in model.visual.pyramid_strides]
