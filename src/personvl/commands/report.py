"""Commands for evaluation reports: ``report merge`` and ``report show``."""

from __future__ import annotations

import argparse
import sys


def _cmd_report_merge(args: argparse.Namespace) -> int:
    from personvl.errors import PersonvlError
    from personvl.evaluation.reports import merge_reports

    table = merge_reports(args.reports, names=args.names.split(",") if args.names else None)
    if args.out is None:
        sys.stdout.write(table)
        return 0
    try:
        with open(args.out, "w") as handle:
            handle.write(table)
    except OSError as exc:
        raise PersonvlError(f"cannot write {args.out}: {exc.strerror or exc}") from None
    print(f"wrote {args.out} ({len(args.reports)} runs)")
    return 0


def _cmd_report_show(args: argparse.Namespace) -> int:
    from rich.console import Console

    from personvl.evaluation.reports import load_report, metrics_table

    console = Console()
    for path in args.reports:
        name, metrics = load_report(path)
        console.print(metrics_table(metrics, title=name))
    return 0


def register(commands) -> None:
    report = commands.add_parser(
        "report", help="show evaluation reports or merge several runs into one table",
        description="Work with the metrics.json files that evaluations write.")
    actions = report.add_subparsers(dest="report_command", metavar="ACTION", required=True, help="merge or show")

    merge = actions.add_parser(
        "merge", help="merge several runs' metrics.json into one Markdown table",
        description="Merge the metrics.json of several runs into one Markdown table: a row per run "
                    "(named after its folder unless the file names it), a column per metric.")
    merge.add_argument("reports", nargs="+", metavar="METRICS_JSON", help="metrics.json files, one per run")
    merge.add_argument("--out", default=None, metavar="FILE", help="write the table here instead of printing it")
    merge.add_argument("--names", default=None, metavar="A,B,...", help="row names, comma-separated, one per file")
    merge.set_defaults(handler=_cmd_report_merge)

    show = actions.add_parser("show", help="print the metrics of one or more metrics.json as tables",
                              description="Print each metrics.json as a table of its single-number metrics.")
    show.add_argument("reports", nargs="+", metavar="METRICS_JSON", help="metrics.json files")
    show.set_defaults(handler=_cmd_report_show)
