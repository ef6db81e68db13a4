"""The trainer's validation: batched chunks give the numbers of the per-item path.

``sepcore.train._validate`` runs consecutive validation items of one length as batches of
``train.batch_size`` and keeps everything on the device until the end. The reference here is the
per-item computation it replaced (one item at a time through ``apply_model``, the loss and
SI-SDR of each item on the CPU, averaged over items).
"""

import math

import numpy as np
import pytest
import torch

import sepcore.separate as separate_mod
import sepcore.train as train_mod
from sepcore.data import build_datasets
from sepcore.losses import build_loss
from sepcore.metrics.sisdr import si_sdr
from sepcore.models import build_model
from sepcore.models.oracles import with_references
from tests.sepcore.helpers import tiny_config


def _per_item(cfg, model, valid_set, loss_fn):
    """Validation one item at a time, as before batching."""
    losses, sdrs = [], []
    for index in range(len(valid_set)):
        mixture, targets = valid_set[index]
        runner, inputs = with_references(model, mixture[None], targets[None])
        estimate = separate_mod.apply_model(runner, inputs, segment=cfg.eval.segment,
                                            overlap=cfg.eval.overlap, device="cpu")
        losses.append(loss_fn(estimate, targets[None]).item())
        sdrs.append(si_sdr(estimate, targets[None]).mean(dim=(0, 2)))
    per_source = torch.stack(sdrs).nanmean(dim=0)
    return float(np.mean(losses)), float(per_source.mean()), per_source.tolist()


@pytest.mark.parametrize("loss", ["l1", "sisdr"])
def test_batched_validation_equals_the_per_item_path(synth_root, cache_dir, tmp_path,
                                                     monkeypatch, loss):
    """Chunks of 2 s of a 12 s song at batch 4 (a full batch, then a shorter one): the loss,
    mean SI-SDR and per-source SI-SDR are those of the per-item path up to float rounding
    (batched convolutions may sum in another order)."""
    cfg = tiny_config(synth_root, tmp_path, cache_dir, size="mini", batch_size=4, loss=loss)
    cfg.data.valid_segment = 2.0
    cfg.eval.segment = 0.75  # several inference chunks per item, cross-faded (gLN: blended)
    torch.manual_seed(0)
    model = build_model(cfg.model_name, cfg.model).eval()
    _, valid_set = build_datasets(cfg.data, seed=0)
    loss_fn = build_loss(cfg.train.loss)
    batches = []
    real = separate_mod.apply_model

    def spy(runner, inputs, **kwargs):
        batches.append(inputs.shape[0])
        return real(runner, inputs, **kwargs)

    monkeypatch.setattr(separate_mod, "apply_model", spy)
    valid_loss, valid_sisdr, per_source = train_mod._validate(cfg, model, valid_set, loss_fn,
                                                              torch.device("cpu"))
    assert batches == [4, 2]
    ref_loss, ref_sisdr, ref_per_source = _per_item(cfg, model, valid_set, loss_fn)
    assert math.isfinite(valid_loss) and math.isfinite(valid_sisdr)
    assert valid_loss == pytest.approx(ref_loss, rel=1e-4)
    assert valid_sisdr == pytest.approx(ref_sisdr, abs=1e-3)  # dB
    assert list(per_source) == list(cfg.audio.sources)
    assert list(per_source.values()) == pytest.approx(ref_per_source, abs=1e-3)


def test_items_of_other_lengths_are_not_batched():
    """Items of another length than their neighbours (whole songs with valid_segment null, a
    song shorter than one chunk) start a batch of their own, in order."""
    items = [(torch.zeros(1, n), torch.zeros(2, 1, n)) for n in (5, 5, 5, 7, 5, 5)]
    shapes = [(m.shape[0], m.shape[-1]) for m, _ in train_mod._valid_batches(items, 2, "cpu")]
    assert shapes == [(2, 5), (1, 5), (1, 7), (2, 5)]
