"""The sweep comparison: child runs grouped by configuration (seeds pooled into mean ± std),
best configuration first for ``mode=max`` and ``mode=min``, written as text, CSV and PNG.

The runs are written by hand into a sqlite MLflow store with values whose mean and sample
standard deviation are exact in binary floating point, so every number is checked exactly.
"""

from __future__ import annotations

import base64
import csv
import math
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric, Param
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from sweeps.report import collect_rows, format_rows, sweep_report

# configuration (searched num_bands, lr) -> {seed: (best_valid_sisdr, test_vocals_SDR)}
RUNS = {
    ("1", "0.001"): {42: (1.0, 0.0), 43: (2.0, 6.0), 44: (3.0, 12.0)},  # 2 ± 1,  6 ± 6
    ("2", "0.001"): {42: (6.0, 1.0), 43: (8.0, 1.0), 44: (4.0, 1.0)},  # 6 ± 2,  1 ± 0
    ("4", "0.01"): {42: (5.0, math.nan)},  # one seed, never tested: 5 ± 0, no test column
}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A parent run and its 7 child runs; returns (client, experiment id, parent run id)."""
    folder = tmp_path_factory.mktemp("report")
    client = MlflowClient(f"sqlite:///{folder}/mlruns.db")
    experiment = client.create_experiment("report", artifact_location=folder.as_uri())
    parent = client.create_run(experiment, tags={"sepcore.kind": "sweep"}).info.run_id
    for (bands, lr), seeds in RUNS.items():
        for seed, (valid, vocals) in seeds.items():
            run = client.create_run(experiment, tags={MLFLOW_PARENT_RUN_ID: parent}).info.run_id
            params = {"search.model.num_bands": bands, "search.train.lr": lr,
                      "search.train.seed": str(seed), "model.num_bands": bands,
                      "train.seed": str(seed)}
            metrics = {"best_valid_sisdr": valid, "params": 1.5e6 * int(bands),
                       "epoch": 3.0 if lr == "0.001" else 1.0}
            if not math.isnan(vocals):
                metrics["test_vocals_SDR"] = vocals
            client.log_batch(run, params=[Param(k, v) for k, v in params.items()],
                             metrics=[Metric(k, v, 0, 0) for k, v in metrics.items()])
    client.create_run(experiment)  # a run of another sweep is not counted
    return client, experiment, parent


def test_rows_group_seeds_per_configuration(sweep):
    client, experiment, parent = sweep
    rows, columns = collect_rows(client, experiment, parent, "valid_sisdr", "max")
    assert columns == ["best_valid_sisdr", "test_vocals_SDR"]
    by_config = {r["config"]: r for r in rows}
    assert set(by_config) == {"model.num_bands=1, train.lr=0.001",
                              "model.num_bands=2, train.lr=0.001",
                              "model.num_bands=4, train.lr=0.01"}  # the seed is not a config
    one, two, four = (by_config[f"model.num_bands={b}, train.lr={lr}"]
                      for b, lr in RUNS)
    assert (one["runs"], two["runs"], four["runs"]) == (3, 3, 1)
    assert one["best_valid_sisdr"] == (2.0, 1.0)  # mean, sample standard deviation
    assert one["test_vocals_SDR"] == (6.0, 6.0)
    assert two["best_valid_sisdr"] == (6.0, 2.0) and two["test_vocals_SDR"] == (1.0, 0.0)
    assert four["best_valid_sisdr"] == (5.0, 0.0)
    assert all(math.isnan(v) for v in four["test_vocals_SDR"])
    assert (one["params"], four["params"]) == (1.5e6, 6e6)
    assert (one["epochs"], four["epochs"]) == (3.0, 1.0)


def test_best_configuration_first_for_max_and_min(sweep):
    client, experiment, parent = sweep
    rows, _ = collect_rows(client, experiment, parent, "valid_sisdr", "max")
    assert [r["best_valid_sisdr"][0] for r in rows] == [6.0, 5.0, 2.0]
    rows, _ = collect_rows(client, experiment, parent, "valid_sisdr", "min")
    assert [r["best_valid_sisdr"][0] for r in rows] == [2.0, 5.0, 6.0]  # the minimum is best


def test_a_configuration_without_the_metric_goes_last(sweep, tmp_path):
    client, experiment, parent = sweep
    run = client.create_run(experiment, tags={MLFLOW_PARENT_RUN_ID: parent}).info.run_id
    client.log_param(run, "search.model.num_bands", "8")  # crashed before its first report
    try:
        for mode in ("max", "min"):
            rows, _ = collect_rows(client, experiment, parent, "valid_sisdr", mode)
            assert rows[-1]["config"] == "model.num_bands=8" and len(rows) == 4
            assert math.isnan(rows[-1]["best_valid_sisdr"][0])
    finally:
        client.delete_run(run)


def test_text_csv_and_png_are_written_and_logged(sweep, tmp_path):
    client, experiment, parent = sweep
    text = sweep_report(client, experiment, parent, "valid_sisdr", "min", tmp_path / "out")
    lines = text.splitlines()
    assert lines[0].split() == ["config", "runs", "best_valid_sisdr", "vocals_SDR", "params",
                                "epochs"]
    assert lines[2].split() == ["model.num_bands=1,", "train.lr=0.001", "3", "2.00±1.00",
                                "6.00±6.00", "1.50M", "3"]
    assert lines[3].split()[-4:] == ["5.00", "-", "6.00M", "1"]  # one seed: no spread shown
    assert lines[4].split()[-4:] == ["6.00±2.00", "1.00", "3.00M", "3"]
    assert format_rows([], ["best_valid_sisdr"]).splitlines()[0].startswith("config")

    with open(tmp_path / "out" / "comparison.csv", newline="") as handle:
        table = list(csv.reader(handle))
    assert table[0] == ["config", "runs", "best_valid_sisdr_mean", "best_valid_sisdr_std",
                        "test_vocals_SDR_mean", "test_vocals_SDR_std", "params", "epochs"]
    assert len(table) == 1 + len(RUNS)
    first = table[1]
    assert first[0] == "model.num_bands=1, train.lr=0.001" and first[1] == "3"
    assert [float(v) for v in first[2:6]] == [2.0, 1.0, 6.0, 6.0]
    assert (tmp_path / "out" / "comparison.png").read_bytes()[:4] == b"\x89PNG"
    logged = {a.path for a in client.list_artifacts(parent, "report")}
    assert logged == {"report/comparison.txt", "report/comparison.csv",
                      "report/comparison.png", "report/report.html", "report/importance.csv",
                      "report/importance.png"}
    for name in ("report.html", "importance.csv", "importance.png"):
        assert (tmp_path / "out" / name).is_file()  # also written locally


def test_png_draws_only_the_best_configurations(tmp_path):
    """A sweep of hundreds of configurations gets a chart of the best ``PNG_ROWS`` (a bounded
    image), not one bar group per configuration."""
    import struct

    from sweeps.report import PNG_ROWS, write_png

    rows = [{"config": f"train.lr={i}", "runs": 1, "best_valid_sisdr": (float(300 - i), 0.0),
             "params": 1e6, "epochs": 3} for i in range(300)]
    path = write_png(rows, ["best_valid_sisdr"], tmp_path / "many.png")
    few = write_png(rows[:PNG_ROWS], ["best_valid_sisdr"], tmp_path / "few.png")

    def width(png) -> int:
        return struct.unpack(">I", png.read_bytes()[16:20])[0]  # IHDR width

    assert width(path) == width(few) <= (1.2 * PNG_ROWS + 2) * 90 + 1


def test_the_report_names_the_protocol_of_the_test_scores(tmp_path):
    """Trials tag the protocol their test scores were computed under (sweeps.trainable); the
    report's text starts with it, and with every one of them when the trials disagree."""
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns.db")
    experiment = client.create_experiment("protocol", artifact_location=tmp_path.as_uri())
    parent = client.create_run(experiment, tags={"sepcore.kind": "sweep"}).info.run_id
    lines = {"protocol sisec: 44100 Hz, 2 ch, BSSEval v4, median over windows then over songs",
             "protocol model: 8000 Hz, 1 ch, BSSEval v4, median over windows then over songs"}
    for line in sorted(lines):
        run = client.create_run(experiment, tags={MLFLOW_PARENT_RUN_ID: parent,
                                                  "sepcore.eval_protocol": line}).info.run_id
        client.log_batch(run, metrics=[Metric("best_valid_sisdr", 1.0, 0, 0)])
    text = sweep_report(client, experiment, parent, "valid_sisdr", "max", tmp_path / "out")
    head = text.splitlines()
    assert {head[0], head[1]} == {f"test scores: {line}" for line in lines}
    assert head[2].split()[:2] == ["config", "runs"]
    assert (tmp_path / "out" / "comparison.txt").read_text().startswith("test scores: ")


