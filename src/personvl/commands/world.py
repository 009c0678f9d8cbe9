"""Commands for the synthetic person world: ``quickstart`` and ``synth``."""

from __future__ import annotations

import argparse

from personvl.commands.arguments import integer


def _add_world_arguments(parser: argparse.ArgumentParser, identities_default: int | None) -> None:
    parser.add_argument("--identities", type=integer, default=identities_default, metavar="N",
                        help=f"number of identities (default {identities_default or 2000})")
    parser.add_argument("--images-per-identity", type=integer, default=None, metavar="K",
                        help="images of each identity (default 4)")
    parser.add_argument("--cameras", type=integer, default=None, metavar="C",
                        help="cameras, 2..9 (default 6)")
    parser.add_argument("--seed", type=integer, default=None, metavar="S", help="random seed (default 0)")
    parser.add_argument("--config", default=None, metavar="YAML",
                        help="world recipe, e.g. configs/synth/default.yaml (arguments override it)")
    parser.add_argument("--workers", type=integer, default=None, metavar="W",
                        help="rendering processes (default: one per core, at most 8)")
    parser.add_argument("--no-progress", action="store_true", help="do not show progress bars")
    parser.add_argument("overrides", nargs="*", default=[], metavar="KEY=VALUE",
                        help="any other world knob, e.g. mention_rate=0.4 caption_error_rate=0.1")


def _world_knobs(args: argparse.Namespace) -> dict:
    from personvl.config import parse_override

    return dict(parse_override(text) for text in args.overrides)


def _cmd_synth(args: argparse.Namespace) -> int:
    from personvl.data.synth import generate_world
    from personvl.reporting import format_world_summary

    world = generate_world(
        args.out, args.identities, args.images_per_identity, args.cameras, args.seed,
        config=args.config, workers=args.workers, progress=not args.no_progress, preview=args.preview,
        **_world_knobs(args))
    print(format_world_summary(args.out, world))
    return 0


def _cmd_quickstart(args: argparse.Namespace) -> int:
    from personvl.quickstart import quickstart

    quickstart(args.out, identities=args.identities, images_per_identity=args.images_per_identity,
               cameras=args.cameras, seed=args.seed, config=args.config, workers=args.workers,
               progress=not args.no_progress, steps=args.steps, knobs=_world_knobs(args))
    return 0


def register(commands) -> None:
    from personvl.quickstart import QUICKSTART_IDENTITIES, QUICKSTART_STEPS

    quick = commands.add_parser(
        "quickstart", help="generate a synthetic world, pre-train a tiny PLIP encoder on it and evaluate it",
        description="The main job on built-in data: generate a synthetic person world, pre-train PLIP's "
                    "tiny encoder on its training identities, and evaluate on held-out identities "
                    "(zero-shot text-to-image retrieval, image re-ID, attribute linear probe) against "
                    "the untrained encoder and the attribute-oracle ceiling. Writes metrics.json, "
                    "plots and the world's contact sheet.")
    quick.add_argument("--out", default="personvl-quickstart", metavar="DIR",
                       help="output directory (default: %(default)s)")
    quick.add_argument("--steps", type=integer, default=QUICKSTART_STEPS, metavar="N",
                       help="pre-training steps (default: %(default)s)")
    _add_world_arguments(quick, identities_default=QUICKSTART_IDENTITIES)
    quick.set_defaults(handler=_cmd_quickstart)

    synth = commands.add_parser(
        "synth", help="generate the synthetic person world in the real datasets' formats",
        description="Generate synthetic person images with identities, cameras, captions, "
                    "attributes, part masks and scenes, written as cuhk-pedes, synth-pedes, "
                    "market1501, pa100k, lip and prw datasets plus world.json. Re-running with the "
                    "same arguments completes an interrupted run.")
    synth.add_argument("out", metavar="OUT", help="output directory (new, or an unfinished world)")
    synth.add_argument("--preview", action="store_true", help="also write contact_sheet.png")
    _add_world_arguments(synth, identities_default=None)
    synth.set_defaults(handler=_cmd_synth)
