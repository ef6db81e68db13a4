"""MaD: Masker and Denoiser with skip-filtering connections and recurrent inference (the MaD paper).

Reads like the paper: Mimilakis, Drossos, Santos, Schuller, Virtanen and Bengio, "Monaural singing
voice separation with skip-filtering connections and recurrent inference of time-frequency mask",
ICASSP 2018 (the MaD paper), with the sizes of the authors' code (``mss_pytorch``):

- front end: STFT of each channel, 2049-sample Hamming window, 4096-point FFT, hop 384 at
  44.1 kHz (N = 2049 bins); magnitudes (α = 1) cut into sequences of T = 60 frames (~0.5 s, the
  paper's "Proposed Approach") of which L = 10 frames each side are context only;
- Masker, encoder: a bi-directional GRU over the first F = 744 bins (up to ~8 kHz) of each frame,
  hidden size F per direction, each direction's state plus its input (residual connection),
  concatenated → H_enc (2F); the 2L context frames are dropped → H̃_enc;
- Masker, decoder G_dec: a GRU with 2F hidden units over H̃_enc, refined by **recurrent inference**
  (the paper's algorithm; :func:`recurrent_inference`): S_0 = G_dec(H̃_enc); for i = 1..iter:
  H = G_dec(S_{i-1}), stop when MSE(S_{i-1}, H) < τ, S_i = H; return the last H. No parameters
  are added; iter = 0 is GRU-NRI, (3, 1e-2) GRU-RIS^s, (10, 1e-3) GRU-RIS^l;
- Masker, sparsifying mask layer: M = ReLU(W_mask H_dec + b) over all N bins, applied by the
  skip-filtering connection Ŷ = M ⊙ |X| to the (middle frames of the) input magnitude;
- Denoiser: FC encoder N → N/2 and decoder N/2 → N with ReLUs, applied by a second skip-filtering
  connection Ŷ_filt = ReLU(W_dec ReLU(W_enc Ŷ)) ⊙ Ŷ;
- output: the singing-voice magnitude Ŷ_filt with the mixture phase, then the iSTFT.

Choices where the paper is silent or the contract asks for more:

- Any length: the STFT is centred with zero padding (1 + T // hop frames), the frame axis is
  padded with L zero frames at the start and zeros up to a whole number of sequences at the end,
  and cut into sequences of T frames with a stride of T − 2L, so every frame is a middle frame of
  exactly one sequence (the paper's inference); the iSTFT crops to exactly the input length.
  Outputs depend on the sequence grid (``receptive_field = None``).
- Stereo is separated channel by channel with the same (monaural) network.
- ``sources``: ``vocals`` is the network's estimate; ``accompaniment``, if asked for, is the
  residual mixture − vocals in the waveform domain (so [vocals, accompaniment] targets and
  museval's vocals/accompaniment run work); no other source names are accepted.
- The bi-GRU is ``nn.GRU`` with the residual added to its outputs. The authors' ``GRUCell`` loop
  also feeds the residual back into the next step's state; ``nn.GRU`` (cuDNN) cannot, and the
  paper writes the residual on the outputs. The parameter count is the same.
- The decoder is the GRU alone (the paper's G_dec), so it can be iterated on its own output; the
  authors' code adds a mixture-magnitude residual on the first pass only.
- Recurrent inference stops per sequence (each sequence of the batch keeps the state at which its
  own MSE fell below τ) rather than on the batch-mean MSE of the authors' code, so an estimate
  does not depend on which other sequences share its batch. It runs in training and inference,
  as in the authors' training script, and gradients flow through every iteration taken.
- Training through sepcore's trainer: ``train.loss: gkl`` is the generalised KL divergence on STFT
  magnitudes of the denoiser's output (``sepcore.losses.gkl``); the masker's output Ŷ is returned
  as ``Separation.intermediate["masker"]`` so ``train.aux_weight`` × ``train.aux_loss`` supervises
  it (the paper trains both parts with their own gKL). :meth:`MaD.auxiliary_losses` adds the
  paper's regularisers, ``mask_l1`` · ‖diag(W_mask)‖₁ + ``denoiser_l2`` · ‖W_dec‖²₂ (λ = 1e-2,
  1e-4 in the authors' code, whose L1 term is computed on ``.data`` and so never reaches the
  gradient; here it does).

References: Mimilakis et al., ICASSP 2018 ("Proposed Approach", the recurrent inference
algorithm, "Results"); Mimilakis et al., MLSP 2017 (skip-filtering connections).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from sepcore.errors import ConfigError
from sepcore.models import register
from sepcore.models.base import Separation, SeparationModel, float32

SOURCES = ("vocals", "accompaniment")


@dataclass
class MaDSTFTConfig:
    """MaD's analysis (the MaD paper, "Signal representation"; the authors' wsz/N/hop)."""

    n_fft: int = 4096
    win_length: int = 2049  # Hamming window, zero padded to n_fft
    hop: int = 384


@dataclass
class MaDConfig:
    """MaD (Mimilakis et al., ICASSP 2018). Defaults are the paper's sizes and GRU-NRI."""

    sources: list[str] = field(default_factory=lambda: ["vocals", "accompaniment"])
    audio_channels: int = 1
    sample_rate: int = 44100
    stft: MaDSTFTConfig = field(default_factory=MaDSTFTConfig)
    encoder_bins: int = 744  # F: bins the bi-GRU sees (~8 kHz at 44.1 kHz / 4096)
    sequence_length: int = 60  # T: frames per sequence (~0.5 s)
    context: int = 10  # L: context frames at each end of a sequence (2L are dropped)
    iterations: int = 0  # iter of recurrent inference (0 = GRU-NRI)
    tau: float = 1e-2  # τ_term: stop when MSE between successive decoder states < tau
    mask_l1: float = 1e-2  # λ1 · ‖diag(W_mask)‖₁ (auxiliary_losses; 0 = off)
    denoiser_l2: float = 1e-4  # λ2 · ‖W_dec‖²₂ of the denoiser (auxiliary_losses; 0 = off)


