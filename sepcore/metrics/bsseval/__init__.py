"""BSSEval v4 (SDR, ISR, SIR, SAR per window), exact and fast in torch, and museval's track JSON.

:func:`evaluate` computes what ``museval.evaluate(..., mode="v4")`` computes (``bss_eval`` in its
``bss_eval_images`` form, no permutation search, 512-tap distortion filters estimated once on the
whole track, metrics per window), to round-off (1e-9 dB on the benchmark), 30-40x faster than
museval on two CPU cores (``tests/bench/bsseval_speed.py``), and on CUDA when given CUDA tensors.
:func:`evaluate_track` groups the targets as ``museval.eval_mus_track`` does and returns a
``museval.TrackStore``, so the JSONs written here aggregate exactly like SiSEC 2018's;
``backend="museval"`` runs museval itself.

How (notation: P = sources x channels reference signals, L = 512 taps, N samples, W window):

1. Global correlations of every reference and estimate channel with every reference channel at
   lags ``0..L-1``: one real FFT per channel and block of 8192 samples (strided views, no copies,
   no overlap), cross-spectra summed over blocks as batched matrix products; the circular
   wrap-around at the end of each block is corrected exactly by a short correlation of block
   heads and tails (:func:`_lagged_correlations`).
2. The Gram matrix of the delayed references, ``G[(x, a), (y, b)] = r_xy[b - a]``, is block
   Toeplitz (``L x L`` blocks of ``P x P``): solved for every estimate's filters at once by the
   block Levinson recursion, ``O(L^2 P^3)`` instead of a ``(P L)^3`` factorisation, and likewise
   the per-source systems of the spatial distortion. Levinson is only weakly stable, so its
   answer is kept only where its backward error is at round-off level; elsewhere (badly
   conditioned or singular Grams: silent channels, dual-mono stems, heavily band-limited music)
   the dense solve takes over, as museval: Cholesky, LU, then museval's least squares.
3. Every window is one FFT per channel; the projections onto all references and onto the true
   source are products of spectra, and every energy (``||e_spat||^2``, ...) a Parseval sum in
   the frequency domain, so no projection is ever transformed back to time.

Steps 1 and 3 run their blocks/windows in one thread per torch CPU thread (torch and scipy
release the GIL), in cache-sized chunks.

float64 matters twice: ``G`` of music is badly conditioned (low-passed, correlated stems), so its
accumulation and factorisation need double precision; and the SAR/ISR denominators are small
differences of large signals (a 30 dB SAR is a residual of 1e-3 of the estimate's energy).

References:
    Stöter, Liutkus, Ito, "The 2018 Signal Separation Evaluation Campaign", LVA/ICA 2018, §3
    (BSSEval v4: time-invariant distortion filters, 1 s windows, median over windows).
    Vincent, Gribonval, Févotte, "Performance measurement in blind audio source separation",
    IEEE TASLP 14(4), 2006, §III-IV (the projections and the four energy ratios).
    Akaike, "Block Toeplitz matrix inversion", SIAM J. Appl. Math. 24(2), 1973 (the recursion).
"""

from __future__ import annotations

import logging
import math
import os
import threading
import warnings
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
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
_CHUNK_BYTES = 32 * 2**20  # spectra of one batch of blocks / windows: small enough to reuse memory
_SILENCE_SLICE = 2**16  # samples per slice of the silence check
_SILENCE_PROBES = 64  # samples per window looked at before the whole window is
_CG_ITERATIONS = 8  # Levinson-preconditioned CG iterations before a dense solve
_BACKWARD_TOL = 1e-14  # largest backward error accepted from Levinson (dense solves: ~1e-17)
_ENERGY_TOL = 1e-14  # largest relative energy-norm error accepted (music: ~1e-17)

ArrayLike = np.ndarray | torch.Tensor | Sequence[Any]
_THREADS_LOCK = threading.Lock()


# ---------------------------------------------------------------------------------------------
# Array helpers: on the CPU, scipy's pocketfft (several times faster than torch's FFT in float64)
# and numpy's matmul (faster than torch's batched complex matmul); torch on CUDA. Torch tensors in
# and out either way, strided views welcome (no copies of the long signals are made).


