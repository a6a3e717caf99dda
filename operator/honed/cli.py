"""`honed` command line: optimize | report | serve | operator | crd."""

from __future__ import annotations

import argparse
import sys

from honed import __version__
from honed.errors import HonedError


def build_parser() -> argparse.ArgumentParser:
    """The ``honed`` parser: each subcommand sets ``handler``, which ``main`` calls with the parsed args."""
    from honed.controller import cli as controller_cli
    from honed.optimizer import cli as optimizer_cli
    from honed.serving import cli as serving_cli

    parser = argparse.ArgumentParser(prog="honed", description="Make trained models fast and serve them.")
    parser.add_argument("--version", action="version", version=f"honed {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    optimizer_cli.add_parsers(sub)
    serving_cli.add_parser(sub)
    controller_cli.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one ``honed`` command and return its exit code.

    A ``HonedError`` is printed as ``honed: error: ...`` on stderr, without a traceback, and exits
    with its ``exit_code``; Ctrl-C exits 130.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.handler(args)
    except HonedError as exc:
        print(f"honed: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("honed: interrupted", file=sys.stderr)
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
