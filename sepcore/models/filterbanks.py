"""Learnable signal encodings: parameterised filterbanks and the encoder/decoder pairs on them.

Implements the encodings of the thesis (Mocanu, "Musical source separation", master thesis, EPFL /
Logitech, 2020; ch. 5 "Learnable signal encodings", Fig. 5.3–5.5, Table A.1 names ``encoding``,
``filterbank`` (``fb_type``), ``fb_ratio``, ``filters``, ``who_is_pinv``, ``init_type``) for every
encoder-masker-decoder model:

- filterbanks (``filterbank``): ``conv`` (free weights), ``param_sinc`` (SincNet band-pass filters,
  Ravanelli & Bengio, "Speaker Recognition from Raw Waveform with SincNet", SLT 2018; learnable
  f1, f2; per band a cosine and a sine filter, asteroid-filterbanks' ``ParamSincFB`` layout),
  ``pmpgtf`` (parameterised gammatone, Patterson et al. 1992, in the form of the thesis
  and of asteroid-filterbanks' ``ParamGTF``, learnable f, b, φ — re-implemented here because
  asteroid-filterbanks breaks on NumPy >= 1.24), ``stft`` (a fixed STFT magnitude followed by a
  1×1 conv per kernel, the thesis's hybrid STFT branch), ``mel`` (Meta-TasNet's encoder and
  decoder as the reference code ``pfnet-research/meta-tasnet`` builds them: conv layers ‖ a
  256-band mel branch; Samuel et al., "Meta-learning Extractors for Music Source Separation",
  ICASSP 2020, Fig. 3);
- encodings (``encoding``): ``simple`` (one filterbank layer + ReLU, free transposed-conv decoder;
  with ``conv`` exactly Conv-TasNet's encoder/decoder), ``filterbanks`` (a parameterised
  filterbank in the encoder *and* in the decoder, Fig. 5.3), ``hybrid`` (conv branch ‖
  filterbank/STFT branch, concatenated, then a Conv-ReLU-Conv 1×1 bottleneck to N, Fig. 5.4),
  ``deep`` (``depth`` stacked layers, Fig. 5.5);
- ``who_is_pinv``: ``"dec"`` makes the decoder the pseudo-inverse of the encoder, ``"enc"`` the
  reverse, ``None`` leaves both free (only for the linear single-layer pairs simple/filterbanks).

Choices the thesis leaves open, as implemented here:

- Filter parameters are stored as *normalised* frequencies (cycles per sample, Nyquist = 0.5) so
  an optimiser step of 1e-3 moves a filter by ~44 Hz at 44.1 kHz instead of 1e-3 Hz.
- ``sinc`` filters use the time axis in samples, centred (n = k - (L-1)/2), and normalised
  frequencies, i.e. the formula in seconds divided by the sample rate: the ideal band-pass with
  unit pass-band gain. They are multiplied by a (periodic=False) Hamming window as in SincNet.
  f1 = f_min + |low|, f2 = f1 + f_min + |band|, both clamped just below 1/2, keeps
  0 < f1 < f2 < Nyquist (f_min = 1e-4 cycles per sample).
- ``gammatone`` filters are causal with t = n / sample_rate, n = 1 .. L (not 0 .. L-1: the n = 0
  tap of t^(k-1) is identically zero for k >= 2, which would waste a tap and leave every frame's
  first sample unseen, so no pseudo-inverse decoder could reconstruct it), order k = 2, and every
  filter is scaled to unit L2 norm (the t^(k-1) factor's scale drops out with it).
- ``param_sinc`` pairs every learned band's cosine (symmetric, zero-phase) filter with its sine
  (odd, quadrature) filter, so ``F`` filters have ``ceil(F / 2C)`` bands per channel. A
  cosine-only bank (this library's layout before the sine filters were added, and SincNet's)
  spans only the L/2-dimensional even part of a frame whatever F is, so no frame-wise
  pseudo-inverse decoder can reconstruct the input; with both phases and ``F >= 2·C·L`` the
  pseudo-inverse pair reconstructs (see the tests). Checkpoints of the cosine-only layout (one
  cut-off pair per filter) are refused on load with an error saying so.
- Initialisation (``init_type``): ``mel`` = band edges equally spaced on the mel scale between
  30 Hz and Nyquist (SincNet), ``uniform`` = linearly spaced; a filter's centre is the middle of
  its band. sinc: f1, f2 = the band edges; gammatone: f = the centre, b = 1.019·ERB(f)
  (Glasberg & Moore ERB = 24.7 + 0.108 f, Patterson's 1.019 factor), φ = 0.
- Multi-channel input: a conv filterbank is a full ``(F, C, L)`` weight (identical to
  ``nn.Conv1d(C, F, L, stride, bias=False)``). A parameterised filterbank is one filterbank per
  input channel, interleaved: filter f reads only input channel ``f % C`` and has the centre
  frequency of index ``f // C`` of a ``ceil(F / C)``-point grid, so every channel is covered by
  its own full-range bank, stereo information is kept (a weight shared across channels would only
  see the sum) and low filter indices stay low frequencies for both channels (contiguous band
  splits of the latent stay meaningful). The weight is block-sparse ``(F, C, L)``.
- ``who_is_pinv``: the pseudo-inverse (``torch.linalg.pinv``) of the ``(F, C·L)`` weight matrix,
  recomputed at every forward in training so gradients flow into the other side's parameters
  (in eval mode without autograd it is cached until those parameters change), scaled by
  ``stride / L`` because the overlap-add of transposed convs sums ``L / stride`` copies of every
  sample: with an overcomplete bank (F >= C·L) the pair is an identity away from the signal edges
  when ``stride`` divides ``L`` (before the encoder's ReLU).
- ``stft``: per input channel a Hann-windowed DFT of ``n_fft`` = the layer's kernel size with hop
  = the encoder stride (so its frames coincide with the conv branch's frames), magnitude
  ``sqrt(re² + im² + 1e-8)`` of the ``n_fft // 2 + 1`` bins of all channels, then a 1×1 conv to
  the branch's channels. The DFT basis is a non-persistent buffer (not in checkpoints). It is only
  available inside ``hybrid`` (the magnitude is not linear, so it has no pseudo-inverse decoder).
- ``mel`` (only inside ``hybrid``; ``fb_ratio`` is not used): :class:`MetaTasNetEncoder` and
  :class:`MetaTasNetDecoder`, the reference's layout — ``filters`` conv layers of ``N // 4``
  channels ‖ ``num_mels`` channels of :class:`MelBranch` (``n_fft`` = ``encoder.n_fft`` or the
  reference's ``1024 · (sample_rate // 8000)``, hop ``n_fft // 4``), bottleneck to N; decoder
  1×1 ``N → N/2 + N/4 + …`` + ReLU, one transposed conv per kernel. The mel frames are
  interpolated over the whole input, so such a model has no bounded receptive field.
- ``hybrid``: ``round(fb_ratio · N)`` channels for the filterbank branch, the rest for the conv
  branch; each branch has ``filters`` parallel layers with kernels ``L · 2**i``, zero-padded by
  ``L · (2**i - 1)`` (left half rounded down) so all produce the frames of the kernel-``L`` layer;
  ReLU after each layer; bottleneck ``Conv1×1(filters·N → N)``-ReLU-``Conv1×1(N → N)``. The decoder
  mirrors it with free weights, as the thesis found best (App. A.2): ``Conv1×1(N → N)``-ReLU-
  ``Conv1×1(N → filters·N)``, one transposed conv per kernel size (cropped back to the
  kernel-``L`` frame grid), summed. No biases, as in the rest of the library.
- ``deep``: layer 1 is the chosen filterbank (C → N, kernel L, the encoder stride); layers
  2..depth are filterbanks of the same type N → N with kernel L, stride 1 and "same" padding on
  the frame axis (a parameterised one reads one latent channel per filter and is initialised on
  the frame rate's frequency grid), ReLU after each; the decoder is ``depth - 1`` "same"
  transposed convs then a transposed conv N → C (free weights, as in the thesis' deep runs).
  Each extra layer widens the receptive field by ``L - 1`` frames on each of the two sides.

Shapes: B batch, C audio channels, T samples, F filters, N latent channels, K frames, L kernel.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn

from sepcore.errors import ConfigError
from sepcore.models.base import float32

ENCODINGS = ("simple", "filterbanks", "hybrid", "deep")
FILTERBANKS = ("conv", "param_sinc", "pmpgtf", "stft", "mel")
PINV_SIDES = ("enc", "dec", None)
INIT_TYPES = ("mel", "uniform")
MIN_FREQUENCY_HZ = 30.0
_KEY = "model.encoder"


# --- closed forms -------------------------------------------------------------------------------


def hz_to_mel(hz: torch.Tensor | float) -> torch.Tensor:
    return 2595.0 * torch.log10(1.0 + torch.as_tensor(hz, dtype=torch.float64) / 700.0)


def mel_to_hz(mel: torch.Tensor) -> torch.Tensor:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def erb(f_hz: torch.Tensor) -> torch.Tensor:
    """Equivalent rectangular bandwidth in Hz (Glasberg & Moore 1990)."""
    return 24.7 + 0.108 * f_hz


def band_edges(num_filters: int, sample_rate: float, init_type: str = "mel",
               low_hz: float = MIN_FREQUENCY_HZ) -> torch.Tensor:
    """``num_filters + 1`` band edges in Hz between ``low_hz`` and Nyquist, mel or linear."""
    nyquist = sample_rate / 2
    low = min(low_hz, nyquist / (num_filters + 1))
    if init_type == "mel":
        mels = torch.linspace(float(hz_to_mel(low)), float(hz_to_mel(nyquist)), num_filters + 1,
                              dtype=torch.float64)
        return mel_to_hz(mels)  # (F+1,)
    if init_type == "uniform":
        return torch.linspace(low, nyquist, num_filters + 1, dtype=torch.float64)  # (F+1,)
    raise ConfigError(f"{_KEY}.init_type = {init_type!r}; choose from {list(INIT_TYPES)}",
                      key=f"{_KEY}.init_type")


def sinc_filters(f1: torch.Tensor, f2: torch.Tensor, length: int,
                 sample_rate: float) -> torch.Tensor:
    """SincNet band-pass ``g[n] = 2 f2 sinc(2π f2 n) − 2 f1 sinc(2π f1 n)``, Hamming-windowed.

    Args:
        f1, f2: (F,) lower and upper cut-off frequencies in Hz (0 <= f1 < f2 <= sample_rate / 2).
        length: L taps; n = k - (L - 1) / 2 in samples (centred, symmetric filters).
        sample_rate: Hz; frequencies are normalised to cycles per sample (f / sample_rate), which
            gives the ideal band-pass with unit pass-band gain; sinc(x) = sin(x) / x.
    Returns:
        (F, L) filters. References: Ravanelli & Bengio 2018, eq. 3–5; thesis §5.2.
    """
    n = torch.arange(length, dtype=f1.dtype, device=f1.device) - (length - 1) / 2  # (L,)
    window = torch.hamming_window(length, periodic=False, dtype=f1.dtype, device=f1.device)

    def lowpass(f: torch.Tensor) -> torch.Tensor:  # (F,) Hz -> (F, L)
        return 2 * (f / sample_rate)[:, None] * torch.sinc(2 * (f / sample_rate)[:, None] * n)

    # torch.sinc is sin(πx)/(πx), so sinc_normalised(2 f n) = sin(2π f n) / (2π f n).
    return (lowpass(f2) - lowpass(f1)) * window  # (F, L)


def sine_sinc_filters(f1: torch.Tensor, f2: torch.Tensor, length: int,
                      sample_rate: float) -> torch.Tensor:
    """Quadrature (sine-modulated) band-pass ``g[n] = (cos 2π f1 n − cos 2π f2 n) / (π n)``.

    The Hilbert transform of :func:`sinc_filters`' band-pass (odd-symmetric, ``g[0] = 0``; the
    same unit pass-band gain and Hamming window), asteroid-filterbanks' ``ParamSincFB`` sine
    filters up to its 1 / (2 (f2 − f1)) scaling. Args and returns as :func:`sinc_filters`.
    """
    n = torch.arange(length, dtype=f1.dtype, device=f1.device) - (length - 1) / 2  # (L,)
    window = torch.hamming_window(length, periodic=False, dtype=f1.dtype, device=f1.device)
    centre = n == 0
    safe = torch.where(centre, torch.ones_like(n), n)  # (L,)
    a1 = 2 * math.pi * (f1 / sample_rate)[:, None] * safe  # (F, L)
    a2 = 2 * math.pi * (f2 / sample_rate)[:, None] * safe
    g = (torch.cos(a1) - torch.cos(a2)) / (math.pi * safe)  # (F, L)
    return torch.where(centre, torch.zeros_like(g), g) * window


def gammatone_filters(f: torch.Tensor, b: torch.Tensor, phi: torch.Tensor, length: int,
                      sample_rate: float, order: int = 2) -> torch.Tensor:
    """Gammatone filters ``g[n] = t^(k−1) e^(−2π b t) cos(2π f t + φ)``, t = n / sample_rate.

    Args:
        f, b: (F,) centre frequency and bandwidth in Hz; phi: (F,) phase in radians.
        length: L taps, n = 1 .. L (causal; n = 0 would give an all-zero first tap).
        sample_rate: Hz.
        order: k (2 in the thesis).
    Returns:
        (F, L) filters, each scaled to unit L2 norm. References: Patterson et al. 1992; thesis §5.2.
    """
    t = torch.arange(1, length + 1, dtype=f.dtype, device=f.device) / sample_rate  # (L,)
    envelope = t ** (order - 1) * torch.exp(-2 * math.pi * b[:, None] * t)  # (F, L)
    g = envelope * torch.cos(2 * math.pi * f[:, None] * t + phi[:, None])  # (F, L)
    return g / (g.norm(dim=1, keepdim=True) + 1e-8)


# --- filterbanks: (F, C, L) conv weights from parameters -----------------------------------------


class Filterbank(nn.Module):
    """A bank of F filters on C channels used as an analysis conv or a synthesis transposed conv.

    Subclasses implement :meth:`filters` (the ``(F, C, L)`` weight, rebuilt from the parameters at
    every call so gradients reach them). ``forward`` is the analysis (then ReLU if ``relu``), or
    the synthesis when ``transposed`` (a decoder).
    """

    def __init__(self, in_channels: int, num_filters: int, kernel_size: int, stride: int,
                 relu: bool = False, transposed: bool = False):
        super().__init__()
        self.transposed = transposed
        self.in_channels = in_channels
        self.num_filters = num_filters
        self.kernel_size = kernel_size
        self.stride = stride
        self.relu = relu
        self.window = kernel_size  # samples one frame reads / writes
        self.context_frames = 0  # extra frames of context (deep encoders)

    def filters(self) -> torch.Tensor:  # (F, C, L)
        raise NotImplementedError

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """The linear analysis (before any ReLU): (B, C, T) -> (B, F, K)."""
        return F.conv1d(x, self.filters(), stride=self.stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.transposed:
            return self.synthesis(x)  # (B*, F, K) -> (B*, C, (K-1)·stride + L)
        y = self.transform(x)  # (B, C, T) -> (B, F, K)
        return F.relu(y) if self.relu else y

    def synthesis(self, y: torch.Tensor) -> torch.Tensor:
        """Transposed conv: (B*, F, K) -> (B*, C, (K-1)·stride + L)."""
        return F.conv_transpose1d(y, self.filters(), stride=self.stride)


class ConvFilterbank(Filterbank):
    """Free filters: the weight of ``nn.Conv1d(C, F, L, bias=False)`` (same init, same key)."""

    def __init__(self, in_channels: int, num_filters: int, kernel_size: int, stride: int,
                 relu: bool = False, transposed: bool = False):
        super().__init__(in_channels, num_filters, kernel_size, stride, relu, transposed)
        self.weight = nn.Parameter(torch.empty(num_filters, in_channels, kernel_size))
        # nn.Conv1d / nn.ConvTranspose1d's default init (fan-in from weight dim 1).
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    def filters(self) -> torch.Tensor:
        return self.weight  # (F, C, L)


class _ParamFilterbank(Filterbank):
    """Shared channel layout of parameterised banks: filter f reads input channel f % C.

    ``per_band`` consecutive filters of one channel share a band (1 for gammatone; 2 for sinc,
    its cosine and sine filters): filter f has the band of index ``f // (C · per_band)`` of a
    ``ceil(F / (C · per_band))``-point grid.
    """

    per_band = 1

    def __init__(self, in_channels: int, num_filters: int, kernel_size: int, stride: int,
                 sample_rate: float, init_type: str, relu: bool, transposed: bool):
        super().__init__(in_channels, num_filters, kernel_size, stride, relu, transposed)
        self.sample_rate = float(sample_rate)
        group = in_channels * self.per_band
        per_channel = -(-num_filters // group)
        edges = band_edges(per_channel, sample_rate, init_type)  # (F/(C·per_band)+1,)
        index = torch.arange(num_filters) // group  # (F,) band of each filter
        self.register_buffer("_init_low", edges[:-1][index].float(), persistent=False)
        self.register_buffer("_init_high", edges[1:][index].float(), persistent=False)
        mask = torch.zeros(num_filters, in_channels, 1)
        mask[torch.arange(num_filters), torch.arange(num_filters) % in_channels] = 1.0
        self.register_buffer("channel_mask", mask, persistent=False)  # (F, C, 1)

    def initial_centres(self) -> torch.Tensor:
        """(F,) centre frequency in Hz each filter is initialised at."""
        return (self._init_low + self._init_high) / 2

    def closed_form(self) -> torch.Tensor:  # (F, L)
        raise NotImplementedError

    def filters(self) -> torch.Tensor:
        return self.closed_form()[:, None, :] * self.channel_mask  # (F, C, L)


class SincFilterbank(_ParamFilterbank):
    """``param_sinc``: per learned band a cosine- and a sine-modulated windowed sinc.

    asteroid-filterbanks' ``ParamSincFB`` layout (``n_filters = 2 × bands``): band j with
    cut-offs f1 = f_min + |low_j|, f2 = f1 + f_min + |band_j| gives the band-pass
    :func:`sinc_filters` and its quadrature :func:`sine_sinc_filters`, so the bank spans odd as
    well as even signals and a pseudo-inverse decoder reconstructs (a cosine-only bank cannot:
    zero-phase filters see only the even half of a frame). Filters are ordered by band, then
    phase, then channel: filter f reads channel ``f % C``, is the sine filter when
    ``(f // C) % 2``, and uses the parameters of entry ``(f // 2C) · C + f % C`` (one band per
    channel), so contiguous latent splits stay frequency bands (asteroid lists all cosines,
    then all sines). Both cut-offs are clamped below Nyquist (f1 <= ½ − 2 f_min,
    f2 <= ½ − f_min; normalised frequencies), so 0 < f1 < f2 < Nyquist always holds.
    """

    min_frequency = 1e-4  # cycles per sample
    per_band = 2

    def __init__(self, in_channels: int, num_filters: int, kernel_size: int, stride: int,
                 sample_rate: float, init_type: str = "mel", relu: bool = False,
                 transposed: bool = False):
        super().__init__(in_channels, num_filters, kernel_size, stride, sample_rate, init_type,
                         relu, transposed)
        f = torch.arange(num_filters)
        entry = (f // (2 * in_channels)) * in_channels + f % in_channels  # (F,)
        self.register_buffer("_entry", entry, persistent=False)
        self.register_buffer("_is_sine", (f // in_channels) % 2 == 1, persistent=False)
        first = torch.zeros(int(entry.max()) + 1, dtype=torch.long)
        first[entry.flip(0)] = f.flip(0)  # a filter of each entry (all share its band)
        init_low, init_high = self._init_low[first], self._init_high[first]
        # f1 = init low edge, f2 = init high edge - f_min (strictly below Nyquist, off the clamp)
        low = init_low / self.sample_rate - self.min_frequency
        band = (init_high - init_low) / self.sample_rate - 3 * self.min_frequency
        self.low = nn.Parameter(low.clamp_min(0.0))  # (bands·C,) cycles per sample
        self.band = nn.Parameter(band.clamp_min(0.0))  # (bands·C,)

    def band_cutoffs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(f1, f2) in Hz of each learned band (per channel), each ``(bands·C,)``."""
        f1 = torch.clamp(self.min_frequency + self.low.abs(), max=0.5 - 2 * self.min_frequency)
        f2 = torch.clamp(f1 + self.min_frequency + self.band.abs(), max=0.5 - self.min_frequency)
        return f1 * self.sample_rate, f2 * self.sample_rate

    def cutoffs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(f1, f2) in Hz of each filter, each (F,)."""
        f1, f2 = self.band_cutoffs()
        return f1[self._entry], f2[self._entry]

    def closed_form(self) -> torch.Tensor:
        f1, f2 = self.cutoffs()
        cosine = sinc_filters(f1, f2, self.kernel_size, self.sample_rate)  # (F, L)
        sine = sine_sinc_filters(f1, f2, self.kernel_size, self.sample_rate)  # (F, L)
        return torch.where(self._is_sine[:, None], sine, cosine)  # (F, L)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        old = state_dict.get(prefix + "low")
        if old is not None and old.shape != self.low.shape and old.shape[0] == self.num_filters:
            raise RuntimeError(
                f"{prefix}low has {old.shape[0]} entries, one per filter: these weights were "
                f"trained with the former cosine-only param_sinc layout, which does not load "
                f"into the sine+cosine layout ({self.low.shape[0]} bands for "
                f"{self.num_filters} filters); retrain the model")
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)


class GammatoneFilterbank(_ParamFilterbank):
    """``pmpgtf``: learnable centre f = |f|, bandwidth b = |b| (cycles per sample), phase φ."""

    def __init__(self, in_channels: int, num_filters: int, kernel_size: int, stride: int,
                 sample_rate: float, init_type: str = "mel", relu: bool = False,
                 transposed: bool = False):
        super().__init__(in_channels, num_filters, kernel_size, stride, sample_rate, init_type,
                         relu, transposed)
        centre = self.initial_centres()
        self.f = nn.Parameter(centre / self.sample_rate)  # (F,)
        self.b = nn.Parameter(1.019 * erb(centre) / self.sample_rate)  # (F,)
        self.phi = nn.Parameter(torch.zeros(num_filters))  # (F,)

    def parameters_hz(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(f Hz, b Hz, φ rad), each (F,)."""
        return self.f.abs() * self.sample_rate, self.b.abs() * self.sample_rate, self.phi

    def closed_form(self) -> torch.Tensor:
        f, b, phi = self.parameters_hz()
        return gammatone_filters(f, b, phi, self.kernel_size, self.sample_rate)  # (F, L)


