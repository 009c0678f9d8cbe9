"""``personvl quickstart``: the main job on the built-in synthetic person world.

Generates a world, pre-trains PLIP's tiny encoder on its training identities, and evaluates on
held-out identities — zero-shot text-to-image retrieval, image re-ID, and attribute recognition
with a linear probe — against the same architecture untrained and against the world's
attribute-oracle ceiling. Prints one table; writes ``metrics.json`` and plots.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import os
import time
import warnings
from pathlib import Path
from typing import Any

from personvl.reporting import format_table, format_world_summary

QUICKSTART_IDENTITIES = 3000
# A tenth of the identities (300) are held out: enough queries for stable figures. The rest is
# there to learn from: a tiny encoder trained on 1,125 identities fits their captions and stops
# improving on new people far sooner than one trained on 2,550.
QUICKSTART_TEST_FRACTION = 0.1
QUICKSTART_MODEL = "tiny-plip-rn50"
# Sized to learn from scratch on a CPU in minutes (see plip_rn50 in personvl.models.architectures).
# 64x32 pictures keep every colour the captions name and leave time for twice the steps. Without
# dropout the text tower learns far sooner: 20.3 against 14.5 R@1 after 1,200 steps of IVLC.
QUICKSTART_MODEL_OPTIONS = {"image_width": 16, "text_width": 128, "text_pooling": "max", "frozen_text_layers": 0,
                            "text_dropout": 0.0, "image_size": [64, 32]}
QUICKSTART_IDENTITIES_PER_BATCH = 32
QUICKSTART_STEPS = 2800
# At 2,400 steps 1.5e-3 gave R@1 28.2 against 27.8 for 1e-3; without dropout a higher rate holds.
QUICKSTART_LR = 1.5e-3
# TIC colorizes a quarter of each batch: it keeps its place in the recipe for about a quarter less
# time per step, and the steps saved go to the contrast that retrieval learns from.
QUICKSTART_TIC_IMAGES = 16
# IAP predicts the masked words of a quarter of the captions, for the same reason: its second pass
# through the text tower was nearly half a step.
QUICKSTART_IAP_CAPTIONS = 16
METRICS_FILE = "metrics.json"


def quickstart_recipe(world_dir: str | os.PathLike, out_dir: str | os.PathLike, steps: int, workers: int,
                      train_identities: int = 16):
    """PLIP on the tiny encoders, batches of up to 32 identities x 2 images."""
    from personvl.training.pretrain import PretrainConfig

    config = PretrainConfig(method="plip", output_dir=str(Path(out_dir) / "pretrain"))
    config.data.dataset, config.data.root = "cuhk-pedes", str(Path(world_dir) / "cuhk-pedes")
    config.data.identities_per_batch = max(2, min(QUICKSTART_IDENTITIES_PER_BATCH, train_identities))
    config.data.images_per_identity, config.data.workers = 2, workers
    # The world's crops fit in memory many times over: decoded once, they leave the loader little
    # to do, and with no worker processes both cores train.
    config.data.in_memory = True
    config.model.name, config.model.options = QUICKSTART_MODEL, dict(QUICKSTART_MODEL_OPTIONS)
    config.optim.name, config.optim.lr, config.optim.warmup_steps = "adamw", QUICKSTART_LR, 20
    config.trainer.max_steps, config.trainer.accelerator = steps, "cpu"
    config.trainer.checkpoint_every_n_steps = max(1, steps // 4)
    config.trainer.log_every_n_steps = max(1, min(5, steps))
    config.plip.decoder_width, config.plip.text_lr_scale = 64, 1.0
    config.plip.tic_images, config.plip.iap_captions = QUICKSTART_TIC_IMAGES, QUICKSTART_IAP_CAPTIONS
    # From random initialisation the temperature-scaled InfoNCE form of IVLC leaves the
    # uniform-prediction start within tens of steps; CMPM's unscaled logits take far longer.
    config.plip.ivlc_loss = "infonce"
    # IAP masks single colour and clothing-part words, as when this recipe was tuned; PLIP's
    # whole attribute phrases are the published recipes' (docs/pretraining.md has both here).
    config.plip.iap_units = "words"
    return config


def evaluate_encoder(model, world_dir: Path) -> tuple[dict[str, Any], Any, Any]:
    """t2i on cuhk-pedes test, re-ID on market1501 query/gallery, attribute probe on pa100k."""
    from personvl.data import load_dataset
    from personvl.tasks import evaluate_reid, evaluate_text_to_image, linear_probe_attributes

    t2i = evaluate_text_to_image(model, load_dataset("cuhk-pedes", world_dir / "cuhk-pedes", "test"))
    reid = evaluate_reid(model, load_dataset("market1501", world_dir / "market1501", "query"),
                         load_dataset("market1501", world_dir / "market1501", "gallery"))
    attributes = linear_probe_attributes(model, load_dataset("pa100k", world_dir / "pa100k", "train"),
                                         load_dataset("pa100k", world_dir / "pa100k", "test"))
    metrics = {
        "t2i": {k: round(float(t2i.metrics[k]), 2) for k in ("R1", "R5", "R10", "mAP")},
        "reid": {k: round(float(reid[k]), 2) for k in ("mAP", "R1")},
        "attributes": {"mA": round(float(attributes["mA"]), 2)},
    }
    return metrics, t2i, reid


def _loss_curves(log_file: Path, path: Path) -> Path | None:
    from personvl.evaluation.plots import _figure, _save

    if not log_file.exists():
        return None
    series: dict[str, list[tuple[int, float]]] = {}
    with log_file.open() as handle:
        for row in csv.DictReader(handle):
            for key, value in row.items():
                if key.startswith("train/") and key != "train/mask_ratio" and value:
                    series.setdefault(key[6:], []).append((int(row["step"]), float(value)))
    if not series:
        return None
    figure = _figure(6, 4)
    axes = figure.add_subplot()
    for name, points in sorted(series.items()):
        steps, values = zip(*points)
        axes.plot(steps, values, label=name)
    axes.set(xlabel="step", ylabel="loss", title="pre-training losses", yscale="log")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    return _save(figure, path)


@contextlib.contextmanager
def _quiet_lightning():
    """Lightning's start-up notices (accelerators found, logger tips, its own deprecations) are
    noise in a walkthrough whose every step is already announced."""
    logger = logging.getLogger("lightning.pytorch")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", message=".*treespec.*")
            yield
    finally:
        logger.setLevel(level)


def quickstart(
    out_dir: str | os.PathLike = "personvl-quickstart",
    *,
    identities: int | None = QUICKSTART_IDENTITIES,
    images_per_identity: int | None = None,
    cameras: int | None = None,
    seed: int | None = None,
    config: str | os.PathLike | None = None,
    workers: int | None = None,
    progress: bool = True,
    steps: int = QUICKSTART_STEPS,
    knobs: dict[str, Any] | None = None,
    echo=print,
) -> dict[str, Any]:
    """Run the main job into ``out_dir``; returns (and writes) ``metrics.json``'s content."""
    import torch

    from personvl.data.synth import generate_world
    from personvl.data.synth.parallel import default_workers
    from personvl.evaluation import plot_cmc, plot_retrieval_grid, ranked_gallery
    from personvl.models import create_model, load_model
    from personvl.training.pretrain import pretrain

    started = time.perf_counter()
    out = Path(out_dir)
    world_dir = out / "world"
    workers = default_workers() if workers is None else workers
    echo(f"1/3 generating the synthetic person world in {world_dir} ...")
    knobs = dict(knobs or {})
    if config is None:
        knobs.setdefault("test_fraction", QUICKSTART_TEST_FRACTION)
    world = generate_world(world_dir, identities, images_per_identity, cameras, seed, config=config,
                           workers=workers, progress=progress, preview=True, **knobs)
    echo(format_world_summary(world_dir, world))

    echo(f"\n2/3 pre-training {QUICKSTART_MODEL} with PLIP for {steps} steps ...")
    recipe = quickstart_recipe(world_dir, out, steps, workers=0,
                               train_identities=world["splits"]["train"]["identities"])
    recipe.trainer.progress_bar = progress
    run_dir = Path(recipe.output_dir)
    if (run_dir / "model").exists():
        echo(f"   (reusing the finished run in {run_dir})")
    else:
        from personvl.training.trainer import latest_checkpoint

        with _quiet_lightning():
            pretrain(recipe, resume=latest_checkpoint(run_dir) is not None, echo=lambda *_: None)

    echo("\n3/3 evaluating on held-out identities ...")
    torch.manual_seed(recipe.trainer.seed)
    untrained = create_model(QUICKSTART_MODEL, **QUICKSTART_MODEL_OPTIONS)
    pretrained = load_model(run_dir / "model")
    results = {}
    for name, model in (("untrained", untrained), ("pretrained", pretrained)):
        results[name] = evaluate_encoder(model, world_dir)
    oracle = world["calibration"]["oracle_t2i_R1"]
    metrics = {
        "pretrained": results["pretrained"][0],
        "untrained": results["untrained"][0],
        "oracle": {"t2i": {"R1": oracle}},
        "seconds": round(time.perf_counter() - started, 1),
    }

    plots = out / "plots"
    _loss_curves(run_dir / "logs" / "metrics.csv", plots / "losses.png")
    plot_cmc({name: results[name][2]["cmc"] for name in results}, plots / "reid_cmc.png", title="re-ID CMC (market1501)")
    t2i = results["pretrained"][1]
    shown = slice(0, 6)
    indices, correct = ranked_gallery(t2i.text_features[shown], t2i.image_features, t2i.caption_pids[shown],
                                      t2i.image_pids, k=8)
    plot_retrieval_grid(t2i.captions[shown], t2i.image_paths, indices, correct, plots / "t2i_retrieval.png")

    (out / METRICS_FILE).write_text(json.dumps(metrics, indent=1) + "\n", encoding="utf-8")
    echo(format_quickstart_table(metrics))
    echo(f"\nmetrics: {out / METRICS_FILE}\nplots: {plots}/ (losses, reid_cmc, t2i_retrieval)"
         f"\ncontact sheet: {world_dir / 'contact_sheet.png'}\ndone in {metrics['seconds']:.0f} s")
    return metrics


def format_quickstart_table(metrics: dict[str, Any]) -> str:
    rows = []
    for task, key in (("t2i", "R1"), ("t2i", "R5"), ("t2i", "R10"), ("t2i", "mAP"), ("reid", "mAP"), ("reid", "R1"),
                      ("attributes", "mA")):
        oracle = metrics["oracle"].get(task, {}).get(key, "")
        rows.append([f"{task} {key}", metrics["untrained"][task][key], metrics["pretrained"][task][key], oracle])
    return "\n" + format_table(["metric (held-out identities)", "untrained", "pre-trained", "oracle"], rows)
