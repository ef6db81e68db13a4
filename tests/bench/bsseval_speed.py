"""Speed of BSSEval v4: sepcore's torch implementation against museval on the same audio.

Four stereo sources at 44.1 kHz (60 s, or a 4-minute song with ``--full-song``), one or several
``--kinds`` of signal, estimates = reference + leakage of the other stems + noise unless said:

- ``stems``: structured like music stems (band-limited noise with a slow amplitude envelope,
  stereo panning, a noise floor 60 dB down, a 2 s silent gap in one stem);
- ``noise``: white noise references;
- ``pcm16``: the stems rounded to 16 bits (MUSDB18-HQ's files), estimates too;
- ``silence``: the 16-bit stems with digital silence: 10 s in two stems at different places and
  3 s in all four (NaN windows);
- ``filtered``: estimates = the 16-bit references through a short FIR (a 3-tap smoothing and a
  40-sample echo at -6 dB, inside the 512 taps of the distortion filters) + leakage + noise.

Per kind: both times, the speed-up, the largest metric difference and whether the NaN windows
are museval's. Run ``taskset -c 0,1`` to measure on two CPU cores::

    python tests/bench/bsseval_speed.py [--full-song | --song DIR] [--kinds stems noise ...]
        [--device cuda] [--threads 2]

sepcore's time is the median of ``--repeat`` runs (default 3); museval runs once (30 s).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import scipy.signal
import torch

RATE = 44100


def make_stems(seconds: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(references, estimates), each (4, T, 2) float64; references band-limited and enveloped."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    bands = [(40, 200), (100, 4000), (300, 8000), (2000, 16000)]  # bass, vocals, other, drums
    refs = np.empty((4, n, 2))
    for i, (lo, hi) in enumerate(bands):
        sos = scipy.signal.butter(4, [lo, hi], btype="band", fs=RATE, output="sos")
        mono = scipy.signal.sosfilt(sos, rng.standard_normal(n))
        envelope = np.repeat(np.abs(rng.standard_normal(n // 4410 + 1)), 4410)[:n] + 0.1
        pan = rng.uniform(0.3, 0.7)
        refs[i, :, 0] = mono * envelope * pan
        refs[i, :, 1] = (mono * envelope * (1 - pan) + 0.05 * scipy.signal.sosfilt(
            sos, rng.standard_normal(n)))
    # a noise floor 60 dB down, as any recording has: without it the band-limited stems make the
    # Gram matrix numerically singular and museval's own SIR/SAR move by dB when the input moves
    # by 1e-14 (its solve is then round-off), so no two implementations can agree
    refs += 1e-3 * refs.std() * rng.standard_normal(refs.shape)
    refs[1, 5 * RATE : 7 * RATE] = 0.0  # a silent vocal gap: NaN windows
    ests = _estimates(refs, rng, noise=0.05)
    ests[1, 5 * RATE : 7 * RATE] = 0.0
    return refs, ests


def _estimates(refs: np.ndarray, rng: np.random.Generator, noise: float) -> np.ndarray:
    """The references with leakage of the other stems and white noise of std ``noise``."""
    leak = np.roll(refs, 1, axis=0) + 0.5 * np.roll(refs, 2, axis=0)
    return refs + 0.2 * leak + noise * rng.standard_normal(refs.shape)


KINDS = ("stems", "noise", "pcm16", "silence", "filtered")


def _pcm16(x: np.ndarray) -> np.ndarray:
    return np.round(x * 32767) / 32767


def make_kind(kind: str, seconds: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(references, estimates) of one of :data:`KINDS` (see the module docstring)."""
    if kind == "stems":
        return make_stems(seconds, seed)
    rng = np.random.default_rng(seed + 1)
    if kind == "noise":
        refs = 0.1 * rng.standard_normal((4, int(seconds * RATE), 2))
        return refs, _estimates(refs, rng, noise=0.01)
    refs, ests = make_stems(seconds, seed)
    scale = 0.5 / np.abs(refs).max()  # full scale with headroom, then 16 bits
    refs = _pcm16(refs * scale)
    if kind == "pcm16":
        return refs, _pcm16(ests * scale)
    if kind == "silence":
        refs[0, 20 * RATE : 30 * RATE] = 0.0
        refs[2, 35 * RATE : 45 * RATE] = 0.0
        refs[:, 50 * RATE : 53 * RATE] = 0.0
        ests = _estimates(refs, rng, noise=0.01)
        ests[:, 50 * RATE : 53 * RATE] = 0.0
        return refs, _pcm16(ests)
    if kind == "filtered":
        fir = np.zeros(41)
        fir[:3] = [0.25, 0.5, 0.25]
        fir[40] = 0.5
        heard = scipy.signal.lfilter(fir, [1.0], refs, axis=1)
        ests = heard + 0.2 * (np.roll(refs, 1, axis=0) + 0.5 * np.roll(refs, 2, axis=0))
        return refs, _pcm16(ests + 0.01 * rng.standard_normal(refs.shape))
    raise SystemExit(f"--kinds: unknown kind {kind!r}; choose from {', '.join(KINDS)}")


