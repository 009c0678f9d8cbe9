"""Text-to-image retrieval evaluation speed at CUHK-PEDES size: personvl against NumPy.

Run: python benchmarks/eval_t2i.py

6,156 captions x 3,074 images of 1,000 identities, 512-d features (CLIP's width), cosine
similarity, no camera filtering; features to figures, normalisation and similarity included,
each side in its own fresh process. Unlike the re-ID benchmark these features are ordinary
floats, so the two sides' float32 similarities may differ in the last bit (NumPy's and torch's
BLAS sum in different orders), which can swap two nearly equal gallery items; the printed
difference shows how much that moves the figures.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

import eval_common as common


def captions_and_images(seed: int = 0, dim: int = 512) -> common.Dataset:
    rng = np.random.default_rng(seed)
    spec = common.CUHK_PEDES
    image_pids = rng.integers(0, spec["identities"], spec["gallery"])
    caption_pids = rng.choice(image_pids, spec["queries"])          # every caption has an image
    centres = rng.standard_normal((spec["identities"], dim), dtype=np.float32)
    images = centres[image_pids] + 2.5 * rng.standard_normal((spec["gallery"], dim), dtype=np.float32)
    captions = centres[caption_pids] + 2.5 * rng.standard_normal((spec["queries"], dim), dtype=np.float32)
    zeros_q, zeros_g = np.zeros(spec["queries"], dtype=np.int64), np.zeros(spec["gallery"], dtype=np.int64)
    return common.Dataset(captions, images, caption_pids, image_pids, zeros_q, zeros_g)


def child(task: dict) -> None:
    data = captions_and_images()
    before = common.peak_rss_gib()
    if task["side"] == "numpy":
        started = time.perf_counter()
        metrics = common.numpy_reid_baseline(data, metric="cosine", cameras=False, max_rank=10)
    else:
        import torch

        from personvl.evaluation import retrieval_metrics

        torch.zeros(1)
        started = time.perf_counter()
        metrics = retrieval_metrics(data.query, data.gallery, data.query_pids, data.gallery_pids)
    common.child_report(started, metrics, before)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs per side; the fastest is printed")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(json.loads(args.child))
        return
    print(f"machine: {common.machine()}")
    spec = common.CUHK_PEDES
    print(f"\ntext-to-image, {spec['name']} size: {spec['queries']:,} captions x {spec['gallery']:,} images, 512-d, cosine")
    baseline = min((common.run_child(__file__, dict(side="numpy")) for _ in range(args.repeats)),
                   key=lambda run: run["seconds"])
    ours = min((common.run_child(__file__, dict(side="personvl")) for _ in range(args.repeats)),
               key=lambda run: run["seconds"])
    print(f"  figures: {common.compare(ours['metrics'], baseline['metrics'])}")
    for label, run in (("NumPy baseline", baseline), ("personvl", ours)):
        print(f"  {label:<16} {run['seconds']:6.3f} s   peak RSS {run['peak_gib']:5.2f} GiB")
    print(f"  speed-up: {baseline['seconds'] / ours['seconds']:.1f}x (best of {args.repeats} runs each)")


if __name__ == "__main__":
    main()