def _host(x: torch.Tensor) -> bool:
    """Whether ``x`` takes the CPU code paths (numpy, scipy, threads) rather than torch's CUDA
    ones. (A function, so that tests can run the CUDA code paths on CPU tensors.)"""
    return x.device.type == "cpu"


def _rfft0(x: torch.Tensor, n: int, padded: torch.Tensor | None = None) -> torch.Tensor:
    """Real FFT along dim 0 (zero-padded to ``n``): (T, ...) -> (n // 2 + 1, ...) complex.

    ``padded``: an optional (n, ...) buffer whose rows from T on are zero, reused across calls
    (saves scipy an allocation and a zero fill per call).
    """
    if _host(x):
        if padded is not None and x.shape[0] < n:
            padded = padded[..., : x.shape[-1]]
            padded[: x.shape[0]].copy_(x)
            x = padded
        out = scipy.fft.rfft(x.numpy(), n=n, axis=0, workers=torch.get_num_threads())
        return torch.from_numpy(out)
    return torch.fft.rfft(x, n=n, dim=0)


def _irfft0(x: torch.Tensor, n: int) -> torch.Tensor:
    """Inverse of :func:`_rfft0` along dim 0: (n // 2 + 1, ...) -> (n, ...) real."""
    if _host(x):
        out = scipy.fft.irfft(x.numpy(), n=n, axis=0, workers=torch.get_num_threads())
        return torch.from_numpy(out)
    return torch.fft.irfft(x, n=n, dim=0)


