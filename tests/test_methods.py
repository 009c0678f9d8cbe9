"""What each pre-training method feeds its objectives: PLIP's grey TIC input and phrase-level IAP
masks, VAL-PAT's two loader views, symmetric SSL loss and identity-aware contrast, UniPT's
80/10/10 whole-word MLM and its head over the image's tokens."""

import copy

import numpy as np
import pytest
import torch
from PIL import Image

from personvl.data import PersonImageDataset, PersonRecord, build_transform
from personvl.errors import UsageError
from personvl.methods.base import contrast_identities
from personvl.methods.plip import PLIPConfig, PLIPMethod
from personvl.methods.text_masking import AttributeMatcher, split_words
from personvl.methods.unipt import UniPTConfig, UniPTMethod
from personvl.methods.valpat import VALPATConfig, VALPATMethod
from personvl.models import create_model
from personvl.objectives import infonce_loss, momentum_contrast_loss, momentum_update, to_grayscale


def _batch(encoder, captions, pids):
    tokens = encoder.tokenizer(captions)
    height, width = encoder.config.preprocess.input_size
    generator = torch.Generator().manual_seed(0)
    return {"image": torch.randn(len(captions), 3, height, width, generator=generator), "pid": torch.tensor(pids),
            "input_ids": tokens.input_ids, "attention_mask": tokens.attention_mask}


class Recorder:
    """Wraps a module's method and keeps the arguments of every call."""

    def __init__(self, module, name):
        self.calls = []
        original = getattr(module, name)

        def recorded(*args, **kwargs):
            self.calls.append((args, kwargs))
            return original(*args, **kwargs)

        setattr(module, name, recorded)


# ---------------------------------------------------------------------------------------- PLIP


def test_plip_tic_feeds_the_image_tower_the_grey_images():
    torch.manual_seed(0)
    encoder = create_model("tiny-plip-rn50").eval()
    batch = _batch(encoder, ["a man in a red coat"] * 4, [0, 0, 1, 1])
    method = PLIPMethod(encoder, PLIPConfig(decoder_width=16, iap_weight=0.0, tic_images=3)).eval()
    recorder = Recorder(encoder.visual, "forward_pyramid")
    with torch.no_grad():
        method(batch, progress=0.0)
    inputs = [args[0] for args, _ in recorder.calls]
    assert len(inputs) == 2 and torch.equal(inputs[0], batch["image"])
    grey = inputs[1]
    assert grey.shape == (3, *batch["image"].shape[1:])
    assert torch.allclose(grey, to_grayscale(batch["image"][:3], method.mean, method.std))
    rgb = grey * method.std.view(1, 3, 1, 1) + method.mean.view(1, 3, 1, 1)
    assert torch.allclose(rgb[:, 0], rgb[:, 1], atol=1e-5) and torch.allclose(rgb[:, 1], rgb[:, 2], atol=1e-5)
    assert not torch.allclose(grey, batch["image"][:3])


def _iap_masks(method, encoder, batch, steps, progress):
    """The positions the IAP pass masked, per step."""
    recorder = Recorder(encoder.text, "forward_tokens")
    masks = []
    with torch.no_grad():
        for step in steps:
            recorder.calls.clear()
            method(batch, progress=progress, step=step)
            masked_ids = recorder.calls[1][0][0]       # the second text pass: the masked captions
            masks.append(masked_ids != batch["input_ids"][:len(masked_ids)])
    return masks


def _words_at(encoder, ids, mask):
    return encoder.tokenizer.hf.convert_ids_to_tokens(ids[mask].tolist())


def test_iap_masks_whole_attribute_phrases_of_the_record():
    torch.manual_seed(0)
    encoder = create_model("tiny-plip-rn50").eval()
    caption = "a woman in a red coat and black jeans with a black backpack"
    batch = _batch(encoder, [caption] * 2, [0, 1])
    batch["attribute_phrases"] = [("woman", "red coat", "black backpack"), ()]
    method = PLIPMethod(encoder, PLIPConfig(decoder_width=16, tic_weight=0.0)).eval()
    ids = batch["input_ids"][0]
    phrases = [["woman"], ["red", "coat"], ["black", "backpack"]]
    seen = set()
    for mask in _iap_masks(method, encoder, batch, range(12), progress=0.0):
        # ratio 0.2 of three phrases: one phrase, every word of it, nothing else
        words = _words_at(encoder, ids, mask[0])
        assert words in phrases
        seen.add(tuple(words))
        # the second record lists no phrase: the vocabulary's (red coat, black jeans, black backpack)
        assert _words_at(encoder, ids, mask[1]) in (["red", "coat"], ["black", "jeans"], ["black", "backpack"])
    assert len(seen) == 3
    for mask in _iap_masks(method, encoder, batch, range(3), progress=1.0):
        # ratio 0.8 of three phrases: two of them, never the unlisted "black jeans"
        words = _words_at(encoder, ids, mask[0])
        assert len(words) in (3, 4) and "jeans" not in words


