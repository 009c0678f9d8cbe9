"""How often a captioner's attributes are right on a synthetic world's held-out identities,
next to the majority-class baseline, with and without calibration.

Run: python benchmarks/caption_accuracy.py [--model personvl-quickstart/pretrain/model]
                                          [--world personvl-quickstart/world]
                                          [--images 1200] [--calibrate 0,500]
The defaults are what `personvl quickstart` leaves behind: its pre-trained encoder and its world.
Each `--calibrate` value is one `caption_images` run over the same test images (0: off).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from personvl.captioning import caption_images, evaluate_captions
from personvl.data.synth import read_world_records
from personvl.models import open_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="personvl-quickstart/pretrain/model", help="a saved model folder")
    parser.add_argument("--world", default="personvl-quickstart/world", help="the world the model was trained on")
    parser.add_argument("--images", type=int, default=None, help="test images to caption (default: all)")
    parser.add_argument("--calibrate", default="0,500", help="calibration sample sizes, comma-separated")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    world = Path(args.world)
    paths = [str(world / r["image"]) for r in read_world_records(world) if r["split"] == "test"][:args.images]
    model = open_model(args.model)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; {len(paths)} test images of {world}")
    scratch = Path(tempfile.mkdtemp(prefix="caption-accuracy-"))
    sizes = [int(size) for size in args.calibrate.split(",")]
    evaluations = {}
    for size in sizes:
        started = time.perf_counter()
        out = scratch / f"calibrate-{size}.jsonl"
        caption_images(paths, out, model=model, calibration_images=size, workers=0, progress=False)
        evaluations[size] = evaluate_captions(out, world)
        print(f"calibration {size}: {time.perf_counter() - started:.1f} s")
    columns = [f"{'cal ' + str(size):>9}" for size in sizes]
    print(f"\n{'slot':<14} {'majority':>9} " + " ".join(columns) + "   (accuracy %)")
    first = evaluations[sizes[0]]
    for index, slot in enumerate(first.slots):
        cells = " ".join(f"{100 * evaluations[size].slots[index].accuracy:>9.2f}" for size in sizes)
        print(f"{slot.slot:<14} {100 * slot.majority:>9.2f} {cells}")
    cells = " ".join(f"{100 * evaluations[size].mean_accuracy:>9.2f}" for size in sizes)
    print(f"{'mean':<14} {100 * first.mean_majority:>9.2f} {cells}")


if __name__ == "__main__":
    main()
