"""``python -m services <command>``: the platform's services.

    python -m services stack up|down|status     the platform as processes on this machine
    python -m services serve --model models:/NAME@ALIAS   the separation service (uvicorn)

Each command lives in its own module with ``add_arguments(parser)`` and ``run(args) -> int``
(its one-line help is in ``COMMANDS``); only the module of the command being run is imported.
Errors print one ``error: …`` line (exit code 2 for bad input, 1 for a failure or a bug);
``--debug`` or ``SEPCORE_DEBUG=1`` adds the traceback (:mod:`sepcore.cli_errors`, shared with
``sep`` and ``python -m sweeps``).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from sepcore.cli_errors import OneLineParser, add_debug_flag, run_command

# command -> (module, one-line help); the module is imported only when its command runs
COMMANDS = {
    "stack": ("services.stack", "start, stop or inspect the platform as processes on this "
                                "machine (make stack)"),
    "serve": ("services.separation.cli", "serve a registered model over HTTP (the separation "
                                         "service; hot-swaps the alias it follows)"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; the sub-parser of ``command`` (only) gets its module's arguments."""
    parser = OneLineParser(prog="python -m services",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            importlib.import_module(module).add_arguments(p)
    add_debug_flag(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(command if command in COMMANDS else None).parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("botocore", "urllib3", "boto3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return run_command(importlib.import_module(COMMANDS[args.command][0]).run, args,
                       prog="python -m services")


if __name__ == "__main__":
    sys.exit(main())