def test_iap_word_units_mask_single_colour_and_part_words():
    torch.manual_seed(0)
    encoder = create_model("tiny-plip-rn50").eval()
    caption = "a woman in a red coat and black jeans with a black backpack"
    batch = _batch(encoder, [caption], [0])
    batch["attribute_phrases"] = [("red coat",)]     # words mode does not use the record's phrases
    method = PLIPMethod(encoder, PLIPConfig(decoder_width=16, tic_weight=0.0, iap_units="words")).eval()
    ids = batch["input_ids"][0]
    seen = set()
    for mask in _iap_masks(method, encoder, batch, range(12), progress=0.0):
        words = _words_at(encoder, ids, mask[0])    # ratio 0.2 of six words: one word alone
        assert len(words) == 1 and words[0] in {"red", "coat", "black", "jeans", "backpack"}
        seen.add(words[0])
    assert len(seen) >= 3
    with pytest.raises(UsageError, match="plip.iap_units must be one of phrases, words, got 'tokens'"):
        PLIPMethod(encoder, PLIPConfig(decoder_width=16, iap_units="tokens"))


def test_attribute_matcher_finds_phrases_in_other_words():
    matcher = AttributeMatcher.from_vocabulary()

    def spans(caption, phrases=()):
        words = split_words(caption)
        return [" ".join(words[i] for i in span) for span in matcher.spans(words, phrases)]

    caption = "A man with long black hair wears a black short-sleeved striped tee, blue jeans and a red hoodie."
    phrases = ("man", "black hair", "black t-shirt", "blue jeans", "brown shoes")
    # a synonym of the vocabulary ("tee" for "t-shirt") with other words inside; a phrase the
    # caption does not say ("brown shoes") gives nothing; unlisted attributes are left alone
    assert spans(caption, phrases) == ["man", "black hair", "black short - sleeved striped tee", "blue jeans"]
    # without phrases: runs of property words ending in the item they describe
    assert spans(caption) == ["long black hair", "black short - sleeved", "tee", "blue jeans", "red hoodie"]
    assert spans("she carries a grey rucksack and wears a white t-shirt with leggings") == [
        "grey rucksack", "white t - shirt", "leggings"]
    assert spans("his shoes are black.") == ["shoes", "black"]
    assert spans("a black one-piece dress") == ["black one - piece dress"]
    # a phrase is not matched across a conjunction or another item
    assert spans("black hair and a blue shirt", ("black shirt",)) == ["black hair", "blue shirt"]
    assert spans("a black hat and shirt", ("black shirt",)) == ["black hat", "shirt"]


def test_attribute_matcher_caches_what_it_found():
    matcher = AttributeMatcher.from_vocabulary()
    words = split_words("a woman in a red coat")
    first = matcher.spans(words, ("red coat",))
    assert matcher.spans(list(words), ["red coat"]) is first


def test_batches_carry_the_records_attribute_phrases(tmp_path):
    from personvl.training.pretrain import collate_pretraining

    paths = []
    for i in range(3):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(np.full((32, 16, 3), 40 * i, dtype=np.uint8)).save(paths[-1])
    records = [PersonRecord(paths[0], pid=0, captions=["a red coat"], attribute_phrases=["red coat", "black hair"]),
               PersonRecord(paths[1], pid=1, captions=["a man"]),
               PersonRecord(paths[2], pid=2, captions=["a bag"], attribute_phrases=["backpack"])]
    dataset = PersonImageDataset(records, build_transform("plip", train=False, height=32, width=16))
    batch = collate_pretraining([dataset[i] for i in range(3)])
    assert batch["attribute_phrases"] == [("red coat", "black hair"), (), ("backpack",)]
    assert batch["image"].shape == (3, 3, 32, 16)


# -------------------------------------------------------------------------------------- VAL-PAT


