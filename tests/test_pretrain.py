"""Pre-training recipes on the synthetic world with tiny encoders."""

import json
import math

import pytest
import torch

from personvl.cli import main
from personvl.errors import PersonvlError, UsageError
from personvl.methods.plip import PLIPConfig, PLIPMethod
from personvl.methods.text_masking import AttributeMatcher, wordpiece_words
from personvl.models import create_model, load_model
from personvl.objectives.masking import IGNORE_INDEX
from personvl.training.pretrain import load_pretrain_config, pretrain

COMMON = ["trainer.accelerator=cpu", "trainer.progress_bar=false", "data.workers=0",
          "data.identities_per_batch=4", "data.images_per_identity=2", "trainer.log_every_n_steps=1"]


def _batch(encoder, size=8):
    tokens = encoder.tokenizer(["a woman in a red coat and black jeans"] * size)
    height, width = encoder.config.preprocess.input_size
    return {"image": torch.randn(size, 3, height, width), "pid": torch.arange(size) // 2,
            "input_ids": tokens.input_ids, "attention_mask": tokens.attention_mask,
            "attributes": torch.randint(0, 2, (size, 5)).float()}


def test_plip_gradients_reach_trained_parameters_only():
    torch.manual_seed(0)
    encoder = create_model("tiny-plip-rn50").train()
    method = PLIPMethod(encoder, PLIPConfig(decoder_width=16))
    losses = method(_batch(encoder), progress=0.5, step=3)
    assert set(losses) >= {"ivlc", "tic", "iap", "loss"}
    assert torch.isfinite(losses["loss"])
    losses["loss"].backward()
    bert = encoder.text.bert
    frozen = [bert.embeddings, *bert.encoder.layer[:encoder.text.frozen_layers]]
    for module in frozen:
        assert all(p.grad is None for p in module.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in bert.encoder.layer[-1].parameters())
    assert encoder.visual.parameters().__next__().grad is not None
    assert all(p.grad is not None for p in method.iap_head.parameters())
    assert all(p.grad is not None for p in method.decoder.parameters())


def test_turning_an_objective_off_removes_it():
    encoder = create_model("tiny-plip-rn50").train()
    method = PLIPMethod(encoder, PLIPConfig(decoder_width=16, tic_weight=0.0, iap_weight=0.0))
    losses = method(_batch(encoder), progress=0.0)
    assert set(losses) == {"ivlc", "loss"}
    assert losses["loss"].item() == pytest.approx(losses["ivlc"].item())


def test_infonce_ivlc_starts_from_the_configured_scale():
    torch.manual_seed(0)
    encoder = create_model("tiny-plip-rn50").train()
    batch = _batch(encoder)
    losses = {}
    for scale in (14.0, 5.0):
        method = PLIPMethod(encoder, PLIPConfig(decoder_width=16, tic_weight=0.0, iap_weight=0.0, ivlc_loss="infonce",
                                                infonce_scale_init=scale))
        assert method.logit_scale.exp().item() == pytest.approx(scale)
        torch.manual_seed(1)
        losses[scale] = method(batch, progress=0.0)["ivlc"].item()
    # The same similarities, sharper or softer: only the scale changed the loss.
    assert losses[14.0] != pytest.approx(losses[5.0], rel=1e-3)
    assert all(math.isfinite(v) for v in losses.values())
    with pytest.raises(UsageError, match="infonce_scale_init"):
        PLIPMethod(encoder, PLIPConfig(ivlc_loss="infonce", infonce_scale_init=0.0))