class PinvFilterbank(Filterbank):
    """Filters = pseudo-inverse of another bank's, scaled by stride / L (see module docstring).

    The source bank is held without registering it (it belongs to the other side), so its
    parameters appear once in the state dict and are trained through both sides.
    """

    def __init__(self, source: Filterbank, relu: bool = False, transposed: bool = False):
        super().__init__(source.in_channels, source.num_filters, source.kernel_size,
                         source.stride, relu, transposed)
        self._source = (source,)
        self._cached: tuple[tuple, torch.Tensor] | None = None  # (source parameters' key, filters)

    def _source_key(self) -> tuple:
        """Changes whenever a source parameter is written (in place: ``_version``; replaced:
        ``data_ptr``) or moved (device, dtype)."""
        return tuple((p.data_ptr(), p._version, p.device, p.dtype)
                     for p in self._source[0].parameters())

    def train(self, mode: bool = True) -> PinvFilterbank:
        self._cached = None
        return super().train(mode)

    def filters(self) -> torch.Tensor:
        if self.training or torch.is_grad_enabled():  # gradients flow into the source's weights
            self._cached = None
            return pinv_filters(self._source[0].filters(), self.stride)
        key = self._source_key()
        if self._cached is None or self._cached[0] != key:  # eval: one SVD per weight change
            self._cached = (key, pinv_filters(self._source[0].filters(), self.stride))
        return self._cached[1]


