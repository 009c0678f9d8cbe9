"""CLIP weights as users have them: open_clip state dicts and OpenAI TorchScript archives."""

import warnings

import open_clip
import pytest
import torch
from open_clip.model import CLIP

from personvl import PersonvlError
from personvl.models import create_model, resize_position_embedding

TEXTS = ["a woman in a red coat with a black backpack", "a man wearing blue jeans"]


@pytest.fixture(scope="module")
def open_clip_weights(tmp_path_factory):
    """Random-initialised open_clip models saved as state dicts, built once per name."""
    built = {}

    def get(name):
        if name not in built:
            torch.manual_seed(0)
            reference = open_clip.create_model(name).eval()
            path = tmp_path_factory.mktemp("open_clip") / f"{name}.pt"
            torch.save(reference.state_dict(), path)
            built[name] = reference, path
        return built[name]

    return get


@pytest.mark.parametrize("open_clip_name, ours", [("RN50", "clip-rn50"), ("ViT-B-16", "clip-vitb16")])
def test_open_clip_state_dict_gives_open_clips_embeddings(open_clip_name, ours, open_clip_weights):
    reference, path = open_clip_weights(open_clip_name)
    model = create_model(ours, weights=path)
    assert model.load_report.fits and model.load_report.loaded == len(reference.state_dict())
    images = torch.randn(1, 3, 224, 224)
    tokens = open_clip.get_tokenizer(open_clip_name)(TEXTS)
    with torch.no_grad():
        assert (model.encode_image(images) - reference.encode_image(images, normalize=True)).abs().max() <= 1e-5
        assert (model.encode_text(TEXTS) - reference.encode_text(tokens, normalize=True)).abs().max() <= 1e-5
    assert torch.equal(model.tokenize(TEXTS).input_ids, tokens)


def test_reid_model_interpolates_clips_14x14_position_embeddings_and_keeps_the_class_token(open_clip_weights):
    reference, path = open_clip_weights("ViT-B-16")
    model = create_model("clip-vitb16-reid", weights=path, patch_stride=12)
    original = reference.visual.positional_embedding.detach()
    loaded = model.visual.positional_embedding.detach()
    assert loaded.shape == (1 + 31 * 10, 768)
    assert torch.equal(loaded[0], original[0])
    assert torch.equal(loaded, resize_position_embedding(original, (31, 10)))
    assert "interpolated from 14x14 to 31x10" in " ".join(model.load_report.notes)
    assert torch.equal(model.visual.conv1.weight, reference.visual.conv1.weight)


def _tiny_openai_archive(path, quick_gelu=True):
    """A traced CLIP saved like OpenAI's files: TorchScript, fp16 weights, a setting stored as a
    tensor beside them. Returns the same model in fp32 (with the fp16-rounded weights)."""
    torch.manual_seed(1)
    config = (64, dict(layers=2, width=64, head_width=32, patch_size=16, image_size=64),
              dict(context_length=77, vocab_size=49408, width=64, heads=2, layers=2))
    clip = CLIP(*config, quick_gelu=quick_gelu).eval()
    clip.register_buffer("input_resolution", torch.tensor(64))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(clip, (torch.randn(1, 3, 64, 64), torch.zeros(1, 77, dtype=torch.long)),
                                 check_trace=False)
        traced.half()
        torch.jit.save(traced, str(path))
    reference = CLIP(*config, quick_gelu=quick_gelu).eval()
    reference.load_state_dict({k: v.half().float() for k, v in clip.state_dict().items() if k != "input_resolution"})
    return reference


def test_openai_torchscript_archive_is_read_without_running_it(tmp_path):
    archive = tmp_path / "ViT-tiny.pt"
    reference = _tiny_openai_archive(archive)
    model = create_model("tiny-clip-vitb16", weights=archive, quick_gelu=True)
    assert model.load_report.fits and "text.attn_mask" in model.load_report.ignored
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert (model.encode_image(images) - reference.encode_image(images, normalize=True)).abs().max() <= 1e-5
        tokens = open_clip.get_tokenizer("ViT-B-16")(TEXTS)
        assert (model.encode_text(TEXTS) - reference.encode_text(tokens, normalize=True)).abs().max() <= 1e-5


def test_openai_archive_demands_quick_gelu(tmp_path):
    archive = tmp_path / "ViT-tiny.pt"
    _tiny_openai_archive(archive)
    with pytest.raises(PersonvlError, match="trained with QuickGELU: create the model with quick_gelu=True"):
        create_model("tiny-clip-vitb16", weights=archive)


def test_open_clip_training_checkpoint_with_ddp_prefix_loads(tmp_path):
    torch.manual_seed(0)
    source = create_model("tiny-clip-rn50")
    state = {}
    for key, value in source.state_dict().items():   # back to open_clip's top-level text names
        state["module." + (key[len("text."):] if key.startswith("text.") else key)] = value
    torch.save({"epoch": 3, "name": "run", "state_dict": state}, tmp_path / "epoch_3.pt")
    model = create_model("tiny-clip-rn50", weights=tmp_path / "epoch_3.pt")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), source.state_dict().values()))
