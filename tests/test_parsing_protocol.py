"""Human parsing's protocol geometry: the training warp keeps image and mask aligned, flips swap
left and right parts, evaluation maps scores back to the annotation, and the flip test."""

import random

import numpy as np
import pytest
import torch
from PIL import Image

from personvl.data.parsing_transforms import (
    IGNORE_INDEX, ParsingAugmentation, flip_permutation, flip_test_logits, frame_to_crop_affine, to_annotation,
    to_network)

PARTS = ["Background", "Hat", "Left-arm", "Right-arm", "Face", "Left-leg", "Right-leg"]
PALETTE = np.array([[20, 200, 20], [200, 20, 20], [20, 20, 200], [200, 200, 20], [20, 200, 200],
                    [200, 20, 200], [240, 240, 240]], dtype=np.uint8)
MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


def block_labels(height: int, width: int, seed: int = 0, block: int = 8) -> np.ndarray:
    """Rectangular blocks of random parts, no two mirror images of each other."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, len(PARTS), size=(-(-height // block), -(-width // block)))
    return np.kron(coarse, np.ones((block, block), dtype=np.int64))[:height, :width].astype(np.uint8)


def painted(labels: np.ndarray) -> Image.Image:
    """An image whose colour at each pixel names the part there."""
    return Image.fromarray(PALETTE[labels])


def colour_labels(pixels: torch.Tensor) -> np.ndarray:
    """The part each pixel's colour names (the nearest palette colour)."""
    rgb = (pixels * torch.tensor(STD).view(3, 1, 1) + torch.tensor(MEAN).view(3, 1, 1)) * 255
    rgb = rgb.permute(1, 2, 0).numpy()
    distances = ((rgb[:, :, None, :] - PALETTE[None, None].astype(np.float64)) ** 2).sum(-1)
    return distances.argmin(-1)


def interior(mask: np.ndarray) -> np.ndarray:
    """Labelled pixels whose 3x3 neighbourhood holds one label."""
    padded = np.pad(mask, 1, constant_values=IGNORE_INDEX)
    same = np.ones_like(mask, dtype=bool)
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            same &= padded[dy:dy + mask.shape[0], dx:dx + mask.shape[1]] == mask
    return same & (mask != IGNORE_INDEX)


def test_flip_permutation_pairs_left_and_right_names():
    assert flip_permutation(PARTS) == [0, 1, 3, 2, 4, 6, 5]
    assert flip_permutation(["background", "left-shoe", "Torso"]) == [0, 1, 2]   # no partner: stays


@pytest.mark.parametrize("scale, rotation, flip", [(1.0, 0.0, False), (1.25, 37.0, False), (0.75, -55.0, True),
                                                   (1.1, 12.0, True)])
def test_image_and_mask_stay_aligned(scale, rotation, flip):
    labels = block_labels(90, 70, block=18)
    augment = ParsingAugmentation((48, 40), MEAN, STD, flip_permutation(PARTS))
    pixels, mask = augment.apply(painted(labels), labels, scale=scale, rotation=rotation, flip=flip)
    assert pixels.shape == (3, 48, 40) and pixels.dtype == torch.float32
    assert mask.shape == (48, 40) and mask.dtype == torch.int64
    mask = mask.numpy()
    assert set(np.unique(mask)) <= set(range(len(PARTS))) | {IGNORE_INDEX}   # nearest: no blended labels
    inside = interior(mask)
    assert inside.mean() > 0.15
    named = colour_labels(pixels)
    expected = np.asarray(flip_permutation(PARTS))[mask[inside]] if flip else mask[inside]   # painted before the flip
    np.testing.assert_array_equal(named[inside], expected)


def test_flip_swaps_left_and_right_labels_only():
    labels = block_labels(32, 32, seed=3, block=4)
    assert len(np.unique(labels)) == len(PARTS)
    augment = ParsingAugmentation((32, 32), MEAN, STD, flip_permutation(PARTS))
    plain_pixels, plain = augment.apply(painted(labels), labels)
    flipped_pixels, flipped = augment.apply(painted(labels), labels, flip=True)
    np.testing.assert_array_equal(plain.numpy(), labels)   # the frame fills a crop of its own size exactly
    swap = np.array([0, 1, 3, 2, 4, 6, 5])
    np.testing.assert_array_equal(flipped.numpy(), swap[labels[:, ::-1]])
    torch.testing.assert_close(flipped_pixels, plain_pixels.flip(-1))


def test_without_a_permutation_nothing_flips():
    augment = ParsingAugmentation((16, 16), MEAN, STD, None)
    assert not any(augment.draw(np.random.default_rng(seed))[2] for seed in range(50))