@float32
def pinv_filters(w: torch.Tensor, stride: int) -> torch.Tensor:
    """(F, C, L) filters → the (F, C, L) filters of their pseudo-inverse, scaled by stride / L
    (in float32: ``torch.linalg`` has no half-precision kernels)."""
    f, c, length = w.shape
    inverse = torch.linalg.pinv(w.reshape(f, c * length))  # (C·L, F)
    return inverse.T.reshape(f, c, length) * (stride / length)  # (F, C, L)


def make_filterbank(kind: str, in_channels: int, num_filters: int, kernel_size: int, stride: int,
                    sample_rate: float, init_type: str, relu: bool = False,
                    transposed: bool = False) -> Filterbank:
    """One linear filterbank (``conv``, ``param_sinc`` or ``pmpgtf``)."""
    if kind == "conv":
        return ConvFilterbank(in_channels, num_filters, kernel_size, stride, relu, transposed)
    if kind == "param_sinc":
        return SincFilterbank(in_channels, num_filters, kernel_size, stride, sample_rate,
                              init_type, relu, transposed)
    if kind == "pmpgtf":
        return GammatoneFilterbank(in_channels, num_filters, kernel_size, stride, sample_rate,
                                   init_type, relu, transposed)
    raise ConfigError(f"{_KEY}.filterbank = {kind!r} is not a linear filterbank here; choose "
                      f"from ['conv', 'param_sinc', 'pmpgtf']", key=f"{_KEY}.filterbank")


