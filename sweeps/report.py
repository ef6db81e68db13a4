"""The sweep comparison table: one row per configuration, mean ± spread over seeds.

Rows group a sweep's child runs by their searched parameters (``search.*`` params, the seed
excluded); columns are the sweep metric, the paper's BSSEval columns (vocals and accompaniment
SDR / SIR / SAR, or whatever targets the runs were tested on), the parameter count and the epochs
run. Written as text (printed), CSV and a PNG bar chart, all logged to the sweep's parent run,
with the HTML report and parameter importance of :mod:`sweeps.dashboard`.

Rows of a paper's table (the sweep file's ``search.row`` entries with ``published`` numbers; the
runner logs them to the parent run as ``published.json``) show the paper's value beside each
measured one, ``measured [published difference]``, and the CSV has ``<column>_published`` and
``<column>_diff`` columns; the parameter count's difference is in percent.
"""

from __future__ import annotations

import csv
import math
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from sweeps.tracking import child_runs

PUBLISHED_ARTIFACT = "published.json"  # row id -> {metric: the paper's value, source: table}
PAPER_COLUMNS = [f"test_{t}_{m}" for t in ("vocals", "accompaniment") for m in ("SDR", "SIR",
                                                                               "SAR")]


def _config_key(params: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k[len("search."):], v) for k, v in params.items()
                        if k.startswith("search.") and k != "search.train.seed"))


