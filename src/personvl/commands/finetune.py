"""``personvl finetune`` and ``personvl eval``: downstream recipes and evaluation of a model on
a task without training (zero-shot, or a fine-tuned model folder)."""

from __future__ import annotations

import argparse
from pathlib import Path

TASK_NAMES = ("t2i", "reid", "attributes", "parsing", "search")


def _cmd_finetune(args: argparse.Namespace) -> int:
    from personvl.tasks.registry import finetune_task

    summary = finetune_task(args.task, args.config, args.overrides, resume=args.resume)
    shown = ", ".join(f"{k} {v:.2f}" for k, v in summary.get("metrics", {}).items() if isinstance(v, (int, float)))
    print(f"{args.task}: {shown}" if shown else f"{args.task}: done")
    if "model_dir" in summary:
        print(f"fine-tuned model: {summary['model_dir']}")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from rich.console import Console

    from personvl.errors import UsageError
    from personvl.evaluation.reports import metrics_table, write_report
    from personvl.tasks.registry import evaluate_task

    options: dict = {"split": args.split}
    if args.rerank:
        if args.task != "reid":
            raise UsageError("--rerank applies to the reid task only")
        options["rerank"] = True
    if args.detector is not None:
        if args.task != "search":
            raise UsageError("--detector applies to the search task only")
        options["detector"] = args.detector
    if args.det_thresh is not None:
        if args.task != "search":
            raise UsageError("--det-thresh applies to the search task only")
        options["det_thresh"] = args.det_thresh
    if args.gallery_size is not None:
        if args.task != "search":
            raise UsageError("--gallery-size applies to the search task only")
        options["gallery_size"] = args.gallery_size
    # A saved folder is passed as it is: each task reads its own head from it (attribute
    # classifier, re-ID head, parsing head, detector).
    model = args.model
    if args.weights is not None or args.tokenizer is not None or not Path(args.model).is_dir():
        from personvl.models import open_model

        model = open_model(args.model, args.weights, tokenizer=args.tokenizer)
    if args.out is not None:
        options["plots_dir"] = args.out
    metrics = evaluate_task(args.task, model, args.dataset, args.root, **options)
    name = f"{Path(args.model).name} on {args.dataset} ({args.split})"
    if args.out is not None:
        write_report(metrics, args.out, name=name, task=args.task)
    else:
        Console().print(metrics_table(metrics, title=f"{name} ({args.task})"))
    return 0


def register(commands) -> None:
    finetune = commands.add_parser(
        "finetune", help="fine-tune an encoder on a downstream task (t2i, reid, attributes, parsing, search)",
        description="Run a downstream recipe from configs/finetune/. Dotted KEY=VALUE arguments override it "
                    "(data.root=..., model.name=runs/plip_tiny/model, evaluation.dataset=dukemtmc "
                    "evaluation.root=...). The model is selected on the validation split (or the last step where "
                    "the set has none); the test split is read once, for the final figures. The run directory gets "
                    "the resolved config, checkpoints, logs, the model (model/), metrics.json and plots.")
    finetune.add_argument("task", choices=TASK_NAMES, metavar="TASK", help=", ".join(TASK_NAMES))
    finetune.add_argument("config", metavar="CONFIG", help="recipe YAML, e.g. configs/finetune/reid_tiny.yaml")
    finetune.add_argument("overrides", nargs="*", default=[], metavar="KEY=VALUE", help="recipe overrides")
    finetune.add_argument("--resume", action="store_true", help="continue the run in output_dir from its last checkpoint")
    finetune.set_defaults(handler=_cmd_finetune)

    evaluate = commands.add_parser(
        "eval", help="evaluate a model on a task's test split without training",
        description="Evaluate MODEL (a registered name, with --weights, or a saved model folder) on DATASET at ROOT "
                    "with the task's protocol: zero-shot with a pre-trained model, or a fine-tuned model folder, whose "
                    "task head (attribute classifier, re-ID head, parsing head, detector) is used. Attribute "
                    "recognition without a trained head fits a linear probe on the train split.")
    evaluate.add_argument("task", choices=TASK_NAMES, metavar="TASK", help=", ".join(TASK_NAMES))
    evaluate.add_argument("model", metavar="MODEL", help="registered model name or saved model folder")
    evaluate.add_argument("dataset", metavar="DATASET", help="dataset format name, e.g. cuhk-pedes, market1501")
    evaluate.add_argument("root", metavar="ROOT", help="the dataset's folder")
    evaluate.add_argument("--split", default="test", help="split to evaluate (default: test; re-ID: query/gallery)")
    evaluate.add_argument("--rerank", action="store_true", help="re-ID: k-reciprocal re-ranking (k1=20, k2=6, lambda=0.3)")
    evaluate.add_argument("--detector", default=None, metavar="DIR|gt",
                          help="search: a model folder holding a detector, or gt for the ground-truth boxes "
                               "(default: the detector in MODEL's folder)")
    evaluate.add_argument("--det-thresh", type=float, default=None, metavar="SCORE",
                          help="search: keep detections scoring at least SCORE (default 0.5)")
    evaluate.add_argument("--gallery-size", type=int, default=None, metavar="N",
                          help="search on CUHK-SYSU: frames per query gallery (50, 100, 500, 1000, 2000, 4000)")
    evaluate.add_argument("--out", default=None, metavar="DIR", help="write metrics.json and plots here")
    evaluate.add_argument("--weights", default=None, metavar="PATH", help="weights for a registered model name")
    evaluate.add_argument("--tokenizer", default=None, metavar="PATH", help="tokenizer folder or name")
    evaluate.set_defaults(handler=_cmd_eval)
