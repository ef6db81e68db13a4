"""One error path for the command lines: ``sep``, ``python -m sweeps``, ``python -m services``.

:func:`run_command` runs a parsed sub-command and turns what it raises into one ``error: …`` line
on stderr, with the credentials of any URI in it masked (:func:`sepcore.redact.redact`):

- bad input (sepcore's own errors, which name the file, key or value at fault, and an ``OSError``
  on a path) exits 2 (or the error's ``exit_code``: a service that fails to start says 1);
- anything else is a bug: the line says so, names the exception and asks for a rerun with
  ``--debug``; exit 1;
- Ctrl-C prints ``interrupted`` and exits 130.

``--debug`` (:func:`add_debug_flag`, accepted before or after the sub-command) or
``SEPCORE_DEBUG=1`` prints the (redacted) traceback before the line. :class:`OneLineParser` makes
argparse's own errors (unknown option, missing argument) one line too, exit 2.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Callable
from typing import NoReturn

from sepcore.errors import SepcoreError, one_line
from sepcore.redact import redact

DEBUG_ENV = "SEPCORE_DEBUG"
_DEBUG_HELP = f"on an error, print the traceback too (or set {DEBUG_ENV}=1)"


class OneLineParser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line (``error: PROG: … (see PROG --help)``), exit 2."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {self.prog}: {one_line(message)} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def add_debug_flag(parser: argparse.ArgumentParser) -> None:
    """``--debug`` on ``parser`` and on every (nested) sub-command, so that it may follow them."""
    parser.add_argument("--debug", action="store_true", help=_DEBUG_HELP)
    _add_to_subcommands(parser, {id(parser)})


def _add_to_subcommands(parser: argparse.ArgumentParser, seen: set[int]) -> None:
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        for sub in action.choices.values():
            if id(sub) in seen:
                continue
            seen.add(id(sub))
            # SUPPRESS: a sub-command without the flag keeps the value its parent parser set
            sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                             help=_DEBUG_HELP)
            _add_to_subcommands(sub, seen)


def debug_enabled(args: argparse.Namespace | None = None) -> bool:
    """``--debug`` was given or ``SEPCORE_DEBUG`` is set to something other than 0/false/no."""
    env = os.environ.get(DEBUG_ENV, "").strip().lower()
    return bool(getattr(args, "debug", False)) or env not in ("", "0", "false", "no", "off")


def _describe(exc: BaseException) -> str:
    return one_line(exc) or type(exc).__name__


def run_command(func: Callable[[argparse.Namespace], int], args: argparse.Namespace,
                prog: str) -> int:
    """``func(args)``; its errors become one redacted ``error: …`` line (see the module doc)."""
    debug = debug_enabled(args)
    try:
        return func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (SepcoreError, OSError) as exc:  # bad input: the message names what is at fault
        _report(exc, debug, redact(_describe(exc)))
        return int(getattr(exc, "exit_code", 2))
    except Exception as exc:  # a bug: say so, and how to see where
        hint = "" if debug else f"; rerun with --debug (or {DEBUG_ENV}=1) for the traceback"
        _report(exc, debug, f"{prog}: unexpected {type(exc).__name__}: {redact(_describe(exc))}"
                            f" (this is a bug in sepcore, please report it{hint})")
        return 1


def _report(exc: BaseException, debug: bool, line: str) -> None:
    if debug:
        text = "".join(traceback.format_exception(exc))
        print(redact(text).rstrip(), file=sys.stderr)
    print(f"error: {line}", file=sys.stderr)