def test_mask_fill_is_the_ignore_label_and_image_fill_the_fill_colour():
    labels = np.zeros((20, 60), dtype=np.uint8)           # all background, landscape
    augment = ParsingAugmentation((30, 30), MEAN, STD, flip_permutation(PARTS), fill=(10, 20, 30))
    pixels, mask = augment.apply(painted(labels), labels)
    mask = mask.numpy()
    # The frame is 60 wide -> 30 crop pixels, 20 high -> 10 rows centred: rows 10..19.
    assert (mask[10:20] == 0).all()
    assert (mask[:10] == IGNORE_INDEX).all() and (mask[20:] == IGNORE_INDEX).all()
    fill = (torch.tensor([10, 20, 30]) / 255 - torch.tensor(MEAN)) / torch.tensor(STD)
    torch.testing.assert_close(pixels[:, :10], fill.view(3, 1, 1).expand(3, 10, 30))


def test_rotation_turns_counter_clockwise_and_scale_zooms_out():
    labels = block_labels(24, 24, seed=5, block=3)
    augment = ParsingAugmentation((24, 24), MEAN, STD, None)
    _, turned = augment.apply(painted(labels), labels, rotation=90.0)
    np.testing.assert_array_equal(turned.numpy(), np.rot90(labels))
    _, smaller = augment.apply(painted(labels), labels, scale=3.0)   # the frame in the middle 8x8 pixels
    smaller = smaller.numpy()
    assert (smaller[:8] == IGNORE_INDEX).all() and (smaller[16:] == IGNORE_INDEX).all()
    assert (smaller[:, :8] == IGNORE_INDEX).all() and (smaller[:, 16:] == IGNORE_INDEX).all()
    np.testing.assert_array_equal(smaller[8:16, 8:16], labels[1::3, 1::3])


def test_draws_follow_the_protocol_ranges():
    augment = ParsingAugmentation((16, 16), MEAN, STD, flip_permutation(PARTS))
    rng = np.random.default_rng(0)
    scales, rotations, flips = map(np.array, zip(*(augment.draw(rng) for _ in range(3000))))
    assert scales.min() == 0.75 and scales.max() == 1.25                     # clipped at 1 -/+ 0.25
    assert np.abs(rotations).max() == 60 and (np.abs(rotations) > 30).mean() > 0.1   # clipped at 2 x 30
    assert 0.35 < (rotations == 0).mean() < 0.45                             # rotated with probability 0.6
    assert 0.45 < flips.mean() < 0.55


def test_a_seed_fixes_the_crop_and_seeds_differ():
    labels = block_labels(50, 30)
    augment = ParsingAugmentation((32, 32), MEAN, STD, flip_permutation(PARTS))

    def sample(seed, global_seed):
        random.seed(global_seed)          # the global generators must not matter
        np.random.seed(global_seed)
        torch.manual_seed(global_seed)
        return augment(painted(labels), labels, np.random.default_rng(seed))

    for seed in range(5):
        first, again = sample(seed, global_seed=seed), sample(seed, global_seed=seed + 1000)
        torch.testing.assert_close(first[0], again[0], rtol=0, atol=0)
        assert torch.equal(first[1], again[1])
    first = sample(7, 0)
    assert all(not torch.allclose(first[0], sample(seed, 0)[0]) for seed in range(8, 12))


@pytest.mark.parametrize("crop", [(96, 96), (120, 88)])
@pytest.mark.parametrize("frame", [(37, 23), (23, 41), (31, 31), (1, 40)])
def test_scores_return_to_the_annotation(frame, crop):
    """One-hot scores of the mask as the network sees it come back as the original mask."""
    labels = np.random.default_rng(1).integers(0, len(PARTS), size=frame).astype(np.uint8)   # single pixels
    image, affine = to_network(painted(labels), crop, MEAN, STD)
    assert image.shape == (3, *crop)
    _, crop_mask = ParsingAugmentation(crop, MEAN, STD, None).apply(painted(labels), labels)
    scores = torch.nn.functional.one_hot(crop_mask.clamp(max=len(PARTS)), len(PARTS) + 1).permute(2, 0, 1)[:-1]
    back = to_annotation(scores.float(), affine, frame)
    assert back.shape == (len(PARTS), *frame)
    np.testing.assert_array_equal(back.argmax(0).numpy(), labels)


