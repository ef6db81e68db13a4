"""The robustness suite's counts (contract.COUNTS) at the end of the run: a table in the
terminal summary, and JSON in the file ``SEPCORE_ROBUSTNESS_COUNTS`` names (report_counts.py)."""

from __future__ import annotations

import json
import os

from tests.robustness.contract import COUNTS, OUTCOMES, totals


def pytest_terminal_summary(terminalreporter):
    if not COUNTS:
        return
    write = terminalreporter.write_line
    terminalreporter.section("robustness contract (inputs tried / outcome)")
    write(f"{'test':<48}" + "".join(f"{o:>12}" for o in OUTCOMES))
    for test in sorted(COUNTS):
        write(f"{test:<48}" + "".join(f"{COUNTS[test][o]:>12}" for o in OUTCOMES))
    total = totals()
    write(f"{'total':<48}" + "".join(f"{total[o]:>12}" for o in OUTCOMES))
    path = os.environ.get("SEPCORE_ROBUSTNESS_COUNTS")
    if path:
        data = {"tests": {t: {o: c[o] for o in OUTCOMES} for t, c in sorted(COUNTS.items())},
                "total": {o: total[o] for o in OUTCOMES}}
        with open(path, "w") as f:
            json.dump(data, f, indent=2)
