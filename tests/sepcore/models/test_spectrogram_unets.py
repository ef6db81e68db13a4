"""U-Net (Jansson et al. 2017) and Fusion-Net (Li et al.): Table I shapes, any length, soft masks,
save/load, parameter counts and one training step."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import sepcore
from sepcore.errors import ConfigError
from sepcore.info import model_info
from sepcore.models import available_models, build_model
from sepcore.models.fusionnet import FusionNet2d, FusionNetConfig
from sepcore.models.unet import UNet2d, UNetConfig

NAMES = ("unet", "fusionnet")
RATE = 8192
PAPER_STFT = {"n_fft": 1024, "hop": 768, "patch_frames": 128}
SMALL_STFT = {"n_fft": 256, "hop": 192, "patch_frames": 16}
CONFIGS = Path(sepcore.__file__).parent / "configs" / "paper"

# The Fusion-Net paper (Li, Qian, Hasegawa-Johnson & Akagi), Table I
# (H × W × D = bins × frames × channels): block -> (input size, output size)
TABLE_I = {
    "DS1": ((512, 128, 1), (256, 64, 16)),
    "DS2": ((256, 64, 16), (128, 32, 32)),
    "DS3": ((128, 32, 32), (64, 16, 64)),
    "DS4": ((64, 16, 64), (32, 8, 128)),
    "DS5": ((32, 8, 128), (16, 4, 256)),
    "DS6": ((16, 4, 256), (8, 2, 512)),
    "US1": ((16, 4, 256), (32, 8, 128)),
    "US2": ((32, 8, 128), (64, 16, 64)),
    "US3": ((64, 16, 64), (128, 32, 32)),
    "US4": ((128, 32, 32), (256, 64, 16)),
    "US5": ((256, 64, 16), (512, 128, 1)),
    "US6": ((512, 128, 1), (512, 128, 1)),
}


def small(name: str, stft: dict | None = None, **over) -> torch.nn.Module:
    params = {"stft": dict(stft or SMALL_STFT), "channels": [4, 8], **over}
    return build_model(name, params)


def hwd(shape: torch.Size) -> tuple[int, int, int]:
    """(N, D, H, W) -> the paper's H × W × D."""
    return (shape[2], shape[3], shape[1])


def test_registry_has_both():
    assert set(NAMES) <= set(available_models())


def test_fusionnet_every_block_matches_table_1():
    torch.manual_seed(0)
    net = FusionNet2d(FusionNetConfig(), out_channels=1).eval()
    seen: dict[str, tuple] = {}
    handles = [block.register_forward_hook(
        lambda _m, args, out, name=name: seen.__setitem__(name, (hwd(args[0].shape),
                                                                 hwd(out.shape))))
        for name, block in net.named_blocks()]
    with torch.no_grad():
        out = net(torch.rand(1, 1, 512, 128))
    for h in handles:
        h.remove()
    assert seen == TABLE_I
    assert out.shape == (1, 1, 512, 128) and 0 <= out.min() and out.max() <= 1


def test_unet_layers_at_paper_size():
    """Jansson et al. (and Li et al.'s Table I sizes): 512×128×1 → … → 8×2×512 → … → 512×128×1."""
    net = UNet2d(UNetConfig(), out_channels=1).eval()
    seen: list[tuple] = []
    for block in [*net.encoder, *net.decoder]:
        block.register_forward_hook(lambda _m, _a, out: seen.append(hwd(out.shape)))
    with torch.no_grad():
        net(torch.rand(1, 1, 512, 128))
    down = [v for _, v in TABLE_I.values()][:6]  # DS1..DS6 outputs
    up = [(16, 4, 256), (32, 8, 128), (64, 16, 64), (128, 32, 32), (256, 64, 16), (512, 128, 1)]
    assert seen == down + up
    dropouts = [isinstance(b.drop, torch.nn.Dropout) and b.drop.p == 0.5 for b in net.decoder]
    assert dropouts == [True, True, True, False, False, False]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("channels", [1, 2])
def test_any_length_gives_exactly_t_samples(name, channels):
    model = small(name, stft=PAPER_STFT, audio_channels=channels).eval()
    for length in (1, 1000, 3 * RATE + 17):
        with torch.no_grad():
            out = model(torch.randn(2, channels, length))
        assert out.shape == (2, 2, channels, length)
        assert torch.isfinite(out).all()