def _stats(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return math.nan, math.nan
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return statistics.fmean(values), spread


def load_published(client, parent_run_id: str) -> dict[str, dict[str, Any]]:
    """The paper's numbers per row logged by the runner ({} when the sweep has none)."""
    import json
    import tempfile

    names = {a.path for a in client.list_artifacts(parent_run_id)}
    if PUBLISHED_ARTIFACT not in names:
        return {}
    with tempfile.TemporaryDirectory() as folder:
        path = client.download_artifacts(parent_run_id, PUBLISHED_ARTIFACT, folder)
        return json.loads(Path(path).read_text())


def collect_rows(client, experiment_id: str, parent_run_id: str, metric: str,
                 mode: str = "max", published: dict[str, dict[str, Any]] | None = None
                 ) -> tuple[list[dict[str, Any]], list[str]]:
    """Group the sweep's child runs by configuration; returns (rows, metric columns).

    ``published`` (row id -> the paper's numbers) adds a ``published`` mapping to the rows of a
    paper table, and its metrics to the columns even where no run measured them yet.
    """
    published = published or {}
    groups: dict[tuple, list[Any]] = defaultdict(list)
    for run in child_runs(client, experiment_id, parent_run_id):
        groups[_config_key(run.data.params)].append(run)
    present = {k for runs in groups.values() for r in runs for k in r.data.metrics}
    present |= {k for numbers in published.values() for k in numbers
                if k.startswith("test_")}
    extra = sorted(k for k in present if k.startswith("test_") and k not in PAPER_COLUMNS
                   and k.rsplit("_", 1)[-1] in ("SDR", "SIR", "SAR", "PES", "VAD"))
    columns = [f"best_{metric}"] + [c for c in PAPER_COLUMNS if c in present] + extra
    rows = []
    for key, runs in groups.items():
        row: dict[str, Any] = {"config": ", ".join(f"{k}={v}" for k, v in key) or "(base)",
                               "runs": len(runs)}
        for column in columns:
            row[column] = _stats([r.data.metrics.get(column, math.nan) for r in runs])
        row["params"] = runs[0].data.metrics.get("params", math.nan)
        # how many test songs its test columns average (tune.test_max_tracks, or all of them
        # for the best trial, scored again after the sweep)
        row["songs"] = sorted({int(r.data.metrics["test_tracks"]) for r in runs
                               if "test_tracks" in r.data.metrics})
        row["epochs"] = max(r.data.metrics.get("epoch", 0) for r in runs)
        row_id = dict(key).get("row")
        if row_id in published:
            row["published"] = published[row_id]
        rows.append(row)
    sign = -1 if mode == "max" else 1
    rows.sort(key=lambda r: (math.isnan(r[columns[0]][0]), sign * (r[columns[0]][0]
                                                                   if not math.isnan(
                                                                       r[columns[0]][0]) else 0)))
    return rows, columns


def _fmt(mean: float, spread: float) -> str:
    if math.isnan(mean):
        return "-"
    return f"{mean:.2f}" if spread == 0 else f"{mean:.2f}±{spread:.2f}"


def difference(measured: float, paper: float, percent: bool = False) -> float:
    """measured - paper (dB), or the relative difference in percent (parameter counts)."""
    if math.isnan(measured):
        return math.nan
    return 100.0 * (measured - paper) / paper if percent else measured - paper


def _with_paper(text: str, measured: float, paper: float | None, percent: bool = False,
                unit: str = "") -> str:
    if paper is None:
        return text
    diff = difference(measured, paper, percent)
    shown = "n/a" if math.isnan(diff) else (f"{diff:+.1f}%" if percent else f"{diff:+.2f}")
    value = f"{paper / 1e6:.2f}M" if unit == "M" else f"{paper:.2f}"
    return f"{text} [{value} {shown}]"


def songs_cell(songs: list[int]) -> str:
    """The test songs of a row's scores: ``10``, ``10-50`` when its runs differ, ``-``."""
    if not songs:
        return "-"
    return str(songs[0]) if len(songs) == 1 else f"{songs[0]}-{songs[-1]}"


def has_songs(rows: list[dict[str, Any]]) -> bool:
    """Whether the tables get a songs column: some run was scored on the test set."""
    return any(r.get("songs") for r in rows)


def format_rows(rows: list[dict[str, Any]], columns: list[str]) -> str:
    songs = has_songs(rows)  # a "songs" column when any run was scored on the test set
    header = ["config", "runs", *(["songs"] if songs else []),
              *[c.removeprefix("test_") for c in columns], "params", "epochs"]
    body = []
    for r in rows:
        paper = r.get("published") or {}
        cells = [_with_paper(_fmt(*r[c]), r[c][0], paper.get(c)) for c in columns]
        params = f"{r['params'] / 1e6:.2f}M" if not math.isnan(r["params"]) else "-"
        body.append([r["config"], str(r["runs"]),
                     *([songs_cell(r.get("songs", []))] if songs else []), *cells,
                     _with_paper(params, r["params"], paper.get("params"), True, "M"),
                     str(int(r["epochs"]))])
    sources = sorted({r["published"].get("source", "?") for r in rows if r.get("published")})
    note = (f"[published difference]: the paper's value ({', '.join(sources)}) and measured - "
            f"published (dB; params in %)" if sources else "")
    if songs and len({tuple(r.get("songs", [])) for r in rows if r.get("songs")}) > 1:
        note = "\n".join(filter(None, [
            "songs: the test songs a row's scores average (tune.test_max_tracks per trial; the "
            "best trial is scored again on all of them after the sweep)", note]))
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h)
              for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(b, widths, strict=True)) for b in body]
    if note:
        lines.append(note)
    return "\n".join(lines)


def write_csv(rows: list[dict[str, Any]], columns: list[str], path: Path) -> Path:
    compared = [c for c in [*columns, "params"]
                if any(c in (r.get("published") or {}) for r in rows)]
    songs = has_songs(rows)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["config", "runs", *(["test_songs"] if songs else []),
                         *[f"{c}_{s}" for c in columns for s in ("mean", "std")],
                         "params", "epochs",
                         *[f"{c}_{s}" for c in compared for s in ("published", "diff")],
                         *(["published_source"] if compared else [])])
        for r in rows:
            paper = r.get("published") or {}
            extra = []
            for c in compared:
                measured = r[c][0] if c != "params" else r["params"]
                extra += ([paper[c], difference(measured, paper[c], c == "params")]
                          if c in paper else ["", ""])
            writer.writerow([r["config"], r["runs"],
                             *([songs_cell(r.get("songs", []))] if songs else []),
                             *[v for c in columns for v in r[c]],
                             r["params"], r["epochs"], *extra,
                             *([paper.get("source", "")] if compared else [])])
    return path


