"""Step 1 of BSSEval v4: the lagged correlations of every reference and estimate channel with
every reference channel on the whole track (blockwise FFTs with an exact wrap-around correction).
"""

from __future__ import annotations

import scipy.fft
import torch
import torch.nn.functional as F

from sepcore.metrics.bsseval.arrays import (
    _add_product,
    _chunk,
    _complex,
    _in_parallel,
    _irfft0,
    _rfft0,
    _rfft_last,
)

_CORR_FFT = 8192  # FFT length of the blocks of the global correlations


def _lagged_correlations(refs: torch.Tensor, ests: torch.Tensor, max_lag: int) -> torch.Tensor:
    """The correlations of :func:`_correlations_and_sums` alone."""
    return _correlations_and_sums(refs, ests, max_lag)[0]


def _correlations_and_sums(
    refs: torch.Tensor, ests: torch.Tensor, max_lag: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``r[a, b, k] = sum_n x[a, n + k] * refs[b, n]``, ``x = [refs; ests]``, ``0 <= k < L``.

    Signals are zero outside ``[0, N)``, so these are the exact linear correlations museval takes
    from zero-padded whole-track FFTs. Computed blockwise with one FFT per signal and block
    (blocks of ``M`` samples, no overlap, no padding: strided views of the signals): the
    cross-spectra of the blocks, summed over blocks (a batched matrix product per chunk of
    blocks, accumulated in place), give each block's *circular* correlation; where a lag reaches
    past the end of its block (``n + k >= M``) the circular sum took ``x`` from the start of the
    same block instead of the next one, which is corrected exactly by a short correlation of the
    last ``L - 1`` samples of each reference block with the differences ``head(m + 1) - head(m)``
    of the first ``L - 1`` samples of the blocks (FFT length ~2L, per chunk, in the threads).

    Args:
        refs: (nsrc, C, N) references, any strides.
        ests: (nsrc, C, N) estimates, any strides.
        max_lag: number of non-negative lags kept (``L``).

    The zero-frequency bins of the block spectra sum to each signal's sum over time, returned
    too: it is finite whenever every sample is (up to overflow), and non-finite whenever a sample
    is (a NaN or an inf reaches every bin of its block's FFT: adds and multiplies never make a
    non-finite number finite), which spares :func:`.museval_api.evaluate` a pass over the signals
    to find NaN/inf samples.

    Returns:
        (2P, P, L) correlations, rows and columns source-major, and (2P,) sums of the signals.
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

    short = scipy.fft.next_fast_len(2 * edge, real=True)  # FFT length of the wrap-around
    nshort = short // 2 + 1

    def head(block: int) -> torch.Tensor:
        """(2P, 1, L - 1): the first samples of a block of every signal (zero past the end)."""
        if block >= nblk:
            return refs.new_zeros(2 * p, 1, edge)
        source, offset = (parts[0], 0) if block < nfull else (parts[1], nfull)
        return torch.cat([b[..., block - offset, :edge].reshape(p, 1, edge) for b in source])

    def accumulate(first: int, stop: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        spectrum = torch.zeros(nfreq, 2 * p, p, dtype=_complex(refs.dtype), device=refs.device)
        wrap = torch.zeros(nshort, 2 * p, p, dtype=spectrum.dtype, device=refs.device)
        sums = refs.new_zeros(2 * p)
        while first < stop:
            end = min(first + step, stop, nfull if first < nfull else stop)
            source, offset = (parts[0], 0) if first < nfull else (parts[1], nfull)
            blocks = [b[..., first - offset : end - offset, :] for b in source]  # (S, C, m, M)
            spectra = [_rfft0(b.movedim(-1, 0), size).reshape(nfreq, p, -1)
                       for b in blocks]  # (F, P, m): refs, estimates
            _add_product(spectrum[:, :p], spectra[0], spectra[0])
            _add_product(spectrum[:, p:], spectra[1], spectra[0])
            sums += torch.cat([s[0].real.sum(dim=-1) for s in spectra])  # bin 0: block sums
            # the wrap-around of these blocks: sum_{j < k} (head_{m+1} - head_m)[a, j]
            # * tail_m[b, j + L - 1 - k], as the cross-spectra of short zero-padded FFTs
            heads = torch.cat([b[..., :edge].reshape(p, -1, edge) for b in blocks])  # (2P, m, .)
            diffs = torch.cat([heads[:, 1:], head(end)], dim=1) - heads
            tails = blocks[0][..., size - edge :].reshape(p, -1, edge)
            d = _rfft_last(diffs, short).permute(2, 0, 1).contiguous()  # (F', 2P, m)
            g = _rfft_last(tails, short).permute(2, 0, 1).contiguous()  # (F', P, m)
            _add_product(wrap, d, g)  # conj of the cross-spectrum sum_j g[j + s] d[j]
            first = end
        return spectrum, wrap, sums

    spectra, wraps, sums = zip(*_in_parallel(accumulate, nblk, refs), strict=True)
    circular = _irfft0(sum(spectra), size)[:max_lag]  # (L, 2P, P)
    xcorr = _irfft0(sum(wraps).conj_physical(), short)[:max_lag]  # (L, 2P, P) at shifts 0..L-1
    return (circular + xcorr.flip(0)).permute(1, 2, 0), sum(sums)  # shift s = L - 1 - k

