"""``python -m services COMMAND``: the platform's service commands.

Each command lives in its own module exposing ``add_arguments(parser)`` and ``run(args) -> int``
(and a ``HELP`` line); errors of the platform print one ``error: …`` line (exit code 2).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from sepcore.cli import dispatch

COMMANDS = {
    "serve": "services.separation.cli",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m services",
                                     description="The platform's service commands.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=getattr(module, "HELP", None))
        module.add_arguments(p)
        p.set_defaults(func=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return dispatch(args)


if __name__ == "__main__":
    sys.exit(main())