def check_config(cfg: MaDConfig) -> None:
    """Raise ConfigError naming the key of an invalid setting."""
    if cfg.audio_channels < 1:
        raise ConfigError(f"model.audio_channels must be >= 1, got {cfg.audio_channels}",
                          key="model.audio_channels")
    bad = [s for s in cfg.sources if s not in SOURCES]
    if "vocals" not in cfg.sources or bad or len(set(cfg.sources)) != len(cfg.sources):
        raise ConfigError(f"model.sources = {list(cfg.sources)}: MaD estimates 'vocals' and "
                          f"optionally the residual 'accompaniment' (each once)",
                          key="model.sources")
    st = cfg.stft
    if st.n_fft < 2 or st.n_fft % 2:
        raise ConfigError(f"model.stft.n_fft must be even and >= 2, got {st.n_fft}",
                          key="model.stft.n_fft")
    if not 2 <= st.win_length <= st.n_fft:
        raise ConfigError(f"model.stft.win_length must be in [2, n_fft = {st.n_fft}], got "
                          f"{st.win_length}", key="model.stft.win_length")
    if not 1 <= st.hop <= st.win_length // 2:
        raise ConfigError(f"model.stft.hop must be in [1, win_length // 2 = "
                          f"{st.win_length // 2}] for the iSTFT, got {st.hop}",
                          key="model.stft.hop")
    bins = st.n_fft // 2 + 1
    if not 1 <= cfg.encoder_bins <= bins:
        raise ConfigError(f"model.encoder_bins must be in [1, n_fft/2 + 1 = {bins}], got "
                          f"{cfg.encoder_bins}", key="model.encoder_bins")
    if cfg.context < 0:
        raise ConfigError(f"model.context must be >= 0, got {cfg.context}", key="model.context")
    if cfg.sequence_length <= 2 * cfg.context:
        raise ConfigError(f"model.sequence_length must exceed 2 * context = {2 * cfg.context}, "
                          f"got {cfg.sequence_length}", key="model.sequence_length")
    if cfg.iterations < 0:
        raise ConfigError(f"model.iterations must be >= 0, got {cfg.iterations}",
                          key="model.iterations")
    if not cfg.tau > 0:
        raise ConfigError(f"model.tau must be > 0, got {cfg.tau}", key="model.tau")
    for key in ("mask_l1", "denoiser_l2"):
        if getattr(cfg, key) < 0:
            raise ConfigError(f"model.{key} must be >= 0, got {getattr(cfg, key)}",
                              key=f"model.{key}")


# --- recurrent inference -------------------------------------------------------------------------


