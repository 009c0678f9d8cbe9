"""How often a captioner's attributes are right on a synthetic world's held-out identities,
next to the majority-class baseline, with and without calibration.

Run: python benchmarks/caption_accuracy.py [--model personvl-quickstart/pretrain/model]
                                          [--world personvl-quickstart/world]
                                          [--images 1200] [--calibrate 0,500]
                                          [--prompt "A person {phrase}."] [--threshold 0.9]
                                          [--probe 3000]
The defaults are what `personvl quickstart` leaves behind: its pre-trained encoder and its world.
Each `--calibrate` value is one `caption_images` run over the same test images (0: off).
`--probe N` adds a reference column that reads the labels: a softmax regression per slot on
the frozen image embeddings of N training images, scored on the same test images. It shows what
the image features know of a slot, which no prompt can exceed by much.
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

from personvl.captioning import caption_images, evaluate_captions
from personvl.captioning.evaluation import EVALUATED_SLOTS, true_value
from personvl.data.synth import read_world_records
from personvl.models import open_model
from personvl.models.embedding import embed_images


def probe_accuracies(model, world: Path, test_rows: list[dict], train_images: int) -> dict[str, float]:
    """Slot -> test accuracy of a softmax regression on the image embeddings, trained on the
    labels of the first ``train_images`` training images."""
    train_rows = [r for r in read_world_records(world) if r["split"] == "train"][:train_images]
    train_x, test_x = (torch.from_numpy(embed_images(model, [world / r["image"] for r in rows], progress=False))
                       for rows in (train_rows, test_rows))
    accuracies = {}
    for slot in EVALUATED_SLOTS:
        train_y, test_y = ([true_value(r, slot) for r in rows] for rows in (train_rows, test_rows))
        classes = sorted({y for y in train_y if y is not None})
        if len(classes) < 2:
            continue
        kept = [i for i, y in enumerate(train_y) if y is not None]
        targets = torch.tensor([classes.index(train_y[i]) for i in kept])
        torch.manual_seed(0)
        head = torch.nn.Linear(train_x.shape[1], len(classes))
        optimizer = torch.optim.LBFGS(head.parameters(), max_iter=500)

        def loss():
            optimizer.zero_grad()
            value = torch.nn.functional.cross_entropy(head(10 * train_x[kept]), targets) + 1e-4 * head.weight.square().sum()
            value.backward()
            return value

        optimizer.step(loss)
        predicted = head(10 * test_x).argmax(dim=1).tolist()
        judged = [(classes[p], y) for p, y in zip(predicted, test_y) if y is not None]
        accuracies[slot] = sum(p == y for p, y in judged) / len(judged)
    return accuracies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="personvl-quickstart/pretrain/model", help="a saved model folder")
    parser.add_argument("--world", default="personvl-quickstart/world", help="the world the model was trained on")
    parser.add_argument("--images", type=int, default=None, help="test images to caption (default: all)")
    parser.add_argument("--calibrate", default="0,500", help="calibration sample sizes, comma-separated")
    parser.add_argument("--prompt", action="append", default=None, metavar="TEMPLATE",
                        help="scoring prompt template(s) (default: the vocabulary's)")
    parser.add_argument("--threshold", type=float, default=0.9, help="optional groups' threshold")
    parser.add_argument("--probe", type=int, default=0, metavar="N",
                        help="also fit a labelled linear probe per slot on N training images (0: no)")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    world = Path(args.world)
    test_rows = [r for r in read_world_records(world) if r["split"] == "test"][:args.images]
    paths = [str(world / r["image"]) for r in test_rows]
    model = open_model(args.model)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; {len(paths)} test images of {world}")
    scratch = Path(tempfile.mkdtemp(prefix="caption-accuracy-"))
    sizes = [int(size) for size in args.calibrate.split(",")]
    evaluations = {}
    for size in sizes:
        started = time.perf_counter()
        out = scratch / f"calibrate-{size}.jsonl"
        caption_images(paths, out, model=model, calibration_images=size, prompts=args.prompt,
                       threshold=args.threshold, workers=0, progress=False)
        evaluations[size] = evaluate_captions(out, world)
        print(f"calibration {size}: {time.perf_counter() - started:.1f} s")
    probe = probe_accuracies(model, world, test_rows, args.probe) if args.probe else {}
    columns = [f"{'cal ' + str(size):>9}" for size in sizes] + ([f"{'probe':>9}"] if probe else [])
    print("\nprompts: " + (" | ".join(args.prompt) if args.prompt else "the vocabulary's"))
    print(f"{'slot':<14} {'majority':>9} " + " ".join(columns) + "   (accuracy %)")
    first = evaluations[sizes[0]]
    for index, slot in enumerate(first.slots):
        cells = [f"{100 * evaluations[size].slots[index].accuracy:>9.2f}" for size in sizes]
        if probe:
            cells.append(f"{100 * probe[slot.slot]:>9.2f}" if slot.slot in probe else f"{'-':>9}")
        print(f"{slot.slot:<14} {100 * slot.majority:>9.2f} " + " ".join(cells))
    cells = [f"{100 * evaluations[size].mean_accuracy:>9.2f}" for size in sizes]
    if probe:
        cells.append(f"{100 * np.mean([probe[s.slot] for s in first.slots if s.slot in probe]):>9.2f}")
    print(f"{'mean':<14} {100 * first.mean_majority:>9.2f} " + " ".join(cells))


if __name__ == "__main__":
    main()
