"""Run the robustness suite and print the contract's counts (for a release note or an issue):

    python tests/robustness/report_counts.py [extra pytest arguments]

Inputs tried, clear errors (exit 2, one line naming the fault), correct results (exit 0, finite
outputs of the right shape), and the failures the suite exists to catch: tracebacks, hangs and
wrong results (each of which also fails its test). Exit status: pytest's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def main(argv: list[str]) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        counts_file = Path(tmp) / "counts.json"
        env = {**os.environ, "SEPCORE_ROBUSTNESS_COUNTS": str(counts_file)}
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                               str(ROOT / "tests" / "robustness"), *argv], cwd=ROOT, env=env)
        if not counts_file.is_file():
            print("no counts were written (did the suite run?)", file=sys.stderr)
            return done.returncode or 1
        data = json.loads(counts_file.read_text())
    total = data["total"]
    print()
    for test, counts in data["tests"].items():
        print(f"{test}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    print(f"\n{total['tried']} inputs tried: {total['clear_error']} clear errors, "
          f"{total['correct']} correct results, {total['traceback']} tracebacks, "
          f"{total['hang']} hangs, {total['wrong']} silent wrong results")
    return done.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
