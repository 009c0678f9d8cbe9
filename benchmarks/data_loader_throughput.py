"""Loader throughput: decoded, augmented images per second through personvl's dataset and
transforms vs a plain torchvision ImageFolder + DataLoader, on the same images in the same run.

Run: python benchmarks/data_loader_throughput.py [--identities 300] [--workers 2] [--rounds 3]
The images are a synthetic world's crops arranged as an ImageFolder tree (hard links). Both
loaders use the PLIP training recipe (256x128, flip, normalisation), the same batch size and
worker count; each round times both, alternating, and the best round of each is reported.
A third loader reads the same records held in memory (``preload_images``: decoded and resized
once, as ``data.in_memory`` does); the time preloading took is printed beside it.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

from torch.utils.data import DataLoader


def image_folder_tree(world: Path, out: Path) -> int:
    from personvl.data.synth import read_world_records

    count = 0
    for record in read_world_records(world):
        target = out / f"{record['pid']:05d}" / Path(record["image"]).name
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(world / record["image"], target)
        count += 1
    return count


def images_per_second(loader: DataLoader, count_of) -> float:
    started = time.perf_counter()
    images = sum(count_of(batch) for batch in loader)
    return images / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--identities", type=int, default=300)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    from torchvision import datasets, transforms as T

    from personvl.data import PersonImageDataset, build_transform, collate_samples, load_dataset
    from personvl.data.datasets import preload_images
    from personvl.data.synth import generate_world
    from personvl.data.transforms import PLIP_MEAN, PLIP_STD

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    with tempfile.TemporaryDirectory() as tmp:
        world = Path(tmp) / "world"
        generate_world(world, identities=args.identities, images_per_identity=4, progress=False, scene_identities=0)
        tree = Path(tmp) / "tree"
        total = image_folder_tree(world, tree)

        baseline_transform = T.Compose([T.Resize((256, 128), interpolation=T.InterpolationMode.BICUBIC),
                                        T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(PLIP_MEAN, PLIP_STD)])
        baseline = DataLoader(datasets.ImageFolder(str(tree), transform=baseline_transform), batch_size=args.batch_size,
                              shuffle=True, num_workers=args.workers)
        records = load_dataset("folder", tree, pid_from_folder=True)
        ours = DataLoader(PersonImageDataset(records, build_transform("plip", train=True)), batch_size=args.batch_size,
                          shuffle=True, num_workers=args.workers, collate_fn=collate_samples)

        started = time.perf_counter()
        images = preload_images(records, (256, 128), threads=max(1, args.workers), progress=False)
        preloading = time.perf_counter() - started
        in_memory = DataLoader(PersonImageDataset(records, build_transform("plip", train=True), images=images),
                               batch_size=args.batch_size, shuffle=True, num_workers=args.workers,
                               collate_fn=collate_samples)

        best_baseline = best_ours = best_in_memory = 0.0
        for _ in range(args.rounds):
            best_baseline = max(best_baseline, images_per_second(baseline, lambda b: len(b[0])))
            best_ours = max(best_ours, images_per_second(ours, lambda b: len(b["image"])))
            best_in_memory = max(best_in_memory, images_per_second(in_memory, lambda b: len(b["image"])))
    print(f"{total} images (256x128 JPEG), batch {args.batch_size}, {args.workers} workers, best of {args.rounds} rounds")
    print(f"  torchvision ImageFolder + DataLoader: {best_baseline:7.1f} images/s")
    print(f"  personvl PersonImageDataset         : {best_ours:7.1f} images/s | ratio {best_ours / best_baseline:5.2f}")
    print(f"  the same, images in memory          : {best_in_memory:7.1f} images/s | ratio {best_in_memory / best_baseline:5.2f}"
          f" (preloading took {preloading:.1f} s)")


if __name__ == "__main__":
    main()
