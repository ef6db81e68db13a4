"""BSSEval v4 (SDR, ISR, SIR, SAR per window), exact and fast in torch, and museval's track JSON.

:func:`evaluate` computes what ``museval.evaluate(..., mode="v4")`` computes (``bss_eval`` in its
``bss_eval_images`` form, no permutation search, 512-tap distortion filters estimated once on the
whole track, metrics per window), to round-off, 50-100x faster on a CPU and on CUDA when given
CUDA tensors. :func:`evaluate_track` groups the targets as ``museval.eval_mus_track`` does and
returns a ``museval.TrackStore``, so the JSONs written here aggregate exactly like SiSEC 2018's;
``backend="museval"`` runs museval itself.

How (notation: P = sources x channels reference signals, L = 512 taps, N samples, W window):

1. Global correlations of every reference channel with every reference and estimate channel at
   lags ``0..L-1``, by overlap-add in blocks of ~8k samples: one real FFT per channel and block,
   cross-spectra summed over blocks as one batched matrix product, one inverse FFT per pair.
2. The Gram matrix of the delayed references, ``G[(x, a), (y, b)] = r_xy[b - a]`` (block
   Toeplitz, ``(P L)^2``), is factorised ONCE (Cholesky of ``G + eps I``; LU, then least squares,
   where that fails, as museval's ``np.linalg.solve``/``lstsq``) and solved for every estimate's
   filters at once; the per-source filters of the spatial distortion use the diagonal blocks,
   batched over sources.
3. Every window is then one FFT per channel; the projections onto all references and onto the
   true source are products of spectra (one batched contraction for all windows, sources and
   channels), and every energy (``||s_true||^2``, ``||e_spat||^2``, ...) is a Parseval sum in the
   frequency domain, so no projection is ever transformed back to time.

float64 matters twice: ``G`` of music is badly conditioned (low-passed, correlated stems), so its
accumulation and factorisation need double precision; and the SAR/ISR denominators are small
differences of large signals (a 30 dB SAR is a residual of 1e-3 of the estimate's energy).

References:
    Stöter, Liutkus, Ito, "The 2018 Signal Separation Evaluation Campaign", LVA/ICA 2018, §3
    (BSSEval v4: time-invariant distortion filters, 1 s windows, median over windows).
    Vincent, Gribonval, Févotte, "Performance measurement in blind audio source separation",
    IEEE TASLP 14(4), 2006, §III-IV (the projections and the four energy ratios).
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import museval
import numpy as np
import scipy.fft
import torch
import torch.nn.functional as F

__all__ = ["BACKENDS", "FILTERS_LEN", "bss_eval_v4", "evaluate", "evaluate_track",
           "save_track_json"]

logger = logging.getLogger(__name__)

BACKENDS = ("sepcore", "museval")
FILTERS_LEN = 512  # distortion filter taps (museval's filters_len)
_EPS = float(np.finfo(float).eps)  # museval's ridge on the Gram matrix (np.finfo(float).eps)
_CORR_FFT = 8192  # FFT length of the blocks of the global correlations
_CHUNK_BYTES = 256 * 2**20  # memory for the spectra of one batch of blocks / windows

ArrayLike = np.ndarray | torch.Tensor | Sequence[Any]


# ---------------------------------------------------------------------------------------------
# FFT helpers: scipy's pocketfft on CPU (several times faster than torch's in float64), torch's
# cuFFT on CUDA; torch tensors in and out either way.


def _rfft0(x: torch.Tensor, n: int) -> torch.Tensor:
    """Real FFT along dim 0 (zero-padded to ``n``): (T, ...) -> (n // 2 + 1, ...) complex."""
    if x.device.type == "cpu":
        out = scipy.fft.rfft(x.numpy(), n=n, axis=0, workers=torch.get_num_threads())
        return torch.from_numpy(out)
    return torch.fft.rfft(x, n=n, dim=0)


def _irfft0(x: torch.Tensor, n: int) -> torch.Tensor:
    """Inverse of :func:`_rfft0` along dim 0: (n // 2 + 1, ...) -> (n, ...) real."""
    if x.device.type == "cpu":
        out = scipy.fft.irfft(x.numpy(), n=n, axis=0, workers=torch.get_num_threads())
        return torch.from_numpy(out)
    return torch.fft.irfft(x, n=n, dim=0)


def _chunk(items: int, bytes_per_item: int) -> int:
    return max(1, min(items, _CHUNK_BYTES // max(1, bytes_per_item)))


# ---------------------------------------------------------------------------------------------
# The maths


def _lagged_correlations(lead: torch.Tensor, lag: torch.Tensor, max_lag: int) -> torch.Tensor:
    """``r[a, b, k] = sum_n lead[a, n + k] * lag[b, n]`` for ``0 <= k < max_lag``.

    Signals are zero outside ``[0, N)``, so these are the exact linear correlations museval takes
    from zero-padded whole-track FFTs. Computed blockwise: block ``m`` of ``lag`` (``B`` samples)
    against ``lead[mB : mB + B + max_lag - 1]``, FFT length ``B + max_lag - 1`` (no wrap-around
    at the kept lags), cross-spectra summed over blocks (a batched matrix product over
    frequencies), one inverse FFT per pair.

    Args:
        lead: (A, N) signals.
        lag: (B, N) signals.
        max_lag: number of non-negative lags kept.

    Returns:
        (A, B, max_lag) correlations.
    """
    n = lead.shape[-1]
    fft_len = min(_CORR_FFT, scipy.fft.next_fast_len(n + max_lag - 1, real=True))
    fft_len = max(fft_len, 2 * max_lag)
    block = fft_len - max_lag + 1
    nblk = math.ceil(n / block)
    lead = F.pad(lead, (0, nblk * block + max_lag - 1 - n))
    lag = F.pad(lag, (0, nblk * block - n))
    lead_blocks = lead.unfold(-1, block + max_lag - 1, block).permute(2, 0, 1)  # (B+L-1, A, m)
    lag_blocks = lag.view(lag.shape[0], nblk, block).permute(2, 0, 1)  # (block, B, m)
    nfreq = fft_len // 2 + 1
    step = _chunk(nblk, (lead.shape[0] + lag.shape[0]) * nfreq * 16)
    spectrum = None
    for start in range(0, nblk, step):  # batches of blocks, only to bound memory
        u = _rfft0(lead_blocks[..., start : start + step], fft_len)  # (F, A, m)
        v = _rfft0(lag_blocks[..., start : start + step], fft_len)  # (F, B, m)
        part = torch.bmm(u, v.conj().transpose(1, 2))  # (F, A, B)
        spectrum = part if spectrum is None else spectrum + part
    return _irfft0(spectrum, fft_len)[:max_lag].permute(1, 2, 0)  # (A, B, L)


def _gram(rr: torch.Tensor) -> torch.Tensor:
    """Gram matrix of the delayed references, museval's ``_reshape_G(G)``.

    Args:
        rr: (P, P, L) correlations ``r_xy[k] = sum_n s_x[n + k] s_y[n]`` at lags ``k >= 0``.

    Returns:
        (P L, P L) ``G[(x, a), (y, b)] = <s_x delayed by a, s_y delayed by b> = r_xy[b - a]``.
    """
    p, _, taps = rr.shape
    # lags -(L-1)..L-1: r_xy[-k] = r_yx[k]
    full = torch.cat([rr.transpose(0, 1).flip(-1)[..., :-1], rr], dim=-1)  # (P, P, 2L-1)
    ar = torch.arange(taps, device=rr.device)
    lags = ar[None, :] - ar[:, None] + taps - 1  # (L, L): b - a + L - 1
    return full[:, :, lags].permute(0, 2, 1, 3).reshape(p * taps, p * taps)


def _solve(gram: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """``(gram + eps I)^-1 rhs``, batched, as museval's ``_compute_projection_filters``.

    Cholesky of ``gram + eps I`` (about 1.4x faster than LU on 4096^2); where it breaks down (the
    Gram matrix of music is often numerically semi-definite), LU with partial pivoting, as
    museval's ``np.linalg.solve`` (on the CPU it IS that call); where a
    matrix is exactly singular, museval's fallback ``np.linalg.lstsq(G, D)`` (no ridge).

    Args:
        gram: (..., n, n) symmetric positive semi-definite.
        rhs: (..., n, k).

    Returns:
        (..., n, k) solutions.
    """
    batch = gram.reshape(-1, *gram.shape[-2:])
    b = rhs.reshape(-1, *rhs.shape[-2:])
    eye = torch.eye(batch.shape[-1], dtype=batch.dtype, device=batch.device)
    # Cholesky first (half LU's flops); where it breaks down (numerically semi-definite), LU as
    # museval. Both solve the same system; they differ by round-off only where G is well posed
    factor, info = torch.linalg.cholesky_ex(batch + _EPS * eye)
    if not bool((info != 0).any()):
        return torch.cholesky_solve(b, factor).reshape(rhs.shape)
    if batch.device.type == "cpu":
        # numpy, not torch: torch's batched CPU LU fails with several threads (MKL DLASWP)
        a, d = (batch + _EPS * eye).numpy(), b.numpy()
        try:
            return torch.from_numpy(np.linalg.solve(a, d)).reshape(rhs.shape)
        except np.linalg.LinAlgError:
            out = torch.empty_like(b)
            for i in range(batch.shape[0]):
                out[i] = torch.from_numpy(_solve_or_lstsq(a[i], d[i], batch[i].numpy()))
            return out.reshape(rhs.shape)
    out, info = torch.linalg.solve_ex(batch + _EPS * eye, b)
    for i in (info != 0).nonzero().flatten().tolist():
        out[i] = torch.from_numpy(
            np.linalg.lstsq(batch[i].cpu().numpy(), b[i].cpu().numpy())[0]
        ).to(out)
    return out.reshape(rhs.shape)


def _solve_or_lstsq(a: np.ndarray, d: np.ndarray, gram: np.ndarray) -> np.ndarray:
    try:
        return np.linalg.solve(a, d)
    except np.linalg.LinAlgError:  # exactly singular: museval's fallback
        logger.debug("BSSEval Gram matrix is singular; least squares as museval")
        return np.linalg.lstsq(gram, d)[0]


def _framed(x: torch.Tensor, win: int, hop: int) -> torch.Tensor:
    """(..., N) -> (..., nwin, win) windows as museval's ``Framing`` (one short one if N <= win)."""
    n = x.shape[-1]
    if win >= n:
        return x.unsqueeze(-2)
    return x.unfold(-1, win, hop)


def _silent(frames: torch.Tensor) -> torch.Tensor:
    """(nsrc, nchan, nwin, win) -> (nwin,) True where some source sums to zero over channels."""
    return (frames.sum(dim=1) == 0).all(dim=-1).any(dim=0)


def _safe_db(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """museval's ``_safe_db``: ``10 log10(num / den)``, +inf where ``den == 0``."""
    return torch.where(den == 0, torch.full_like(num, math.inf), 10 * torch.log10(num / den))


def _any_source_silent(x: torch.Tensor) -> bool:
    """museval's ``_any_source_silent`` on (nsrc, nsampl, nchan)."""
    return bool((x.sum(dim=2) == 0).all(dim=1).any())


def _validate(references: torch.Tensor, estimates: torch.Tensor) -> None:
    """museval's ``validate``: same shapes, at most 3 dims, no all-zero source."""
    if references.shape != estimates.shape:
        raise ValueError(
            f"references and estimates must have the same shape (nsrc, nsampl, nchan), got "
            f"{tuple(references.shape)} and {tuple(estimates.shape)}"
        )
    if references.ndim != 3:
        raise ValueError(f"expected (nsrc, nsampl, nchan) arrays, got {references.ndim} dims")
    if _any_source_silent(references):
        raise ValueError("every reference source must be non-silent (not all zeros)")
    if _any_source_silent(estimates):
        raise ValueError("every estimated source must be non-silent (not all zeros)")


def _window_filters(
    filters: torch.Tensor, filters_jj: torch.Tensor, nsrc: int, nchan: int, fft_len: int
) -> torch.Tensor:
    """Spectra of the four filter banks whose outputs' energies BSSEval needs, Parseval-weighted.

    Args:
        filters: (P L, P) projection filters onto all references, ``[(x, a), (j, c)]``.
        filters_jj: (nsrc, C L, C) projection filters of each estimate onto its own reference.
        nsrc: number of sources.
        nchan: number of channels.
        fft_len: FFT length (at least window + L - 1).

    Returns:
        (F, 4P, P) ``A[f, (bank, j, c), x]`` for the banks ``e_spat`` (own projection minus
        identity), ``s_true + e_spat`` (own projection), ``e_interf`` (all minus own) and
        ``s_true + e_spat + e_interf`` (all), each row times ``sqrt(w_f)``, the Parseval weight of
        a one-sided spectrum, so that ``sum_f |A S|^2`` is the energy of the time signal.
    """
    p = nsrc * nchan
    taps = filters.shape[0] // p
    h_all = filters.view(p, taps, p).permute(1, 2, 0)  # (L, P out, P in)
    h_jj = filters.new_zeros(taps, nsrc, nchan, nsrc, nchan)  # (L, j, c out, j', c in)
    diag = torch.diagonal(h_jj, dim1=1, dim2=3)  # (L, c out, c in, j)
    diag.copy_(filters_jj.view(nsrc, nchan, taps, nchan).permute(2, 3, 1, 0))
    spec = _rfft0(torch.stack([h_jj.view(taps, p, p), h_all], dim=1), fft_len)  # (F, 2, P, P)
    own, every = spec[:, 0], spec[:, 1]
    eye = torch.eye(p, dtype=spec.dtype, device=spec.device)
    banks = torch.cat([own - eye, own, every - own, every], dim=1)  # (F, 4P, P)
    return banks * _root_weights(banks.shape[0], fft_len, filters)[:, None, None]


def _window_energies(
    banks: torch.Tensor, ref_frames: torch.Tensor, est_frames: torch.Tensor, fft_len: int
) -> torch.Tensor:
    """Energies of ``e_spat``, ``s_true + e_spat``, ``e_interf``, ``s_true + e_spat + e_interf``
    and ``e_artif`` per channel and window.

    Args:
        banks: (F, 4P, P) from :func:`_window_filters`.
        ref_frames: (P, T, W) reference windows.
        est_frames: (P, T, W) estimate windows.
        fft_len: FFT length.

    Returns:
        (5P, T) energies (rows: bank, source, channel).
    """
    spec_ref = _rfft0(ref_frames.permute(2, 0, 1), fft_len)  # (F, P, T)
    spec_est = _rfft0(est_frames.permute(2, 0, 1), fft_len)  # (F, P, T)
    p = spec_ref.shape[1]
    root_w = _root_weights(banks.shape[0], fft_len, ref_frames)  # (F,)
    nwin = spec_ref.shape[2]
    out = ref_frames.new_zeros(5 * p, nwin, 2)
    fstep = 1024  # frequencies per step: bounds the temporaries
    for f in range(0, banks.shape[0], fstep):
        proj = torch.bmm(banks[f : f + fstep], spec_ref[f : f + fstep])  # (f, 4P, T)
        # -(e_artif) = proj_all - est, weighted
        artif = torch.addcmul(proj[:, 3 * p :], spec_est[f : f + fstep],
                              root_w[f : f + fstep, None, None], value=-1)
        for rows, z in ((slice(0, 4 * p), proj), (slice(4 * p, 5 * p), artif)):
            zr = torch.view_as_real(z).reshape(z.shape[0], -1)  # (f, K T 2)
            out[rows] += (zr * zr).sum(0).view(-1, nwin, 2)
    return out.sum(-1)


def _root_weights(nfreq: int, fft_len: int, like: torch.Tensor) -> torch.Tensor:
    """``sqrt`` of the Parseval weights of a one-sided spectrum of length ``fft_len``."""
    weights = torch.full((nfreq,), 2.0 / fft_len, dtype=like.dtype, device=like.device)
    weights[0] = 1.0 / fft_len
    if fft_len % 2 == 0:
        weights[-1] = 1.0 / fft_len
    return weights.sqrt()


def bss_eval_v4(
    references: torch.Tensor,
    estimates: torch.Tensor,
    win: int = 44100,
    hop: int = 44100,
    filters_len: int = FILTERS_LEN,
) -> torch.Tensor:
    """BSSEval v4 image metrics per source and window, on the tensors' device and dtype.

    Equals ``museval.metrics.bss_eval(references, estimates, window=win, hop=hop,
    compute_permutation=False, filters_len=filters_len, framewise_filters=False,
    bsseval_sources_version=False)`` to round-off.

    Args:
        references: (nsrc, nsampl, nchan) true source images, float64 recommended.
        estimates: (nsrc, nsampl, nchan) estimates, same shape, dtype and device.
        win: window length in samples.
        hop: hop in samples.
        filters_len: taps of the distortion filters.

    Returns:
        (4, nsrc, nwin): SDR, ISR, SIR, SAR in dB; NaN for every source in windows where a
        reference or an estimate is silent (sums to zero over channels).
    """
    _validate(references, estimates)
    nsrc, nsampl, nchan = references.shape
    p, taps = nsrc * nchan, int(filters_len)
    win, hop = int(win), int(hop)
    refs = references.permute(0, 2, 1).reshape(p, nsampl)  # (P, N), row = source * nchan + chan
    ests = estimates.permute(0, 2, 1).reshape(p, nsampl)  # (P, N)

    # 1. correlations on the whole track: r_xy[k] with the references, and the estimates
    corr = _lagged_correlations(torch.cat([refs, ests]), refs, taps)  # (2P, P, L)
    gram = _gram(corr[:p])  # (P L, P L)
    # D[(y, a), e] = <s_y delayed by a, est_e> = r_ey[a]
    cross = corr[p:].permute(1, 2, 0).reshape(p * taps, p)  # (P L, P)

    # 2. distortion filters: onto all references (one system, every estimate's channels as
    # right-hand sides), and onto the true source only (diagonal blocks, batched over sources)
    filters = _solve(gram, cross)  # (P L, P): [(x, a), (jest, c)]
    blocks = gram.view(nsrc, nchan * taps, nsrc, nchan * taps)
    gram_jj = torch.diagonal(blocks, dim1=0, dim2=2).permute(2, 0, 1)  # (nsrc, C L, C L)
    cross_jj = torch.diagonal(cross.view(nsrc, nchan * taps, nsrc, nchan), dim1=0, dim2=2)
    filters_jj = _solve(gram_jj, cross_jj.permute(2, 0, 1))  # (nsrc, C L, C)

    # 3. per window: spectra, projections as products of spectra, Parseval energies
    ref_frames = _framed(refs, win, hop)  # (P, nwin, W)
    est_frames = _framed(ests, win, hop)  # (P, nwin, W)
    nwin, wlen = ref_frames.shape[1:]
    fft_len = scipy.fft.next_fast_len(wlen + taps - 1, real=True)  # linear convolutions fit
    filters_f = _window_filters(filters, filters_jj, nsrc, nchan, fft_len)  # (F, 4P, P)

    step = _chunk(nwin, 2 * p * filters_f.shape[0] * 16)
    energies = torch.cat([
        _window_energies(filters_f, ref_frames[:, t : t + step], est_frames[:, t : t + step],
                         fft_len)
        for t in range(0, nwin, step)  # batches of windows, only to bound memory
    ], dim=-1)  # (5P, nwin)
    spat, target, interf, image, artif = energies.view(5, nsrc, nchan, nwin).sum(2)

    src_frames = ref_frames.view(nsrc, nchan, nwin, wlen)
    true = src_frames.square().sum(dim=(1, 3))  # ||s_true||^2, (nsrc, nwin)
    dist = (est_frames.view(nsrc, nchan, nwin, wlen) - src_frames).square().sum(dim=(1, 3))
    metrics = torch.stack([
        _safe_db(true, dist),  # SDR
        _safe_db(true, spat),  # ISR
        _safe_db(target, interf),  # SIR
        _safe_db(image, artif),  # SAR
    ])  # (4, nsrc, nwin)
    silent = _silent(src_frames) | _silent(est_frames.view(nsrc, nchan, nwin, wlen))
    return metrics.masked_fill(silent, math.nan)


# ---------------------------------------------------------------------------------------------
# The public drop-ins


def _as_tensor(x: ArrayLike, dtype: torch.dtype) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().to(dtype)
    if isinstance(x, Sequence) and x and all(isinstance(item, torch.Tensor) for item in x):
        return torch.stack([item.detach() for item in x]).to(dtype)
    return torch.from_numpy(np.array(x, dtype=np.float64)).to(dtype)


def _pad_or_truncate(references: torch.Tensor, estimates: torch.Tensor) -> torch.Tensor:
    """museval's ``pad_or_truncate``: estimates cut or zero-padded to the references' length."""
    n = references.shape[1]
    if estimates.shape[1] >= n:
        return estimates[:, :n]
    return F.pad(estimates, (0, 0, 0, n - estimates.shape[1]))


def evaluate(
    references: ArrayLike,
    estimates: ArrayLike,
    win: int = 44100,
    hop: int = 44100,
    backend: str = "sepcore",
    dtype: torch.dtype = torch.float64,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """BSSEval v4 image metrics per source and window, as ``museval.evaluate(..., mode="v4")``.

    Estimates longer than the references are truncated, shorter ones zero-padded (museval).
    Computed on the inputs' device (CUDA tensors stay on the GPU).

    Args:
        references: (nsrc, nsampl, nchan) true sources (numpy, torch, or a list of (T, C)).
        estimates: (nsrc, nsampl, nchan) estimated sources, in the same order.
        win: window length in samples (default 1 s at 44.1 kHz).
        hop: hop in samples (default 1 s at 44.1 kHz).
        backend: ``"sepcore"`` (this module) or ``"museval"`` (``museval.evaluate`` itself).
        dtype: working precision of ``"sepcore"``; keep float64 (see the module docstring).

    Returns:
        ``(sdr, isr, sir, sar)``, each (nsrc, nwin) float64 numpy in dB; windows where any
        reference or estimate is all zero are NaN for every source.

    Raises:
        ValueError: unknown backend, mismatched shapes, or an all-zero source (as museval).
    """
    if backend == "museval":
        sdr, isr, sir, sar = museval.evaluate(
            _to_numpy(references), _to_numpy(estimates), win=int(win), hop=int(hop), mode="v4"
        )
        return sdr, isr, sir, sar
    if backend != "sepcore":
        raise ValueError(f"unknown BSSEval backend {backend!r}; expected one of {BACKENDS}")
    refs = _as_tensor(references, dtype)
    ests = _as_tensor(estimates, dtype).to(refs.device)
    if refs.ndim < 3:  # museval's np.atleast_3d: (nsrc, nsampl) -> (nsrc, nsampl, 1)
        refs, ests = _atleast_3d(refs), _atleast_3d(ests)
    if refs.numel() == 0 or ests.numel() == 0:
        return tuple(np.array([]) for _ in range(4))  # type: ignore[return-value]
    ests = _pad_or_truncate(refs, ests)
    with torch.no_grad():
        out = bss_eval_v4(refs, ests, win=win, hop=hop).to("cpu", torch.float64).numpy()
    return out[0], out[1], out[2], out[3]


def _atleast_3d(x: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(np.atleast_3d(x.cpu().numpy())).to(x.device)


def _to_numpy(x: ArrayLike) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    if isinstance(x, Sequence) and x and all(isinstance(item, torch.Tensor) for item in x):
        return torch.stack([item.detach().cpu() for item in x]).numpy()
    return np.array(x)


def _add_scores(
    store: museval.TrackStore,
    names: list[str],
    references: Mapping[str, np.ndarray],
    estimates: Mapping[str, np.ndarray],
    rate: int,
    win: float,
    hop: float,
    backend: str,
    skip: tuple[str, ...] = (),
) -> None:
    sdr, isr, sir, sar = evaluate(
        [references[n] for n in names],
        [estimates[n] for n in names],
        win=int(win * rate),
        hop=int(hop * rate),
        backend=backend,
    )
    for i, name in enumerate(names):
        if name in skip:
            continue
        values = {
            "SDR": sdr[i].tolist(),
            "SIR": sir[i].tolist(),
            "ISR": isr[i].tolist(),
            "SAR": sar[i].tolist(),
        }
        store.add_target(target_name=name, values=values)


def evaluate_track(
    references: Mapping[str, np.ndarray],
    estimates: Mapping[str, np.ndarray],
    track_name: str,
    rate: int,
    win: float = 1.0,
    hop: float = 1.0,
    backend: str = "sepcore",
) -> museval.TrackStore:
    """Scores one track the way ``museval.eval_mus_track`` does, as a museval ``TrackStore``.

    Targets present in both dicts are scored, in the order of ``references``. When both
    ``vocals`` and ``accompaniment`` are given, they are scored together in a run of their own and
    ``accompaniment`` is left out of the joint run of the other targets (whose ``vocals`` scores
    are then discarded), exactly as museval does; the other targets are scored jointly, which
    needs at least two of them (otherwise museval warns and leaves them unscored).

    Args:
        references: target name -> (T, C) true stem.
        estimates: target name -> (T, C) estimated stem; names not in ``references`` are ignored.
        track_name: the track's name (the JSON file's stem).
        rate: sample rate in Hz.
        win: window length in seconds.
        hop: hop in seconds.
        backend: ``"sepcore"`` (the fast path of this module) or ``"museval"``.

    Returns:
        ``museval.TrackStore`` holding per-window SDR/SIR/ISR/SAR per target (``.json``, ``.df``).
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown BSSEval backend {backend!r}; expected one of {BACKENDS}")
    targets = [name for name in references if name in estimates]
    store = museval.TrackStore(win=win, hop=hop, track_name=track_name)

    has_acc = "vocals" in targets and "accompaniment" in targets
    joint = [name for name in targets if not (has_acc and name == "accompaniment")]
    if len(joint) >= 2:
        skip = ("vocals",) if has_acc else ()
        _add_scores(store, joint, references, estimates, rate, win, hop, backend, skip=skip)
    elif not has_acc:
        warnings.warn(
            f"track {track_name!r}: BSSEval needs at least two targets, got {targets}; "
            "no scores for this track",
            UserWarning,
            stacklevel=2,
        )
    if has_acc:
        pair = ["vocals", "accompaniment"]
        _add_scores(store, pair, references, estimates, rate, win, hop, backend)
    return store


def save_track_json(
    store: museval.TrackStore, out_dir: str | os.PathLike[str], subset: str
) -> Path:
    """Validates ``store`` against museval's schema and writes ``<out_dir>/<subset>/<track>.json``.

    Args:
        store: the scores of one track, from :func:`evaluate_track`.
        out_dir: root of the evaluation folder (``museval.EvalStore.add_eval_dir`` reads
            ``<out_dir>/test/**/*.json``).
        subset: ``"test"`` or ``"train"``.

    Returns:
        The path written.
    """
    store.validate()
    path = Path(out_dir) / subset / f"{store.track_name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(store.json)
    logger.debug("wrote BSSEval scores of %s to %s", store.track_name, path)
    return path