# --- the HTML report and parameter importance (sweeps.dashboard) ---------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def html_report(sweep, tmp_path_factory):
    """The report of the module's sweep, written once: (folder, client, parent run id)."""
    client, experiment, parent = sweep
    out = tmp_path_factory.mktemp("html")
    sweep_report(client, experiment, parent, "valid_sisdr", "max", out)
    return out, client, parent


def test_the_html_report_holds_its_figures_and_the_table(html_report):
    out, client, parent = html_report
    page = (out / "report.html").read_text()
    # self-contained: every figure inlined, nothing fetched (no http(s), no <link>, no src file)
    assert "http://" not in page and "https://" not in page and "<link" not in page
    sources = re.findall(r'<img class="plot" alt="([^"]+)" src="([^"]+)"', page)
    assert [alt for alt, _ in sources] == ["parallel coordinates", "parameter importance",
                                           "curves"][:len(sources)] and len(sources) >= 2
    for _, src in sources:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:4] == b"\x89PNG"
    assert "<td>2.00 ± 1.00</td>" in page and "<td>6.00 ± 2.00</td>" in page  # mean ± std
    rows = list(csv.DictReader((out / "importance.csv").open()))
    assert {r["param"] for r in rows} == {"model.num_bands", "train.lr"}
    assert sum(float(r["importance"]) for r in rows) == pytest.approx(1.0, abs=1e-4)
    assert all(r["trials"] == "7" and r["method"] == "fanova" for r in rows)
    logged = client.download_artifacts(parent, "report/report.html", str(out / "logged"))
    assert Path(logged).read_text() == page


