"""The contract every hostile input is held to, and the counts the closing note reports.

An input either gets a **clear error** (exit 2 and exactly one ``error: …`` line on stderr that
names the file/key/argument at fault; in-process: one of sepcore's own errors with a one-line
message naming it) or a **correct result** (exit 0 with outputs the test checks: finite, of the
right shape). Anything else is counted and fails the test: a **traceback** (an exception that
escapes, or exit 1 "unexpected …": a bug), a **hang** (the case ran past its time limit) or a
**wrong** result (exit 0 with outputs that fail the checks, or an error line that does not name
what is at fault).

Counts accumulate in :data:`COUNTS` (per test and in total); ``conftest.py`` prints them at the
end of the run and writes them as JSON when ``SEPCORE_ROBUSTNESS_COUNTS`` names a file
(``tests/robustness/report_counts.py`` does both).
"""

from __future__ import annotations

import contextlib
import io
import signal
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from hypothesis import HealthCheck, settings

OUTCOMES = ("tried", "clear_error", "correct", "traceback", "hang", "wrong")
COUNTS: dict[str, Counter] = defaultdict(Counter)

# one case's wall-clock limit (s): generous for a loaded 2-core machine, far below a hang
CASE_LIMIT = 20.0

# reproducible in CI: the same examples every run, no example database, no flaky deadline
settings.register_profile(
    "robustness", derandomize=True, database=None, deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                           HealthCheck.data_too_large, HealthCheck.filter_too_much])


class CaseTimeout(BaseException):  # noqa: N818 - not an Exception: nothing under test catches it
    """A case ran past its time limit (a hang)."""


@contextlib.contextmanager
def time_limit(seconds: float = CASE_LIMIT) -> Iterator[None]:
    """Raise :class:`CaseTimeout` in this (main) thread after ``seconds``; restores the timer that
    was running (pytest-timeout's) afterwards."""

    def on_alarm(signum, frame):
        raise CaseTimeout(f"ran past {seconds:g} s")

    old_handler = signal.signal(signal.SIGALRM, on_alarm)
    old_delay, old_interval = signal.setitimer(signal.ITIMER_REAL, seconds)
    start = time.monotonic()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old_handler)
        if old_delay:
            left = max(1e-3, old_delay - (time.monotonic() - start))
            signal.setitimer(signal.ITIMER_REAL, left, old_interval)


def record(test: str, outcome: str) -> None:
    COUNTS[test]["tried"] += 1
    COUNTS[test][outcome] += 1


def totals() -> Counter:
    total: Counter = Counter()
    for counts in COUNTS.values():
        total.update(counts)
    return total


class ContractBroken(AssertionError):
    """The input got neither a clear error nor a correct result."""


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.startswith("error:")]


def run_cli(main: Callable[[list[str]], int], argv: list[str]) -> CliResult:
    """``main(argv)`` in this process with stdout/stderr captured, under :func:`time_limit`.
    An exception that escapes ``main`` (SystemExit included) propagates."""
    out, err = io.StringIO(), io.StringIO()
    with time_limit(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse: its one line is on stderr
            code = exc.code if isinstance(exc.code, int) else 2
    return CliResult(code, out.getvalue(), err.getvalue())


def judge_cli(test: str, result: CliResult, names: tuple[str, ...],
              check_output: Callable[[CliResult], None]) -> str:
    """Classify a CLI run (see the module docstring) and record it; raise
    :class:`ContractBroken` unless it is a clear error or a correct result.

    ``names``: what an error line may name (the file, key or argument at fault; one suffices).
    ``check_output(result)``: asserts the outputs of an exit-0 run.
    """
    if result.code == 2:
        lines = result.error_lines
        if len(lines) == 1 and "Traceback" not in result.err and any(n in lines[0] for n in names):
            record(test, "clear_error")
            return "clear_error"
        record(test, "wrong")
        raise ContractBroken(f"exit 2 without one error line naming {names}: {result.err!r}")
    if result.code == 0:
        try:
            check_output(result)
        except AssertionError as exc:
            record(test, "wrong")
            raise ContractBroken(f"exit 0 with a wrong result: {exc}") from exc
        record(test, "correct")
        return "correct"
    record(test, "traceback")
    raise ContractBroken(f"exit {result.code}: {result.err!r}")


def judge_call(test: str, call: Callable[[], object], errors: tuple[type[BaseException], ...],
               names: tuple[str, ...], check_result: Callable[[object], None]) -> str:
    """Classify a library call the same way: one of ``errors`` with a one-line message naming
    one of ``names`` is a clear error; a return that passes ``check_result`` is correct."""
    try:
        with time_limit():
            value = call()
    except CaseTimeout as exc:
        record(test, "hang")
        raise ContractBroken(f"hang: {exc}") from exc
    except errors as exc:
        message = str(exc)
        if "\n" in message or not any(n in message for n in names):
            record(test, "wrong")
            raise ContractBroken(f"unclear error (not one line naming {names}): {message!r}") \
                from exc
        record(test, "clear_error")
        return "clear_error"
    except Exception:
        record(test, "traceback")
        raise
    try:
        check_result(value)
    except AssertionError:
        record(test, "wrong")
        raise
    record(test, "correct")
    return "correct"


def cli_case(test: str, main: Callable[[list[str]], int], argv: list[str],
             names: tuple[str, ...], check_output: Callable[[CliResult], None]) -> str:
    """:func:`run_cli` + :func:`judge_cli`; a hang or an escaping exception is recorded too."""
    try:
        result = run_cli(main, argv)
    except CaseTimeout as exc:  # an AssertionError, so that hypothesis shrinks and reports it
        record(test, "hang")
        raise ContractBroken(f"hang: {exc}") from exc
    except Exception as exc:
        record(test, "traceback")
        raise ContractBroken(f"traceback: {type(exc).__name__}: {exc}") from exc
    return judge_cli(test, result, names, check_output)
