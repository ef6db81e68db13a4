"""The sweep's HTML report and parameter importance, built from its MLflow runs.

``write_dashboard`` writes ``report.html`` (one self-contained file: every figure inlined as a
base64 PNG, no script or style fetched from anywhere), ``importance.csv`` and ``importance.png``
into the report folder and logs them under the parent run's ``report/``. The page holds:

- a parallel-coordinates plot over the searched parameters, each trial's line coloured by its best
  value of the sweep metric (Optuna's matplotlib ``plot_parallel_coordinate``);
- the comparison table of :mod:`sweeps.report` (mean ± std over seeds);
- parameter importance: fANOVA (Hutter et al., ICML 2014) through ``optuna.importance`` over the
  trials that reported the metric, as a bar plot and ``importance.csv``;
- per-epoch curves of the sweep metric for the best trials, and their learned encoder filters
  (``encoder_filters.png`` of :func:`sweeps.trainable.log_filter_figure`) where they exist.

The runs become an Optuna study (``optuna.trial.create_trial``) whose distributions come from the
sweep's search block (the parent's ``sweep.json``) or, without it, from the logged values.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import html
import io
import json
import logging
import math
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from sweeps.report import _fmt, has_songs, songs_cell  # noqa: E402
from sweeps.tracking import child_runs  # noqa: E402

log = logging.getLogger(__name__)

SEARCH_PREFIX = "search."
SEED_PARAM = "train.seed"  # pooled in the table, not a searched parameter
MISSING = "-"  # a conditional categorical parameter that does not apply to a trial
TOP_CURVES = 5  # trials whose per-epoch curves are drawn
TOP_FILTERS = 3  # trials whose encoder filter figures are shown
FILTER_ARTIFACT = "encoder_filters.png"
FILES = ("report.html", "importance.csv", "importance.png")


@contextlib.contextmanager
def _quiet_downloads():
    """No MLflow download progress bars on the driver's console (a user's setting wins)."""
    name = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    added = name not in os.environ
    if added:
        os.environ[name] = "false"
    try:
        yield
    finally:
        if added:
            os.environ.pop(name, None)


# --- the runs as an Optuna study ----------------------------------------------------------------


def _search_spec(client, parent_run_id: str) -> dict[str, tuple[str, list[Any]]]:
    """``{path: (kind, values)}`` of the sweep's search block (from the parent's sweep.json);
    empty when the parent has none."""
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory() as folder, _quiet_downloads():
        try:
            if "sweep.json" not in {a.path for a in client.list_artifacts(parent_run_id)}:
                return {}
            path = client.download_artifacts(parent_run_id, "sweep.json", folder)
        except (MlflowException, OSError) as exc:
            log.warning("no search block for the report (sweep.json of run %s: %s)",
                        parent_run_id, exc)
            return {}
        raw = json.loads(Path(path).read_text())
    spec: dict[str, tuple[str, list[Any]]] = {}

    def walk(node: dict[str, Any], prefix: str = "") -> None:
        for key, value in node.items():
            if not isinstance(value, dict):
                continue
            kinds = [k for k in value if k != "when"]
            if len(kinds) == 1 and isinstance(value[kinds[0]], list):
                spec[prefix + key] = (kinds[0], value[kinds[0]])
            else:
                walk(value, f"{prefix}{key}.")

    walk(raw.get("search") or {})
    return spec


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def _distributions(values: dict[str, list[str | None]],
                   spec: dict[str, tuple[str, list[Any]]]) -> dict[str, Any]:
    """An Optuna distribution per parameter (constant ones left out)."""
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    out: dict[str, Any] = {}
    for name, seen in values.items():
        present = [v for v in seen if v is not None]
        if not present:
            continue
        kind, bounds = spec.get(name, ("", []))
        numeric = all(_is_number(v) for v in present) and kind not in ("choice", "grid")
        # the bounds hold every logged value (a trial of an older search block included)
        numbers = [float(v) for v in present] if numeric else [math.nan]
        low, high = min(numbers), max(numbers)
        if numeric and kind in ("uniform", "loguniform", "quniform") and len(bounds) >= 2:
            out[name] = FloatDistribution(min(float(bounds[0]), low), max(float(bounds[1]), high),
                                          log=kind == "loguniform")
        elif numeric and kind == "randint" and len(bounds) == 2:
            out[name] = IntDistribution(min(int(bounds[0]), int(low)),
                                        max(int(bounds[1]) - 1, int(high)))
        elif numeric and not kind:
            if low < high:
                out[name] = FloatDistribution(low, high)
        else:
            choices = [str(v) for v in bounds] if kind in ("choice", "grid") else []
            choices += sorted({v for v in present if v not in choices})
            if len(present) < len(seen):
                choices.append(MISSING)
            if len(choices) > 1:
                out[name] = CategoricalDistribution(choices)
    return out


def build_study(runs: list[Any], metric: str, mode: str,
                spec: dict[str, tuple[str, list[Any]]] | None = None):
    """The runs with a finite ``best_<metric>`` as COMPLETE trials of an in-memory Optuna study
    (one trial per run, its searched parameters as its params); returns ``(study, params)``."""
    import optuna
    from optuna.distributions import CategoricalDistribution

    key = f"best_{metric}"
    scored = [r for r in runs if math.isfinite(r.data.metrics.get(key, math.nan))]
    names = sorted({k[len(SEARCH_PREFIX):] for r in scored for k in r.data.params
                    if k.startswith(SEARCH_PREFIX)} - {SEED_PARAM})
    values = {n: [r.data.params.get(SEARCH_PREFIX + n) for r in scored] for n in names}
    distributions = _distributions(values, spec or {})
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize" if mode == "max" else "minimize")
    for run in scored:
        params, dists = {}, {}
        for name, dist in distributions.items():
            raw = run.data.params.get(SEARCH_PREFIX + name)
            if isinstance(dist, CategoricalDistribution):
                value: Any = MISSING if raw is None else raw
            elif raw is None:
                continue  # a conditional numeric parameter: the plot's None tick
            else:
                value = float(raw) if isinstance(dist.low, float) else int(float(raw))
            params[name], dists[name] = value, dist
        study.add_trial(optuna.trial.create_trial(params=params, distributions=dists,
                                                  value=run.data.metrics[key]))
    return study, list(distributions)


def param_importance(study, params: list[str]) -> tuple[list[tuple[str, float]], str]:
    """fANOVA importances (largest first) and a line saying what they are over, or why none."""
    import optuna

    trials = len(study.trials)
    if trials < 2:
        return [], f"no parameter importance: {trials} trial(s) reported the metric (needs 2)"
    if not params:
        return [], "no parameter importance: no searched parameter took two values"
    if len({t.value for t in study.trials}) < 2:
        return [], f"no parameter importance: all {trials} trials scored the same"
    if len(params) == 1:
        return [(params[0], 1.0)], (f"one searched parameter took more than one value over "
                                    f"{trials} trials: it carries all the variance")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        found = optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
    if not found:  # conditional numeric parameters are only in the trials they apply to
        return [], "no parameter importance: no parameter is set in every trial"
    return (sorted(((k, float(v)) for k, v in found.items()), key=lambda kv: -kv[1]),
            f"fANOVA (optuna.importance) over {trials} trials that reported the metric")


# --- figures ----------------------------------------------------------------------------------


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def parallel_plot(study, params: list[str], metric: str) -> bytes | None:
    """Optuna's parallel-coordinates plot (lines coloured by the metric) as PNG bytes."""
    from optuna.visualization.matplotlib import plot_parallel_coordinate

    if not params or not study.trials:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
        ax = plot_parallel_coordinate(study, params=params, target_name=f"best {metric}")
    fig = ax.figure
    fig.set_size_inches(max(6.0, 1.8 * len(params) + 2), 4.5)
    return _png(fig)


