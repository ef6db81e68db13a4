"""FB-IRM: the oracle ideal-ratio mask on a learnt encoding, trained without a separator."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sepcore.config import config_from_dict
from sepcore.models import build_model

SMALL_ENC = {"N": 32, "L": 16, "stride": 8}


def _fb_irm(**encoder):
    return build_model("fb_irm", {"audio_channels": 2, "sample_rate": 8000,
                                  "encoder": {**SMALL_ENC, **encoder}})


def test_fb_irm_masks_partition_the_latent_and_need_references():
    model = _fb_irm().eval()
    refs = torch.randn(2, 2, 2, 1000)
    masks = model.ratio_masks(refs)
    assert torch.allclose(masks.sum(dim=1), torch.ones_like(masks[:, 0]), atol=1e-5)
    mixture = refs.sum(dim=1)
    out = model(mixture, references=refs)
    assert out.shape == refs.shape
    with torch.no_grad():
        whole = model.decode(model.encode(mixture).unsqueeze(1))[:, 0]
    assert torch.allclose(out.sum(dim=1), whole, atol=1e-4)
    with pytest.raises(ValueError, match="oracle"):
        model(mixture)


def _two_tone_batch(n=8, length=2000):
    """A low tone and a high tone with random frequencies and phases, (B, 2, 1, T)."""
    t = torch.arange(length) / 8000
    low = torch.sin(2 * torch.pi * (100 + 400 * torch.rand(n, 1)) * t + 6 * torch.rand(n, 1))
    high = 0.7 * torch.sin(2 * torch.pi * (1500 + 1500 * torch.rand(n, 1)) * t
                           + 6 * torch.rand(n, 1))
    return torch.stack([low, high], dim=1)[:, :, None]


@pytest.mark.slow
def test_fb_irm_trains_an_encoder_decoder_pair_without_a_separator():
    """The thesis's use of FB-IRM: train only an encoder/decoder through the oracle masks."""
    from sepcore.losses import build_loss
    from sepcore.metrics.sisdr import si_sdr

    torch.manual_seed(0)
    model = build_model("fb_irm", {"audio_channels": 1, "sample_rate": 8000,
                                   "encoder": {"N": 64, "L": 16, "stride": 8}})
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    loss_fn = build_loss("l1", None)
    refs = _two_tone_batch()
    with torch.no_grad():
        untrained = si_sdr(model(refs.sum(1), references=refs), refs).mean()
    for _ in range(200):
        refs = _two_tone_batch()
        opt.zero_grad()
        loss_fn(model(refs.sum(1), references=refs), refs).backward()
        opt.step()
    refs = _two_tone_batch()
    with torch.no_grad():
        trained = si_sdr(model(refs.sum(1), references=refs), refs).mean(dim=(0, 2))
        mixture = si_sdr(refs.sum(1, keepdim=True).expand_as(refs), refs).mean(dim=(0, 2))
    assert (trained > mixture + 10).all(), (trained, mixture)
    assert trained.mean() > untrained + 10


def test_fb_irm_trains_evaluates_and_refuses_plain_separation(synth_root, cache_dir, tmp_path):
    from sepcore.errors import DataError
    from sepcore.evaluate import evaluate_checkpoint
    from sepcore.separate import separate_files
    from sepcore.train import fit

    cfg = config_from_dict({
        "model": {"name": "fb_irm",
                  "encoder": {"N": 32, "L": 16, "encoding": "hybrid", "filterbank": "pmpgtf"}},
        "audio": {"sample_rate": 8000, "channels": 1},
        "data": {"root": str(synth_root), "segment": 1.0, "samples_per_track": 4,
                 "valid_segment": 4.0, "cache_dir": str(cache_dir)},
        "train": {"epochs": 1, "steps_per_epoch": 3, "batch_size": 2, "out_dir": str(tmp_path),
                  "progress": False, "lr": 1e-3},
        "eval": {"segment": 4.0},
    })
    result = fit(cfg)
    assert result.global_step == 3 and np.isfinite(result.history[-1]["valid_sisdr"])
    evaluation = evaluate_checkpoint(result.last_checkpoint, max_tracks=1, progress=False)
    assert set(evaluation.scores) == {"vocals", "accompaniment"}
    song = next((synth_root / "test").iterdir()) / "mixture.wav"
    with pytest.raises(DataError, match="oracle"):
        separate_files([song], result.last_checkpoint, tmp_path / "sep", progress=False)


