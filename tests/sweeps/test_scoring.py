"""The test scoring after a sweep runs in Ray tasks (not on the driver): each fetches its pushed
checkpoint from the store (SHA-256 verified), scores it and logs to its trial's run; a failed task
is a warning naming its trial and does not stop the others."""

from __future__ import annotations

import logging
import os

from sweeps.scoring import ScoreJob, Scoring, score_trials


def test_scoring_runs_in_ray_tasks_and_logs_to_the_trials_run(local_ray, synth_root, cache_dir,
                                                              tmp_path, caplog):
    from mlflow import MlflowClient

    from sepcore.checkpoint import Checkpoint, save_checkpoint
    from sepcore.models import build_model
    from services.store import open_store
    from tests.sepcore.helpers import tiny_config

    cfg = tiny_config(synth_root, tmp_path / "run", cache_dir, model="multiband")
    model = build_model(cfg.model_name, cfg.model)
    local = save_checkpoint(tmp_path / "run" / "last.safetensors",
                            Checkpoint(config=cfg.to_dict(), model_state=model.state_dict()))
    store_uri = str(tmp_path / "store")
    stored = open_store(store_uri).put(local, "tiny/exp/t1/model.safetensors")
    uri = f"sqlite:///{tmp_path}/mlruns.db"
    client = MlflowClient(uri)
    experiment = client.create_experiment("scoring", artifact_location=str(tmp_path / "art"))
    runs = {t: client.create_run(experiment, run_name=t).info.run_id for t in ("t1", "t2")}
    node_cache = tmp_path / "node-cache"
    scoring = Scoring(uri, store_uri, str(node_cache), credentials=("user", "s3cret"))
    assert "s3cret" not in repr(scoring)  # the task's argument never prints the password

    jobs = [ScoreJob("t1", runs["t1"], stored.uri, stored.sha256, max_tracks=1, step=3),
            # a checkpoint whose bytes are not the ones pushed: refused, the other one scored
            ScoreJob("t2", runs["t2"], stored.uri, "0" * 64, max_tracks=1, step=3)]
    with caplog.at_level(logging.WARNING, logger="sweeps.scoring"):
        done = score_trials(scoring, jobs, cpu=1, gpu=0)

    assert list(done) == ["t1"]
    assert done["t1"]["pid"] != os.getpid()  # scored in a Ray worker, not on the driver
    assert done["t1"]["device"] == "cpu"  # no GPU from Ray: the CPU
    metrics = client.get_run(runs["t1"]).data.metrics
    assert metrics["test_tracks"] == 1 and "test_vocals_SDR" in metrics
    assert client.get_run(runs["t1"]).data.tags["sepcore.eval_protocol"].startswith("protocol")
    assert {a.path for a in client.list_artifacts(runs["t1"])} >= {"test_results.txt",
                                                                    "summary.json"}
    assert (node_cache / "checkpoints" / f"{stored.sha256}.safetensors").is_file()
    assert not any(k.startswith("test_") for k in client.get_run(runs["t2"]).data.metrics)
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.startswith("trial t2: test scoring failed (ArtifactError")
    assert "\n" not in warning
