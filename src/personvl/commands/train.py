"""``personvl pretrain``: run a pre-training recipe."""

from __future__ import annotations

import argparse


def _cmd_pretrain(args: argparse.Namespace) -> int:
    from personvl.training.pretrain import pretrain

    summary = pretrain(args.config, args.overrides, resume=args.resume)
    if "model_dir" in summary:
        print(f"trained encoder: {summary['model_dir']} ({summary['steps']} steps, {summary['seconds']:.0f} s)")
    return 0


def register(commands) -> None:
    parser = commands.add_parser(
        "pretrain", help="pre-train image and text encoders with a recipe (PLIP, VAL-PAT, UniPT)",
        description="Pre-train a recipe from configs/pretrain/ on a captioned person dataset. "
                    "Dotted KEY=VALUE arguments override the recipe (data.root=..., optim.lr=1e-4, "
                    "trainer.devices=2 trainer.strategy=ddp). The run directory gets the resolved config, "
                    "checkpoints, logs and the trained encoder (model/).")
    parser.add_argument("config", metavar="CONFIG", help="recipe YAML, e.g. configs/pretrain/plip_tiny.yaml")
    parser.add_argument("overrides", nargs="*", default=[], metavar="KEY=VALUE", help="recipe overrides")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in output_dir from its latest checkpoint")
    parser.set_defaults(handler=_cmd_pretrain)
