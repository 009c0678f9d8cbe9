"""Pre-training on pseudo captions against pre-training on the ground-truth captions.

1. Generate a synthetic world; pre-train PLIP's tiny encoder on its cuhk-pedes training
   captions (the reference, and the captioner).
2. Caption the same training images with that encoder (``dcc``; their captions ignored);
   print its attribute accuracy against the majority baseline and the caption diversity.
3. Pre-train the same recipe, same steps and seed, on the generated captions.
4. Zero-shot text-to-image retrieval of both on the held-out identities (ground-truth captions
   as queries).

Run: python benchmarks/caption_pretrain.py [--identities 120] [--steps 150] [--workers 2]
                                          [--captioner MODEL_DIR] [--calibrate N]
                                          [--prompt "A person {phrase}."] [--out DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from personvl.captioning import caption_images, compare_diversity, diversity_table, evaluate_captions, load_templates
from personvl.captioning.evaluation import read_caption_records
from personvl.data import PersonRecord, load_dataset
from personvl.data.formats.user import write_jsonl
from personvl.data.synth import generate_world
from personvl.models import load_model
from personvl.quickstart import quickstart_recipe
from personvl.reporting import format_table
from personvl.tasks import evaluate_text_to_image
from personvl.training.pretrain import pretrain


def pretrain_on(dataset: str, root: Path, out: Path, steps: int, workers: int, identities: int):
    config = quickstart_recipe(root, out, steps, workers, identities)
    config.output_dir = str(out)
    config.data.dataset, config.data.root = dataset, str(root)
    config.trainer.progress_bar = False
    pretrain(config, echo=lambda *_: None)
    return load_model(out / "model")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--identities", type=int, default=120)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--captioner", default=None, help="a saved model folder (default: the reference run)")
    parser.add_argument("--calibrate", type=int, default=0, help="captioner calibration images (default 0: off)")
    parser.add_argument("--prompt", action="append", default=None, metavar="TEMPLATE",
                        help="captioner prompt template(s) (default: the vocabulary's)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="caption-pretrain-"))
    world = out / "world"
    started = time.perf_counter()
    generate_world(world, identities=args.identities, images_per_identity=4, cameras=4, scene_identities=1,
                   workers=args.workers, progress=False)
    train = load_dataset("cuhk-pedes", world / "cuhk-pedes", "train")
    test = load_dataset("cuhk-pedes", world / "cuhk-pedes", "test")
    train_ids = len({r.pid for r in train})

    reference = pretrain_on("cuhk-pedes", world / "cuhk-pedes", out / "ground-truth", args.steps, args.workers,
                            train_ids)
    captioner = load_model(args.captioner) if args.captioner else reference
    captions = out / "pseudo.jsonl"
    run = caption_images([r.image_path for r in train], captions, model=captioner, workers=args.workers,
                         calibration_images=args.calibrate, prompts=args.prompt, progress=False)
    print(run.summary())
    print(evaluate_captions(captions, world).table())
    print(diversity_table(compare_diversity(captions, world, len(load_templates("dcc")))))

    generated = {e["image"]: e["captions"] for e in read_caption_records(captions)}
    pseudo_root = out / "pseudo-dataset"
    write_jsonl([PersonRecord(r.image_path, pid=r.pid, camid=r.camid, captions=generated[r.image_path],
                              split="train") for r in train if r.image_path in generated],
                pseudo_root / "records.jsonl")
    pseudo = pretrain_on("jsonl", pseudo_root, out / "pseudo", args.steps, args.workers, train_ids)

    rows = []
    for name, model in (("ground-truth captions", reference), ("generated captions (dcc)", pseudo)):
        metrics = evaluate_text_to_image(model, test).metrics
        rows.append([name, *(float(metrics[k]) for k in ("R1", "R5", "R10", "mAP"))])
    print(f"\nzero-shot text-to-image on {len(test)} held-out images, {args.steps} steps each:")
    print(format_table(["pre-trained on", "R1", "R5", "R10", "mAP"], rows))
    print(f"total {time.perf_counter() - started:.0f} s; runs under {out}")


if __name__ == "__main__":
    main()
