"""The public drop-ins for museval: :func:`evaluate` (``museval.evaluate(..., mode="v4")``),
:func:`evaluate_track` (``museval.eval_mus_track``'s grouping, a ``museval.TrackStore``) and
:func:`save_track_json` (museval's per-track JSON), with a ``"museval"`` backend that runs museval.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import museval
import numpy as np
import torch
import torch.nn.functional as F

from sepcore.metrics.bsseval.windows import _bss_eval_v4

logger = logging.getLogger(__name__)

BACKENDS = ("sepcore", "museval")

ArrayLike = np.ndarray | torch.Tensor | Sequence[Any]


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
    mode: str = "v4",
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """BSSEval image metrics per source and window, as ``museval.evaluate(..., mode=mode)``.

    Estimates longer than the references are truncated, shorter ones zero-padded (museval).
    Computed on the inputs' device (CUDA tensors stay on the GPU).

    Args:
        references: (nsrc, nsampl, nchan) true sources (numpy, torch, or a list of (T, C)).
        estimates: (nsrc, nsampl, nchan) estimated sources, in the same order.
        win: window length in samples (default 1 s at 44.1 kHz).
        hop: hop in samples (default 1 s at 44.1 kHz).
        backend: ``"sepcore"`` (this package) or ``"museval"`` (``museval.evaluate`` itself).
        dtype: working precision of ``"sepcore"``; keep float64 (see the package docstring).
        mode: ``"v4"`` (filters estimated once on the whole track) or ``"v3"`` (filters per
            window). With one window spanning the references (``win = hop = nsampl``) both are
            the same computation and ``"sepcore"`` computes it; a windowed ``"v3"`` runs museval.

    Returns:
        ``(sdr, isr, sir, sar)``, each (nsrc, nwin) float64 numpy in dB; windows where any
        reference or estimate is all zero are NaN for every source. As in museval, a source whose
        estimate holds a NaN/inf sample is NaN in every window, and a NaN/inf sample in a
        reference makes that source's ISR and every source's SDR, SIR and SAR NaN.

    Raises:
        ValueError: unknown backend, mismatched shapes, or an all-zero source (as museval).
    """
    if mode not in ("v4", "v3"):
        raise ValueError(f"unknown BSSEval mode {mode!r}; expected 'v4' or 'v3'")
    if backend not in BACKENDS:
        raise ValueError(f"unknown BSSEval backend {backend!r}; expected one of {BACKENDS}")
    if mode == "v3" and backend == "sepcore" and int(win) < _num_samples(references):
        logger.info("BSSEval v3 with %d-sample windows: per-window filters, museval computes them",
                    int(win))
        backend = "museval"
    if backend == "museval":
        sdr, isr, sir, sar = museval.evaluate(
            _to_numpy(references), _to_numpy(estimates), win=int(win), hop=int(hop), mode=mode
        )
        return sdr, isr, sir, sar
    refs = _as_tensor(references, dtype)
    ests = _as_tensor(estimates, dtype).to(refs.device)
    if refs.ndim < 3:  # museval's np.atleast_3d: (nsrc, nsampl) -> (nsrc, nsampl, 1)
        refs, ests = _atleast_3d(refs), _atleast_3d(ests)
    if refs.numel() == 0 or ests.numel() == 0:
        return tuple(np.array([]) for _ in range(4))  # type: ignore[return-value]
    ests = _pad_or_truncate(refs, ests)
    with torch.no_grad():
        metrics, sums = _bss_eval_v4(refs, ests, win=win, hop=hop)
        out = metrics.to("cpu", torch.float64).numpy()
        # museval: a non-finite sample anywhere in an estimate makes every metric of that source
        # NaN in every window; one in a reference makes that source's ISR and every source's
        # SDR, SIR and SAR NaN (the other sources' ISR only involve their own references).
        # Finite channel sums (from the correlations' FFTs) prove every sample finite.
        if not bool(torch.isfinite(sums).all()):
            bad_estimates = (~torch.isfinite(ests)).flatten(1).any(dim=1).cpu().numpy()
            bad_references = (~torch.isfinite(refs)).flatten(1).any(dim=1).cpu().numpy()
            out[:, bad_estimates] = np.nan
            if bad_references.any():
                out[[0, 2, 3]] = np.nan
                out[1, bad_references] = np.nan
    return out[0], out[1], out[2], out[3]


def _num_samples(x: ArrayLike) -> int:
    if isinstance(x, Sequence) and x:
        return int(len(x[0]))
    return int(x.shape[1])


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
    references: Mapping[str, np.ndarray | torch.Tensor],
    estimates: Mapping[str, np.ndarray | torch.Tensor],
    rate: int,
    win: float,
    hop: float,
    backend: str,
    skip: tuple[str, ...] = (),
    version: str = "v4",
) -> None:
    if version == "v3":  # one window over the whole track
        win_n = hop_n = int(references[names[0]].shape[0])
    else:
        win_n, hop_n = int(win * rate), int(hop * rate)
    sdr, isr, sir, sar = evaluate(
        [references[n] for n in names],
        [estimates[n] for n in names],
        win=win_n,
        hop=hop_n,
        backend=backend,
        mode=version,
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
    references: Mapping[str, np.ndarray | torch.Tensor],
    estimates: Mapping[str, np.ndarray | torch.Tensor],
    track_name: str,
    rate: int,
    win: float = 1.0,
    hop: float = 1.0,
    backend: str = "sepcore",
    version: str = "v4",
) -> museval.TrackStore:
    """Scores one track the way ``museval.eval_mus_track`` does, as a museval ``TrackStore``.

    Targets present in both dicts are scored, in the order of ``references``. When both
    ``vocals`` and ``accompaniment`` are given, they are scored together in a run of their own and
    ``accompaniment`` is left out of the joint run of the other targets (whose ``vocals`` scores
    are then discarded), exactly as museval does; the other targets are scored jointly, which
    needs at least two of them (otherwise museval warns and leaves them unscored).

    Args:
        references: target name -> (T, C) true stem (numpy, or torch tensors: computed on
            their device, e.g. CUDA).
        estimates: target name -> (T, C) estimated stem; names not in ``references`` are ignored.
        track_name: the track's name (the JSON file's stem).
        rate: sample rate in Hz.
        win: window length in seconds.
        hop: hop in seconds.
        backend: ``"sepcore"`` (the fast path of this package) or ``"museval"``.
        version: ``"v4"`` (windows of ``win`` s) or ``"v3"``: one window over the whole track
            (``museval.evaluate(..., mode="v3", win=hop=len(track))``; ``win``/``hop`` ignored,
            the store records the track's duration), one value per target and metric.

    Returns:
        ``museval.TrackStore`` holding per-window SDR/SIR/ISR/SAR per target (``.json``, ``.df``).
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown BSSEval backend {backend!r}; expected one of {BACKENDS}")
    if version not in ("v4", "v3"):
        raise ValueError(f"unknown BSSEval version {version!r}; expected 'v4' or 'v3'")
    targets = [name for name in references if name in estimates]
    if version == "v3" and targets:
        win = hop = references[targets[0]].shape[0] / rate
    store = museval.TrackStore(win=win, hop=hop, track_name=track_name)

    has_acc = "vocals" in targets and "accompaniment" in targets
    joint = [name for name in targets if not (has_acc and name == "accompaniment")]
    if len(joint) >= 2:
        skip = ("vocals",) if has_acc else ()
        _add_scores(store, joint, references, estimates, rate, win, hop, backend, skip=skip,
                    version=version)
    elif not has_acc:
        warnings.warn(
            f"track {track_name!r}: BSSEval needs at least two targets, got {targets}; "
            "no scores for this track",
            UserWarning,
            stacklevel=2,
        )
    if has_acc:
        pair = ["vocals", "accompaniment"]
        _add_scores(store, pair, references, estimates, rate, win, hop, backend, version=version)
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