def song_stems(folder: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(references, estimates) from a MUSDB18-HQ song folder: its four stems, and the stems with
    the same leakage as :func:`make_stems` and noise 26 dB below the stems (no noise floor added
    to the references)."""
    import soundfile as sf

    refs = np.stack([sf.read(f"{folder}/{name}.wav", always_2d=True)[0]
                     for name in ("vocals", "drums", "bass", "other")])
    return refs, _estimates(refs, np.random.default_rng(seed), noise=0.05 * refs.std())


def run(refs: np.ndarray, ests: np.ndarray, label: str, args: argparse.Namespace) -> None:
    """Times sepcore (median of ``args.repeat``) and museval on one pair; prints the lines."""
    from sepcore.metrics.bsseval import evaluate

    seconds = refs.shape[1] / RATE
    refs_t = torch.from_numpy(refs).to(args.device)
    ests_t = torch.from_numpy(ests).to(args.device)
    evaluate(refs_t[:, : 3 * RATE], ests_t[:, : 3 * RATE])  # warm-up (CUDA context, plans)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    times = []
    for _ in range(args.repeat):  # the median of a few runs: one ~1 s run is at the mercy of
        start = time.perf_counter()  # whatever else the machine does; museval's 30 s is not
        ours = np.stack(evaluate(refs_t, ests_t))
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    t_ours = float(np.median(times))
    print(f"[{label}] 4 stereo sources x {seconds:.0f} s, device {args.device}, "
          f"{torch.get_num_threads()} torch threads")
    print(f"[{label}] sepcore: {t_ours:8.2f} s (median of {args.repeat} runs: "
          f"{', '.join(f'{t:.2f}' for t in times)})")
    if args.skip_museval:
        return

    import museval

    start = time.perf_counter()
    theirs = np.stack(museval.evaluate(refs, ests, win=RATE, hop=RATE, mode="v4"))
    t_theirs = time.perf_counter() - start
    same_nan = bool((np.isnan(ours) == np.isnan(theirs)).all())
    diff = np.nanmax(np.abs(ours - theirs))
    print(f"[{label}] museval: {t_theirs:8.2f} s   speed-up: {t_theirs / t_ours:6.1f}x   "
          f"largest |difference| over SDR/ISR/SIR/SAR: {diff:.3e} dB   NaN windows identical: "
          f"{same_nan} ({int(np.isnan(theirs[0, 0]).sum())} NaN windows)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full-song", action="store_true", help="4 minutes instead of 60 s")
    parser.add_argument("--kinds", nargs="+", default=["stems"], choices=KINDS,
                        help="kinds of signal (default: stems)")
    parser.add_argument("--device", default="cpu", help="device of sepcore's run (cpu, cuda)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--skip-museval", action="store_true", help="time sepcore only")
    parser.add_argument("--repeat", type=int, default=3, help="runs of sepcore (median timed)")
    parser.add_argument("--song", default=None,
                        help="a MUSDB18-HQ song folder (e.g. one of `sep synth`) instead")
    parser.add_argument("--pcm16", action="store_true",
                        help="round the references to 16 bits, as MUSDB18(-HQ)'s files are")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.song:
        pairs = [(args.song.rstrip("/").rsplit("/", 1)[-1], *song_stems(args.song))]
    else:
        seconds = 240.0 if args.full_song else 60.0
        pairs = [(kind, *make_kind(kind, seconds)) for kind in args.kinds]
    for label, refs, ests in pairs:
        if args.pcm16:
            refs = _pcm16(refs)
        run(refs, ests, label, args)


if __name__ == "__main__":
    main()
