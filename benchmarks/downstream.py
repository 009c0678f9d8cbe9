"""Downstream transfer on a synthetic world: fine-tuning from the pre-trained plip_tiny encoder
against fine-tuning from random initialisation, same architecture, steps and data.

Run: python benchmarks/downstream.py [--identities 200] [--pretrain-steps 600] [--steps 400]
                                     [--out runs/bench_downstream] [--pretrained DIR]
The published figures take the quickstart's encoder (pre-trained on another, 1,500-identity
world): --pretrained personvl-quickstart/pretrain/model.

Steps: generate a world; pre-train tiny-plip-rn50 with configs/pretrain/plip_tiny.yaml on its
cuhk-pedes train split (or take --pretrained, a saved model folder); evaluate the pre-trained
encoder zero-shot (text-to-image, re-ID); fine-tune every task (t2i with SDM + ID, re-ID with
the strong baseline, attributes with the weighted-BCE head, the re-ID and attribute linear
probes, parsing with the UPerNet head, person search's re-ID stage on ground-truth boxes) from
both starting points; score each pre-trained fine-tuning again on a second world whose cameras
have other styles (other seed, stronger camera effects: domain generalisation, trained on one
world and tested on the other); print and write (table.md, results.json) the test figures. Each process uses one intra-op thread (--threads): on a CPU shared with other jobs
that is several times faster than the default.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
CONFIGS = HERE.parent / "configs"
QUIET = ["trainer.progress_bar=false", "trainer.accelerator=cpu", "data.workers=0"]
NO_PLOTS = "evaluation.plots=false"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--identities", type=int, default=200)
    parser.add_argument("--pretrain-steps", type=int, default=600)
    parser.add_argument("--steps", type=int, default=400, help="fine-tuning steps per task and start")
    parser.add_argument("--out", default="runs/bench_downstream")
    parser.add_argument("--pretrained", default=None, help="a saved model folder to use instead of pre-training")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--other-seed", type=int, default=17, help="seed of the world tested for generalisation")
    parser.add_argument("--other-camera-strength", type=float, default=1.6)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from personvl.data.synth import generate_world
    from personvl.models import open_model
    from personvl.tasks.registry import evaluate_task, finetune_task
    from personvl.training.pretrain import pretrain

    started = time.perf_counter()
    out = Path(args.out)
    world = out / "world"
    if not (world / "world.json").exists():
        generate_world(world, identities=args.identities, images_per_identity=4, cameras=4, seed=args.seed,
                       scene_identities=max(4, args.identities // 8), workers=2, progress=False)
    other_world = out / "other_world"
    if not (other_world / "world.json").exists():
        generate_world(other_world, identities=args.identities, images_per_identity=4, cameras=4, seed=args.other_seed,
                       scene_identities=max(4, args.identities // 8), camera_strength=args.other_camera_strength,
                       workers=2, progress=False)
    pretrained = args.pretrained
    if pretrained is None:
        pretrained = str(out / "pretrain" / "model")
        if not Path(pretrained).exists():
            pretrain(CONFIGS / "pretrain" / "plip_tiny.yaml",
                     [f"output_dir={out / 'pretrain'}", f"data.root={world / 'cuhk-pedes'}",
                      f"trainer.max_steps={args.pretrain_steps}", "trainer.checkpoint_every_n_steps=1000",
                      "data.identities_per_batch=16", *QUIET])

    # Random initialisation of the very architecture that was pre-trained (its sizes and options
    # live in the saved config), written as a model folder so both starts load the same way.
    random_init = out / "random_init"
    if not (random_init / "config.json").exists():
        from personvl.models import save_model
        from personvl.models.checkpoints import read_model_document
        from personvl.models.config import ModelConfig
        from personvl.models.encoder import PersonEncoder

        torch.manual_seed(args.seed)
        save_model(PersonEncoder(ModelConfig.from_dict(read_model_document(Path(pretrained)))), random_init)

    rows = []
    encoder = open_model(pretrained)
    zero_t2i = evaluate_task("t2i", encoder, "cuhk-pedes", world / "cuhk-pedes")
    zero_reid = evaluate_task("reid", encoder, "market1501", world / "market1501")
    other_t2i = evaluate_task("t2i", encoder, "cuhk-pedes", other_world / "cuhk-pedes")
    other_reid = evaluate_task("reid", encoder, "market1501", other_world / "market1501")
    rows.append(("t2i", "zero-shot", "R1", None, zero_t2i["R1"], zero_t2i["mAP"], None, other_t2i["R1"]))
    rows.append(("reid", "zero-shot", "mAP", None, zero_reid["mAP"], zero_reid["R1"], None, other_reid["mAP"]))

    recipes = [
        ("t2i", "fine-tune (SDM + ID)", "t2i_tiny.yaml", "cuhk-pedes", [NO_PLOTS], "R1", "mAP"),
        ("reid", "fine-tune (BoT)", "reid_tiny.yaml", "market1501", [NO_PLOTS], "mAP", "R1"),
        ("reid", "linear probe", "reid_tiny.yaml", "market1501", ["mode=linear_probe", NO_PLOTS], "mAP", "R1"),
        ("attributes", "fine-tune (weighted BCE)", "attributes_tiny.yaml", "pa100k", [NO_PLOTS], "mA", "F1"),
        ("attributes", "linear probe", "attributes_tiny.yaml", "pa100k", ["mode=linear_probe", NO_PLOTS], "mA", "F1"),
        ("parsing", "fine-tune (UPerNet head)", "parsing_tiny.yaml", "lip", ["evaluation.plot_images=0"], "mIoU",
         "pixel_accuracy"),
        # Ground-truth boxes: the encoder's part of person search, without the detector's.
        ("search", "re-ID on ground-truth boxes", "search_tiny.yaml", "prw",
         ["detector.name=gt", "evaluation.plot_queries=0"], "mAP", "top1"),
    ]
    for task, setting, config, folder, extra, main_metric, second in recipes:
        figures = {}
        for start, model in (("random", str(random_init)), ("pretrained", pretrained)):
            name = f"{task}_{setting.split()[0]}_{start}".replace("-", "")
            run = out / "runs" / name
            summary = json.loads((run / "summary.json").read_text()) if (run / "summary.json").exists() else \
                finetune_task(task, CONFIGS / "finetune" / config,
                              [f"output_dir={run}", f"data.root={world / folder}", f"model.name={model}",
                               f"trainer.max_steps={args.steps}", *extra, *QUIET])
            figures[start] = summary["metrics"]
        # The pre-trained run's saved folder (encoder and head) on the world it never saw.
        options = {"detector": "gt"} if task == "search" else {}
        other = evaluate_task(task, out / "runs" / name / "model", folder, other_world / folder, **options)
        rows.append((task, setting, main_metric, figures["random"][main_metric], figures["pretrained"][main_metric],
                     figures["pretrained"][second], figures["random"][second], other[main_metric]))

    lines = ["| task | setting | metric | random init | pre-trained plip_tiny | pre-trained, tested on another world "
             "| second metric (pre-trained / random) |",
             "|---|---|---|---:|---:|---:|---|"]
    for task, setting, metric, random_value, pretrained_value, second_pre, second_random, other_value in rows:
        random_text = "-" if random_value is None else f"{random_value:.1f}"
        second_text = (f"{second_pre:.1f}" if second_random is None else f"{second_pre:.1f} / {second_random:.1f}")
        lines.append(f"| {task} | {setting} | {metric} | {random_text} | {pretrained_value:.1f} | {other_value:.1f} "
                     f"| {second_text} |")
    table = "\n".join(lines) + "\n"
    print(table)
    info = {"machine": platform.platform(), "processor": platform.processor() or platform.machine(),
            "threads": args.threads, "identities": args.identities, "pretrain_steps": args.pretrain_steps,
            "steps": args.steps, "seconds": round(time.perf_counter() - started, 1),
            "other_world": {"seed": args.other_seed, "camera_strength": args.other_camera_strength},
            "rows": [dict(zip(("task", "setting", "metric", "random", "pretrained", "second_pretrained",
                               "second_random", "pretrained_other_world"), row)) for row in rows]}
    (out / "table.md").write_text(table)
    (out / "results.json").write_text(json.dumps(info, indent=1) + "\n")
    print(f"{info['seconds']} s; written to {out}/table.md and results.json")


if __name__ == "__main__":
    main()
