"""Meta-TasNet: instrument embeddings generate the masker's weights; a cascade of sample rates.

Samuel, Ganeshan & Naradowsky, "Meta-learning Extractors for Music Source Separation", ICASSP 2020
(Fig. 1–3, §2–3; reference code ``pfnet-research/meta-tasnet``), as summarised by the thesis
(Mocanu, "Musical source separation", master thesis, EPFL / Logitech, 2020; §3.2.2, Fig. 3.4;
§4.2.2 trains one 8 kHz stage):

- **parameter generation** (paper Fig. 1, thesis Fig. 3.4a): every source ("instrument") ``s`` has
  a learned embedding ``e_s`` (``embedding_dim``, the code's ``E_1 = 8``); each parameter tensor
  ``θ`` of the masking network is produced from it by two fully-connected layers,
  ``θ_s = W_2 (W_1 e_s + b_1) + b_2`` with a bottleneck of ``generator_dim`` (``E_2 = 5``), one
  pair per tensor, as the reference ``Conv1dGenerated``/``GroupNormGenerated`` do. The masking
  network is sepcore's :class:`~sepcore.models.convtasnet.TCN` (never copied): a parameter-free
  *template* of it gives the tensors' names and shapes and the maths, and
  :func:`torch.func.functional_call` runs it once per instrument with that instrument's
  generated tensors (the reference runs the four instruments as one grouped conv; same maths);
- **encoder** (paper Fig. 3, thesis Fig. 3.4c; reference ``model/encoder.py``): ``filters``
  conv layers of ``N // 4`` channels (kernels ``L · 2**i``) ‖ a 256-band mel branch (log-power
  STFT of ``n_fft = 1024 · K``, K = the stage's rate // 8000, hop ``n_fft / 4``, normalised,
  a learned per-bin affine and a learned 1×1 "mel transform", interpolated onto the conv
  frames), concatenated, then a Conv-ReLU-Conv bottleneck; the reference decoder:
  ``EncoderConfig(encoding="hybrid", filterbank="mel")`` built by
  :func:`~sepcore.models.filterbanks.build_encoding` (:class:`~sepcore.models.filterbanks.
  MetaTasNetEncoder`; also S1/S2 of the multi-band masking paper, Papantonakis et al.,
  EUSIPCO 2022). Stage k's ``n_fft`` is 1024 · rate_k // 8000 (1024, 2048, 4096 at 8, 16,
  32 kHz, as the reference), or ``encoder.n_fft · m_k`` when set;
- **multi-stage cascade** (paper Fig. 2, thesis Fig. 3.4b): ``stages`` sample rates (8, 16 and
  32 kHz in the paper). Stage ``k`` reads the mixture resampled to its rate; its latent size,
  kernel and stride are those of stage 0 times ``m_k = rate_k / rate_0``, so every stage has the
  same number of frames and stage ``k``'s masker also reads stage ``k-1``'s masked latents
  ``(B, S, N·m_{k-1}, K)`` (the reference's ``partial_input``: the previous stage's estimates in
  latent form, which need no resampling since the frames coincide). The last stage's estimate is
  resampled to ``sample_rate``;
- **loss** (paper §2.3, reference ``utility/loss.py``), through :meth:`MetaTasNet.auxiliary_losses`
  (the trainer adds ``train.loss_weight × train.loss`` of the final estimate). Per stage ``k``, with
  targets ``s`` resampled to ``rate_k`` and ``z = encoder_k(·)`` of each true source, shape
  ``(B, S, N, K)``, ``cos`` the cosine over the N latent channels:

  - ``stage_<rate>`` (stages before the last) ``= stage_weight · (−SI-SDR(ŝ_k, s_k))``, mean over
    (B, S, C);
  - ``reconstruction_<rate> = reconstruction_weight · (−SI-SDR(dec_k(enc_k(x_k)), x_k))``, the
    mixture decoded from its own unmasked latent;
  - ``dissimilarity_<rate> = dissimilarity_weight · mean_{b, i<j, frames} cos(|z_{b,i}|,
    |z_{b,j}|)`` over pairs of non-silent sources, in [0, 1]·weight;
  - ``similarity_<rate> = similarity_weight · (1 − mean_{b, s, frames} cos(z_{b,s}, z_{b',s}))``
    with ``b' = b − 1 (mod B)`` the neighbouring batch item, over non-silent pairs, in
    [0, 2]·weight (the paper maximises the cosine, ``−w·cos``; ``1 − cos`` has the same gradient
    and stays non-negative).

  A term whose weight is 0 is not computed. The reference sums SI-SDR over its four sources where
  sepcore's losses average over sources, so the defaults are the reference's weights
  (reconstruction 0.05, dissimilarity 3, similarity 2) divided by 4, keeping their ratio to the
  SI-SDR term.

Choices where the paper leaves details open or sepcore differs from the reference code:

- every tensor of the template TCN is generated, its PReLU slopes and norms' gains/biases included
  (the reference generates the convs and GroupNorm affines and shares the PReLUs); the masker is
  sepcore's TCN with ``skip`` channels (the reference's skip path), gLN or cLN (the reference uses
  GroupNorm with 8 groups; BN is refused: its running statistics cannot be generated); masks go
  through ``masker.mask_nonlinear`` (softmax over the sources, as the reference);
- generator initialisation: ``b_2`` starts at the template TCN's own default initialisation of the
  tensor and ``W_2`` at a normal of std ``σ_θ / sqrt(generator_dim)`` (``σ_θ`` the std of that
  default, 0.1 where it is constant), so generated weights start at the scale PyTorch would give a
  static TCN and already differ per instrument;
- the mel branch's normalisation statistics are pooled from the first training inputs the
  encoder sees (see :class:`~sepcore.models.filterbanks.MelBranch`) instead of a pass over the
  data before training; multichannel power spectra are averaged over the channels;
- resampling is a windowed-sinc polyphase filter (:func:`resample`; J. O. Smith's bandlimited
  interpolation with a Hann window of ``resample_width`` zero crossings and a cut-off of 0.99 ×
  the lower Nyquist), pure torch, applied inside the model to the mixture and, in
  ``auxiliary_losses``, to the targets;
- silent sources are not masked out of the SI-SDR terms (they are out of the latent terms);
  the reference's dropout (0 by default) is left out.

Shapes: B batch, S sources, C audio channels, T samples, N latent channels, K frames.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from sepcore.errors import ConfigError
from sepcore.losses import neg_sisdr
from sepcore.models import register
from sepcore.models.base import Separation, SeparationModel
from sepcore.models.convtasnet import (
    TCN,
    EncoderConfig,
    TCNConfig,
    apply_mask_nonlinearity,
    check_tcn_config,
    encoder_stride,
)
from sepcore.models.filterbanks import build_encoding, frozen_statistics

# --- config -------------------------------------------------------------------------------------


def _meta_encoder() -> EncoderConfig:
    # reference code defaults: N = 440, L = W = 20, 3 parallel kernels (20, 40, 80), 256 mels,
    # n_fft = 1024 · rate // 8000
    return EncoderConfig(N=440, L=20, stride=20, encoding="hybrid", filterbank="mel",
                         filters=3, num_mels=256)


def _meta_masker() -> TCNConfig:
    # reference code defaults: B = H = 160, skip = B, kernel 3, 6 layers × 3 stacks, softmax masks
    return TCNConfig(B=160, H=160, skip=160, P=3, X=6, R=3, norm="gLN", activation="prelu",
                     mask_nonlinear="softmax")


@dataclass
class MetaTasNetConfig:
    """Meta-TasNet. ``encoder``/``masker`` are stage 0's; stage k scales N, L, stride by m_k."""

    sources: list[str] = field(default_factory=lambda: ["drums", "bass", "other", "vocals"])
    audio_channels: int = 2
    sample_rate: int = 44100  # rate of the model's input and output
    stages: list[int] = field(default_factory=lambda: [8000, 16000, 32000])  # Hz, increasing
    encoder: EncoderConfig = field(default_factory=_meta_encoder)
    masker: TCNConfig = field(default_factory=_meta_masker)
    embedding_dim: int = 8  # E_1: instrument embedding size
    generator_dim: int = 5  # E_2: bottleneck of the two FC layers generating each tensor
    stage_weight: float = 1.0  # −SI-SDR of each stage before the last, at its own rate
    reconstruction_weight: float = 0.0125  # reference 0.05 / 4 sources
    dissimilarity_weight: float = 0.75  # reference 3.0 / 4 sources
    similarity_weight: float = 0.5  # reference 2.0 / 4 sources
    resample_width: int = 16  # zero crossings of the resampling sinc on each side


