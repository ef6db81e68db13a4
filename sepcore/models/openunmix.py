"""Open-Unmix: one BiLSTM magnitude-masking network per target, multichannel Wiener filter.

Reads like the paper: Stöter, Uhlich, Liutkus and Mitsufuji, "Open-Unmix - A Reference
Implementation for Music Source Separation", JOSS 4(41), 2019 (and its reference code,
``openunmix/model.py`` and ``openunmix/filtering.py``), as the thesis (Mocanu, "Musical source
separation", master thesis, EPFL / Logitech, 2020) describes it in §3.2.1 (Fig. 3.2) and uses it
in chapters 4 and 6:

- STFT inside the model (Hann window ``n_fft`` 4096, hop 1024 at 44.1 kHz); the magnitude of every
  channel is the input, cropped to ``max_bin`` bins (the bins up to ``bandwidth`` = 16 kHz: 1487);
- input mean/scale (learnable, initialised 0/1 here; the reference code initialises them from
  dataset statistics) → fc1 (no bias) → BN → tanh → 3-layer BiLSTM (512 → 256 per direction,
  dropout 0.4 between layers) → concatenation skip [fc1 out, LSTM out] → fc2 (no bias) → BN → ReLU
  → fc3 (no bias, all ``n_fft/2 + 1`` bins × channels) → BN → output scale/mean → ReLU → mask
  multiplied on the mixture magnitude;
- one network per target (``sources``), as the thesis stresses ("the network only separates one
  source"); their parameter names are ``unmix.<source>.<layer>.<param>`` (e.g.
  ``unmix.vocals.fc3.weight``), which the transfer set-ups of chapter 6 address by pattern;
- reconstruction: in training mode each target's magnitude gets the mixture phase (the
  differentiable path the trainer's loss sees); in eval mode the multichannel Wiener filter
  (:func:`wiener`, ``wiener_iterations`` EM iterations, ``softmask``) of the reference
  ``Separator`` post-processes the estimates.

Choices where the paper is silent or sepcore differs:

- The loss is the trainer's (``train.loss``, ``mse`` in ``paper/umx.yaml``) on the waveforms
  after the iSTFT with the mixture phase, not MSE on magnitudes: the call contract keeps the
  trainer domain-free (as ``sepcore.models.unet``).
- The STFT is centred with zero padding after the end is zero padded to a multiple of the hop, so
  any length (T = 1 included) gives ``1 + ceil(T / hop)`` frames and the iSTFT crops to exactly T.
  The reference code trains with ``center=False``; centring only shifts the frame grid.
- The Wiener filter is written in torch (batched, on the model's device, inside ``forward``)
  rather than calling ``norbert`` (numpy, one track at a time, CPU round trip); ``norbert`` is the
  reference it is tested against (``tests/sepcore/models/test_openunmix.py``). As in
  ``openunmix.filtering.wiener``, the mixture is scaled down by ``max(1, max|X| / 10)`` for
  numerical stability during EM.
- ``softmask: true`` initialises the filter with ratio masks v_j / Σ v (the estimates then sum to
  the mixture even with 0 iterations); ``false`` (the reference default) with each target's
  magnitude and the mixture phase. With >= 1 iteration the estimates sum to the mixture up to the
  filter's regularisation.
- ``receptive_field = None``: the BiLSTM sees the whole input and BN/Wiener statistics are
  global over the chunk; ``sepcore.separate`` cross-fades chunks of long songs.

Published size: 8,893,348 parameters per target with the defaults (stereo, hidden 512,
1487 input bins, 2049 output bins), 35,573,392 for the four MUSDB targets (UMX-HQ ≈ 8.9 M per
target).

References: Stöter et al., JOSS 2019; Mocanu 2020 (thesis) §3.2.1, Fig. 3.2, ch. 6; Nugraha, Liutkus
and Vincent, "Multichannel audio source separation with deep neural networks", IEEE/ACM TASLP
2016 (the EM Wiener filter of ``norbert``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from sepcore.errors import ConfigError
from sepcore.models import register
from sepcore.models.base import SeparationModel, float32


@dataclass
class OpenUnmixConfig:
    """Open-Unmix (Stöter et al. 2019). Defaults are the published UMX sizes at 44.1 kHz."""

    sources: list[str] = field(default_factory=lambda: ["vocals", "drums", "bass", "other"])
    audio_channels: int = 2  # nb_channels
    sample_rate: int = 44100
    n_fft: int = 4096
    hop: int = 1024
    bandwidth: float = 16000.0  # Hz; input bins up to it (max_bin); None-like 0 = all bins
    hidden_size: int = 512  # fc1/fc2 width; the BiLSTM has hidden_size // 2 per direction
    nb_layers: int = 3  # BiLSTM layers
    unidirectional: bool = False  # causal LSTM (hidden_size units) instead of a BiLSTM
    lstm_dropout: float = 0.4  # between LSTM layers (reference code)
    wiener_iterations: int = 1  # EM iterations of the Wiener filter in eval mode (0 = none)
    softmask: bool = False  # Wiener init: ratio masks (True) or target magnitude + mixture phase
    wiener_eps: float = 1e-10


def bandwidth_to_max_bin(sample_rate: float, n_fft: int, bandwidth: float) -> int:
    """Number of STFT bins at or below ``bandwidth`` Hz (``openunmix.utils`` semantics)."""
    bins = n_fft // 2 + 1
    if bandwidth <= 0:
        return bins
    freqs = torch.linspace(0, sample_rate / 2, bins, dtype=torch.float64)
    return int(torch.nonzero(freqs <= bandwidth).max()) + 1


def check_config(cfg: OpenUnmixConfig) -> None:
    """Raise ConfigError naming the key of an invalid setting."""
    checks = [
        ("sources", bool(cfg.sources), "must name at least one source"),
        ("audio_channels", cfg.audio_channels >= 1, "must be >= 1"),
        ("n_fft", cfg.n_fft >= 2 and cfg.n_fft % 2 == 0, "must be even and >= 2"),
        ("hop", 1 <= cfg.hop <= cfg.n_fft // 2, "must be in [1, n_fft / 2] (COLA for Hann)"),
        ("hidden_size", cfg.hidden_size >= 2 and cfg.hidden_size % 2 == 0,
         "must be even and >= 2 (two LSTM directions)"),
        ("nb_layers", cfg.nb_layers >= 1, "must be >= 1"),
        ("lstm_dropout", 0.0 <= cfg.lstm_dropout < 1.0, "must be in [0, 1)"),
        ("wiener_iterations", cfg.wiener_iterations >= 0, "must be >= 0"),
        ("bandwidth", cfg.bandwidth >= 0, "must be >= 0 (0 = all bins)"),
    ]
    for key, ok, what in checks:
        if not ok:
            raise ConfigError(f"model.{key} {what}, got {getattr(cfg, key)!r}", key=f"model.{key}")


# Wiener filter ------------------------------------------------------------------------------------
def _local_gaussian_model(y: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Source j's PSD and spatial covariance (``norbert.get_local_gaussian_model``).

    Args:
        y: (B, K, F, C) complex estimate of one source.
    Returns:
        v: (B, K, F) power spectral density (mean over channels);
        R: (B, F, C, C) complex spatial covariance, Σ_k y yᴴ / (eps + Σ_k v).
    """
    v = y.abs().square().mean(dim=-1)  # (B, K, F)
    cov = torch.einsum("bkfi,bkfj->bfij", y, y.conj())  # (B, F, C, C)
    weight = eps + v.sum(dim=1)  # (B, F)
    return v, cov / weight[..., None, None]


