"""``personvl caption``: pseudo captions and attributes for unlabeled person images."""

from __future__ import annotations

import argparse
import sys

from personvl.commands.arguments import non_negative_int, positive_int


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a probability in [0, 1], got {value}")
    return value


def _cmd_caption(args: argparse.Namespace) -> int:
    from personvl.captioning import (
        caption_images, compare_diversity, diversity_table, evaluate_captions, find_world, load_templates)
    from personvl.errors import UsageError

    if args.model is None and not args.evaluate_only:
        raise UsageError("--model is required (a saved model folder, or a registered name with --weights)")
    if not args.evaluate_only:
        run = caption_images(args.images, args.out, model=args.model, weights=args.weights, method=args.method,
                             vocabulary=args.vocabulary, templates=args.templates, threshold=args.threshold,
                             captions_per_image=args.captions_per_image, batch_size=args.batch_size,
                             workers=args.workers, seed=args.seed, calibration_images=args.calibrate, prompts=args.prompt,
                             dataset=args.dataset, split=args.split,
                             tokenizer=args.tokenizer, device=args.device, progress=not args.no_progress)
        print(run.summary())
    if args.evaluate or args.evaluate_only:
        world = args.ground_truth or find_world(args.images)
        if world is None:
            print("no ground truth to evaluate against: IMAGES is not inside a synthetic world "
                  "(pass --ground-truth WORLD_DIR)", file=sys.stderr)
            return 0
        evaluation = evaluate_captions(args.out, world)
        print(f"\npredicted attributes against the ground truth of {world} ({evaluation.matched} images):")
        print(evaluation.table())
        grammar = {"dcc": "dcc", "synth-pedes": "synth_pedes"}.get(args.method)
        available = len(load_templates(grammar, args.templates)) if grammar else None
        print("\ncaption diversity:")
        print(diversity_table(compare_diversity(args.out, world, available)))
    return 0


def register(commands) -> None:
    caption = commands.add_parser(
        "caption", help="pseudo captions and attributes for unlabeled person images",
        description="Score an attribute vocabulary against every image of IMAGES with a vision-language "
                    "model and write captions (dcc: divide-conquer-combine templates; synth-pedes: prompt "
                    "captions from a 6-slot attribute string) or attribute vectors (attributes) to a JSONL "
                    "index. Re-running with the same --out skips finished images; unreadable images are "
                    "listed in <out>.failed.txt.")
    caption.add_argument("images", metavar="IMAGES",
                         help="a folder of images, a .jsonl index, or a dataset root (with --dataset)")
    caption.add_argument("--out", required=True, metavar="FILE", help="the JSONL file to write (or resume)")
    caption.add_argument("--method", default="dcc", choices=("dcc", "attributes", "synth-pedes"),
                         help="what to write (default %(default)s)")
    caption.add_argument("--model", default=None, metavar="MODEL",
                         help="a saved model folder, or a registered model name with --weights")
    caption.add_argument("--weights", default=None, metavar="PATH",
                         help="weights of a registered MODEL name (a CLIP file, a model folder ...)")
    caption.add_argument("--tokenizer", default=None, metavar="PATH", help="tokenizer folder or vocab.txt")
    caption.add_argument("--vocabulary", default=None, metavar="YAML",
                         help="attribute vocabulary replacing the shipped 14-group one")
    caption.add_argument("--templates", default=None, metavar="YAML", help="sentence grammars replacing the shipped ones")
    caption.add_argument("--prompt", action="append", default=None, metavar="TEMPLATE",
                         help="a scoring prompt template with a {phrase} field, replacing the vocabulary's "
                              "(\"A photo of a person {phrase}\"); repeat it for an ensemble. It should read "
                              "like the text the model learned from")
    caption.add_argument("--threshold", type=_probability, default=0.9, metavar="P",
                         help="probability an optional group's phrase must exceed (default %(default)s)")
    caption.add_argument("--calibrate", type=non_negative_int, default=0, metavar="N",
                         help="first centre each required phrase's score on N of the images, to remove the "
                              "model's bias towards some prompts (default 0: off)")
    caption.add_argument("--captions-per-image", type=positive_int, default=2, metavar="N",
                         help="captions written per image (default %(default)s)")
    caption.add_argument("--dataset", default=None, metavar="NAME", help="read IMAGES as this dataset format")
    caption.add_argument("--split", default=None, metavar="SPLIT", help="the dataset or .jsonl split to caption")
    caption.add_argument("--batch-size", type=positive_int, default=64, metavar="B",
                         help="images scored at once (default %(default)s)")
    caption.add_argument("--workers", type=non_negative_int, default=2, metavar="W",
                         help="image decoding processes (default %(default)s)")
    caption.add_argument("--seed", type=int, default=0, help="seed of the template and synonym choices")
    caption.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: where the model loads)")
    caption.add_argument("--evaluate", action="store_true",
                         help="afterwards, print per-slot accuracy against the synthetic world's ground truth "
                              "and the caption diversity")
    caption.add_argument("--evaluate-only", action="store_true",
                         help="evaluate an existing --out file without captioning")
    caption.add_argument("--ground-truth", default=None, metavar="WORLD_DIR",
                         help="the synthetic world to evaluate against (default: the one IMAGES lies in)")
    caption.add_argument("--no-progress", action="store_true", help="do not show a progress bar")
    caption.set_defaults(handler=_cmd_caption)