def recurrent_inference(decoder: Callable[[torch.Tensor], torch.Tensor], h_enc: torch.Tensor,
                        iterations: int, tau: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The MaD paper's recurrent inference algorithm, with the stop decided per sequence.

    ``S_0 = G_dec(H̃_enc)``; for ``i = 1..iterations``: ``H = G_dec(S_{i-1})``; a sequence whose
    ``MSE(S_{i-1}, H) < tau`` terminates with ``H``; the others store ``S_i = H`` and go on. The
    result is the last ``H`` computed for each sequence (``S_0`` when ``iterations = 0``).

    Args:
        decoder: G_dec, (N, K, D) → (N, K, D).
        h_enc: (N, K, D) encoder states H̃_enc.
        iterations: iter >= 0.
        tau: τ_term > 0, on the MSE over (K, D) of each sequence.

    Returns:
        ``(state, steps)``: (N, K, D) decoder states and (N,) iterations taken by each sequence.
    """
    state = decoder(h_enc)  # S_0: (N, K, D)
    steps = torch.zeros(state.shape[0], dtype=torch.long, device=state.device)  # (N,)
    done = torch.zeros(state.shape[0], dtype=torch.bool, device=state.device)  # (N,)
    for _ in range(iterations):
        new = decoder(state)  # H = G_dec(S_{i-1}): (N, K, D)
        error = (new - state).detach().pow(2).mean(dim=(1, 2))  # (N,) MSE(S_{i-1}, H)
        active = ~done
        state = torch.where(active[:, None, None], new, state)  # S_i = H (stopped keep theirs)
        steps = steps + active.long()
        done = done | (error < tau)
        if bool(done.all()):
            break
    return state, steps


# --- blocks --------------------------------------------------------------------------------------


def _init_gru(gru: nn.GRU) -> None:
    """The authors' initialisation: orthogonal recurrent, Xavier-normal input weights, 0 biases."""
    for name, param in gru.named_parameters():
        if name.startswith("weight_hh"):
            nn.init.orthogonal_(param)
        elif name.startswith("weight_ih"):
            nn.init.xavier_normal_(param)
        else:
            nn.init.zeros_(param)


class BiGRUEncoder(nn.Module):
    """Masker encoder: bi-GRU with residual connections, context frames dropped.

    (N, T, F) trimmed magnitudes → (N, T − 2L, 2F) H̃_enc (the MaD paper, "Proposed Approach").
    """

    def __init__(self, bins: int, context: int):
        super().__init__()
        self.context = context
        self.gru = nn.GRU(bins, bins, batch_first=True, bidirectional=True)
        _init_gru(self.gru)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, T, F)
        h, _ = self.gru(x)  # (N, T, 2F): forward | backward states
        h = h + torch.cat([x, x], dim=-1)  # residual connection on each direction
        return h[:, self.context:h.shape[1] - self.context]  # (N, T − 2L, 2F)


class GRUDecoder(nn.Module):
    """G_dec: a GRU with as many units as its input, so it can be iterated on its own output."""

    def __init__(self, size: int):
        super().__init__()
        self.gru = nn.GRU(size, size, batch_first=True)
        _init_gru(self.gru)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, K, 2F)
        return self.gru(x)[0]  # (N, K, 2F)


class SparseMask(nn.Module):
    """Sparsifying mask layer M = ReLU(W_mask H_dec + b): (N, K, 2F) → (N, K, N_bins)."""

    def __init__(self, size: int, bins: int):
        super().__init__()
        self.linear = nn.Linear(size, bins)
        nn.init.xavier_normal_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return F.relu(self.linear(h))


