"""Commands for datasets on disk: ``data stats`` and ``data convert``."""

from __future__ import annotations

import argparse

from personvl.commands.arguments import positive_int


def _reader_options(args: argparse.Namespace) -> dict:
    from personvl.config import parse_override

    return dict(parse_override(text) for text in args.overrides)


def _cmd_stats(args: argparse.Namespace) -> int:
    from personvl.data import dataset_statistics, format_statistics

    statistics = dataset_statistics(args.name, args.root, args.split or None, skip_missing=args.skip_missing,
                                    **_reader_options(args))
    print(format_statistics(statistics))
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    from personvl.data import convert_dataset

    summary = convert_dataset(args.name, args.root, args.out, to=args.to, splits=args.split or None,
                              shard_size=args.shard_size, skip_missing=args.skip_missing, **_reader_options(args))
    records = ", ".join(f"{split} {count}" for split, count in summary["records"].items())
    shards = f" in {summary['shards']} shard(s)" if "shards" in summary else ""
    print(f"wrote {summary['path']}: {records} records{shards}")
    return 0


def _add_dataset_arguments(parser: argparse.ArgumentParser) -> None:
    from personvl.data import format_names

    parser.add_argument("name", metavar="NAME", choices=format_names(),
                        help=f"dataset format: {', '.join(format_names())}")
    parser.add_argument("root", metavar="ROOT", help="the folder the dataset unpacks to (for jsonl: the .jsonl file or its folder)")
    parser.add_argument("--split", action="append", default=[], metavar="SPLIT",
                        help="only this split (repeatable; default: every split)")
    parser.add_argument("--skip-missing", action="store_true",
                        help="leave out records whose image is missing (with a warning and the count) instead of failing")


def _add_reader_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("overrides", nargs="*", default=[], metavar="KEY=VALUE",
                        help="reader options, e.g. include_val=false (msmt17), variant=labeled (cuhk03), "
                             "pid_from_folder=true (folder), annotations=FILE (luperson)")


def register(commands) -> None:
    data = commands.add_parser(
        "data", help="dataset statistics and conversion to JSONL or webdataset shards",
        description="Read the field's datasets in the layouts their authors distribute, or your own data "
                    "(jsonl, folder): print statistics per split, or convert to a JSONL index or to "
                    "webdataset shards for training at scale.")
    actions = data.add_subparsers(dest="data_command", metavar="ACTION", required=True, help="stats or convert")
    stats = actions.add_parser(
        "stats", help="print images, identities, cameras, captions and attributes per split",
        description="Read every split of a dataset and print a table of images, identities, cameras, captions "
                    "and attribute-vector length per split.")
    _add_dataset_arguments(stats)
    _add_reader_options(stats)
    stats.set_defaults(handler=_cmd_stats)

    convert = actions.add_parser(
        "convert", help="write a JSONL index or webdataset tar shards",
        description="Write a dataset's splits as one JSONL index (OUT a .jsonl file or a folder for "
                    "records.jsonl) or as webdataset tar shards (image + json per sample) with a manifest.json.")
    _add_dataset_arguments(convert)
    convert.add_argument("--to", choices=("jsonl", "shards"), required=True, help="output form")
    convert.add_argument("out", metavar="OUT", help="output file (.jsonl) or folder")
    convert.add_argument("--shard-size", type=positive_int, default=1000, metavar="N",
                         help="samples per shard (default: %(default)s)")
    _add_reader_options(convert)
    convert.set_defaults(handler=_cmd_convert)