def _add_product(acc: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
    """``acc += a @ b^H`` in place, batched over the leading dimension."""
    if _host(acc):
        out = acc.numpy()
        out += np.matmul(a.numpy(), b.numpy().conj().swapaxes(-1, -2))
    else:
        acc.baddbmm_(a, b.mH)


def _in_parallel(task: Callable[[int, int], Any], count: int, like: torch.Tensor) -> list[Any]:
    """Runs ``task(start, stop)`` on contiguous parts of ``range(count)``, one per CPU thread.

    The loops of this module are made of many small array operations whose Python overhead and
    memory traffic one thread cannot hide; on the CPU they run in as many threads as torch has
    (torch and scipy release the GIL), each single-threaded meanwhile. On CUDA: one part.

    Returns:
        the results of the parts, in order.
    """
    available = torch.get_num_threads()
    threads = min(available, count) if _host(like) else 1
    if threads <= 1:
        return [task(0, count)]
    bounds = [count * i // threads for i in range(threads + 1)]
    with _THREADS_LOCK:  # torch's thread count is global: one parallel section at a time
        torch.set_num_threads(1)
        try:
            with ThreadPoolExecutor(threads) as pool:
                parts = [pool.submit(task, a, b)
                         for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
                return [part.result() for part in parts]
        finally:
            torch.set_num_threads(available)


def _chunk(items: int, bytes_per_item: int) -> int:
    """How many items fit in :data:`_CHUNK_BYTES` (at least one): batches that stay in cache."""
    return max(1, min(items, _CHUNK_BYTES // max(1, bytes_per_item)))


# ---------------------------------------------------------------------------------------------
# The maths


def _lagged_correlations(refs: torch.Tensor, ests: torch.Tensor, max_lag: int) -> torch.Tensor:
    """``r[a, b, k] = sum_n x[a, n + k] * refs[b, n]``, ``x = [refs; ests]``, ``0 <= k < L``.

    Signals are zero outside ``[0, N)``, so these are the exact linear correlations museval takes
    from zero-padded whole-track FFTs. Computed blockwise with one FFT per signal and block
    (blocks of ``M`` samples, no overlap, no padding: strided views of the signals): the
    cross-spectra of the blocks, summed over blocks (a batched matrix product per chunk of
    blocks, accumulated in place), give each block's *circular* correlation; where a lag reaches
    past the end of its block (``n + k >= M``) the circular sum took ``x`` from the start of the
    same block instead of the next one, which is corrected exactly by a short correlation of the
    last ``L - 1`` samples of each reference block with the differences ``head(m + 1) - head(m)``
    of the first ``L - 1`` samples of the blocks (FFT length ~2L, all blocks at once).

    Args:
        refs: (nsrc, C, N) references, any strides.
        ests: (nsrc, C, N) estimates, any strides.
        max_lag: number of non-negative lags kept (``L``).

    Returns:
        (2P, P, L) correlations, rows and columns source-major.
    """
    nsrc, nchan, n = refs.shape
    p, edge = nsrc * nchan, max_lag - 1
    size = max(_CORR_FFT if n >= _CORR_FFT else scipy.fft.next_fast_len(n, real=True),
               2 * max_lag)  # block length M
    nfull, rest = divmod(n, size)
    nblk = nfull + (rest > 0)
    nfreq = size // 2 + 1
    step = _chunk(nblk, 2 * p * nfreq * 16)
    # (nsrc, C, blocks, M) views of the whole blocks, and the zero-padded last block if any
    parts = [[x[..., : nfull * size].unflatten(-1, (nfull, size)) for x in (refs, ests)]]
    if rest:
        parts.append([F.pad(x[..., nfull * size :], (0, size - rest)).unsqueeze(-2)
                      for x in (refs, ests)])

    def accumulate(first: int, stop: int) -> torch.Tensor:
        spectrum = torch.zeros(nfreq, 2 * p, p, dtype=_complex(refs.dtype), device=refs.device)
        while first < stop:
            end = min(first + step, stop, nfull if first < nfull else stop)
            source, offset = (parts[0], 0) if first < nfull else (parts[1], nfull)
            spectra = [_rfft0(b[..., first - offset : end - offset, :].movedim(-1, 0), size)
                       .reshape(nfreq, p, -1) for b in source]  # (F, P, m): refs, estimates
            _add_product(spectrum[:, :p], spectra[0], spectra[0])
            _add_product(spectrum[:, p:], spectra[1], spectra[0])
            first = end
        return spectrum

    spectrum = sum(_in_parallel(accumulate, nblk, refs))
    circular = _irfft0(spectrum, size)[:max_lag]  # (L, 2P, P)

    # the wrap-around: sum_{j < k} (head_{m+1} - head_m)[a, j] * tail_m[b, j + L - 1 - k]
    heads = torch.cat([torch.cat([b[..., :edge] for b in part]) for part in parts], dim=-2)
    heads = heads.reshape(2 * p, nblk, edge)
    diffs = torch.cat([heads[:, 1:], heads.new_zeros(2 * p, 1, edge)], dim=1) - heads
    tails = torch.cat([part[0][..., size - edge :] for part in parts], dim=-2)
    tails = tails.reshape(p, nblk, edge)
    short = scipy.fft.next_fast_len(2 * edge, real=True)
    d = _rfft0(diffs.permute(2, 0, 1), short)  # (F', 2P, m)
    g = _rfft0(tails.permute(2, 0, 1), short)  # (F', P, m)
    wrap = torch.zeros(d.shape[0], 2 * p, p, dtype=d.dtype, device=d.device)
    _add_product(wrap, d, g)  # conj of the cross-spectrum sum_j g[j + s] d[j]
    xcorr = _irfft0(wrap.conj_physical(), short)[:max_lag]  # (L, 2P, P) at shifts s = 0..L-1
    return (circular + xcorr.flip(0)).permute(1, 2, 0)  # shift s = L - 1 - k


def _complex(dtype: torch.dtype) -> torch.dtype:
    return torch.complex128 if dtype == torch.float64 else torch.complex64


def _block_toeplitz_dense(lags: torch.Tensor) -> torch.Tensor:
    """The Gram matrix of the delayed references (museval's ``_reshape_G``, rows and columns
    ordered lag-major), from its blocks.

    Args:
        lags: (b, L, p, p) ``R(k)[x, y] = r_xy[k] = sum_n s_x[n + k] s_y[n]``, ``0 <= k < L``.

    Returns:
        (b, L p, L p) ``T[(i, x), (j, y)] = <s_x delayed by i, s_y delayed by j> = R(j - i)[x, y]``
        with ``R(-k) = R(k)^T``.
    """
    b, taps, p, _ = lags.shape
    full = torch.cat([lags.flip(1)[:, :-1].transpose(-1, -2), lags], dim=1)  # R(-(L-1))..R(L-1)
    ar = torch.arange(taps, device=lags.device)
    offsets = ar[None, :] - ar[:, None] + taps - 1  # (L, L): j - i + L - 1
    return full[:, offsets].permute(0, 1, 3, 2, 4).reshape(b, taps * p, taps * p)


def _levinson_solver(
    lags: torch.Tensor, ridge: float
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The block Levinson recursion (Akaike 1973) for ``(T + ridge I)``, batched, as a solver.

    ``O(L^2 p^3)`` operations instead of Cholesky's ``O(L^3 p^3)`` (0.06 s instead of 0.5 s for
    4 stereo sources): the backward vectors ``T_n B_n = [0 .. 0 I]^T`` of every order ``n`` are
    built once, with the forward ones ``T_n F_n = [I 0 .. 0]^T``, and kept (``L^2 p^2 / 2``
    numbers, 67 MB for 8 channels), so that each right-hand side then costs one ``O(L^2 p^2)``
    pass (the order-n solution extended to order n + 1 by ``B_{n+1}``): preconditioning the
    conjugate gradients of :func:`_toeplitz_solve` with it is cheap. Runs in numpy on the host:
    its thousands of products of 8 x 8 blocks cost a third of what they cost in torch (per-call
    overhead), on CUDA even more.

    Args:
        lags: (b, L, p, p) blocks ``R(k)``.
        ridge: added to the diagonal (museval's ``eps``).

    Returns:
        ``solve(rhs)``: (b, L, p, k) -> (b, L, p, k) solutions, NaN where a leading block system
        is singular.
    """
    b, taps, p, _ = lags.shape
    host = lags.detach().cpu().numpy()
    # row block n of T, left of the diagonal: [R(-n) .. R(-1)] = [R(n)^T .. R(1)^T]; stored once
    # as backwards = [R(L-1)^T .. R(1)^T R(0)^T] so that each row is a slice ending at block L-1
    backwards = np.flip(host, 1).swapaxes(-1, -2).transpose(0, 2, 1, 3).reshape(b, p, taps * p)
    try:
        with np.errstate(all="ignore"):
            backs = _levinson_vectors(host, backwards, ridge)
    except np.linalg.LinAlgError:  # a singular leading block: no answer from this recursion
        backs = None

    def solve(rhs: torch.Tensor) -> torch.Tensor:
        k = rhs.shape[-1]
        if backs is None:
            out = np.full((b, taps, p, k), np.nan)
        else:
            with np.errstate(all="ignore"):
                out = _levinson_apply(backwards, backs, rhs.detach().cpu().numpy())
        return torch.from_numpy(out).to(device=rhs.device, dtype=rhs.dtype)

    return solve


def _levinson_vectors(lags: np.ndarray, backwards: np.ndarray, ridge: float) -> list[np.ndarray]:
    """The backward vectors ``B_1 .. B_L`` ((b, n p, p) each) of the block Levinson recursion."""
    b, taps, p, _ = lags.shape
    eye = np.eye(p)
    forwards = lags.transpose(0, 2, 1, 3).reshape(b, p, taps * p)  # [R(0) R(1) .. R(L-1)]
    fwd = np.zeros((b, taps * p, p))
    back = np.zeros((b, taps * p, p))
    inv0 = np.linalg.inv(lags[:, 0] + ridge * eye)
    fwd[:, :p] = inv0
    back[:, :p] = inv0
    backs = [inv0]
    for n in range(1, taps):
        rows = n * p
        e_f = backwards[:, :, (taps - 1 - n) * p : (taps - 1) * p] @ fwd[:, :rows]  # (b, p, p)
        e_b = forwards[:, :, p : rows + p] @ back[:, :rows]  # (b, p, p)
        alpha = np.linalg.inv(eye - e_b @ e_f)
        delta = np.linalg.inv(eye - e_f @ e_b)
        f_old = fwd[:, : rows + p]  # block n is still zero
        b_old = back[:, :rows]
        new_f = f_old @ alpha
        new_b = f_old @ (-e_b @ delta)
        new_f[:, p:] -= b_old @ (e_f @ alpha)
        new_b[:, p:] += b_old @ delta
        fwd[:, : rows + p] = new_f
        back[:, : rows + p] = new_b
        backs.append(new_b)
    return backs


def _levinson_apply(backwards: np.ndarray, backs: list[np.ndarray], rhs: np.ndarray) -> np.ndarray:
    """Solution of order ``n + 1`` = order n (zero-extended) + ``B_{n+1}`` times the error of
    order n on the new block row."""
    b, taps, p, k = rhs.shape
    rhs = rhs.reshape(b, taps * p, k)
    x = np.zeros((b, taps * p, k))
    x[:, :p] = backs[0] @ rhs[:, :p]
    for n in range(1, taps):
        rows = n * p
        row = backwards[:, :, (taps - 1 - n) * p : (taps - 1) * p]  # block row n, left part
        error = rhs[:, rows : rows + p] - row @ x[:, :rows]
        x[:, : rows + p] += backs[n] @ error
    return x.reshape(b, taps, p, k)


def _block_toeplitz_matmul(lags: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``T x`` for the block-Toeplitz ``T`` of :func:`_block_toeplitz_dense`, by FFT.

    Args:
        lags: (b, L, p, p).
        x: (b, L, p, k).

    Returns:
        (b, L, p, k).
    """
    taps = lags.shape[1]
    n = 2 * taps
    # (T x)_i = sum_j R(j - i) x_j = sum_j c[i - j] x_j with c[m] = R(-m): a linear convolution
    c = lags.new_zeros(lags.shape[0], n, *lags.shape[2:])
    c[:, :taps] = lags.transpose(-1, -2)  # c[m] = R(m)^T, m >= 0
    c[:, n - taps + 1 :] = lags[:, 1:].flip(1)  # c[-m] = R(m), m >= 1
    product = torch.fft.rfft(c, dim=1) @ torch.fft.rfft(x, n=n, dim=1)
    return torch.fft.irfft(product, n=n, dim=1)[:, :taps]


def _distortion_filters(
    lags: torch.Tensor, cross: torch.Tensor, nsrc: int, nchan: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """museval's ``_compute_projection_filters``: ``(G + eps I)^-1 D`` for the projection onto all
    references, and for each source the same with its own channels only.

    Both are block-Toeplitz systems (``P x P`` blocks, and ``C x C`` blocks for each source),
    solved by :func:`_toeplitz_solve` (block Levinson, then conjugate gradients preconditioned by
    it; dense where that falls short).

    Args:
        lags: (L, P, P) ``R(k)[x, y] = r_xy[k]``, rows source-major.
        cross: (L, P, P) ``D[(a, y), e] = <s_y delayed by a, est_e>``.
        nsrc: number of sources.
        nchan: number of channels.

    Returns:
        (L, P, P) filters ``[a, x, (j, c)]`` and (nsrc, L, C, C) filters ``[j, a, c_in, c_out]``.
    """
    filters = _toeplitz_solve(lags[None], cross[None])[0]
    if nsrc == 1:  # the same system: bit-identical filters, so e_interf = 0 and SIR = inf (museval)
        return filters, filters[None]
    own = [slice(j * nchan, (j + 1) * nchan) for j in range(nsrc)]
    lags_jj = torch.stack([lags[:, s, s] for s in own])  # (nsrc, L, C, C)
    cross_jj = torch.stack([cross[:, s, s] for s in own])
    return filters, _toeplitz_solve(lags_jj, cross_jj)


def _toeplitz_solve(lags: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """``(T + eps I)^-1 rhs`` for a batch of block-Toeplitz systems, as accurate as museval's
    dense solve, or solved densely.

    Block Levinson is fast but only weakly stable, and what BSSEval needs from the filters are
    the energies of the projections, whose error is the energy-norm error of the solution
    ``||x - x*||_G^2 = r^T G^-1 r`` (``r`` the residual). So Levinson's answer is the start of a
    conjugate-gradient iteration preconditioned by Levinson itself (``z = M^-1 r``, per
    right-hand side), and every iterate is checked twice: the normwise backward error
    ``||r|| / (||T||_F ||x|| + ||rhs||)`` from the explicit residual (independent of Levinson)
    and the relative energy error ``|r^T z| / |x^T rhs|``. Systems passing both
    (:data:`_BACKWARD_TOL`, :data:`_ENERGY_TOL`) are done; those that do not within
    :data:`_CG_ITERATIONS` iterations (or whose curvature ``p^T T p`` is not positive) are solved
    densely (:func:`_solve`). Measured: the benchmark's stems pass at once (energy error 1e-40);
    16-bit synthetic songs (condition ~1e11) start at 1e-9..1e-7 and pass after 3-5 iterations
    (plain iterative refinement only halved the error per step there); near-singular Grams
    (condition ~1e16, a doubly integrated noise) do not converge and go dense.

    Args:
        lags: (b, L, p, p) blocks ``R(k)``.
        rhs: (b, L, p, k).

    Returns:
        (b, L, p, k) solutions.
    """
    solve = _levinson_solver(lags, _EPS)
    x = solve(rhs)
    residual, error = _backward_error(lags, rhs, x)
    r = -residual  # rhs - T x
    z = solve(r)
    direction = z.clone()
    rz = _dot(r, z)  # (b, k)
    accepted = torch.zeros(len(lags), dtype=torch.bool, device=lags.device)
    failed = torch.zeros_like(accepted)
    for iteration in range(_CG_ITERATIONS + 1):
        energy = (rz.abs() / _dot(x, rhs).abs()).amax(dim=1)  # worst right-hand side
        accepted |= ~failed & (error <= _BACKWARD_TOL) & (energy <= _ENERGY_TOL)  # NaN: False
        if bool((accepted | failed).all()) or iteration == _CG_ITERATIONS:
            break
        product = _block_toeplitz_matmul(lags, direction) + _EPS * direction
        curvature = _dot(direction, product)
        failed |= ~(curvature > 0).all(dim=1)  # also NaN
        frozen = (accepted | failed)[:, None]
        step = torch.where(frozen, torch.zeros_like(rz), rz / curvature)
        x = x + step[:, None, None, :] * direction
        residual, error = _backward_error(lags, rhs, x)
        r = -residual
        z = solve(r)
        rz_next = _dot(r, z)
        direction = z + (rz_next / rz)[:, None, None, :] * direction
        rz = rz_next
    redo = (~accepted).nonzero().flatten()
    if len(redo):
        logger.debug("BSSEval: Levinson inaccurate on %d of %d systems (energy error %s); "
                     "dense solve", len(redo), len(lags), energy[redo].tolist())
        gram = _block_toeplitz_dense(lags[redo])
        x[redo] = _solve(gram, rhs[redo].reshape(len(redo), gram.shape[1], -1)).view_as(x[redo])
    return x


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(b, L, p, k) x (b, L, p, k) -> (b, k) inner products of the right-hand sides' columns."""
    return (a * b).sum(dim=(1, 2))


def _backward_error(
    lags: torch.Tensor, rhs: torch.Tensor, solved: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The residual ``(T + eps I) x - rhs`` and the normwise backward error
    ``||residual|| / (||T||_F ||x|| + ||rhs||)`` per system ((b,), NaN for a NaN solution)."""
    residual = _block_toeplitz_matmul(lags, solved) + _EPS * solved - rhs
    taps = lags.shape[1]
    weights = (taps - torch.arange(taps, device=lags.device)).to(lags.dtype)
    weights[1:] *= 2  # ||T||_F^2 = sum_k (L - |k|) ||R(k)||_F^2
    norm_t = (weights * lags.square().sum(dim=(2, 3))).sum(1).sqrt()
    return residual, _norm(residual) / (norm_t * _norm(solved) + _norm(rhs))


def _norm(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1).norm(dim=1)


def _solve(gram: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """``(gram + eps I)^-1 rhs``, batched, as museval's ``_compute_projection_filters``.

    Cholesky of ``gram + eps I``; where it breaks down (the Gram matrix of music is often
    numerically semi-definite), LU with partial pivoting, as museval's ``np.linalg.solve`` (on the
    CPU it IS that call); where a matrix is exactly singular, museval's fallback
    ``np.linalg.lstsq(G, D)`` (no ridge).

    Args:
        gram: (..., n, n) symmetric positive semi-definite.
        rhs: (..., n, k).

    Returns:
        (..., n, k) solutions.
    """
    batch = gram.reshape(-1, *gram.shape[-2:])
    b = rhs.reshape(-1, *rhs.shape[-2:])
    eye = torch.eye(batch.shape[-1], dtype=batch.dtype, device=batch.device)
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
    """(nsrc, nchan, nwin, win) -> (nwin,) True where some source sums to zero over channels.

    A few probe samples first: where every source's channel sum is non-zero at one of them (any
    music), the window is not silent and the whole window need not be summed.
    """
    probes = frames[..., :: max(1, frames.shape[-1] // _SILENCE_PROBES)]
    if bool((probes.sum(dim=1) != 0).any(dim=-1).all()):
        return torch.zeros(frames.shape[2], dtype=torch.bool, device=frames.device)
    total = frames[:, 0].clone()  # channel by channel: 6x faster than .sum(1) on these strides
    for channel in range(1, frames.shape[1]):
        total += frames[:, channel]
    return (total == 0).all(dim=-1).any(dim=0)


def _safe_db(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """museval's ``_safe_db``: ``10 log10(num / den)``, +inf where ``den == 0``."""
    return torch.where(den == 0, torch.full_like(num, math.inf), 10 * torch.log10(num / den))


def _any_source_silent(x: torch.Tensor) -> bool:
    """museval's ``_any_source_silent`` on (nsrc, nsampl, nchan): some source whose channels sum
    to zero at every sample. In slices of the time axis, which keeps the temporaries small."""
    sounding = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    for start in range(0, x.shape[1], _SILENCE_SLICE):
        sounding |= (x[:, start : start + _SILENCE_SLICE].sum(dim=2) != 0).any(dim=1)
        if bool(sounding.all()):
            return False
    return not bool(sounding.all())


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


def _window_energies(
    filters: torch.Tensor,
    filters_jj: torch.Tensor,
    refs: torch.Tensor,
    ests: torch.Tensor,
    win: int,
    hop: int,
    fft_len: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per window and source: the energies of museval's ``_bss_decomp_mtifilt`` decomposition
    and whether the window is silent.

    Every projection is a product of spectra (linear convolutions: ``fft_len >= W + L - 1``), and
    every energy a Parseval sum over frequencies, so nothing is transformed back to time. Windows
    are strided views of the signals, processed a few at a time in buffers that stay in cache.

    Args:
        filters: (L, P, P) projection filters onto all references, ``[a, x, (j, c)]``.
        filters_jj: (nsrc, L, C, C) filters of each estimate onto its own reference,
            ``[j, a, c_in, c_out]``.
        refs: (nsrc, C, N) references, any strides.
        ests: (nsrc, C, N) estimates, any strides.
        win: window length.
        hop: hop.
        fft_len: FFT length.

    Returns:
        (7, nsrc, T) energies of ``e_spat``, ``s_true + e_spat``, ``e_interf``,
        ``s_true + e_spat + e_interf``, ``e_artif``, ``s_true``, ``e_spat + e_interf + e_artif``
        (summed over channels), and (T,) True where a reference or estimate is silent.
    """
    nsrc, nchan, _ = refs.shape
    p = nsrc * nchan
    ref_frames, est_frames = _framed(refs, win, hop), _framed(ests, win, hop)  # (S, C, T, W)
    nwin = ref_frames.shape[2]
    every = _rfft0(filters.transpose(1, 2), fft_len)  # (F, P out, P in)
    own = _rfft0(filters_jj.permute(1, 0, 3, 2), fft_len)  # (F, nsrc, C out, C in)
    nfreq = every.shape[0]
    weights = torch.full((nfreq,), 2.0 / fft_len, dtype=refs.dtype, device=refs.device)
    weights[0] = 1.0 / fft_len  # the Parseval weights of a one-sided spectrum
    if fft_len % 2 == 0:
        weights[-1] = 1.0 / fft_len
    banks = 5
    step = _chunk(nwin, (banks + 2) * p * nfreq * 16)
    energies = refs.new_empty(banks + 2, nsrc, nwin)
    silent = torch.empty(nwin, dtype=torch.bool, device=refs.device)

    def windows(first: int, stop: int) -> None:
        z = torch.empty(banks, nfreq, p, step, dtype=every.dtype, device=every.device)
        padded = refs.new_zeros(fft_len, nsrc, nchan, step)
        for t in range(first, stop, step):
            end = min(t + step, stop)
            ref_t, est_t = ref_frames[:, :, t:end], est_frames[:, :, t:end]
            m = end - t
            silent[t:end] = _silent(ref_t) | _silent(est_t)
            energies[5, :, t:end] = torch.linalg.vector_norm(ref_t, dim=(1, 3)).square()
            energies[6, :, t:end] = torch.linalg.vector_norm(est_t - ref_t, dim=(1, 3)).square()
            ref = _rfft0(ref_t.movedim(-1, 0), fft_len, padded).view(nfreq, p, m)  # (F, P, m)
            est = _rfft0(est_t.movedim(-1, 0), fft_len, padded).view(nfreq, p, m)
            zt = z[..., :m] if m < step else z
            image, target = zt[3], zt[1]
            torch.matmul(every, ref, out=image)  # s_true + e_spat + e_interf
            torch.matmul(own, ref.view(nfreq, nsrc, nchan, m),  # s_true + e_spat
                         out=target.view(nfreq, nsrc, nchan, m))
            torch.sub(target, ref, out=zt[0])  # e_spat
            torch.sub(image, target, out=zt[2])  # e_interf
            torch.sub(image, est, out=zt[4])  # -e_artif
            parts = torch.view_as_real(zt).reshape(banks, nfreq, -1)
            parts.square_()
            per_channel = (weights @ parts).view(banks, nsrc, nchan, m, 2)
            energies[:banks, :, t:end] = per_channel.sum(dim=(2, 4))

    _in_parallel(windows, nwin, refs)
    return energies, silent


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
    refs = references.permute(0, 2, 1)  # (nsrc, C, N) views, no copy; row = source, channel
    ests = estimates.permute(0, 2, 1)

    # 1. correlations on the whole track: r_xy[k] with the references, and the estimates
    corr = _lagged_correlations(refs, ests, taps)  # (2P, P, L)
    lags = corr[:p].permute(2, 0, 1)  # (L, P, P): R(k)[x, y] = r_xy[k]
    cross = corr[p:].permute(2, 1, 0)  # (L, P, P): D[(a, y), e] = <s_y delayed by a, est_e>

    # 2. distortion filters: onto all references (one block-Toeplitz system, every estimate's
    # channels as right-hand sides), and onto the true source only (its own channels' blocks)
    filters, filters_jj = _distortion_filters(lags, cross, nsrc, nchan)

    # 3. per window: spectra, projections as products of spectra, Parseval energies
    wlen = min(int(win), nsampl)
    fft_len = scipy.fft.next_fast_len(wlen + taps - 1, real=True)  # linear convolutions fit
    energies, silent = _window_energies(filters, filters_jj, refs, ests, int(win), int(hop),
                                        fft_len)
    spat, target, interf, image, artif, true, dist = energies
    metrics = torch.stack([
        _safe_db(true, dist),  # SDR
        _safe_db(true, spat),  # ISR
        _safe_db(target, interf),  # SIR
        _safe_db(image, artif),  # SAR
    ])  # (4, nsrc, nwin)
    return metrics.masked_fill(silent, math.nan)


# ---------------------------------------------------------------------------------------------
# The public drop-ins


def _as_tensor(x: ArrayLike, dtype: torch.dtype) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().to(dtype)
    if isinstance(x, Sequence) and x and all(isinstance(item, torch.Tensor) for item in x):
        return torch.stack([item.detach() for item in x]).to(dtype)
    return torch.from_numpy(np.asarray(x, dtype=np.float64)).to(dtype)  # no copy of float64


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
