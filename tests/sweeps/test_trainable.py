"""The trainable's hook, without Ray: what an epoch logs is logged before its report (Tune may
stop the trial inside ``tune.report``), and where a trial ran is tagged per attempt."""

from __future__ import annotations

import pytest

import sweeps.trainable as trainable
from sweeps.trainable import TuneHook, node_tags, trial_num_workers


class RecordingRun:
    def __init__(self, hook_ref):
        self.hook_ref = hook_ref
        self.events: list[tuple] = []

    def log_metrics(self, metrics, step=None):
        self.events.append(("metrics", step))

    def log_artifact(self, path, folder=None):
        # which epochs the loss curve holds when it is logged
        self.events.append(("artifact", path.name, len(self.hook_ref[0].history)))

    def spill_into(self, folder):
        return 0  # nothing left unsent


def _metrics(epoch: int) -> dict:
    return {"epoch": epoch, "train_loss": 1.0 / epoch, "valid_loss": 1.2 / epoch,
            "valid_sisdr": float(epoch)}


def test_everything_an_epoch_logs_precedes_its_report(tmp_path, monkeypatch):
    """ASHA stops a trial inside the report of its last epoch (the training thread ends there
    with SystemExit): the loss curve of that epoch and the closing work must already be logged."""
    ref = []
    run = RecordingRun(ref)
    finalized = []

    def report(metrics, checkpoint=None):
        run.events.append(("report", metrics["epoch"]))
        if metrics["epoch"] == 2:
            raise SystemExit(0)  # what Ray's session does when the scheduler stops the trial

    monkeypatch.setattr(trainable.tune, "report", report)
    hook = TuneHook(run, tmp_path, "t1", last_epoch=2,
                    finalize=lambda epoch: (finalized.append(epoch),
                                            run.events.append(("finalize", epoch))))
    ref.append(hook)
    hook.on_epoch_end(_metrics(1))
    with pytest.raises(SystemExit):
        hook.on_epoch_end(_metrics(2))
    assert run.events == [
        ("metrics", 1), ("artifact", "loss_curve.png", 1), ("report", 1),
        ("metrics", 2), ("artifact", "loss_curve.png", 2), ("finalize", 2), ("report", 2)]
    assert finalized == [2]


def test_node_tags_keep_every_attempt(monkeypatch):
    import ray

    class Context:
        node = "a" * 56

        def get_node_id(self):
            return self.node

    context = Context()
    monkeypatch.setattr(ray, "get_runtime_context", lambda: context)
    monkeypatch.setattr(ray.util, "get_node_ip_address", lambda: "10.0.0.7")
    first = node_tags({})
    assert first["sepcore.node"] == "a" * 56 and first["sepcore.node_ip"] == "10.0.0.7"
    assert first["sepcore.nodes"] == "a" * 56 and first["sepcore.host"]
    assert node_tags(first)["sepcore.nodes"] == "a" * 56  # a retry on the same node
    context.node = "b" * 56
    again = node_tags(first)
    assert again["sepcore.node"] == "b" * 56
    assert again["sepcore.nodes"] == f"{'a' * 56},{'b' * 56}"


@pytest.mark.parametrize(("value", "device", "assigned", "expected"), [
    ("auto", "cuda", {"CPU": 4.0, "GPU": 0.5}, 3),  # the trial's share of the node, less one
    ("auto", "cuda:0", {"CPU": 1.0, "GPU": 1.0}, 0),
    ("auto", "cuda", {"CPU": 0.5, "GPU": 0.5}, 0),
    ("auto", "cuda", {"GPU": 1.0}, 0),
    ("auto", "cpu", {"CPU": 8.0}, 0),  # CPU trials build items in the training process
    (2, "cuda", {"CPU": 8.0}, 2), (3, "cpu", {"CPU": 8.0}, 3),  # an integer is kept
])
def test_auto_workers_are_the_trials_cpus_less_one_on_cuda(value, device, assigned, expected,
                                                           monkeypatch):
    import ray

    class Context:
        def get_assigned_resources(self):
            return assigned

    monkeypatch.setattr(ray, "get_runtime_context", lambda: Context())
    monkeypatch.setattr("sepcore.data.loader.usable_cores", lambda: 64)  # not the node's cores
    assert trial_num_workers(value, device) == expected


class TestRun:
    __test__ = False

    def __init__(self):
        self.metrics, self.tags, self.artifacts = {}, {}, {}

    def log_metrics(self, metrics, step=None):
        self.metrics.update(metrics)

    def set_tags(self, tags):
        self.tags.update(tags)

    def log_artifact(self, path, folder=None):
        self.artifacts[path.name] = path.read_text()


@pytest.mark.parametrize("protocol", ["sisec", "model"])
def test_test_scores_follow_the_checkpoints_protocol_and_say_so(protocol, synth_root, cache_dir,
                                                                tmp_path, monkeypatch):
    import json

    from sepcore.checkpoint import Checkpoint, save_checkpoint
    from tests.sepcore.helpers import experiment_config
    from tests.sepcore.toy_models import register_toy_models

    register_toy_models(monkeypatch)
    cfg = experiment_config({"name": "true_sources", "leak": 0.1}, synth_root, tmp_path / "run",
                            cache_dir, rate=8000, channels=1,
                            evaluation={"protocol": protocol, "device": "cpu"})
    checkpoint = save_checkpoint(tmp_path / "run" / "best.safetensors",
                                 Checkpoint(config=cfg.to_dict(), model_state={}))
    run = TestRun()
    trainable.log_test_metrics(run, checkpoint, max_tracks=1, step=3)
    rate, channels = (44100, 2) if protocol == "sisec" else (8000, 1)
    line = run.tags["sepcore.eval_protocol"]
    assert line.startswith(f"protocol {protocol}: {rate} Hz, {channels} ch, BSSEval v4")
    assert run.artifacts["test_results.txt"].splitlines()[0] == line
    summary = json.loads(run.artifacts["summary.json"])
    assert (summary["protocol"], summary["sample_rate"], summary["channels"]) == (
        protocol, rate, channels)
    assert run.metrics["test_vocals_SDR"] == pytest.approx(summary["scores"]["vocals"]["SDR"])
    assert run.metrics["test_tracks"] == len(summary["tracks"]) == 1  # max_tracks songs


def test_deterministic_mode_follows_the_trial_and_is_not_reset_for_nothing(monkeypatch):
    import torch

    from sweeps.trainable import set_deterministic

    calls = []
    real = torch.use_deterministic_algorithms
    before = (torch.are_deterministic_algorithms_enabled(),
              torch.is_deterministic_algorithms_warn_only_enabled())
    real(False)  # an earlier test's fit(train.deterministic=true) may have left it on
    monkeypatch.setattr(torch, "use_deterministic_algorithms",
                        lambda flag, **kw: (calls.append(flag), real(flag, **kw)))
    try:
        set_deterministic(False)  # already off: no call (it would import torch's compiler)
        assert calls == [] and not torch.are_deterministic_algorithms_enabled()
        set_deterministic(True)  # a trial asks for it
        assert calls == [True] and torch.are_deterministic_algorithms_enabled()
        set_deterministic(True)
        assert calls == [True]
        set_deterministic(False)  # the next trial in the same worker does not inherit it
        assert calls == [True, False] and not torch.are_deterministic_algorithms_enabled()
    finally:
        real(before[0], warn_only=before[1])