def test_iap_scores_the_masked_positions_exactly_as_the_head_over_every_position():
    from personvl.objectives import masked_token_loss, masking_ratio_schedule, whole_word_mask

    torch.manual_seed(0)
    encoder = create_model("tiny-plip-rn50", text_pooling="max", frozen_text_layers=0).eval()
    method = PLIPMethod(encoder, PLIPConfig(decoder_width=16, tic_weight=0.0, seed=3)).eval()
    batch = _batch(encoder)
    tokens = encoder.tokenizer(["a woman in a red coat and black jeans", "a man with a blue backpack and grey shorts"] * 4)
    batch["input_ids"], batch["attention_mask"] = tokens.input_ids, tokens.attention_mask
    with torch.no_grad():
        ours = method(batch, progress=0.7, step=5)["iap"]
        # The same draw of masked words, and the head run over every position of every caption.
        hf = encoder.tokenizer.hf
        word_ids, words = wordpiece_words(hf, batch["input_ids"])
        generator = torch.Generator().manual_seed(3 * 1_000_003 + 5)
        masked_ids, labels = whole_word_mask(batch["input_ids"], word_ids, masking_ratio_schedule(0.7, 0.2, 0.8),
                                             hf.mask_token_id, generator,
                                             candidate_words=[method.attribute_matcher.spans(w) for w in words])
        image = encoder.image_features(batch["image"])
        states = encoder.text.forward_tokens(masked_ids, batch["attention_mask"])[0]
        logits = method.iap_head(states, image.embedding, image.maps[-1])
    assert (labels != IGNORE_INDEX).sum() > 8
    assert ours.item() == pytest.approx(masked_token_loss(logits, labels).item(), rel=1e-5)


def test_tic_colorizes_the_first_images_only_when_asked():
    torch.manual_seed(0)
    encoder = create_model("tiny-plip-rn50").eval()
    batch = _batch(encoder)
    method = PLIPMethod(encoder, PLIPConfig(decoder_width=16, iap_weight=0.0, tic_images=3)).eval()
    with torch.no_grad():
        first = method(batch, progress=0.0)["tic"]
        batch["image"][3:] = torch.randn_like(batch["image"][3:])     # the images it leaves out
        assert method(batch, progress=0.0)["tic"].item() == pytest.approx(first.item())
        batch["image"][:3] = torch.randn_like(batch["image"][:3])
        assert method(batch, progress=0.0)["tic"].item() != pytest.approx(first.item())
    with pytest.raises(UsageError, match="plip.tic_images must be a positive number"):
        PLIPMethod(encoder, PLIPConfig(tic_images=0))


def test_iap_on_the_first_captions_is_iap_on_a_batch_of_them():
    torch.manual_seed(0)
    encoder = create_model("tiny-plip-rn50").eval()
    batch = _batch(encoder)
    first = {key: value[:4] for key, value in batch.items()}
    subset = PLIPMethod(encoder, PLIPConfig(decoder_width=16, tic_weight=0.0, iap_captions=4)).eval()
    whole = PLIPMethod(encoder, PLIPConfig(decoder_width=16, tic_weight=0.0)).eval()
    whole.iap_head.load_state_dict(subset.iap_head.state_dict())
    with torch.no_grad():
        for step in range(3):    # other masking draws
            expected = whole(first, progress=0.5, step=step)["iap"]
            assert subset(batch, progress=0.5, step=step)["iap"].item() == pytest.approx(expected.item(), rel=1e-5)
        assert whole(batch, progress=0.5)["iap"].item() != pytest.approx(subset(batch, progress=0.5)["iap"].item())
    with pytest.raises(UsageError, match="plip.iap_captions must be a positive number"):
        PLIPMethod(encoder, PLIPConfig(iap_captions=0))


def test_wordpiece_words_and_attribute_words():
    encoder = create_model("tiny-plip-rn50")
    hf = encoder.tokenizer.hf
    ids = encoder.tokenizer(["a woman in a red overcoat"]).input_ids
    word_ids, words = wordpiece_words(hf, ids)
    assert words[0] == ["a", "woman", "in", "a", "red", "overcoat"]
    assert word_ids[0][0] is None and word_ids[0][-1] is None     # [CLS] ... padding
    assert AttributeMatcher.from_vocabulary().spans(words[0]) == ((4, 5),)    # one phrase, masked together


