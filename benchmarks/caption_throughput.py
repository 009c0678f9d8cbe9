"""Images captioned per second by the batched DCC pipeline against the naive loop that scores
each image's phrases one prompt at a time, for each model, in the same run.

Run: python benchmarks/caption_throughput.py [--images 64] [--naive-images 3]
                                            [--models tiny-unipt-vitb16,clip-vitb16]
                                            [--batch-size 32] [--workers 2] [--world DIR]
The batched figure is the whole ``caption_images`` call (decoding in loader workers, the
prompts embedded once, one matrix product per batch, templates, the JSONL writes); the naive
figure embeds the image once and then every prompt separately, as a per-image script would.
Weights are random: throughput does not depend on them.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from personvl.captioning import AttributeScorer, caption_images, load_vocabulary
from personvl.data.synth import generate_world, read_world_records
from personvl.models import create_model


def naive_images_per_second(model, vocabulary, paths: list[str]) -> float:
    prompts = vocabulary.prompts()
    scorer = AttributeScorer(model, vocabulary)     # its temperature, grouping and selection only
    started = time.perf_counter()
    with torch.inference_mode():
        for path in paths:
            image = model.encode_image(path)
            scores = [float(scorer.logit_scale * (image @ model.encode_text([p]).T)) for p in prompts]
            logits = np.array(scores, np.float32)[None]
            probabilities = np.zeros_like(logits)
            for start, stop in scorer.spans:
                shifted = np.exp(logits[:, start:stop] - logits[:, start:stop].max())
                probabilities[:, start:stop] = shifted / shifted.sum()
            scorer.choose(probabilities)
    return len(paths) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=64, help="images the batched pipeline captions")
    parser.add_argument("--naive-images", type=int, default=3, help="images the naive loop scores")
    parser.add_argument("--models", default="tiny-unipt-vitb16,clip-vitb16")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--world", default=None, help="an existing synthetic world (default: a new small one)")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    scratch = Path(tempfile.mkdtemp(prefix="caption-bench-"))
    world = Path(args.world) if args.world else scratch / "world"
    if args.world is None:
        identities = max(3, (args.images + 1) // 2 + 2)
        generate_world(world, identities=identities, images_per_identity=2, cameras=3, scene_identities=1,
                       progress=False)
    paths = [str(world / r["image"]) for r in read_world_records(world)][:args.images]
    vocabulary = load_vocabulary()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; {len(vocabulary.phrases())} phrases in "
          f"{len(vocabulary.groups)} groups")
    print(f"{'model':<20} {'batched img/s':>14} {'naive img/s':>12} {'speed-up':>9}")
    for name in args.models.split(","):
        torch.manual_seed(0)
        model = create_model(name)
        run = caption_images(paths, scratch / f"{name}.jsonl", model=model, batch_size=args.batch_size,
                             workers=args.workers, progress=False)
        naive = naive_images_per_second(model, vocabulary, paths[:args.naive_images])
        batched = run.images_per_second
        print(f"{name:<20} {batched:>14.2f} {naive:>12.3f} {batched / naive:>8.1f}x")


if __name__ == "__main__":
    main()