def check_metatasnet_config(cfg: MetaTasNetConfig) -> None:
    """Raise ConfigError naming the key of an invalid Meta-TasNet setting."""
    if cfg.audio_channels < 1 or not cfg.sources:
        raise ConfigError("model needs audio_channels >= 1 and at least one source",
                          key="model.sources")
    if cfg.sample_rate < 1:
        raise ConfigError(f"model.sample_rate must be >= 1, got {cfg.sample_rate}",
                          key="model.sample_rate")
    stages = list(cfg.stages)
    if not stages or any(r < 1 for r in stages):
        raise ConfigError(f"model.stages = {stages} needs at least one positive rate (Hz)",
                          key="model.stages")
    for prev, rate in zip(stages, stages[1:], strict=False):
        if rate <= prev or rate % stages[0]:
            raise ConfigError(f"model.stages = {stages}: rates must increase and be multiples of "
                              f"the first ({stages[0]} Hz) so stage frames coincide",
                              key="model.stages")
    check_tcn_config(cfg.masker)
    if cfg.masker.norm == "BN":
        raise ConfigError("model.masker.norm = 'BN': batch-norm running statistics cannot be "
                          "generated per instrument; choose 'gLN' or 'cLN'",
                          key="model.masker.norm")
    encoder_stride(cfg.encoder)
    for name in ("embedding_dim", "generator_dim", "resample_width"):
        if getattr(cfg, name) < 1:
            raise ConfigError(f"model.{name} must be >= 1, got {getattr(cfg, name)}",
                              key=f"model.{name}")
    for name in ("stage_weight", "reconstruction_weight", "dissimilarity_weight",
                 "similarity_weight"):
        if getattr(cfg, name) < 0:
            raise ConfigError(f"model.{name} must be >= 0, got {getattr(cfg, name)}",
                              key=f"model.{name}")


