"""Commands for encoders: ``models``, ``embed``, ``embed-text`` and ``export onnx``."""

from __future__ import annotations

import argparse
import json
import sys

from personvl.commands.arguments import non_negative_int, positive_int


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL",
                        help="a folder written by save_model, or a model name from 'personvl models'")
    parser.add_argument("--weights", default=None, metavar="PATH",
                        help="weights for a model name: official PLIP checkpoint, CLIP file, BERT folder ...")
    parser.add_argument("--tokenizer", default=None, metavar="PATH",
                        help="tokenizer folder (vocab.txt or tokenizer.json) or hub name, when the weights bring none")
    parser.add_argument("--device", default=None, metavar="DEVICE", help="torch device, e.g. cuda (default: cpu)")


def _open(args: argparse.Namespace):
    from pathlib import Path

    from personvl.models import open_model

    model = open_model(args.model, args.weights, tokenizer=args.tokenizer, device=args.device)
    if args.weights is None and not Path(args.model).is_dir():
        print(f"note: {args.model} has random weights (no --weights given)", file=sys.stderr)
    return model


def _cmd_models(args: argparse.Namespace) -> int:
    from personvl.models import describe_model, list_models

    names = list_models(args.pattern)
    rows = [describe_model(name, count_parameters=args.parameters) for name in names]
    width = max((len(row.name) for row in rows), default=4)
    for row in rows:
        size = f"{row.input_size[0]}x{row.input_size[1]}"
        count = f"  {row.parameters / 1e6:7.2f}M" if row.parameters is not None else ""
        print(f"{row.name:<{width}}  {size:>7}  {row.embed_dim:>4}-d{count}  {row.image_tower} + {row.text_tower}")
    return 0


def _cmd_embed(args: argparse.Namespace) -> int:
    from personvl.models import embed_image_folder, save_embeddings

    model = _open(args)
    names, features = embed_image_folder(model, args.images, batch_size=args.batch_size, workers=args.workers,
                                         progress=not args.no_progress)
    out, names_file = save_embeddings(args.out, features, names)
    print(f"{features.shape[0]} images x {features.shape[1]}-d -> {out} (paths in {names_file})")
    return 0


def _cmd_embed_text(args: argparse.Namespace) -> int:
    from personvl.models import embed_texts, save_embeddings

    model = _open(args)
    features = embed_texts(model, args.texts)
    if args.out:
        out, names_file = save_embeddings(args.out, features, args.texts, names_suffix=".texts.txt")
        print(f"{features.shape[0]} texts x {features.shape[1]}-d -> {out} (texts in {names_file})")
        return 0
    for text, vector in zip(args.texts, features):
        print(json.dumps({"text": text, "embedding": [round(float(v), 6) for v in vector]}))
    return 0


def _cmd_export_onnx(args: argparse.Namespace) -> int:
    from personvl.models import export_onnx, load_model

    model = load_model(args.model_dir, tokenizer=args.tokenizer)
    result = export_onnx(model, args.out, opset=args.opset, verify=not args.no_verify)
    print(f"image encoder -> {result.image_encoder}")
    print(f"text encoder  -> {result.text_encoder}")
    if result.image_max_abs_diff is not None:
        print(f"onnxruntime vs PyTorch, max abs difference: image {result.image_max_abs_diff:.2e}, "
              f"text {result.text_max_abs_diff:.2e}")
    return 0


def register(commands) -> None:
    listing = commands.add_parser(
        "models", help="list the encoder architectures",
        description="List the registered encoder architectures: input size (height x width), embedding "
                    "size, image and text towers.")
    listing.add_argument("pattern", nargs="?", default=None, metavar="PATTERN",
                         help="only names matching this shell pattern, e.g. 'tiny-*'")
    listing.add_argument("--parameters", action="store_true", help="also count the parameters")
    listing.set_defaults(handler=_cmd_models)

    embed = commands.add_parser(
        "embed", help="embed a folder of images into a .npy file",
        description="Embed every image under IMAGES_DIR (recursively, sorted) with MODEL, in batches. Writes "
                    "the [N, D] L2-normalised float32 matrix to OUT and the image paths, one a line and "
                    "relative to IMAGES_DIR, beside it (feats.npy -> feats.paths.txt).")
    _add_model_arguments(embed)
    embed.add_argument("images", metavar="IMAGES_DIR", help="folder of images (.jpg, .png, ...)")
    embed.add_argument("--out", required=True, metavar="OUT.npy", help="where to write the embeddings")
    embed.add_argument("--batch-size", type=positive_int, default=64, metavar="N", help="images per batch (default 64)")
    embed.add_argument("--workers", type=non_negative_int, default=0, metavar="W",
                       help="image-decoding processes (default 0: in the main process)")
    embed.add_argument("--no-progress", action="store_true", help="do not show the progress bar")
    embed.set_defaults(handler=_cmd_embed)

    embed_text = commands.add_parser(
        "embed-text", help="embed descriptions",
        description="Embed one or more descriptions with MODEL: one JSON line per text on standard output, "
                    "or a .npy matrix with --out.")
    _add_model_arguments(embed_text)
    embed_text.add_argument("texts", nargs="+", metavar="TEXT", help="a description, e.g. 'a woman in a red coat'")
    embed_text.add_argument("--out", default=None, metavar="OUT.npy", help="write a .npy matrix instead of JSON lines")
    embed_text.set_defaults(handler=_cmd_embed_text)

    export = commands.add_parser(
        "export", help="export a saved model to another format",
        description="Export a model folder written by save_model to another runtime's format.")
    formats = export.add_subparsers(dest="format", metavar="FORMAT", help="target format: onnx",
                                    parser_class=type(export))
    onnx = formats.add_parser(
        "onnx", help="image and text encoder ONNX graphs",
        description="Write image_encoder.onnx and text_encoder.onnx (dynamic batch size, L2-normalised "
                    "outputs), the tokenizer files and onnx_config.json (input size, mean, std) to OUT, "
                    "then check with onnxruntime that the graphs match PyTorch within 1e-4.")
    onnx.add_argument("model_dir", metavar="MODEL_DIR", help="a folder written by save_model")
    onnx.add_argument("out", metavar="OUT", help="output folder")
    onnx.add_argument("--opset", type=positive_int, default=17, metavar="N", help="ONNX opset (default 17)")
    onnx.add_argument("--tokenizer", default=None, metavar="PATH", help="tokenizer to use instead of the saved one")
    onnx.add_argument("--no-verify", action="store_true", help="skip the onnxruntime comparison")
    onnx.set_defaults(handler=_cmd_export_onnx)
    export.set_defaults(handler=lambda args: _usage(export))


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_usage(sys.stderr)
    print(f"{parser.prog}: error: choose a format (onnx)", file=sys.stderr)
    return 2