@float32
def wiener(magnitudes: torch.Tensor, mix_stft: torch.Tensor, iterations: int = 1,
           softmask: bool = False, eps: float = 1e-10) -> torch.Tensor:
    """Multichannel Wiener filter by expectation-maximisation (``norbert.wiener``, batched).

    Args:
        magnitudes: (B, S, C, F, K) non-negative target magnitude estimates |Ŷ_j|.
        mix_stft: (B, C, F, K) complex mixture STFT X.
        iterations: EM iterations (0 = return the initialisation).
        softmask: initialise with ratio masks v_j / Σ_j v_j · X (True) or |Ŷ_j| with the mixture
            phase (False, the Open-Unmix default).
        eps: regularisation of the PSD normalisation and of the mixture covariance.
    Returns:
        (B, S, C, F, K) complex source STFT estimates.

    References: Stöter et al. 2019 (``openunmix.filtering.wiener``); Nugraha et al. 2016.
    """
    if softmask:
        ratio = magnitudes / (eps + magnitudes.sum(dim=1, keepdim=True))  # (B, S, C, F, K)
        y = ratio * mix_stft.unsqueeze(1)
    else:
        y = magnitudes * torch.exp(1j * torch.angle(mix_stft)).unsqueeze(1)
    if iterations == 0:
        return y
    b, s, c, f, k = y.shape
    # scale down for numerical stability (openunmix: max(1, max|X| / scale_factor=10))
    max_abs = torch.clamp(mix_stft.abs().amax(dim=(1, 2, 3)) / 10.0, min=1.0)  # (B,)
    x = (mix_stft / max_abs[:, None, None, None]).permute(0, 3, 2, 1)  # (B, K, F, C)
    y = (y / max_abs[:, None, None, None, None]).permute(0, 1, 4, 3, 2)  # (B, S, K, F, C)
    eye = torch.eye(c, dtype=x.dtype, device=x.device)  # (C, C)
    regularization = (eps ** 0.5) * eye
    for _ in range(iterations):
        models = [_local_gaussian_model(y[:, j], eps) for j in range(s)]
        # mixture covariance Cxx = Σ_j v_j R_j + reg: (B, K, F, C, C)
        cxx = sum(v[..., None, None] * r[:, None] for v, r in models) + regularization
        inv_cxx = torch.linalg.inv(cxx)
        estimates = []
        for v, r in models:
            gain = v[..., None, None] * torch.matmul(r[:, None], inv_cxx)  # (B, K, F, C, C)
            estimates.append(torch.einsum("bkfij,bkfj->bkfi", gain, x))  # (B, K, F, C)
        y = torch.stack(estimates, dim=1)  # (B, S, K, F, C)
    y = y.permute(0, 1, 4, 3, 2)  # (B, S, C, F, K)
    return y * max_abs[:, None, None, None, None]