def test_network_input_is_the_frame_resized_when_aspect_ratios_agree():
    labels = block_labels(40, 20, seed=2, block=4)
    image, _ = to_network(painted(labels), (80, 40), MEAN, STD)
    expected = np.asarray(painted(labels).resize((40, 80), Image.Resampling.BILINEAR), dtype=np.float32)
    expected = (torch.from_numpy(expected).permute(2, 0, 1) / 255 - torch.tensor(MEAN).view(3, 1, 1)) \
        / torch.tensor(STD).view(3, 1, 1)
    torch.testing.assert_close(image, expected, atol=2 / 255 / min(STD), rtol=0)


def test_scores_at_a_lower_resolution_than_the_crop():
    frame, crop = (60, 36), (96, 96)
    labels = block_labels(*frame, seed=4, block=12)
    _, affine = to_network(painted(labels), crop, MEAN, STD)
    _, crop_mask = ParsingAugmentation(crop, MEAN, STD, None).apply(painted(labels), labels)
    coarse = crop_mask[1::4, 1::4]                          # what a stride-4 head sees
    scores = torch.nn.functional.one_hot(coarse.clamp(max=len(PARTS)), len(PARTS) + 1).permute(2, 0, 1)[:-1]
    back = to_annotation(scores.float(), torch.as_tensor(affine), frame, crop_size=crop).argmax(0).numpy()
    assert (back == labels).mean() > 0.9


def test_scores_at_the_frame_edge_are_not_faded():
    """Frame pixels at the crop's edge read the edge scores, not a blend with padding."""
    _, affine = to_network(Image.new("RGB", (50, 30)), (24, 40), MEAN, STD)   # the frame fills the crop
    scores = torch.tensor([-4.0, 1.0, 3.0]).view(3, 1, 1).expand(3, 24, 40)
    back = to_annotation(scores, affine, (30, 50))
    torch.testing.assert_close(back, scores[:, :1, :1].expand(3, 30, 50))


def test_affine_fits_the_frame_into_the_crop_centred():
    affine = frame_to_crop_affine((100, 50), (200, 200))    # portrait: height fills the crop
    corners = affine @ np.array([[0, 0, 1], [50, 100, 1]], dtype=np.float64).T
    np.testing.assert_allclose(corners.T, [[50, 0], [150, 200]])


def asymmetric_forward(images: torch.Tensor) -> torch.Tensor:
    """Scores of seven classes that depend on position and on a one-sided difference."""
    grey = images.mean(1, keepdim=True)
    ramp = torch.linspace(0, 1, images.shape[-1]).view(1, 1, 1, -1)
    shifted = torch.roll(grey, 1, dims=-1)
    channels = [grey * (c + 1) + ramp * c + (grey - shifted) * (c % 3) for c in range(len(PARTS))]
    return torch.cat(channels, dim=1)


def test_flip_test_averages_the_pass_and_the_mirrored_pass():
    images = torch.randn(2, 3, 8, 10)
    permutation = flip_permutation(PARTS)
    direct = asymmetric_forward(images)
    mirrored = asymmetric_forward(torch.from_numpy(images.numpy()[..., ::-1].copy())).numpy()[..., ::-1]
    expected = torch.empty_like(direct)
    for c in range(len(PARTS)):
        expected[:, c] = (direct[:, c] + torch.from_numpy(mirrored[:, permutation[c]].copy())) / 2
    torch.testing.assert_close(flip_test_logits(asymmetric_forward, images, permutation), expected)
    assert not torch.allclose(expected, direct, atol=1e-3)


def test_flip_test_keeps_a_mirror_consistent_model_unchanged():
    """A model that scores a mirror image as the mirror of its scores, left and right swapped."""
    permutation = flip_permutation(PARTS)

    def consistent(images):
        return (asymmetric_forward(images) + asymmetric_forward(images.flip(-1)).flip(-1)[:, permutation]) / 2

    images = torch.randn(1, 3, 6, 9)
    torch.testing.assert_close(flip_test_logits(consistent, images, permutation), consistent(images))


@pytest.mark.parametrize("name, crop", [("tiny-plip-rn50", (96, 96)), ("tiny-unipt-vitb16", (96, 96)),
                                        ("tiny-unipt-vitb16", (473, 473))])
def test_image_towers_built_at_the_crop_size_give_maps_at_its_strides(name, crop):
    """Towers are sized when built (position embeddings, attention pooling): a parsing model
    for square crops builds its encoder with ``image_size=crop``."""
    from personvl.models import create_model

    encoder = create_model(name, image_size=crop)
    with torch.no_grad():
        maps = encoder.image_features(torch.zeros(1, 3, *crop)).maps
    assert [tuple(m.shape[-2:]) for m in maps] == [(crop[0] // s, crop[1] // s) for s in (4, 8, 16, 32)]