def test_paper_unet_any_length():
    model = build_model("unet", {}).eval()
    for length in (1, 1000, 3 * RATE + 17):
        with torch.no_grad():
            out = model(torch.randn(1, 1, length))
        assert out.shape == (1, 2, 1, length) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("stft,length", [
    (SMALL_STFT, 5000),  # tail 5000 % 192 = 8 samples after the last hop
    (SMALL_STFT, 3990),  # tail 150 > n_fft / 2: beyond the reach of the last centred frame
    (PAPER_STFT, 3 * 768 + 700),  # the paper's hop 768 > n_fft / 2 = 512
])
def test_soft_masks_sum_to_the_mixture(name, train, stft, length):
    """Eq. (2)'s masks sum to one, so the estimates sum to the mixture's own STFT → iSTFT."""
    torch.manual_seed(0)
    model = small(name, stft=stft, audio_channels=2).train(train)
    x = torch.randn(2, 2, length)
    with torch.no_grad():
        total = model(x).sum(dim=1)  # (B, C, T)
        own = model.istft(model.stft(x.reshape(4, -1)), length).reshape(2, 2, -1)
    assert torch.allclose(total, own, atol=1e-4)
    assert torch.allclose(total, x, atol=1e-4)


@pytest.mark.parametrize("name", NAMES)
def test_sigmoid_masks_do_not_partition(name):
    """Without eq. (2) (Jansson et al.'s lone sigmoid masks) the estimates need not sum up."""
    torch.manual_seed(0)
    model = small(name, mask="sigmoid").eval()
    x = torch.randn(1, 1, 5000)
    with torch.no_grad():
        assert not torch.allclose(model(x).sum(dim=1), x, atol=1e-2)


@pytest.mark.parametrize("name", NAMES)
def test_parameter_counts_match_the_yaml_comments(name):
    path = CONFIGS / f"{name}.yaml"
    match = re.search(rf"`sep info paper/{name}\.yaml`: ([\d,]+)", path.read_text())
    assert match, f"{path} has no measured parameter count"
    written = int(match.group(1).replace(",", ""))
    info = model_info(str(path))
    assert info["params"] == written
    assert info["sample_rate"] == RATE and info["audio_channels"] == 1
    assert info["sources"] == ["vocals", "accompaniment"] and info["frame_hop"] == 768


@pytest.mark.parametrize("name", NAMES)
def test_training_steps_reduce_the_loss(name):
    torch.manual_seed(0)
    model = small(name)
    x = torch.randn(4, 1, 3000)
    target = torch.stack([0.3 * x, 0.7 * x], dim=1)  # (B, S, C, T): constant masks reach it
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(5):
        opt.zero_grad()
        loss = (model(x) - target).abs().mean()
        loss.backward()
        if not losses:
            missing = [n for n, p in model.named_parameters() if p.grad is None]
            assert not missing, missing
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("name", NAMES)
def test_shared_network_has_s_outputs(name):
    model = small(name, shared_network=True, sources=["vocals", "drums", "bass", "other"])
    assert len(model.networks) == 1
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 1, 3000)).shape == (1, 4, 1, 3000)


def test_long_song_through_apply_model():
    from sepcore.separate import apply_model

    model = small("unet").eval()
    out = apply_model(model, torch.randn(1, 3 * RATE + 5), segment=1.0)
    assert out.shape == (2, 1, 3 * RATE + 5) and torch.isfinite(out).all()


@pytest.mark.parametrize("name,params,key", [
    ("unet", {"mask": "ratio"}, "model.mask"),
    ("unet", {"mask": "soft", "sources": ["vocals"]}, "model.mask"),
    ("unet", {"stft": {"n_fft": 1024, "patch_frames": 100}}, "model.stft.patch_frames"),
    ("unet", {"stft": {"n_fft": 1000}}, "model.stft.n_fft"),
    ("unet", {"stft": {"hop": 1024}}, "model.stft.hop"),
    ("unet", {"dropout": 1.0}, "model.dropout"),
    ("fusionnet", {"res_layers": 0}, "model.res_layers"),
    ("fusionnet", {"kernel_size": 4}, "model.kernel_size"),
])
def test_bad_configs_name_the_key(name, params, key):
    with pytest.raises(ConfigError) as err:
        build_model(name, params)
    assert err.value.key == key