# network ------------------------------------------------------------------------------------------
class OpenUnmixNet(nn.Module):
    """One target's network: mixture magnitude → target magnitude (Stöter et al. 2019, Fig. 1).

    Args:
        nb_bins: output bins (n_fft / 2 + 1).
        max_bin: input bins (cropped at the bandwidth).
        nb_channels: audio channels, stacked into fc1's input.
    """

    def __init__(self, nb_bins: int, max_bin: int, nb_channels: int, hidden_size: int,
                 nb_layers: int, unidirectional: bool, lstm_dropout: float):
        super().__init__()
        self.nb_bins, self.max_bin, self.hidden_size = nb_bins, max_bin, hidden_size
        self.input_mean = nn.Parameter(torch.zeros(max_bin))
        self.input_scale = nn.Parameter(torch.ones(max_bin))
        self.fc1 = nn.Linear(max_bin * nb_channels, hidden_size, bias=False)
        self.bn1 = nn.BatchNorm1d(hidden_size)
        self.lstm = nn.LSTM(hidden_size, hidden_size if unidirectional else hidden_size // 2,
                            num_layers=nb_layers, bidirectional=not unidirectional,
                            dropout=lstm_dropout if nb_layers > 1 else 0.0)
        self.fc2 = nn.Linear(hidden_size * 2, hidden_size, bias=False)
        self.bn2 = nn.BatchNorm1d(hidden_size)
        self.fc3 = nn.Linear(hidden_size, nb_bins * nb_channels, bias=False)
        self.bn3 = nn.BatchNorm1d(nb_bins * nb_channels)
        self.output_scale = nn.Parameter(torch.ones(nb_bins))
        self.output_mean = nn.Parameter(torch.ones(nb_bins))

    def reset_parameters(self) -> None:
        """Re-initialise this module's own parameters (input/output mean and scale)."""
        with torch.no_grad():
            self.input_mean.zero_()
            self.input_scale.fill_(1.0)
            self.output_scale.fill_(1.0)
            self.output_mean.fill_(1.0)

    def forward(self, magnitude: torch.Tensor) -> torch.Tensor:
        """(B, C, F, K) mixture magnitude → (B, C, F, K) target magnitude estimate."""
        b, c, f, k = magnitude.shape
        mix = magnitude.permute(3, 0, 1, 2)  # (K, B, C, F)
        x = self.normalise_input(mix)  # (K, B, C, Fin)
        x = self.bn1(self.fc1(x.reshape(k * b, c * self.max_bin)))  # (K·B, H)
        x = torch.tanh(x.reshape(k, b, self.hidden_size))  # (K, B, H)
        lstm_out, _ = self.lstm(x)  # (K, B, H)
        x = torch.cat([x, lstm_out], dim=-1)  # (K, B, 2H): skip connection
        x = F.relu(self.bn2(self.fc2(x.reshape(k * b, 2 * self.hidden_size))))  # (K·B, H)
        x = self.bn3(self.fc3(x))  # (K·B, C·F)
        return self.apply_output(x.reshape(k, b, c, self.nb_bins), mix)  # (B, C, F, K)

    @float32
    def normalise_input(self, mix: torch.Tensor) -> torch.Tensor:
        """(K, B, C, F) magnitudes → (K, B, C, Fin) normalised fc1 input, in float32: raw
        magnitudes reach the hundreds, too coarse for fc1 in half precision."""
        return (mix[..., : self.max_bin] + self.input_mean) * self.input_scale

    @float32
    def apply_output(self, x: torch.Tensor, mix: torch.Tensor) -> torch.Tensor:
        """(K, B, C, F) fc3 output, (K, B, C, F) mixture → (B, C, F, K) mask × magnitude."""
        x = x * self.output_scale + self.output_mean
        return (F.relu(x) * mix).permute(1, 2, 3, 0)