class Denoiser(nn.Module):
    """FC encoder/decoder with ReLUs and a skip-filtering connection: Ŷ → ReLU(...) ⊙ Ŷ.

    (N, K, N_bins) → (N, K, N_bins); the hidden layer has N_bins // 2 units (the authors' N/2).
    """

    def __init__(self, bins: int):
        super().__init__()
        self.encoder = nn.Linear(bins, bins // 2)
        self.decoder = nn.Linear(bins // 2, bins)
        for layer in (self.encoder, self.decoder):
            nn.init.xavier_normal_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, y: torch.Tensor) -> torch.Tensor:  # (N, K, N_bins)
        mask = F.relu(self.decoder(F.relu(self.encoder(y))))  # (N, K, N_bins)
        return mask * y  # skip-filtering connection


# --- model ---------------------------------------------------------------------------------------


class MaD(SeparationModel):
    """MaD: bi-GRU/GRU masker with skip-filtering, FC denoiser, recurrent inference.

    ``forward``: (B, C, T) → (B, S, C, T); ``separate`` also returns the masker's estimate as
    ``intermediate["masker"]``.

    References: Mimilakis et al., ICASSP 2018, "Proposed Approach" and the recurrent
    inference algorithm.
    """

    has_intermediate = True

    def __init__(self, cfg: MaDConfig):
        super().__init__()
        check_config(cfg)
        self.cfg = cfg
        bins = cfg.stft.n_fft // 2 + 1
        self.encoder = BiGRUEncoder(cfg.encoder_bins, cfg.context)
        self.decoder = GRUDecoder(2 * cfg.encoder_bins)
        self.mask = SparseMask(2 * cfg.encoder_bins, bins)
        self.denoiser = Denoiser(bins)
        window = torch.hamming_window(cfg.stft.win_length, periodic=False)
        self.register_buffer("window", window, persistent=False)

    @property
    def frame_hop(self) -> int:
        return int(self.cfg.stft.hop)

    @property
    def receptive_field(self) -> int | None:
        return None  # recurrent, and outputs depend on the sequence grid

    # maths ---------------------------------------------------------------------------------------
    @float32
    def stft(self, audio: torch.Tensor) -> torch.Tensor:
        """(M, T) real → (M, n_fft/2 + 1, 1 + T // hop) complex, centred, zero padded."""
        st = self.cfg.stft
        return torch.stft(audio, st.n_fft, st.hop, st.win_length, window=self.window,
                          center=True, pad_mode="constant", return_complex=True)

    @float32
    def istft(self, spec: torch.Tensor, length: int) -> torch.Tensor:
        """(M, n_fft/2 + 1, K) complex → (M, length) real; inverts :meth:`stft`."""
        st = self.cfg.stft
        return torch.istft(spec, st.n_fft, st.hop, st.win_length, window=self.window,
                           center=True, length=length)

    def decode(self, h_enc: torch.Tensor) -> torch.Tensor:
        """G_dec with recurrent inference: (N, K, 2F) H̃_enc → (N, K, 2F) H_dec."""
        return recurrent_inference(self.decoder, h_enc, self.cfg.iterations, self.cfg.tau)[0]

    def sequences(self, magnitude: torch.Tensor) -> torch.Tensor:
        """MaD on (M, N_bins, K) magnitudes → (2, M, N_bins, K): masker Ŷ and denoiser Ŷ_filt."""
        cfg = self.cfg
        m, bins, frames = magnitude.shape
        size, ctx = cfg.sequence_length, cfg.context
        core = size - 2 * ctx  # frames each sequence estimates
        num = -(-frames // core)  # W sequences
        x = magnitude.transpose(1, 2)  # (M, K, N_bins)
        x = F.pad(x, (0, 0, ctx, num * core + ctx - frames))  # (M, W·core + 2L, N_bins)
        x = x.unfold(1, size, core)  # (M, W, N_bins, T)
        x = x.permute(0, 1, 3, 2).reshape(m * num, size, bins)  # (M·W, T, N_bins)
        h_enc = self.encoder(x[..., :cfg.encoder_bins])  # (M·W, core, 2F)
        h_dec = self.decode(h_enc)  # (M·W, core, 2F)
        y_mask = self.mask(h_dec) * x[:, ctx:size - ctx]  # Ŷ = M ⊙ |X|: (M·W, core, N_bins)
        y_filt = self.denoiser(y_mask)  # Ŷ_filt: (M·W, core, N_bins)
        out = torch.stack([y_mask, y_filt])  # (2, M·W, core, N_bins)
        out = out.reshape(2, m, num * core, bins)[:, :, :frames]  # (2, M, K, N_bins)
        return out.transpose(2, 3)  # (2, M, N_bins, K)

    def separate(self, mixture: torch.Tensor) -> Separation:
        """(B, C, T) mixture → final and masker estimates, each (B, S, C, T)."""
        b, c, t = mixture.shape
        audio = mixture.reshape(b * c, t).float()  # (M, T), M = B·C
        spec = self.stft(audio)  # (M, N_bins, K) complex
        mags = self.sequences(spec.abs())  # (2, M, N_bins, K)
        phase = torch.polar(torch.ones_like(spec.real), spec.angle())  # e^{i∠X}: (M, N_bins, K)
        voice = self.istft((mags * phase).reshape(2 * b * c, *spec.shape[1:]), t)  # (2·M, T)
        voice = voice.reshape(2, b, c, t)  # (2, B, C, T): masker, denoiser
        mix = mixture.float().unsqueeze(0)  # (1, B, C, T)
        named = {"vocals": voice, "accompaniment": mix - voice}  # residual accompaniment
        est = torch.stack([named[s] for s in self.cfg.sources], dim=2)  # (2, B, S, C, T)
        est = est.to(mixture.dtype)
        return Separation(estimate=est[1], intermediate={"masker": est[0]})

    def forward(self, mixture: torch.Tensor) -> torch.Tensor:
        """(B, C, T) mixture → (B, S, C, T) estimates (the denoiser's output)."""
        return self.separate(mixture).estimate

    def auxiliary_losses(self, separation: Separation, mixture: torch.Tensor,
                         targets: torch.Tensor) -> dict[str, torch.Tensor]:
        """The paper's regularisers, already weighted: λ1‖diag(W_mask)‖₁ and λ2‖W_dec‖²₂."""
        terms = {}
        if self.cfg.mask_l1:
            diag = torch.diagonal(self.mask.linear.weight)  # (min(N_bins, 2F),)
            terms["mask_l1"] = self.cfg.mask_l1 * diag.abs().sum()
        if self.cfg.denoiser_l2:
            terms["denoiser_l2"] = self.cfg.denoiser_l2 * self.denoiser.decoder.weight.pow(2).sum()
        return terms


register("mad", MaDConfig, MaD)