def _person_image(seed=0):
    rng = np.random.default_rng(seed)
    pixels = np.zeros((64, 32, 3), dtype=np.uint8)
    pixels[:20] = (200, 160, 120)
    pixels[20:40] = (180, 30, 40)
    pixels[40:] = (30, 40, 160)
    return Image.fromarray(np.clip(pixels + rng.integers(0, 40, pixels.shape), 0, 255).astype(np.uint8))


def test_moco_transform_gives_two_independently_augmented_views(tmp_path):
    transform = build_transform("moco", height=64, width=32)
    steps = [type(step).__name__ for step in transform.transform.transforms]
    assert steps == ["Resize", "RandomResizedCrop", "RandomApply", "RandomGrayscale", "RandomApply",
                     "RandomHorizontalFlip", "ToNormalizedTensor"]
    crop = transform.transform.transforms[1]
    assert crop.scale == (0.4, 1.0) and crop.ratio == pytest.approx((0.375, 2 / 3))
    jitter, blur = transform.transform.transforms[2], transform.transform.transforms[4]
    assert jitter.p == 0.8 and type(jitter.transforms[0]).__name__ == "ColorJitter"
    assert blur.p == 0.5 and blur.transforms[0].sigma == pytest.approx((0.025, 0.5))   # scaled to 64 high
    image = _person_image()
    torch.manual_seed(0)
    grey = 0
    for _ in range(200):
        first, second = transform(image)
        assert first.shape == second.shape == (3, 64, 32)
        assert not torch.allclose(first, second)
        for view in (first, second):
            rgb = view * torch.tensor(transform.transform.transforms[-1].std).view(3, 1, 1)
            grey += int(torch.allclose(rgb[0] + 0.485, rgb[1] + 0.456, atol=1e-4))
    assert 0.15 < grey / 400 < 0.25         # greyscale with probability 0.2
    path = tmp_path / "0.png"
    image.save(path)
    dataset = PersonImageDataset([PersonRecord(str(path), pid=3, captions=["a person"])], transform, seed=5)
    sample = dataset[0]
    assert set(sample) >= {"image", "second_view"} and not torch.allclose(sample["image"], sample["second_view"])
    again = dataset[0]           # the same draws for the same (seed, epoch, sample)
    assert torch.equal(again["image"], sample["image"]) and torch.equal(again["second_view"], sample["second_view"])
    assert "second_view" not in PersonImageDataset(dataset.records, build_transform("plip", height=64, width=32))[0]
    assert not isinstance(build_transform("moco", train=False, height=64, width=32)(image), tuple)


def _valpat(queue_size=64):
    torch.manual_seed(0)
    encoder = create_model("tiny-valpat-rn50").train()
    batch = _batch(encoder, ["a man in a red coat", "a woman in a blue skirt"] * 3, [4, 9, 4, 9, 4, 2])
    batch["second_view"] = torch.randn(batch["image"].shape, generator=torch.Generator().manual_seed(1))
    return encoder, batch, VALPATMethod(encoder, VALPATConfig(queue_size=queue_size, attribute_weight=0.0), 0)


