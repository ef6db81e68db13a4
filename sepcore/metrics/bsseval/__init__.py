"""BSSEval v4 (SDR, ISR, SIR, SAR per window), exact and fast in torch, and museval's track JSON.

:func:`evaluate` computes what ``museval.evaluate(..., mode="v4")`` computes (``bss_eval`` in its
``bss_eval_images`` form, no permutation search, 512-tap distortion filters estimated once on the
whole track, metrics per window), to round-off (1e-9 dB on the benchmark), 14-44x faster than
museval on two CPU cores depending on the signal (``tests/bench/bsseval_speed.py --kinds``), and
on CUDA when given CUDA tensors.
:func:`evaluate_track` groups the targets as ``museval.eval_mus_track`` does and returns a
``museval.TrackStore``, so the JSONs written here aggregate exactly like SiSEC 2018's;
``backend="museval"`` runs museval itself.

How (notation: P = sources x channels reference signals, L = 512 taps, N samples, W window):

1. Global correlations of every reference and estimate channel with every reference channel at
   lags ``0..L-1``: one real FFT per channel and block of 8192 samples (strided views, no copies,
   no overlap), cross-spectra summed over blocks as batched matrix products; the circular
   wrap-around at the end of each block is corrected exactly by a short correlation of block
   heads and tails (:mod:`.correlations`).
2. The Gram matrix of the delayed references, ``G[(x, a), (y, b)] = r_xy[b - a]``, is block
   Toeplitz (``L x L`` blocks of ``P x P``): solved for every estimate's filters at once by the
   block Levinson recursion, ``O(L^2 P^3)`` instead of a ``(P L)^3`` factorisation, and likewise
   the per-source systems of the spatial distortion. Levinson is only weakly stable, so its
   answer is kept only where its backward error is at round-off level; elsewhere (badly
   conditioned or singular Grams: silent channels, dual-mono stems, heavily band-limited music)
   the dense solve takes over, as museval: Cholesky, LU, then museval's least squares
   (:mod:`.toeplitz`, :mod:`.levinson`).
3. Every window is one FFT per channel; the projections onto all references and onto the true
   source are products of spectra, and every energy (``||e_spat||^2``, ...) a Parseval sum in
   the frequency domain, so no projection is ever transformed back to time (:mod:`.windows`).

Steps 1 and 3 run their blocks/windows in one thread per torch CPU thread (torch and scipy
release the GIL), in cache-sized chunks (:mod:`.arrays`, which also chooses the CPU or CUDA
code path of every FFT and product). The museval drop-ins (array conversion, backends, track
grouping, JSON) are :mod:`.museval_api`.

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

from sepcore.metrics.bsseval.museval_api import (
    BACKENDS,
    evaluate,
    evaluate_track,
    save_track_json,
)
from sepcore.metrics.bsseval.windows import FILTERS_LEN, bss_eval_v4

__all__ = ["BACKENDS", "FILTERS_LEN", "bss_eval_v4", "evaluate", "evaluate_track",
           "save_track_json"]