# --- resampling ---------------------------------------------------------------------------------


@lru_cache(maxsize=32)
def _sinc_kernel(orig: int, new: int, width: int, rolloff: float) -> tuple[torch.Tensor, int]:
    """Polyphase windowed-sinc kernel ``(new, 1, 2·pad + orig)`` for reduced rates, and ``pad``."""
    cutoff = min(orig, new) * rolloff  # in units of the reduced rates
    pad = math.ceil(width * orig / cutoff)
    taps = torch.arange(-pad, pad + orig, dtype=torch.float64) / orig  # (W,) input times
    phases = -torch.arange(new, dtype=torch.float64)[:, None] / new  # (new, 1) output offsets
    t = ((phases + taps) * cutoff).clamp(-width, width)  # (new, W) in zero crossings
    window = torch.cos(t * math.pi / width / 2) ** 2  # Hann over ±width crossings
    kernel = torch.sinc(t) * window * (cutoff / orig)  # unit DC gain
    return kernel[:, None, :].float(), pad


def resample(x: torch.Tensor, orig: int, new: int, width: int = 16,
             rolloff: float = 0.99) -> torch.Tensor:
    """Band-limited resampling of ``x`` ``(..., T)`` from ``orig`` to ``new`` Hz.

    Windowed-sinc interpolation (J. O. Smith, "Digital Audio Resampling"), evaluated as a strided
    conv with one filter per output phase; the low-pass cut-off is ``rolloff`` × the lower Nyquist.
    Returns ``(..., ceil(T · new / orig))``; ``x`` unchanged when the rates are equal.
    """
    if orig == new:
        return x
    gcd = math.gcd(orig, new)
    orig, new = orig // gcd, new // gcd
    kernel, pad = _sinc_kernel(orig, new, width, rolloff)
    shape, length = x.shape[:-1], x.shape[-1]
    flat = F.pad(x.reshape(-1, 1, length), (pad, pad + orig))  # (M, 1, T + 2·pad + orig)
    y = F.conv1d(flat, kernel.to(x), stride=orig)  # (M, new, frames)
    y = y.transpose(1, 2).reshape(flat.shape[0], -1)  # (M, new·frames), phases interleaved
    return y[:, :math.ceil(length * new / orig)].reshape(*shape, -1)  # (..., T')