def test_valpat_ssl_is_symmetric_over_the_two_views_and_queues_both_keys():
    encoder, batch, method = _valpat()
    reference = copy.deepcopy(method)
    losses = method(batch, progress=0.0)
    cfg = reference.config
    momentum_update(reference.encoder.visual, reference.momentum_visual, cfg.momentum)
    momentum_update(reference.ssl_projection, reference.momentum_projection, cfg.momentum)
    with torch.no_grad():
        first_query = reference.ssl_projection(reference.encoder.visual(batch["image"]))
        second_query = reference.ssl_projection(reference.encoder.visual(batch["second_view"]))
        first_key = reference.momentum_projection(reference.momentum_visual(batch["image"]))
        second_key = reference.momentum_projection(reference.momentum_visual(batch["second_view"]))
        queue = reference.queue.keys
        one_way = momentum_contrast_loss(first_query, second_key, queue, cfg.ssl_temperature)
        expected = (one_way + momentum_contrast_loss(second_query, first_key, queue, cfg.ssl_temperature)) / 2
    assert losses["ssl"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert losses["ssl"].item() != pytest.approx(one_way.item(), rel=1e-3)
    keys = torch.nn.functional.normalize(torch.cat([first_key, second_key]), dim=1)
    assert torch.allclose(method.queue.keys[:12], keys, atol=1e-6) and int(method.queue.pointer) == 12
    losses["loss"].backward()     # both views' queries reach the online encoder
    assert next(encoder.visual.parameters()).grad is not None


def test_valpat_second_view_comes_from_the_batch():
    encoder, batch, method = _valpat()
    with torch.no_grad():
        first = method(copy.deepcopy(batch), progress=0.0)["ssl"]
    encoder, batch, method = _valpat()
    batch["second_view"] = batch["second_view"].flip(-1)
    with torch.no_grad():
        assert method(batch, progress=0.0)["ssl"].item() != pytest.approx(first.item(), rel=1e-4)
    del batch["second_view"]
    with pytest.raises(UsageError, match="data.transform: moco"):
        method(batch, progress=0.0)


def test_valpat_image_text_contrast_is_identity_aware(monkeypatch):
    import personvl.methods.valpat as valpat

    calls = []

    def recorded(*args):
        calls.append(args)
        return infonce_loss(*args)

    monkeypatch.setattr(valpat, "infonce_loss", recorded)
    encoder, batch, method = _valpat()
    method.config.ssl_weight = 0.0
    contrast = method(batch, progress=0.0)["contrast"]
    (image, text, scale, pids), = calls
    assert torch.equal(pids, batch["pid"])          # [4, 9, 4, 9, 4, 2]: three images of person 4
    # Same-person pairs are positives: the target row of image 0 spreads over texts 0, 2 and 4.
    spread = torch.nn.functional.normalize(torch.randn(6, 8, generator=torch.Generator().manual_seed(2)), dim=1)
    assert infonce_loss(spread, spread, 10.0, pids).item() != pytest.approx(infonce_loss(spread, spread, 10.0).item(), rel=1e-3)
    assert contrast.item() == pytest.approx(infonce_loss(image, text, scale, pids).item(), rel=1e-6)


def test_unknown_identities_are_each_their_own():
    labels = contrast_identities(torch.tensor([3, -1, 3, -1, -1]))
    assert labels[[0, 2]].tolist() == [3, 3]
    assert len(set(labels[[1, 3, 4]].tolist())) == 3 and (labels[[1, 3, 4]] < -2).all()
    known = torch.tensor([0, 1, 1])
    assert contrast_identities(known) is known


# ---------------------------------------------------------------------------------------- UniPT


def _unipt(conditioned, captions=64):
    torch.manual_seed(0)
    encoder = create_model("tiny-unipt-vitb16").train()
    texts = ["a young woman with long black hair wears a red coat and blue jeans and carries a black backpack",
             "the man in a white shirt and grey trousers is walking towards the camera with a phone"]
    batch = _batch(encoder, texts * (captions // 2), list(range(captions)))
    method = UniPTMethod(encoder, UniPTConfig(mlm_image_conditioned=conditioned, contrast_weight=0.0))
    return encoder, batch, method


def test_unipt_mlm_keeps_berts_80_10_10_split():
    encoder, batch, method = _unipt(conditioned=False)
    recorder = Recorder(encoder.text, "forward_tokens")
    with torch.no_grad():
        method(batch, progress=0.0, step=0)
    masked_ids = recorder.calls[0][0][0]
    mask_id = encoder.tokenizer.mask_token_id
    changed = masked_ids != batch["input_ids"]
    as_mask = (masked_ids == mask_id) & changed
    replaced = changed & ~as_mask
    special = torch.tensor(encoder.tokenizer.special_token_ids + [mask_id])
    assert not torch.isin(masked_ids[replaced], special).any()
    # about 15% of ~1,100 words are chosen; 80% of those become [MASK], 10% another token
    share = as_mask.sum().item() / (as_mask.sum().item() + replaced.sum().item())
    assert replaced.sum() > 0 and 0.8 < share < 0.95


def test_unipt_image_conditioned_mlm_attends_over_the_image_tokens():
    encoder, batch, method = _unipt(conditioned=True, captions=4)
    recorder = Recorder(method.mlm_head, "forward")
    losses = method(batch, progress=0.0)
    (states, embedding, last_map), _ = recorder.calls[0]
    grid = encoder.image_features(batch["image"]).maps[-1]
    assert last_map is not None and last_map.shape == grid.shape and last_map.shape[-2] * last_map.shape[-1] > 1
    losses["loss"].backward()
    assert method.mlm_head.map_proj.weight.grad is not None and method.mlm_head.map_proj.weight.grad.abs().sum() > 0
