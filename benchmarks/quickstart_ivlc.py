"""The quickstart's PLIP recipe with IVLC in its published CMPM form instead of InfoNCE.

The quickstart trains IVLC in the InfoNCE form (a learnable temperature), because from random
initialisation CMPM's unscaled logits leave the uniform start far later. This script measures
what the published form gives on the same world, steps, batches and seed: it pre-trains the
quickstart recipe with ``plip.ivlc_loss`` set to each form asked for and evaluates each encoder
on the held-out identities exactly as the quickstart does. Nothing is chosen by these figures:
the quickstart's recipe is fixed; this shows what the other form costs.

Run: python benchmarks/quickstart_ivlc.py [--forms cmpm infonce] [--steps 2800] [--out DIR]
(the world is the quickstart's; an existing ``personvl-quickstart/world`` is reused).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from personvl.data.synth import generate_world
from personvl.models import load_model
from personvl.quickstart import (
    QUICKSTART_IDENTITIES, QUICKSTART_STEPS, QUICKSTART_TEST_FRACTION, evaluate_encoder, quickstart_recipe,
)
from personvl.reporting import format_table
from personvl.training.pretrain import pretrain

FORMS = ("cmpm", "infonce")


def quickstart_world(world: Path) -> dict:
    """The quickstart's world: generated with its arguments, or read back when already there."""
    if (world / "world.json").exists():
        return json.loads((world / "world.json").read_text(encoding="utf-8"))
    return generate_world(world, QUICKSTART_IDENTITIES, test_fraction=QUICKSTART_TEST_FRACTION, preview=True,
                          progress=False)


def train_and_evaluate(world: Path, out: Path, form: str, steps: int, train_identities: int) -> dict:
    recipe = quickstart_recipe(world, out, steps, workers=0, train_identities=train_identities)
    recipe.output_dir = str(out / form)
    recipe.plip.ivlc_loss = form
    recipe.trainer.progress_bar = False
    started = time.perf_counter()
    if not (out / form / "model").exists():
        pretrain(recipe, echo=lambda *_: None)
    metrics, _, _ = evaluate_encoder(load_model(out / form / "model"), world)
    metrics["seconds"] = round(time.perf_counter() - started, 1)
    return metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--forms", nargs="+", choices=FORMS, default=["cmpm"])
    parser.add_argument("--steps", type=int, default=QUICKSTART_STEPS)
    parser.add_argument("--world", default="personvl-quickstart/world")
    parser.add_argument("--out", default="runs/quickstart-ivlc")
    args = parser.parse_args()
    world, out = Path(args.world), Path(args.out)
    description = quickstart_world(world)
    train_identities = description["splits"]["train"]["identities"]
    results = {form: train_and_evaluate(world, out, form, args.steps, train_identities) for form in args.forms}
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    keys = [("t2i", "R1"), ("t2i", "R5"), ("t2i", "R10"), ("t2i", "mAP"), ("reid", "mAP"), ("reid", "R1"),
            ("attributes", "mA")]
    rows = [[f"{task} {key}", *(results[form][task][key] for form in args.forms)] for task, key in keys]
    rows.append(["seconds (pre-training and evaluation)", *(results[form]["seconds"] for form in args.forms)])
    print(format_table(["metric (held-out identities)", *(f"IVLC as {form}" for form in args.forms)], rows))


if __name__ == "__main__":
    main()
