"""How well the synthetic world's pictures show the facts its captions state: a 64x32 image tower
trained from scratch to classify them (one linear head per fact) on the train identities,
scored on the held-out ones against the majority class.

Run: python benchmarks/world_visibility.py [--world DIR] [--identities 1500] [--test-fraction 0.2] [--steps 800]
With --world, an existing world (e.g. personvl-quickstart/world) is used; otherwise one of the
quickstart's size is generated under --out. A fact the renderer does not draw stays at the
majority however long the tower trains.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

FACTS = ("gender", "hair_length", "upper_type", "lower_type", "sleeve", "upper_colour")


def load_split(world: Path, split: str, transform) -> tuple[torch.Tensor, list[dict]]:
    from personvl.data.synth import read_world_records
    from personvl.models.transforms import open_rgb_image

    rows = [r for r in read_world_records(world) if r["split"] == split]
    return torch.stack([transform(open_rgb_image(world / r["image"])) for r in rows]), rows


def fact_labels(rows: list[dict], values: dict[str, list[str]]) -> torch.Tensor:
    # A fact the shot does not show (no lower garment under a dress) is its own class "-".
    return torch.tensor([[values[f].index(r["visible"].get(f, "-")) for f in FACTS] for r in rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", type=Path, help="an existing synthetic world")
    parser.add_argument("--identities", type=int, default=1500)
    parser.add_argument("--test-fraction", type=float, default=0.2)
    parser.add_argument("--out", type=Path, default=Path("runs/bench_world_visibility"))
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from personvl.data.synth import generate_world
    from personvl.models import create_model
    from personvl.quickstart import QUICKSTART_MODEL, QUICKSTART_MODEL_OPTIONS

    world = args.world
    if world is None:
        world = args.out / "world"
        generate_world(world, args.identities, progress=False, test_fraction=args.test_fraction)
    torch.manual_seed(args.seed)
    model = create_model(QUICKSTART_MODEL, **QUICKSTART_MODEL_OPTIONS)
    tower = model.visual.train()
    train_images, train_rows = load_split(world, "train", model.image_transform)
    test_images, test_rows = load_split(world, "test", model.image_transform)
    values = {f: sorted({r["visible"].get(f, "-") for r in train_rows + test_rows}) for f in FACTS}
    train_labels, test_labels = fact_labels(train_rows, values), fact_labels(test_rows, values)
    heads = torch.nn.ModuleList(torch.nn.Linear(model.config.embed_dim, len(values[f])) for f in FACTS)
    optimizer = torch.optim.AdamW([*tower.parameters(), *heads.parameters()], lr=1e-3, weight_decay=0.02)
    generator = torch.Generator().manual_seed(args.seed)
    started = time.perf_counter()
    for _ in range(args.steps):
        pick = torch.randint(len(train_rows), (args.batch,), generator=generator)
        flip = torch.rand(args.batch, 1, 1, 1, generator=generator) < 0.5
        images = torch.where(flip, train_images[pick].flip(-1), train_images[pick])
        features = tower(images)
        loss = sum(F.cross_entropy(head(features), train_labels[pick, i]) for i, head in enumerate(heads))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    tower.eval()
    with torch.no_grad():
        features = torch.cat([tower(test_images[i:i + 256]) for i in range(0, len(test_rows), 256)])
    results = {}
    print(f"{QUICKSTART_MODEL} image tower at 64x32, {args.steps} steps of batch {args.batch}, "
          f"{len(train_rows)} train / {len(test_rows)} held-out crops ({platform.machine()}, "
          f"{time.perf_counter() - started:.0f} s)\n")
    print("| fact | accuracy % | majority % |\n|---|---:|---:|")
    for i, fact in enumerate(FACTS):
        accuracy = (heads[i](features).argmax(1) == test_labels[:, i]).float().mean().item() * 100
        majority = np.bincount(test_labels[:, i].numpy()).max() / len(test_rows) * 100
        results[fact] = {"accuracy": round(accuracy, 1), "majority": round(majority, 1)}
        print(f"| {fact} | {accuracy:.1f} | {majority:.1f} |")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