@pytest.mark.skipif(not CHROMIUM, reason="needs Debian's chromium (make chromium)")
def test_the_html_report_renders_in_headless_chromium(html_report, tmp_path):
    """Chromium loads the file and its script counts the figures it decoded (an <img> whose
    PNG the browser could not decode has no natural width): all of them, on <body>."""
    out, _, _ = html_report
    page = (out / "report.html").resolve().as_uri()
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000"]
    dom = subprocess.run([CHROMIUM, *flags, "--dump-dom", page], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    total = (out / "report.html").read_text().count('<img class="plot"')
    assert re.search(r'data-plots="(\d+)/(\d+)"', dom).groups() == (str(total), str(total))


def test_published_numbers_stand_beside_the_rows_that_reproduce_them(sweep, tmp_path):
    """Rows of a paper table (``search.row`` with ``published``): the runner logs the paper's
    numbers as ``published.json`` on the parent run; the report prints ``measured [paper diff]``
    and the CSV has ``_published`` / ``_diff`` columns. Values exact in binary floating point."""
    import json

    from sweeps.report import PUBLISHED_ARTIFACT

    client, experiment, _ = sweep  # the module's store (a new sqlite store costs seconds)
    parent = client.create_run(experiment, tags={"sepcore.kind": "sweep"}).info.run_id
    published = {"M1": {"source": "Table 1", "params": 4e6, "test_vocals_SDR": 5.75,
                        "test_vocals_SIR": 14.5},
                 "M9": {"source": "Table 1", "test_vocals_SDR": 1.0}}  # a row never run
    client.log_text(parent, json.dumps(published), PUBLISHED_ARTIFACT)
    for row, seed, vocals in (("M1", 42, 6.0), ("M1", 43, 6.5), ("M2", 42, 7.0)):
        run = client.create_run(experiment, tags={MLFLOW_PARENT_RUN_ID: parent}).info.run_id
        client.log_batch(run, params=[Param("search.row", row), Param("search.train.seed",
                                                                      str(seed))],
                         metrics=[Metric(k, v, 0, 0) for k, v in {
                             "best_valid_sisdr": vocals, "test_vocals_SDR": vocals,
                             "params": 5e6, "epoch": 150.0}.items()])
    text = sweep_report(client, experiment, parent, "valid_sisdr", "max", tmp_path / "out")
    lines = text.splitlines()
    assert lines[0].split()[:5] == ["config", "runs", "best_valid_sisdr", "vocals_SDR",
                                    "vocals_SIR"]
    m2, m1 = lines[2], lines[3]  # best first
    # M1: vocals SDR 6.25 ± 0.35 over two seeds against the paper's 5.75: +0.50; SIR never
    # measured: the paper's value and n/a; params +25 %
    assert "6.25±0.35 [5.75 +0.50]" in m1 and "- [14.50 n/a]" in m1
    assert "5.00M [4.00M +25.0%]" in m1
    assert m2.startswith("row=M2") and "[" not in m2  # no published numbers for M2
    assert lines[-1].startswith("[published difference]") and "Table 1" in lines[-1]

    with open(tmp_path / "out" / "comparison.csv", newline="") as handle:
        table = {r["config"]: r for r in csv.DictReader(handle)}
    assert float(table["row=M1"]["test_vocals_SDR_published"]) == 5.75
    assert float(table["row=M1"]["test_vocals_SDR_diff"]) == 0.5
    assert float(table["row=M1"]["params_diff"]) == 25.0
    assert table["row=M1"]["published_source"] == "Table 1"
    assert table["row=M2"]["test_vocals_SDR_published"] == ""


def test_rows_name_the_test_songs_their_scores_average(tmp_path):
    """Trials scored on ``tune.test_max_tracks`` songs beside the best trial scored again on
    all of them: the text, CSV and HTML tables say how many songs each row averages."""
    from sweeps.dashboard import _table

    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns.db")
    experiment = client.create_experiment("songs", artifact_location=tmp_path.as_uri())
    parent = client.create_run(experiment, tags={"sepcore.kind": "sweep"}).info.run_id
    for bands, seed, tracks in (("1", 42, 50), ("1", 43, 10), ("2", 42, 10), ("4", 42, None)):
        run = client.create_run(experiment, tags={MLFLOW_PARENT_RUN_ID: parent}).info.run_id
        metrics = {"best_valid_sisdr": float(bands), "params": 1.0e6}
        if tracks is not None:
            metrics |= {"test_vocals_SDR": 1.0, "test_tracks": float(tracks)}
        client.log_batch(run, params=[Param("search.model.num_bands", bands),
                                      Param("search.train.seed", str(seed))],
                         metrics=[Metric(k, v, 0, 0) for k, v in metrics.items()])
    rows, columns = collect_rows(client, experiment, parent, "valid_sisdr", "max")
    assert [(r["config"], r["songs"]) for r in rows] == [
        ("model.num_bands=4", []), ("model.num_bands=2", [10]), ("model.num_bands=1", [10, 50])]
    text = format_rows(rows, columns).splitlines()
    assert text[0].split()[:3] == ["config", "runs", "songs"]
    assert [line.split()[2] for line in text[2:5]] == ["-", "10", "10-50"]
    assert text[-1].startswith("songs: the test songs a row's scores average")
    from sweeps.report import write_csv

    with open(write_csv(rows, columns, tmp_path / "c.csv")) as handle:
        table = list(csv.reader(handle))
    assert table[0][:3] == ["config", "runs", "test_songs"]
    assert [r[2] for r in table[1:]] == ["-", "10", "10-50"]
    html_table = _table(rows, columns)
    assert "<th>songs</th>" in html_table and "<td>10-50</td>" in html_table
    # without any test score there is no songs column
    no_test = [{**r, "songs": []} for r in rows]
    assert "songs" not in format_rows(no_test, columns).splitlines()[0]
