"""Published weights named instead of located: found in the local caches, or a one-line error
saying what to download."""

import shutil

import pytest
import torch
from safetensors.torch import save_file
from transformers import BertConfig, BertModel

from personvl import PersonvlError
from personvl.models import create_model, model_config
from personvl.models.hub import is_hub_name, resolve_hub_weights
from personvl.models.tokenization import tiny_vocab_path

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def fill_hub_cache(cache, repo_id, files):
    """``files`` (name -> source path or bytes) laid out as the Hugging Face cache holds a
    snapshot of ``repo_id`` at ``main``."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / COMMIT
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(COMMIT)
    for name, source in files.items():
        if isinstance(source, bytes):
            (snapshot / name).write_bytes(source)
        else:
            shutil.copyfile(source, snapshot / name)
    return snapshot


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache and no network."""
    import huggingface_hub.constants

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr("personvl.models.hub.OPENAI_URL_CACHE", tmp_path / "clip-cache")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def test_names_and_paths_are_told_apart(tmp_path):
    assert is_hub_name("openai") and is_hub_name("bert-base-uncased") and is_hub_name("google-bert/bert-base-uncased")
    assert is_hub_name("resnet50.tv_in1k")
    for path in ("RN50.pt", "weights/model.safetensors", "./bert", "bert/", "/abs/x", "~/x"):
        assert not is_hub_name(path), path
    (tmp_path / "openai").mkdir()
    assert not is_hub_name(str(tmp_path / "openai"))


def test_cached_names_resolve_to_the_cached_files_without_a_network(hub_cache, tmp_path):
    bert = fill_hub_cache(hub_cache, "bert-base-uncased", {"config.json": b"{}", "model.safetensors": b"x",
                                                           "vocab.txt": b"[PAD]\n"})
    rn50 = fill_hub_cache(hub_cache, "timm/resnet50_clip.openai", {"open_clip_model.safetensors": b"x"})
    vit = fill_hub_cache(hub_cache, "timm/vit_base_patch16_clip_224.openai", {"open_clip_model.safetensors": b"x"})
    imagenet = fill_hub_cache(hub_cache, "timm/resnet50.tv_in1k", {"model.safetensors": b"x"})

    plip = model_config("plip-rn50")
    assert resolve_hub_weights("openai", "image", plip).path == rn50 / "open_clip_model.safetensors"
    assert resolve_hub_weights("bert-base-uncased", "text", plip).path == bert
    unipt = resolve_hub_weights("openai", "image", model_config("unipt-vitb16"))
    assert unipt.path == vit / "open_clip_model.safetensors" and unipt.quick_gelu     # OpenAI's activation
    valpat = model_config("valpat-rn50")
    assert resolve_hub_weights("resnet50.tv_in1k", "image", valpat).path == imagenet / "model.safetensors"
    assert resolve_hub_weights("bert-base-uncased", "text", valpat).description == "Hugging Face bert-base-uncased"


def test_openai_files_fetched_by_url_are_found_in_their_own_cache(hub_cache, tmp_path):
    (tmp_path / "clip-cache").mkdir()
    (tmp_path / "clip-cache" / "RN50.pt").write_bytes(b"x")
    found = resolve_hub_weights("openai", "image", model_config("clip-rn50"))
    assert found.path == tmp_path / "clip-cache" / "RN50.pt"


def test_uncached_names_offline_say_what_to_download_and_where_to_pass_it(hub_cache):
    plip = model_config("plip-rn50")
    with pytest.raises(PersonvlError) as image:
        resolve_hub_weights("openai", "image", plip)
    message = str(image.value)
    assert "\n" not in message
    assert f"image weights 'openai' (open_clip RN50 'openai') are not in the Hugging Face cache {hub_cache}" in message
    assert "download https://openaipublic.azureedge.net/" in message and "model.weights.image=PATH/RN50.pt" in message
    with pytest.raises(PersonvlError, match=r"text weights 'bert-base-uncased' .* not in the Hugging Face cache .*"
                                            r"https://huggingface.co/bert-base-uncased .*model\.weights\.text=FOLDER"):
        resolve_hub_weights("bert-base-uncased", "text", plip)
    with pytest.raises(PersonvlError, match=r"https://huggingface.co/timm/resnet50.tv_in1k .*model\.weights\.image="):
        resolve_hub_weights("resnet50.tv_in1k", "image", model_config("valpat-rn50"))


def test_a_cached_tokenizer_alone_is_not_taken_for_the_weights(hub_cache):
    # transformers caches config.json and vocab.txt when only the tokenizer was ever loaded.
    fill_hub_cache(hub_cache, "bert-base-uncased", {"config.json": b"{}", "vocab.txt": b"[PAD]\n"})
    with pytest.raises(PersonvlError, match="text weights 'bert-base-uncased' .* not in the Hugging Face cache"):
        resolve_hub_weights("bert-base-uncased", "text", model_config("plip-rn50"))