def _fit(x: torch.Tensor, length: int) -> torch.Tensor:
    """Crop or zero-pad the last axis to ``length``."""
    return x[..., :length] if x.shape[-1] >= length else F.pad(x, (0, length - x.shape[-1]))


# --- parameter generation -----------------------------------------------------------------------


class ParameterGenerator(nn.Module):
    """Two FC layers ``e (S, E_1) → (S, E_2) → (S, numel)``: one tensor per instrument.

    ``initial`` is the template's default tensor: it sets the output bias and the spread of the
    output weight (see the module docstring).
    """

    def __init__(self, embedding_dim: int, generator_dim: int, initial: torch.Tensor):
        super().__init__()
        self.shape = tuple(initial.shape)
        self.bottleneck = nn.Linear(embedding_dim, generator_dim)
        self.output = nn.Linear(generator_dim, initial.numel())
        spread = float(initial.std()) if initial.numel() > 1 else 0.0
        with torch.no_grad():
            self.output.bias.copy_(initial.reshape(-1))
            self.output.weight.normal_(0.0, (spread or 0.1) / math.sqrt(generator_dim))

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        flat = self.output(self.bottleneck(embeddings))  # (S, numel)
        return flat.view(embeddings.shape[0], *self.shape)  # (S, *shape)


class GeneratedTCN(nn.Module):
    """The TCN masker with every parameter generated from an instrument embedding.

    Args:
        in_channels: latent channels it reads (N_k, plus N_{k-1} after the first stage).
        out_channels: mask channels per source (N_k).
        num_sources: S (one embedding each).
        cfg: the TCN blocks' configuration.
        embedding_dim, generator_dim: E_1, E_2.
    ``forward(latent (B, S, in, K)) -> scores (B, S, out, K)``: source s is masked by the TCN
    with source s's generated parameters, reading ``latent[:, s]``.
    """

    def __init__(self, in_channels: int, out_channels: int, num_sources: int, cfg: TCNConfig,
                 embedding_dim: int, generator_dim: int):
        super().__init__()
        template = TCN(in_channels, out_channels, 1, cfg)  # (B, in, K) -> (B, 1, out, K)
        if list(template.buffers()):  # pragma: no cover - BN is refused by the config check
            raise ConfigError("the generated masker cannot hold buffers", key="model.masker.norm")
        self.names = [name for name, _ in template.named_parameters()]
        initial = [p.detach().clone() for _, p in template.named_parameters()]
        for p in template.parameters():  # the template keeps only the shapes and the maths
            p.requires_grad_(False)
        self._template = (template,)  # a tuple: not registered, not in state_dict or counts
        self.embedding = nn.Embedding(num_sources, embedding_dim)  # (S, E_1)
        self.generators = nn.ModuleList(
            ParameterGenerator(embedding_dim, generator_dim, t) for t in initial)

    def instrument_parameters(self) -> list[dict[str, torch.Tensor]]:
        """Per source, the generated tensors of the template TCN, by parameter name."""
        embeddings = self.embedding.weight  # (S, E_1)
        tensors = [gen(embeddings) for gen in self.generators]  # each (S, *shape)
        return [{name: t[s] for name, t in zip(self.names, tensors, strict=True)}
                for s in range(embeddings.shape[0])]

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        template = self._template[0]
        scores = [functional_call(template, params, (latent[:, s],))  # (B, 1, out, K)
                  for s, params in enumerate(self.instrument_parameters())]
        return torch.cat(scores, dim=1)  # (B, S, out, K)