class OpenUnmix(SeparationModel):
    """Open-Unmix, one :class:`OpenUnmixNet` per source. ``forward``: (B, C, T) → (B, S, C, T).

    References: Stöter et al., JOSS 2019; Mocanu 2020 (thesis) §3.2.1 and Fig. 3.2.
    """

    def __init__(self, cfg: OpenUnmixConfig):
        super().__init__()
        check_config(cfg)
        self.cfg = cfg
        nb_bins = cfg.n_fft // 2 + 1
        self.max_bin = bandwidth_to_max_bin(cfg.sample_rate, cfg.n_fft, cfg.bandwidth)
        self.unmix = nn.ModuleDict({
            source: OpenUnmixNet(nb_bins, self.max_bin, cfg.audio_channels, cfg.hidden_size,
                                 cfg.nb_layers, cfg.unidirectional, cfg.lstm_dropout)
            for source in cfg.sources
        })
        self.register_buffer("window", torch.hann_window(cfg.n_fft), persistent=False)

    @property
    def frame_hop(self) -> int:
        return int(self.cfg.hop)

    @property
    def receptive_field(self) -> int | None:
        return None  # BiLSTM over the whole chunk, global Wiener statistics

    @float32
    def stft(self, audio: torch.Tensor) -> torch.Tensor:
        """(M, T) real → (M, F, 1 + ceil(T / hop)) complex, centred, end zero padded."""
        audio = F.pad(audio, (0, -audio.shape[-1] % self.cfg.hop))  # (M, hop·ceil(T / hop))
        return torch.stft(audio, self.cfg.n_fft, self.cfg.hop, window=self.window, center=True,
                          pad_mode="constant", return_complex=True)

    @float32
    def istft(self, spec: torch.Tensor, length: int) -> torch.Tensor:
        """(M, F, K) complex → (M, length) real; inverts :meth:`stft`."""
        padded = length + (-length % self.cfg.hop)
        return torch.istft(spec, self.cfg.n_fft, self.cfg.hop, window=self.window, center=True,
                           length=padded)[..., :length]

    def forward(self, mixture: torch.Tensor) -> torch.Tensor:
        """(B, C, T) mixture → (B, S, C, T) estimates."""
        b, c, t = mixture.shape
        spec = self.stft(mixture.reshape(b * c, t).float())  # (B·C, F, K) complex
        spec = spec.reshape(b, c, *spec.shape[1:])  # (B, C, F, K)
        magnitude = spec.abs()
        estimates = torch.stack([net(magnitude) for net in self.unmix.values()], dim=1)
        # estimates: (B, S, C, F, K) target magnitudes
        mixture_phase = self.cfg.wiener_iterations == 0 and not self.cfg.softmask
        if self.training or mixture_phase:  # the differentiable path the trainer's loss sees
            est = estimates * torch.exp(1j * torch.angle(spec)).unsqueeze(1)  # mixture phase
        else:
            est = wiener(estimates, spec, self.cfg.wiener_iterations, self.cfg.softmask,
                         self.cfg.wiener_eps)  # (B, S, C, F, K) complex
        s = est.shape[1]
        audio = self.istft(est.reshape(b * s * c, *est.shape[3:]), t)  # (B·S·C, T)
        return audio.reshape(b, s, c, t).to(mixture.dtype)  # (B, S, C, T)


register("openunmix", OpenUnmixConfig, OpenUnmix)
