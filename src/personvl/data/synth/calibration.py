"""How hard is the world? Reference figures on the test split, written to world.json.

- ``chance_t2i_R1``: R@1 of a random ranking (matches / gallery size, averaged over captions).
- ``oracle_t2i_R1``: an *attribute oracle* that knows every image's ground truth ranks the
  gallery by how many of the facts a caption states are true of the image (ties by index).
  Captions leave things out and sometimes err, so this is the ceiling their ambiguity allows.
- ``color_histogram_reid_mAP``: Market-1501-protocol mAP of colour histograms (4 horizontal
  stripes x 4x4x4 RGB bins, Hellinger-normalised): what colour alone achieves across cameras.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from personvl.data.synth import vocabulary as vocab
from personvl.data.synth.parallel import run_parallel
from personvl.evaluation.ranking import ranking_metrics

if TYPE_CHECKING:
    from personvl.data.synth.world import WorldPlan


def _fact_index() -> dict[tuple[str, str], int]:
    pairs = [(slot, value) for slot in vocab.CAPTION_SLOTS for value in vocab.APPEARANCE_SLOTS[slot]]
    return {pair: i for i, pair in enumerate(pairs)}


def oracle_similarity(captions_mentions: list[list[list]], images_visible: list[dict[str, str]]) -> np.ndarray:
    """(captions x images) count of stated facts that are true of each image."""
    index = _fact_index()
    caption_facts = np.zeros((len(captions_mentions), len(index)), dtype=np.float32)
    for row, mentions in enumerate(captions_mentions):
        for slot, value, _ in mentions:
            caption_facts[row, index[(slot, value)]] = 1.0
    image_facts = np.zeros((len(images_visible), len(index)), dtype=np.float32)
    for row, seen in enumerate(images_visible):
        for slot, value in seen.items():
            if (slot, value) in index:
                image_facts[row, index[(slot, value)]] = 1.0
    return caption_facts @ image_facts.T


def colour_histogram(path: Path, stripes: int = 4, bins: int = 4) -> np.ndarray:
    pixels = np.asarray(Image.open(path).convert("RGB"), dtype=np.int64) * bins // 256
    codes = pixels[..., 0] * bins * bins + pixels[..., 1] * bins + pixels[..., 2]
    rows = np.array_split(codes, stripes, axis=0)
    hist = np.concatenate([np.bincount(r.ravel(), minlength=bins**3) for r in rows]).astype(np.float64)
    hist = np.sqrt(hist / hist.sum())
    return hist / np.linalg.norm(hist)


def calibrate(out: Path, plan: "WorldPlan", workers: int = 1) -> dict[str, Any]:
    test = [r for r in plan.records if r["split"] == "test"]
    gallery_pids = np.array([r["pid"] for r in test])
    caption_pids = np.array([r["pid"] for r in test for _ in r["captions"]])
    mentions = [m for r in test for m in r["mentions"]]

    chance = float(np.mean([(gallery_pids == p).sum() / len(gallery_pids) for p in caption_pids]) * 100)
    oracle = ranking_metrics(oracle_similarity(mentions, [r["visible"] for r in test]), caption_pids, gallery_pids)

    # Re-ID: the first image of each test identity queries the others (Market-1501 protocol).
    features = np.stack(run_parallel(colour_histogram, [out / r["image"] for r in test], workers,
                                     "calibration", progress=False))
    camids = np.array([r["camid"] for r in test])
    is_query = np.array([r["image"].endswith("_00.jpg") for r in test])
    reid = ranking_metrics(features[is_query] @ features[~is_query].T, gallery_pids[is_query],
                           gallery_pids[~is_query], camids[is_query], camids[~is_query])
    wrong = sum(not m[2] for ms in mentions for m in ms)
    stated_colours = sum(m[0].endswith("colour") for ms in mentions for m in ms)
    return {
        "chance_t2i_R1": round(chance, 3),
        "oracle_t2i_R1": round(oracle["R1"], 3),
        "oracle_t2i_R10": round(oracle["R10"], 3),
        "color_histogram_reid_mAP": round(reid["mAP"], 3),
        "color_histogram_reid_R1": round(reid["R1"], 3),
        "test_identities": len(plan.splits.test),
        "test_images": len(test),
        "test_captions": len(mentions),
        "facts_per_caption": round(float(np.mean([len(m) for m in mentions])), 3),
        "wrong_colour_share": round(wrong / max(1, stated_colours), 4),
    }