def test_names_that_fit_no_published_weights_are_refused_by_what_exists(hub_cache):
    with pytest.raises(PersonvlError, match="open_clip has no RN50 weights of that name .*openai"):
        resolve_hub_weights("imagenet", "image", model_config("plip-rn50"))
    with pytest.raises(PersonvlError, match="not a timm name of this resnet50 tower .*resnet50.tv_in1k"):
        resolve_hub_weights("openai", "image", model_config("valpat-rn50"))
    with pytest.raises(PersonvlError, match="no published weights have this image tower's shape"):
        resolve_hub_weights("openai", "image", model_config("tiny-plip-rn50"))
    with pytest.raises(PersonvlError, match="built at another size"):
        resolve_hub_weights("resnet50.tv_in1k", "image", model_config("tiny-valpat-rn50"))


def test_a_cached_bert_name_loads_into_the_text_tower_with_its_tokenizer(hub_cache, tmp_path):
    vocab = len(tiny_vocab_path().read_text().splitlines())
    settings = dict(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                    intermediate_size=64, max_position_embeddings=128)
    torch.manual_seed(3)
    bert = BertModel(BertConfig(**settings))
    bert.save_pretrained(tmp_path / "bert")
    shutil.copyfile(tiny_vocab_path(), tmp_path / "bert" / "vocab.txt")
    fill_hub_cache(hub_cache, "some-org/tiny-bert", {name: tmp_path / "bert" / name
                                                     for name in ("config.json", "model.safetensors", "vocab.txt")})
    model = create_model("tiny-plip-rn50", weights={"text": "some-org/tiny-bert"})
    report = model.load_report
    assert report.sources == ["some-org/tiny-bert (Hugging Face some-org/tiny-bert)"]
    assert report.filled == {"some-org/tiny-bert (Hugging Face some-org/tiny-bert)": ["text tower"]}
    assert torch.equal(model.text.bert.encoder.layer[1].output.dense.weight, bert.encoder.layer[1].output.dense.weight)
    assert model.has_tokenizer and model.tokenizer.vocab_size == vocab


def test_a_cached_timm_name_fills_the_trunk(hub_cache, tmp_path, monkeypatch):
    import timm

    # The tiny tower is built with other widths than timm's; the name rule is checked on the
    # full size above, the loading here: pretend the tiny tower is the published shape.
    torch.manual_seed(4)
    backbone = timm.create_model("resnet50", pretrained=False, layers=(1, 1, 1, 1), channels=(8, 16, 32, 64))
    state = {k: v.contiguous() for k, v in backbone.state_dict().items()}
    save_file(state, str(tmp_path / "model.safetensors"))
    fill_hub_cache(hub_cache, "timm/resnet50.tv_in1k", {"model.safetensors": tmp_path / "model.safetensors"})
    config = model_config("tiny-valpat-rn50")
    monkeypatch.setitem(config.image_tower, "model_kwargs", {})
    found = resolve_hub_weights("resnet50.tv_in1k", "image", config)
    monkeypatch.setattr("personvl.models.checkpoints.resolve_hub_weights", lambda *args: found)
    model = create_model("tiny-valpat-rn50", weights={"image": "resnet50.tv_in1k"})
    assert model.load_report.filled == {"resnet50.tv_in1k (timm resnet50.tv_in1k)": ["image tower except visual.head"]}
    assert all(torch.equal(v, state[k]) for k, v in model.visual.trunk.state_dict().items())


def test_openai_names_demand_the_activation_openai_trained_with(hub_cache, tmp_path):
    # Only the names are read before the activation is checked: two tensors with CLIP's names.
    save_file({"visual.conv1.weight": torch.zeros(768, 3, 16, 16), "token_embedding.weight": torch.zeros(1, 512)},
              str(tmp_path / "open_clip_model.safetensors"))
    fill_hub_cache(hub_cache, "timm/vit_base_patch16_clip_224.openai",
                   {"open_clip_model.safetensors": tmp_path / "open_clip_model.safetensors"})
    with pytest.raises(PersonvlError, match="trained with QuickGELU: create the model with quick_gelu=True"):
        create_model("unipt-vitb16", weights={"image": "openai"})


def test_a_name_for_the_whole_model_is_a_clip_tag_else_a_missing_path(hub_cache):
    with pytest.raises(PersonvlError, match=r"weights missing-run do not exist \(a published name starts one tower"):
        create_model("tiny-plip-rn50", weights="missing-run")
    with pytest.raises(PersonvlError, match="image weights 'openai' .* not in the Hugging Face cache"):
        resolve_hub_weights("openai", None, model_config("clip-rn50"))
