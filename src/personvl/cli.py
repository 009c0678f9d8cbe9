"""The ``personvl`` command line: each subcommand is a thin call into the library."""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Callable, Sequence

from personvl import __version__
from personvl.errors import PersonvlError, UsageError


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors in one line with exit status 2."""

    def error(self, message: str) -> None:  # noqa: D102 - argparse API
        self.exit(2, f"{self.prog}: error: {message}\n(see '{self.prog} --help')\n")


# Each module registers its subcommands; the handlers import the library lazily so that
# ``personvl --help`` stays fast.
COMMAND_MODULES = (
    "personvl.commands.world",
    "personvl.commands.report",
    "personvl.commands.data",
    "personvl.commands.search",
    "personvl.commands.models",
    "personvl.commands.finetune",
    "personvl.commands.caption",
    "personvl.commands.train",
)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="personvl", description=(
        "Person-centric vision-language representation learning: pre-train image and text "
        "encoders on person images with captions and attributes, transfer and evaluate them, "
        "and search galleries with them."))
    parser.add_argument("--version", action="version", version=f"personvl {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    # KEY=VALUE overrides may follow options (``synth OUT --preview a=1``), which a plain
    # ``parse_args`` refuses once the positional list is consumed: collect them here.
    args, leftover = parser.parse_known_args(argv)
    stray = [token for token in leftover if token.startswith("-") or "=" not in token]
    if stray or (leftover and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(stray or leftover)}")
    if leftover:
        args.overrides = list(args.overrides) + leftover
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        return handler(args)
    except UsageError as exc:
        print(f"personvl {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except PersonvlError as exc:
        print(f"personvl {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("personvl: interrupted; re-run the same command to complete the work", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