def importance_plot(importances: list[tuple[str, float]], path: Path) -> bytes:
    fig, ax = plt.subplots(figsize=(6, 0.5 * max(len(importances), 1) + 1.2))
    names = [name for name, _ in importances][::-1]
    ax.barh(names, [value for _, value in importances][::-1], color="tab:blue")
    ax.set_xlim(0, 1)
    ax.set_xlabel("importance (fraction of the metric's variance)")
    ax.set_title("parameter importance (fANOVA)")
    data = _png(fig)
    path.write_bytes(data)
    return data


def curves_plot(client, runs: list[Any], metric: str) -> bytes | None:
    """The metric per epoch of ``runs`` (the best trials), one line each."""
    fig, ax = plt.subplots(figsize=(7, 3.8))
    drawn = 0
    for run in runs:
        history = sorted(client.get_metric_history(run.info.run_id, metric),
                         key=lambda m: m.step)
        if not history:
            continue
        ax.plot([m.step for m in history], [m.value for m in history], marker="o",
                label=_label(run))
        drawn += 1
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))  # beside the lines
    ax.set_title(f"{metric} per epoch, best {drawn} trial(s)")
    return _png(fig)


def _label(run) -> str:
    params = ", ".join(f"{k[len(SEARCH_PREFIX):]}={v}" for k, v in sorted(run.data.params.items())
                       if k.startswith(SEARCH_PREFIX))
    return f"{run.info.run_name}: {params}"[:90]


def filter_figures(client, runs: list[Any]) -> list[tuple[str, bytes]]:
    """The ``encoder_filters.png`` of each of ``runs`` that logged one."""
    from mlflow.exceptions import MlflowException

    out = []
    for run in runs:
        try:
            names = {a.path for a in client.list_artifacts(run.info.run_id)}
            if FILTER_ARTIFACT not in names:
                continue
            with tempfile.TemporaryDirectory() as folder, _quiet_downloads():
                path = client.download_artifacts(run.info.run_id, FILTER_ARTIFACT, folder)
                out.append((_label(run), Path(path).read_bytes()))
        except (MlflowException, OSError) as exc:
            log.warning("no filter figure of run %s: %s", run.info.run_id, exc)
    return out