PNG_ROWS = 30  # configurations drawn in the bar chart (the best ones; the CSV has them all)


def write_png(rows: list[dict[str, Any]], columns: list[str], path: Path) -> Path:
    """Bar chart of the best ``PNG_ROWS`` configurations (``rows`` come sorted best first)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    total = len(rows)
    rows = rows[:PNG_ROWS]
    shown = columns[:1] + [c for c in columns if c.endswith("_SDR")]
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(rows) + 2), 4))
    width = 0.8 / max(1, len(shown))
    for i, column in enumerate(shown):
        means = [r[column][0] for r in rows]
        spreads = [r[column][1] for r in rows]
        ax.bar([x + i * width for x in range(len(rows))], means, width, yerr=spreads,
               label=column.removeprefix("test_"), capsize=3)
    ax.set_xticks([x + width * (len(shown) - 1) / 2 for x in range(len(rows))])
    ax.set_xticklabels([r["config"].replace(", ", "\n") for r in rows], fontsize=7)
    ax.set_ylabel("dB")
    ax.legend(fontsize=8)
    ax.set_title("sweep comparison (mean ± std over seeds)" if total == len(rows) else
                 f"sweep comparison: best {len(rows)} of {total} configurations "
                 f"(mean ± std over seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def test_protocols(client, experiment_id: str, parent_run_id: str) -> list[str]:
    """The scoring protocols (``sepcore.eval_protocol`` tags) of the sweep's test scores."""
    return sorted({run.data.tags["sepcore.eval_protocol"]
                   for run in child_runs(client, experiment_id, parent_run_id)
                   if "sepcore.eval_protocol" in run.data.tags})


def reused_line(client, experiment_id: str, parent_run_id: str) -> str:
    """"N reused: …" when trials of the sweep replayed earlier runs (``run --reuse``), else ""."""
    from sweeps.reuse import reused_runs

    runs = child_runs(client, experiment_id, parent_run_id)
    reused = reused_runs(runs)
    if not reused:
        return ""
    return (f"{len(reused)} reused: {len(reused)} of {len(runs)} trials replayed a finished run "
            f"of the same signature (--reuse) and trained nothing")


def sweep_report(client, experiment_id: str, parent_run_id: str, metric: str, mode: str,
                 out_dir: Path) -> str:
    """Build the comparison, write CSV + PNG to ``out_dir``, log all three to the parent run,
    then the HTML report and parameter importance (:mod:`sweeps.dashboard`). The text starts
    with the protocol line(s) of the test scores when the runs have any."""
    rows, columns = collect_rows(client, experiment_id, parent_run_id, metric, mode,
                                 load_published(client, parent_run_id))
    text = format_rows(rows, columns)
    protocols = test_protocols(client, experiment_id, parent_run_id)
    if protocols:
        text = "\n".join(f"test scores: {line}" for line in protocols) + "\n" + text
    reused = reused_line(client, experiment_id, parent_run_id)
    if reused:
        text = reused + "\n" + text
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "comparison.txt").write_text(text + "\n")
    files = [out_dir / "comparison.txt", write_csv(rows, columns, out_dir / "comparison.csv")]
    if rows:
        files.append(write_png(rows, columns, out_dir / "comparison.png"))
    for path in files:
        client.log_artifact(parent_run_id, str(path), "report")
    from sweeps.dashboard import write_dashboard

    write_dashboard(client, experiment_id, parent_run_id, metric, mode, rows, columns, out_dir,
                    header=[f"test scores: {line}" for line in protocols]
                    + ([reused] if reused else []))
    return text