class STFTBranch(nn.Module):
    """Fixed STFT magnitude per channel, then a 1×1 conv: (B, C, T) -> (B, F, K)."""

    def __init__(self, in_channels: int, num_filters: int, n_fft: int, stride: int):
        super().__init__()
        bins = n_fft // 2 + 1
        n = torch.arange(n_fft, dtype=torch.float64)
        k = torch.arange(bins, dtype=torch.float64)[:, None]
        window = torch.hann_window(n_fft, periodic=True, dtype=torch.float64)
        angle = 2 * math.pi * k * n / n_fft  # (bins, n_fft)
        basis = torch.cat([torch.cos(angle), -torch.sin(angle)]) * window  # (2·bins, n_fft)
        self.register_buffer("basis", basis[:, None, :].float(), persistent=False)
        self.bins = bins
        self.stride = stride
        self.proj = nn.Conv1d(in_channels * bins, num_filters, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, _ = x.shape
        mag = self.magnitude(x)  # (B·C, bins, K)
        return self.proj(mag.reshape(batch, channels * self.bins, -1))  # (B, F, K)

    @float32
    def magnitude(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, T) → (B·C, bins, K) STFT magnitudes, in float32."""
        batch, channels, length = x.shape
        spec = F.conv1d(x.reshape(batch * channels, 1, length), self.basis,
                        stride=self.stride)  # (B·C, 2·bins, K)
        re, im = spec.split(self.bins, dim=1)
        return torch.sqrt(re.pow(2) + im.pow(2) + 1e-8)  # (B·C, bins, K)


def mel_fft_size(cfg, sample_rate: int) -> int:
    """``n_fft`` of the mel branch: ``cfg.n_fft`` or the reference's 1024·K, K = rate // 8000."""
    if cfg.n_fft is not None:
        return int(cfg.n_fft)
    return 1024 * max(1, int(sample_rate) // 8000)


class MelBranch(nn.Module):
    """Meta-TasNet's spectrogram branch: (B, C, T) -> (B, num_mels, K) on the conv frames.

    As the reference ``model/spectrogram.py``: a Hann-windowed STFT (``n_fft``, hop
    ``n_fft // 4``, centred, reflect padding) → log10 power (+1e-8) → per-bin normalisation
    ``(x − mean) / std`` by statistics of the training inputs → a learned per-bin affine
    (scale 1, bias 0 at start) → the learned "mel transform", a 1×1 conv with bias from the
    ``n_fft // 2 + 1`` bins to ``num_mels`` channels → linear interpolation (align_corners) of
    its frames onto the ``frames`` of the conv branch. The reference computes ``mean``/``std``
    once before training from about 5000 training samples; sepcore's models read no data, so
    the branch accumulates them (exact pooled mean and variance, per bin) from the first
    ``stat_samples`` inputs it sees in training mode and keeps them fixed thereafter; they are
    persistent buffers (saved and restored with the weights, not parameters). Multichannel
    input: the power spectra of the channels are averaged (the reference is mono). The reference
    also divides every training track by its mixture's standard deviation; sepcore feeds the
    audio as it is, so at initialisation the normalised mel channels outweigh the conv channels
    of quiet audio (e.g. std 0.5 against 0.035 for white noise of std 0.1) until training
    rebalances the bottleneck.
    """

    stat_samples = 5000

    def __init__(self, num_mels: int, n_fft: int):
        super().__init__()
        self.pool = True  # False: inputs that are not mixtures (see ``frozen_statistics``)
        self.n_fft, self.hop = n_fft, n_fft // 4
        bins = n_fft // 2 + 1
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        self.register_buffer("mean", torch.zeros(1, bins, 1))
        self.register_buffer("var", torch.ones(1, bins, 1))
        self.register_buffer("seen", torch.zeros(()))  # inputs pooled into mean/var so far
        self._seen_host: tuple[tuple, float] = ((), 0.0)  # (seen's identity and version, value)
        self.affine_scale = nn.Parameter(torch.ones(1, bins, 1))
        self.affine_bias = nn.Parameter(torch.zeros(1, bins, 1))
        self.mel_transform = nn.Conv1d(bins, num_mels, 1, bias=True)

    @float32
    def log_power(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, T) -> (B, bins, frames) log10 power, averaged over the channels."""
        batch, channels, length = x.shape
        flat = x.reshape(batch * channels, length).float()
        mode = "reflect" if length > self.n_fft // 2 else "constant"
        spec = torch.stft(flat, self.n_fft, self.hop, window=self.window, center=True,
                          pad_mode=mode, return_complex=True)  # (B·C, bins, frames)
        power = spec.real.pow(2) + spec.imag.pow(2)
        power = power.view(batch, channels, *power.shape[1:]).mean(dim=1)  # (B, bins, frames)
        return torch.log10(power + 1e-8)

    def seen_count(self) -> float:
        """``seen`` as a number, read from the device only when the buffer changed (pooling,
        ``load_state_dict``, a move): not at every training step once pooling is over."""
        key = (self.seen.data_ptr(), self.seen._version, self.seen.device)
        if self._seen_host[0] != key:
            self._seen_host = (key, float(self.seen))
        return self._seen_host[1]

    @torch.no_grad()
    def _pool_statistics(self, mag: torch.Tensor) -> None:
        """Merge a batch's per-bin mean/variance into the running ones (exact pooling)."""
        n, b = self.seen_count(), float(mag.shape[0])
        batch_mean = mag.mean(dim=(0, 2), keepdim=True).to(self.mean)
        batch_var = mag.var(dim=(0, 2), keepdim=True, unbiased=False).to(self.var)
        if n == 0:
            self.mean.copy_(batch_mean)
            self.var.copy_(batch_var)
        else:
            mean = (n * self.mean + b * batch_mean) / (n + b)
            var = (n * (self.var + (self.mean - mean) ** 2)
                   + b * (batch_var + (batch_mean - mean) ** 2)) / (n + b)
            self.mean.copy_(mean)
            self.var.copy_(var)
        self.seen.add_(b)

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        mag = self.log_power(x)  # (B, bins, frames_stft)
        if self.training and self.pool and self.seen_count() < self.stat_samples:
            self._pool_statistics(mag)
        mag = (mag - self.mean) / torch.sqrt(self.var + 1e-8)  # (B, bins, frames_stft)
        mag = mag * self.affine_scale + self.affine_bias
        mel = self.mel_transform(mag.to(x.dtype))  # (B, num_mels, frames_stft)
        return F.interpolate(mel, size=frames, mode="linear", align_corners=True)  # (B, M, K)


@contextlib.contextmanager
def frozen_statistics(module: nn.Module):
    """Within the block, no :class:`MelBranch` under ``module`` pools input statistics (for
    encodings of true sources, as the reference pools mixtures only)."""
    branches = [m for m in module.modules() if isinstance(m, MelBranch)]
    saved = [m.pool for m in branches]
    for m in branches:
        m.pool = False
    try:
        yield
    finally:
        for m, flag in zip(branches, saved, strict=True):
            m.pool = flag


class MetaTasNetEncoder(nn.Module):
    """Meta-TasNet's encoder: conv layers ‖ mel branch → Conv-ReLU-Conv 1×1 → (B, N, K).

    Reference ``model/encoder.py``: ``filters`` parallel convs with kernels ``L · 2**i`` and
    ``N // 4`` channels each (ReLU), concatenated with the :class:`MelBranch` (no ReLU), then
    ``Conv1×1(filters·N//4 + num_mels → N)``-ReLU-``Conv1×1(N → N)``, no biases. The longer
    kernels are zero-padded to the frames of the kernel-``L`` layer (sepcore's frame grid; the
    reference pads every layer by ``(k − stride) // 2``).
    """

    global_context = True  # the mel frames are interpolated over the whole input

    def __init__(self, cfg, audio_channels: int, sample_rate: int, stride: int):
        super().__init__()
        kernels = [cfg.L * 2**i for i in range(cfg.filters)]
        self.pads = [_same_frames_pad(k, cfg.L) for k in kernels]
        width = cfg.N // 4
        self.conv = nn.ModuleList(ConvFilterbank(audio_channels, width, k, stride, relu=True)
                                  for k in kernels)
        self.mel = MelBranch(cfg.num_mels, mel_fft_size(cfg, sample_rate))
        self.bottleneck = nn.Sequential(
            nn.Conv1d(width * cfg.filters + cfg.num_mels, cfg.N, 1, bias=False), nn.ReLU(),
            nn.Conv1d(cfg.N, cfg.N, 1, bias=False))
        self.window = max(kernels[-1], self.mel.n_fft)
        self.context_frames = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [layer(F.pad(x, pad)) for layer, pad in zip(self.conv, self.pads, strict=True)]
        outs.append(self.mel(x, outs[0].shape[-1]))  # (B, num_mels, K)
        return self.bottleneck(torch.cat(outs, dim=1))  # (B, filters·N/4 + mels, K) -> (B, N, K)


class MetaTasNetDecoder(nn.Module):
    """Reference ``model/decoder.py``: 1×1 ``N → Σ N//2**(i+1)`` + ReLU, then per kernel
    ``L · 2**i`` a transposed conv from its ``N // 2**(i+1)`` channels, summed (no biases)."""

    def __init__(self, cfg, audio_channels: int, stride: int):
        super().__init__()
        self.L, self.stride = cfg.L, stride
        kernels = [cfg.L * 2**i for i in range(cfg.filters)]
        self.widths = [cfg.N // 2 ** (i + 1) for i in range(cfg.filters)]
        self.crops = [_same_frames_pad(k, cfg.L)[0] for k in kernels]
        self.bottleneck = nn.Sequential(nn.Conv1d(cfg.N, sum(self.widths), 1, bias=False),
                                        nn.ReLU())
        self.layers = nn.ModuleList(ConvFilterbank(audio_channels, n, k, stride)
                                    for n, k in zip(self.widths, kernels, strict=True))
        self.window = kernels[-1]
        self.context_frames = 0

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        length = (y.shape[-1] - 1) * self.stride + self.L
        parts = self.bottleneck(y).split(self.widths, dim=1)  # filters × (B*, N/2^(i+1), K)
        out = 0
        for layer, crop, part in zip(self.layers, self.crops, parts, strict=True):
            full = F.conv_transpose1d(part, layer.weight, stride=self.stride)  # (B*, C, T_k)
            out = out + full[..., crop:crop + length]
        return out  # (B*, C, (K-1)·stride + L)


# --- encodings ----------------------------------------------------------------------------------


def _same_frames_pad(kernel: int, base: int) -> tuple[int, int]:
    """Zero padding (left, right) giving a kernel-``kernel`` conv the frames of kernel ``base``."""
    extra = kernel - base
    return extra // 2, extra - extra // 2


class HybridEncoder(nn.Module):
    """Conv branch ‖ filterbank (or STFT) branch → concat → Conv-ReLU-Conv 1×1 → (B, N, K)."""

    def __init__(self, cfg, audio_channels: int, sample_rate: int, stride: int):
        super().__init__()
        n_fb = round(cfg.fb_ratio * cfg.N)
        n_conv = cfg.N - n_fb
        kernels = [cfg.L * 2**i for i in range(cfg.filters)]
        self.pads = [_same_frames_pad(k, cfg.L) for k in kernels]
        self.conv = nn.ModuleList(
            ConvFilterbank(audio_channels, n_conv, k, stride, relu=True) for k in kernels
        ) if n_conv else nn.ModuleList()
        if not n_fb:
            self.fb = nn.ModuleList()
        elif cfg.filterbank == "stft":
            self.fb = nn.ModuleList(STFTBranch(audio_channels, n_fb, k, stride) for k in kernels)
        else:
            self.fb = nn.ModuleList(
                make_filterbank(cfg.filterbank, audio_channels, n_fb, k, stride, sample_rate,
                                cfg.init_type, relu=True) for k in kernels)
        width = (len(self.conv) and n_conv * cfg.filters) + (len(self.fb) and n_fb * cfg.filters)
        self.bottleneck = nn.Sequential(nn.Conv1d(width, cfg.N, 1, bias=False), nn.ReLU(),
                                        nn.Conv1d(cfg.N, cfg.N, 1, bias=False))
        self.window = kernels[-1]
        self.context_frames = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = []
        for branch in (self.conv, self.fb):
            for layer, pad in zip(branch, self.pads, strict=False):
                y = layer(F.pad(x, pad))  # (B, F_branch, K)
                outs.append(F.relu(y) if isinstance(layer, STFTBranch) else y)
        return self.bottleneck(torch.cat(outs, dim=1))  # (B, filters·N, K) -> (B, N, K)


class HybridDecoder(nn.Module):
    """Conv-ReLU-Conv 1×1 (N → filters·N) → one transposed conv per kernel size, summed."""

    def __init__(self, cfg, audio_channels: int, stride: int):
        super().__init__()
        self.N, self.L, self.stride = cfg.N, cfg.L, stride
        kernels = [cfg.L * 2**i for i in range(cfg.filters)]
        self.crops = [_same_frames_pad(k, cfg.L)[0] for k in kernels]
        self.bottleneck = nn.Sequential(nn.Conv1d(cfg.N, cfg.N, 1, bias=False), nn.ReLU(),
                                        nn.Conv1d(cfg.N, cfg.N * cfg.filters, 1, bias=False))
        self.layers = nn.ModuleList(ConvFilterbank(audio_channels, cfg.N, k, stride)
                                    for k in kernels)  # (N, C, k) transposed-conv weights
        self.window = kernels[-1]
        self.context_frames = 0

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        frames = y.shape[-1]
        length = (frames - 1) * self.stride + self.L
        parts = self.bottleneck(y).split(self.N, dim=1)  # filters × (B*, N, K)
        out = 0
        for layer, crop, part in zip(self.layers, self.crops, parts, strict=True):
            # weight (N, C, k) read as a ConvTranspose1d(N, C, k) weight
            full = F.conv_transpose1d(part, layer.weight, stride=self.stride)  # (B*, C, T_k)
            out = out + full[..., crop:crop + length]
        return out  # (B*, C, (K-1)·stride + L)


class DeepEncoder(nn.Module):
    """``depth`` stacked filterbank layers, each followed by ReLU: (B, C, T) -> (B, N, K)."""

    def __init__(self, cfg, audio_channels: int, sample_rate: int, stride: int):
        super().__init__()
        frame_rate = sample_rate / stride
        self.layers = nn.ModuleList(
            [make_filterbank(cfg.filterbank, audio_channels, cfg.N, cfg.L, stride, sample_rate,
                             cfg.init_type, relu=True)]
            + [make_filterbank(cfg.filterbank, cfg.N, cfg.N, cfg.L, 1, frame_rate, cfg.init_type,
                               relu=True) for _ in range(cfg.depth - 1)])
        self.pad = _same_frames_pad(cfg.L, 1)
        self.window = cfg.L
        self.context_frames = (cfg.depth - 1) * (cfg.L - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.layers[0](x)  # (B, N, K)
        for layer in self.layers[1:]:
            y = layer(F.pad(y, self.pad))  # (B, N, K)
        return y


class DeepDecoder(nn.Module):
    """``depth - 1`` "same" transposed convs N → N (ReLU between), then N → C with the stride."""

    def __init__(self, cfg, audio_channels: int, stride: int):
        super().__init__()
        self.hidden = nn.ModuleList(ConvFilterbank(cfg.N, cfg.N, cfg.L, 1)
                                    for _ in range(cfg.depth - 1))
        self.out = ConvFilterbank(audio_channels, cfg.N, cfg.L, stride)  # weight (N, C, L)
        self.crop = _same_frames_pad(cfg.L, 1)[0]
        self.window = cfg.L
        self.context_frames = (cfg.depth - 1) * (cfg.L - 1)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        frames = y.shape[-1]
        for layer in self.hidden:
            y = F.conv_transpose1d(y, layer.weight)[..., self.crop:self.crop + frames]  # (B*,N,K)
            y = F.relu(y)
        return self.out.synthesis(y)  # (B*, C, (K-1)·stride + L)


# --- validation and the factory -----------------------------------------------------------------


def _error(field_name: str, value, why: str) -> ConfigError:
    return ConfigError(f"{_KEY}.{field_name} = {value!r} {why}", key=f"{_KEY}.{field_name}")


def check_encoder_config(cfg) -> None:
    """Raise ConfigError naming the key of an invalid or unsupported encoder combination."""
    if cfg.encoding not in ENCODINGS:
        raise _error("encoding", cfg.encoding, f"is unknown; choose from {list(ENCODINGS)}")
    if cfg.filterbank not in FILTERBANKS:
        raise _error("filterbank", cfg.filterbank, f"is unknown; choose from {list(FILTERBANKS)}")
    if cfg.who_is_pinv not in PINV_SIDES:
        raise _error("who_is_pinv", cfg.who_is_pinv, f"is unknown; choose from {list(PINV_SIDES)}")
    if cfg.init_type not in INIT_TYPES:
        raise _error("init_type", cfg.init_type, f"is unknown; choose from {list(INIT_TYPES)}")
    if cfg.filterbank in ("stft", "mel") and cfg.encoding != "hybrid":
        raise _error("filterbank", cfg.filterbank, f"is only available with encoding 'hybrid' "
                     f"(got {cfg.encoding!r}): a magnitude branch is not a linear filterbank")
    if cfg.filterbank == "mel":
        if cfg.num_mels < 1:
            raise _error("num_mels", cfg.num_mels, "must be >= 1")
        if cfg.n_fft is not None and cfg.n_fft < 4:
            raise _error("n_fft", cfg.n_fft, "must be >= 4 (or null for 1024 · rate // 8000)")
        if cfg.N < 4:
            raise _error("N", cfg.N, "must be >= 4 with filterbank 'mel' (N // 4 conv channels)")
    if cfg.encoding == "filterbanks" and cfg.filterbank == "conv":
        raise _error("filterbank", "conv", "is not a filterbank for encoding 'filterbanks' "
                     "(thesis Table A.1: 'param_sinc' or 'pmpgtf'; use encoding 'simple')")
    if cfg.who_is_pinv is not None and cfg.encoding not in ("simple", "filterbanks"):
        raise _error("who_is_pinv", cfg.who_is_pinv, f"needs a linear single-layer pair "
                     f"(encoding 'simple' or 'filterbanks'), got encoding {cfg.encoding!r}")
    if cfg.who_is_pinv == "enc" and cfg.encoding == "simple" and cfg.filterbank != "conv":
        raise _error("who_is_pinv", "enc", f"with encoding 'simple' would replace the "
                     f"{cfg.filterbank!r} encoder by the pseudo-inverse of a free decoder; use "
                     f"encoding 'filterbanks' for a parameterised decoder")
    if cfg.encoding == "hybrid":
        if not 0.0 <= cfg.fb_ratio <= 1.0:
            raise _error("fb_ratio", cfg.fb_ratio, "must lie in [0, 1]")
        if cfg.filters < 1:
            raise _error("filters", cfg.filters, "must be >= 1")
    if cfg.encoding == "deep" and cfg.depth < 1:
        raise _error("depth", cfg.depth, "must be >= 1")


def build_encoding(cfg, audio_channels: int, sample_rate: int) -> tuple[nn.Module, nn.Module]:
    """Encoder ``(B, C, T) -> (B, N, K)`` and decoder ``(B*, N, K) -> (B*, C, (K-1)·stride + L)``.

    Args:
        cfg: an ``EncoderConfig`` (``sepcore.models.convtasnet``); ``stride`` None = L // 2.
        audio_channels: C.
        sample_rate: Hz, for the initial frequencies of parameterised filters.
    Both modules expose ``window`` (samples one frame reads / writes) and ``context_frames``
    (extra frames of context of stacked layers) for the model's receptive field.
    References: thesis ch. 5, Fig. 5.3–5.5, Table A.1.
    """
    check_encoder_config(cfg)
    stride = cfg.stride if cfg.stride is not None else cfg.L // 2
    C, N, L = audio_channels, cfg.N, cfg.L
    kind, pinv = cfg.filterbank, cfg.who_is_pinv
    if cfg.encoding == "hybrid" and kind == "mel":
        return (MetaTasNetEncoder(cfg, C, sample_rate, stride),
                MetaTasNetDecoder(cfg, C, stride))
    if cfg.encoding == "hybrid":
        return (HybridEncoder(cfg, C, sample_rate, stride), HybridDecoder(cfg, C, stride))
    if cfg.encoding == "deep":
        return DeepEncoder(cfg, C, sample_rate, stride), DeepDecoder(cfg, C, stride)
    dec_kind = kind if cfg.encoding == "filterbanks" else "conv"
    if pinv == "enc":
        decoder = make_filterbank(dec_kind, C, N, L, stride, sample_rate, cfg.init_type,
                                  transposed=True)
        return PinvFilterbank(decoder, relu=True), decoder
    encoder = make_filterbank(kind, C, N, L, stride, sample_rate, cfg.init_type, relu=True)
    if pinv == "dec":
        return encoder, PinvFilterbank(encoder, transposed=True)
    # A free conv decoder keeps Conv-TasNet's state-dict key ``decoder.weight``.
    return encoder, make_filterbank(dec_kind, C, N, L, stride, sample_rate, cfg.init_type,
                                    transposed=True)


# --- analysis helpers ---------------------------------------------------------------------------


def filter_responses(encoder: nn.Module) -> torch.Tensor:
    """Effective linear filters ``(N, C, L)`` of a linear encoder (encoding simple/filterbanks)."""
    if not isinstance(encoder, Filterbank):
        raise ConfigError(f"{_KEY}.encoding: filter responses need a linear single-layer encoder "
                          f"(encoding 'simple' or 'filterbanks'), got {type(encoder).__name__}",
                          key=f"{_KEY}.encoding")
    with torch.no_grad():
        return encoder.filters().detach().clone()


def centre_frequencies_and_bandwidths(responses: torch.Tensor, sample_rate: float,
                                      n_fft: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Centre and bandwidth (Hz) of each filter, measured on its power spectrum.

    Args:
        responses: (N, C, L) or (N, L) filters; the power spectra of a filter's channels are summed.
        sample_rate: Hz.
        n_fft: zero-padded FFT size (at least L) for a fine frequency grid.
    Returns:
        centre (N,): the spectral centroid of the power spectrum |H(f)|² over [0, Nyquist];
        bandwidth (N,): the total width of the frequencies within 3 dB of the peak (the −3 dB
        bandwidth of a single-lobe filter; the sum of the lobes' widths for a multi-band one).
    """
    if responses.dim() == 2:
        responses = responses[:, None, :]
    n_fft = max(n_fft, responses.shape[-1])
    power = torch.fft.rfft(responses.detach().double(), n=n_fft).abs().pow(2).sum(dim=1)  # (N, F)
    freqs = torch.fft.rfftfreq(n_fft, d=1.0 / sample_rate, dtype=torch.float64)  # (F,)
    centre = (power * freqs).sum(dim=1) / power.sum(dim=1).clamp_min(1e-30)
    above = power >= 0.5 * power.max(dim=1, keepdim=True).values
    bandwidth = above.sum(dim=1).double() * (sample_rate / n_fft)
    return centre.float(), bandwidth.float()