def test_recipes_parse_and_unknown_keys_are_refused():
    for name in ("plip_tiny", "plip_rn50", "valpat_tiny", "valpat_rn50", "unipt_tiny", "unipt_vitb16"):
        config = load_pretrain_config(f"configs/pretrain/{name}.yaml")
        assert config.method in name
    captioner = load_pretrain_config("configs/pretrain/captioner_tiny.yaml")
    assert (captioner.method, captioner.unipt.mlm_weight, captioner.unipt.identity_aware) == ("unipt", 0.0, False)
    assert captioner.model.name == "personvl-quickstart/pretrain/model"      # starts from the quickstart's encoder
    with pytest.raises(UsageError, match="unknown config key 'plip.tic'"):
        load_pretrain_config("configs/pretrain/plip_tiny.yaml", ["plip.tic=0"])


def test_plip_tiny_recipe_is_the_quickstarts():
    from personvl.config import config_to_dict
    from personvl.quickstart import QUICKSTART_STEPS, quickstart_recipe

    recipe = config_to_dict(load_pretrain_config("configs/pretrain/plip_tiny.yaml"))
    quickstart = config_to_dict(quickstart_recipe("world", "out", QUICKSTART_STEPS, workers=0, train_identities=2550))
    for section in ("method", "model", "plip"):
        assert recipe[section] == quickstart[section], section
    for section, keys in {"data": ("dataset", "identities_per_batch", "images_per_identity", "workers", "transform",
                                   "in_memory"),
                          "optim": ("name", "lr", "weight_decay", "warmup_steps", "min_lr_ratio"),
                          "trainer": ("max_steps", "accelerator", "precision", "seed")}.items():
        assert {k: recipe[section][k] for k in keys} == {k: quickstart[section][k] for k in keys}, section


@pytest.mark.parametrize("recipe, dataset", [("plip_tiny", "cuhk-pedes"), ("unipt_tiny", "cuhk-pedes"),
                                             ("valpat_tiny", "")])
def test_each_recipe_trains_a_few_steps_and_exports_the_encoder(small_world, tmp_path, recipe, dataset):
    world, _ = small_world
    out = tmp_path / recipe
    summary = pretrain(f"configs/pretrain/{recipe}.yaml",
                       [f"data.root={world / dataset}", f"output_dir={out}", "trainer.max_steps=3",
                        "valpat.queue_size=16", "plip.decoder_width=16", *COMMON], echo=lambda *_: None)
    assert summary["steps"] == 3 and summary["nonfinite_steps"] == 0
    assert (out / "config.yaml").exists() and (out / "checkpoints" / "last.ckpt").exists()
    model = load_model(out / "model")
    assert model.encode_text(["a man in a blue shirt"]).shape[0] == 1
    summary_file = json.loads((out / "summary.json").read_text())
    assert summary_file["steps"] == 3
    if recipe == "valpat_tiny":   # the world's records carry attributes: the attribute loss runs
        assert "train/attributes" in summary_file["last_losses"]
    if recipe == "plip_tiny":     # PLIP's architecture has no temperature: the one IVLC learned goes along
        state = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")["state_dict"]
        assert model.logit_scale is not None
        assert model.logit_scale.item() == pytest.approx(state["method.logit_scale"].item(), abs=1e-6)
        assert model.logit_scale.item() != pytest.approx(math.log(1 / 0.07), abs=1e-5)    # it moved


def test_pretrain_command_and_resume_rules(small_world, tmp_path, capsys):
    world, _ = small_world
    out = tmp_path / "run"
    args = ["pretrain", "configs/pretrain/plip_tiny.yaml", f"data.root={world}/cuhk-pedes", f"output_dir={out}",
            "trainer.max_steps=2", "plip.decoder_width=16", *COMMON]
    assert main(args) == 0
    assert "trained encoder" in capsys.readouterr().out
    assert main(args) == 1
    assert "pass --resume" in capsys.readouterr().err
    assert main(args[:-len(COMMON)] + COMMON + ["trainer.max_steps=4", "--resume"]) == 0
    state = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["global_step"] == 4
    with pytest.raises(PersonvlError, match="nothing to resume"):
        pretrain("configs/pretrain/plip_tiny.yaml", [f"output_dir={tmp_path / 'none'}"], resume=True)