# --- one stage ----------------------------------------------------------------------------------


@dataclass
class StageOutput:
    """What one stage computed, at its own rate ``rate`` (samples ``length`` before padding)."""

    rate: int
    length: int
    mixture: torch.Tensor  # (B, C, T_k) the resampled mixture, padded to the stage's frames
    latent: torch.Tensor  # (B, N_k, K) the mixture's latent
    masked: torch.Tensor  # (B, S, N_k, K) per-source masked latents (next stage's input)
    estimate: torch.Tensor  # (B, S, C, T_k)


@dataclass
class MetaTasNetSeparation(Separation):
    """``Separation`` plus every stage's outputs (for :meth:`MetaTasNet.auxiliary_losses`)."""

    stages: list[StageOutput] = field(default_factory=list)


class MetaTasNetStage(nn.Module):
    """Encoder → generated TCN masks (reading the previous stage's masked latents) → decoder."""

    def __init__(self, cfg: MetaTasNetConfig, rate: int, scale: int, prev_channels: int):
        super().__init__()
        base = cfg.encoder
        stride = encoder_stride(base)
        n_fft = None if base.n_fft is None else base.n_fft * scale  # None: 1024 · rate // 8000
        self.enc_cfg = dataclasses.replace(base, N=base.N * scale, L=base.L * scale,
                                           stride=stride * scale, n_fft=n_fft)
        self.rate, self.scale = rate, scale
        self.N = self.enc_cfg.N
        # (B, C, T_k) -> (B, N_k, K) and (B*, N_k, K) -> (B*, C, (K-1)·stride_k + L_k)
        self.encoder, self.decoder = build_encoding(self.enc_cfg, cfg.audio_channels, rate)
        self.masker = GeneratedTCN(self.N + prev_channels, self.N, len(cfg.sources), cfg.masker,
                                   cfg.embedding_dim, cfg.generator_dim)
        self.mask_nonlinear = cfg.masker.mask_nonlinear

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        batch, sources, n, frames = latents.shape
        out = self.decoder(latents.reshape(batch * sources, n, frames))  # (B*S, C, T_k)
        return out.view(batch, sources, out.shape[1], out.shape[2])  # (B, S, C, T_k)

    def forward(self, x: torch.Tensor, hidden: torch.Tensor | None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mixture ``(B, C, T_k)`` [+ previous masked latents ``(B, S, N_{k-1}, K)``] →
        (latent ``(B, N_k, K)``, masked latents ``(B, S, N_k, K)``, estimate ``(B, S, C, T_k)``).
        """
        latent = self.encoder(x)  # (B, N_k, K)
        sources = self.masker.embedding.num_embeddings
        inputs = latent.unsqueeze(1).expand(-1, sources, -1, -1)  # (B, S, N_k, K)
        if hidden is not None:
            inputs = torch.cat([inputs, hidden], dim=2)  # (B, S, N_k + N_{k-1}, K)
        masks = apply_mask_nonlinearity(self.masker(inputs), self.mask_nonlinear)  # (B,S,N_k,K)
        masked = latent.unsqueeze(1) * masks  # (B, S, N_k, K)
        return latent, masked, self.decode(masked)


# --- the model ----------------------------------------------------------------------------------


class MetaTasNet(SeparationModel):
    """Meta-TasNet (Samuel et al., ICASSP 2020; thesis §3.2.2): generated maskers, staged rates.

    ``forward(mixture (B, C, T)) -> (B, S, C, T)`` at ``sample_rate``; ``separate`` also returns
    every stage's outputs; ``auxiliary_losses`` gives the paper's extra loss terms (see the module
    docstring for the formulas). ``intermediate`` is empty: the lower-rate stages are supervised at
    their own rates through ``auxiliary_losses``, not by ``train.aux_loss`` at ``sample_rate``.
    References: Samuel et al. 2020, Fig. 1–3 and §2.3; Mocanu 2020 (thesis) §3.2.2, §4.2.2.
    """

    has_intermediate = True

    def __init__(self, cfg: MetaTasNetConfig):
        super().__init__()
        check_metatasnet_config(cfg)
        self.cfg = cfg
        stages, base = list(cfg.stages), cfg.stages[0]
        self.stages = nn.ModuleList()
        prev = 0
        for rate in stages:
            stage = MetaTasNetStage(cfg, rate, rate // base, prev)
            self.stages.append(stage)
            prev = stage.N

    # contract ------------------------------------------------------------------------------------
    @property
    def frame_hop(self) -> int:
        """Smallest whole number of input samples spanning whole stage-0 frames.

        One frame is ``stride_0 · sample_rate / rate_0`` input samples (110.25 for 20 at 8 of
        44.1 kHz); chunk starts on multiples of the returned hop (441) fall on frame boundaries
        of every stage.
        """
        hop = self.stages[0].enc_cfg.stride * self.cfg.sample_rate
        return hop // math.gcd(hop, self.cfg.stages[0])

    @property
    def receptive_field(self) -> int | None:
        return None  # the resampling filters and (with gLN) the global norm: unbounded

    # maths ---------------------------------------------------------------------------------------
    def _frames_length(self, length: int) -> int:
        """Stage-0 input length covering ``length`` samples with whole frames."""
        L, hop = self.stages[0].enc_cfg.L, self.stages[0].enc_cfg.stride
        frames = max(1, -(-(max(length, L) - L) // hop) + 1)
        return (frames - 1) * hop + L

    def _stage_inputs(self, mixture: torch.Tensor) -> list[tuple[int, torch.Tensor]]:
        """Per stage: (samples of the mixture at its rate, the mixture padded to its frames)."""
        length, rate = mixture.shape[-1], self.cfg.sample_rate
        padded0 = self._frames_length(math.ceil(length * self.cfg.stages[0] / rate))
        out = []
        for stage in self.stages:
            x = resample(mixture, rate, stage.rate, self.cfg.resample_width)  # (B, C, T_k)
            out.append((x.shape[-1], _fit(x, padded0 * stage.scale)))  # (B, C, m_k·T_0')
        return out

    def separate(self, mixture: torch.Tensor) -> MetaTasNetSeparation:
        """Final estimate ``(B, S, C, T)`` and every stage's outputs, of a mixture ``(B, C, T)``."""
        if mixture.dim() != 3 or mixture.shape[1] != self.audio_channels:
            raise ValueError(f"expected a mixture of shape (batch, {self.audio_channels}, time), "
                             f"got {tuple(mixture.shape)}")
        outputs, hidden = [], None
        for stage, (length, x) in zip(self.stages, self._stage_inputs(mixture), strict=True):
            latent, hidden, estimate = stage(x, hidden)  # (B,N,K), (B,S,N,K), (B,S,C,T_k)
            outputs.append(StageOutput(stage.rate, length, x, latent, hidden, estimate))
        last = outputs[-1]
        final = resample(last.estimate[..., :last.length], last.rate, self.cfg.sample_rate,
                         self.cfg.resample_width)  # (B, S, C, >= T)
        final = _fit(final, mixture.shape[-1])  # (B, S, C, T)
        return MetaTasNetSeparation(estimate=final, intermediate={}, stages=outputs)

    def forward(self, mixture: torch.Tensor) -> torch.Tensor:
        return self.separate(mixture).estimate  # (B, S, C, T)

    def auxiliary_losses(self, separation: MetaTasNetSeparation, mixture: torch.Tensor,
                         targets: torch.Tensor) -> dict[str, torch.Tensor]:
        """The weighted Meta-TasNet terms (module docstring), by name ``<term>_<rate>``.

        Args:
            separation: what :meth:`separate` returned for ``mixture``.
            mixture: (B, C, T) at ``sample_rate`` (the stages hold it resampled already).
            targets: (B, S, C, T) true sources at ``sample_rate``.
        """
        cfg, terms = self.cfg, {}
        last = len(self.stages) - 1
        for k, (stage, out) in enumerate(zip(self.stages, separation.stages, strict=True)):
            n = out.length
            need_targets = (k < last and cfg.stage_weight) or cfg.dissimilarity_weight \
                or cfg.similarity_weight
            if not need_targets and not cfg.reconstruction_weight:
                continue
            truth = resample(targets, cfg.sample_rate, out.rate, cfg.resample_width)  # (B,S,C,n)
            if k < last and cfg.stage_weight:
                terms[f"stage_{out.rate}"] = cfg.stage_weight * neg_sisdr(
                    out.estimate[..., :n].float(), truth.float())
            if cfg.reconstruction_weight:
                rebuilt = stage.decoder(out.latent)[:, None, :, :n]  # (B, 1, C, n)
                terms[f"reconstruction_{out.rate}"] = cfg.reconstruction_weight * neg_sisdr(
                    rebuilt.float(), out.mixture[:, None, :, :n].float())
            if cfg.dissimilarity_weight or cfg.similarity_weight:
                batch, sources, channels, _ = truth.shape
                padded = _fit(truth, out.mixture.shape[-1])  # (B, S, C, T_k')
                with frozen_statistics(stage.encoder):  # statistics are the mixtures'
                    z = stage.encoder(padded.reshape(batch * sources, channels, -1))  # (B·S,N,K)
                z = z.view(batch, sources, z.shape[1], z.shape[2]).float()  # (B, S, N, K)
                active = (truth.float().pow(2).sum(dim=(2, 3)) > 1e-8).float()  # (B, S)
                if cfg.dissimilarity_weight:
                    terms[f"dissimilarity_{out.rate}"] = cfg.dissimilarity_weight * \
                        latent_dissimilarity(z, active)
                if cfg.similarity_weight:
                    terms[f"similarity_{out.rate}"] = cfg.similarity_weight * \
                        (1.0 - latent_similarity(z, active))
        return terms


# --- latent similarity terms (pure functions) ---------------------------------------------------


def latent_dissimilarity(z: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
    """Mean cosine over N of ``|z_i|`` and ``|z_j|``, sources i < j of one item, per frame.

    Args:
        z: (B, S, N, K) encoder latents of the true sources.
        active: (B, S) 1 for non-silent sources, 0 for silent ones (their pairs are ignored).
    Returns:
        () in [0, 1] (0 when no pair of active sources exists). References: Samuel et al. 2020
        §2.3; reference ``dissimilarity_loss``.
    """
    i, j = torch.triu_indices(z.shape[1], z.shape[1], offset=1, device=z.device)  # (P,), (P,)
    if i.numel() == 0:
        return z.sum() * 0.0
    cos = F.cosine_similarity(z[:, i].abs(), z[:, j].abs(), dim=2, eps=1e-8)  # (B, P, K)
    weight = (active[:, i] * active[:, j])[..., None].expand_as(cos)  # (B, P, K)
    return (cos * weight).sum() / weight.sum().clamp_min(1.0)


def latent_similarity(z: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
    """Mean cosine over N of one source's latents in neighbouring batch items, per frame.

    Args:
        z: (B, S, N, K) encoder latents of the true sources; item b is paired with item b − 1.
        active: (B, S) 1 for non-silent sources.
    Returns:
        () in [-1, 1] (1 when no pair of active items exists, i.e. nothing to pull together).
        References: Samuel et al. 2020 §2.3; reference ``similarity_loss``.
    """
    other = torch.roll(z, 1, dims=0)  # (B, S, N, K)
    cos = F.cosine_similarity(z, other, dim=2, eps=1e-8)  # (B, S, K)
    weight = (active * torch.roll(active, 1, dims=0))[..., None].expand_as(cos)  # (B, S, K)
    total = weight.sum()
    if total == 0:
        return z.sum() * 0.0 + 1.0
    return (cos * weight).sum() / total


register("metatasnet", MetaTasNetConfig, MetaTasNet)
