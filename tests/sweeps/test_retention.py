"""Trial-side checkpoint retention (:mod:`sweeps.retention`): a trial keeps its best
``num_to_keep`` checkpoints by the sweep metric and its latest in Tune's storage, Tune keeps no
count of its own (so it forces no experiment snapshot), the sweep picks a best checkpoint the
trial kept, and a trial whose recorded latest checkpoint is gone resumes from the newest it kept."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest
from pyarrow.fs import LocalFileSystem

from sweeps.retention import RECORD, KeepPolicy, Retention, best_checkpoint

# the metric per epoch: a tie (epochs 2 and 4) and a NaN (epoch 5, as a diverged epoch reports)
SCORES = [1.0, 3.0, 2.0, 3.0, math.nan, 0.5]
POLICY = KeepPolicy("score", "max", 2)


def scored_trial(config):
    """Reports SCORES with a checkpoint each; fails once after epoch 3 (its retry resumes)."""
    from ray import tune

    retention = Retention(config["policy"])
    checkpoint = retention.resume_from(tune.get_checkpoint())
    start = 0
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            start = int((Path(folder) / "epoch").read_text())
        (Path(config["marks"]) / f"resumed-at-{start}").touch()
    for epoch in range(start + 1, len(SCORES) + 1):
        fail_mark = Path(config["marks"]) / "failed"
        if epoch == 4 and not fail_mark.exists():
            fail_mark.touch()
            raise RuntimeError("a trial dies once")
        with tempfile.TemporaryDirectory() as folder:
            (Path(folder) / "epoch").write_text(str(epoch))
            retention.report({"epoch": epoch, "score": SCORES[epoch - 1]}, folder)


def test_a_trial_keeps_its_best_and_latest_checkpoints_through_a_retry(local_ray, tmp_path):
    from ray import tune

    marks = tmp_path / "marks"
    marks.mkdir()
    tuner = tune.Tuner(
        scored_trial, param_space={"policy": POLICY, "marks": str(marks)},
        tune_config=tune.TuneConfig(metric="score", mode="max", num_samples=1),
        run_config=tune.RunConfig(
            name="keep", storage_path=str(tmp_path / "ray"), callbacks=[],
            failure_config=tune.FailureConfig(max_failures=1),
            checkpoint_config=tune.CheckpointConfig(
                num_to_keep=None, checkpoint_score_attribute="score",
                checkpoint_score_order="max")))
    (result,) = list(tuner.fit())
    assert result.error is None and result.metrics["epoch"] == len(SCORES)
    assert [p.name for p in marks.iterdir() if p.name.startswith("resumed")] == ["resumed-at-3"]

    def epoch_of(checkpoint):
        return int((Path(checkpoint.path) / "epoch").read_text())

    trial_dir = Path(result.path)
    left = sorted(p for p in trial_dir.glob("checkpoint_*"))
    # best two by score: epoch 4 (3.0, the later of the tie) and epoch 2 (3.0); latest: epoch 6
    assert sorted(int((p / "epoch").read_text()) for p in left) == [2, 4, 6]
    record = json.loads((trial_dir / RECORD).read_text())
    assert sorted(e["name"] for e in record) == [p.name for p in left]
    # Tune recorded every checkpoint; the sweep's pick is one the trial kept, the latest too
    assert len(result.best_checkpoints) == len(SCORES)
    best = best_checkpoint(result, "score", "max")
    assert Path(best.path).is_dir() and epoch_of(best) == 4
    assert epoch_of(result.checkpoint) == 6


def _commit(retention: Retention, trial_dir: Path, index: int, value: float):
    """What a report leaves: the checkpoint folder in storage, then the trial's commit."""
    from ray import tune

    path = trial_dir / f"checkpoint_{index:06d}"
    path.mkdir(parents=True)
    (path / "epoch").write_text(str(index))
    checkpoint = tune.Checkpoint(path=str(path), filesystem=LocalFileSystem())
    retention.commit(checkpoint, {"score": value})
    return checkpoint


@pytest.mark.parametrize("num_to_keep", [1, 2, 3])
def test_retention_keeps_best_num_to_keep_and_latest(tmp_path, num_to_keep):
    values = [0.2, 0.9, 0.1, 0.9, 0.5, math.nan, 0.3]
    retention = Retention(KeepPolicy("score", "max", num_to_keep))
    for index, value in enumerate(values):
        _commit(retention, tmp_path, index, value)
    # by value, ties to the later, NaN last; plus the latest (index 6)
    ranked = [3, 1, 4, 6, 0, 2, 5]
    expected = set(ranked[:num_to_keep]) | {len(values) - 1}
    assert {int(p.name[-6:]) for p in tmp_path.glob("checkpoint_*")} == expected
    minimum = Retention(KeepPolicy("score", "min", 1))
    for index, value in enumerate([0.5, math.nan, 0.2, 0.7], start=10):
        _commit(minimum, tmp_path / "min", index, value)
    assert {p.name for p in (tmp_path / "min").glob("checkpoint_*")} == {
        "checkpoint_000012", "checkpoint_000013"}


def test_a_restored_trial_resumes_from_the_newest_checkpoint_it_kept(tmp_path):
    """Tune's saved state can be older than a trial's last reports (it is saved on a period, no
    longer at every checkpoint): the checkpoint it names may be one the trial deleted since."""
    first = Retention(POLICY)
    stale = _commit(first, tmp_path, 0, 0.1)  # the latest in Tune's saved state
    for index, value in enumerate([5.0, 1.0, 0.2], start=1):
        _commit(first, tmp_path, index, value)
    assert not Path(stale.path).exists()  # kept: 1 and 2 (best), 3 (latest)

    retry = Retention(POLICY)
    resumed = retry.resume_from(stale)
    assert Path(resumed.path).name == "checkpoint_000003"  # the newest it kept
    assert [e["name"] for e in retry.entries] == [e["name"] for e in first.entries]
    # the retry goes on with the same record: its next report drops what the policy drops
    _commit(retry, tmp_path, 4, 0.1)
    assert {p.name for p in tmp_path.glob("checkpoint_*")} == {
        "checkpoint_000001", "checkpoint_000002", "checkpoint_000004"}
    # the sweep's pick: the trial's best, though Tune's restored records name a better one
    # that the trial deleted and lack the trial's later ones
    tune_records = SimpleNamespace(path=str(tmp_path), filesystem=LocalFileSystem(),
                                   best_checkpoints=[(stale, {"score": 9.0})])
    assert Path(best_checkpoint(tune_records, "score", "max").path).name == "checkpoint_000001"
    # Tune's checkpoint when it still exists; nothing to resume from when all are gone
    kept = Retention(POLICY).resume_from(resumed.__class__(path=str(tmp_path / "checkpoint_000004"),
                                                           filesystem=LocalFileSystem()))
    assert Path(kept.path).name == "checkpoint_000004"
    for folder in tmp_path.glob("checkpoint_*"):
        for file in folder.iterdir():
            file.unlink()
        folder.rmdir()
    assert Retention(POLICY).resume_from(stale) is None