# --- the page ---------------------------------------------------------------------------------


def _img(data: bytes, alt: str) -> str:
    return (f'<img class="plot" alt="{html.escape(alt)}" '
            f'src="data:image/png;base64,{base64.b64encode(data).decode()}">')


def _table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    songs = has_songs(rows)  # a column of the test songs a row's scores average
    head = ["config", "runs", *(["songs"] if songs else []),
            *[c.removeprefix("test_") for c in columns], "params", "epochs"]
    lines = ["<table><thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head)
             + "</tr></thead><tbody>"]
    for r in rows:
        cells = [r["config"], str(r["runs"]),
                 *([songs_cell(r.get("songs", []))] if songs else []),
                 *[_fmt(*r[c]).replace("±", " ± ") for c in columns],
                 f"{r['params'] / 1e6:.2f}M" if not math.isnan(r["params"]) else "-",
                 str(int(r["epochs"]))]
        lines.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    return "\n".join(lines) + "</tbody></table>"


# Sets data-plots="<decoded>/<total>" on <body> once the page has loaded: a browser test reads it
_MARKER_JS = """
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.querySelectorAll("img.plot"));
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; });
  document.body.setAttribute("data-plots", ok.length + "/" + imgs.length);
});
"""

_CSS = """
body { font-family: sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }
td:first-child, th:first-child { text-align: left; }
img.plot { max-width: 100%; display: block; margin: 0.5em 0; }
.note { color: #555; font-size: 0.9em; }
"""


def render_html(title: str, summary: list[str], sections: list[tuple[str, str]]) -> str:
    body = [f"<h1>{html.escape(title)}</h1>",
            "<ul>" + "".join(f"<li>{html.escape(s)}</li>" for s in summary) + "</ul>"]
    for heading, content in sections:
        body.append(f"<h2>{html.escape(heading)}</h2>\n{content}")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>\n<body>\n"
            + "\n".join(body) + f"\n<script>{_MARKER_JS}</script>\n</body></html>\n")


def write_importance_csv(importances: list[tuple[str, float]], note: str, trials: int,
                         path: Path) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["param", "importance", "trials", "method"])
        for name, value in importances:
            writer.writerow([name, f"{value:.6f}", trials, "fanova"])
        if not importances:
            writer.writerow(["", "", trials, note])
    return path


def write_dashboard(client, experiment_id: str, parent_run_id: str, metric: str, mode: str,
                    rows: list[dict[str, Any]], columns: list[str], out_dir: Path,
                    header: list[str] = ()) -> Path:
    """Write report.html, importance.csv and importance.png to ``out_dir`` and log them under
    the parent run's ``report/``; returns the HTML's path."""
    out_dir = Path(out_dir)
    parent = client.get_run(parent_run_id)
    runs = child_runs(client, experiment_id, parent_run_id)
    study, params = build_study(runs, metric, mode, _search_spec(client, parent_run_id))
    importances, note = param_importance(study, params)
    write_importance_csv(importances, note, len(study.trials), out_dir / "importance.csv")

    key = f"best_{metric}"
    ranked = sorted((r for r in runs if math.isfinite(r.data.metrics.get(key, math.nan))),
                    key=lambda r: r.data.metrics[key], reverse=mode == "max")
    tags = parent.data.tags
    title = f"sweep {parent.info.run_name or parent_run_id}"
    summary = [f"metric: {metric} ({mode}); {len(runs)} trial run(s), {len(ranked)} reported it",
               f"MLflow parent run {parent_run_id}",
               f"code: {tags.get('mlflow.source.git.commit', 'unknown')}"
               + (" (uncommitted changes: source/git_diff.patch)"
                  if tags.get("sepcore.git_dirty") == "true" else ""),
               *header]
    sections: list[tuple[str, str]] = []
    parallel = parallel_plot(study, params, metric)
    sections.append(("Searched parameters", _img(parallel, "parallel coordinates") if parallel
                     else '<p class="note">no searched parameter took two values</p>'))
    sections.append(("Comparison (mean ± std over seeds)", _table(rows, columns)))
    if importances:
        bars = importance_plot(importances, out_dir / "importance.png")
        content = _img(bars, "parameter importance")
    else:
        importance_plot([], out_dir / "importance.png")
        content = ""
    sections.append(("Parameter importance", content + f'<p class="note">{html.escape(note)}</p>'))
    curves = curves_plot(client, ranked[:TOP_CURVES], metric)
    if curves:
        sections.append(("Per-epoch curves of the best trials", _img(curves, "curves")))
    filters = filter_figures(client, ranked[:TOP_FILTERS])
    if filters:
        sections.append(("Learned encoder filters", "\n".join(
            f"<h3>{html.escape(label)}</h3>{_img(data, 'encoder filters')}"
            for label, data in filters)))
    path = out_dir / "report.html"
    path.write_text(render_html(title, summary, sections))
    for name in FILES:
        client.log_artifact(parent_run_id, str(out_dir / name), "report")
    return path
