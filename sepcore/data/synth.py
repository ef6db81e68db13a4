"""Synthetic MUSDB18-HQ trees: songs with musically structured stems for tests and demos.

The demo and the tests run on embedded defaults, with no dataset to download, so this writes a tree
that ``musdb.DB(root=…, is_wav=True)`` reads like the real MUSDB18-HQ: ``train/<song>/`` and
``test/<song>/`` folders with ``mixture.wav vocals.wav drums.wav bass.wav other.wav`` (stereo,
32-bit float WAV), where ``mixture.wav`` is exactly the float32 sum of the four stems. Separation
should be learnable but not trivial, so every song has a tempo, a key and a looping four-chord
progression, and:

- ``vocals``: a sung-like voice. A band-limited harmonic source (additive synthesis, phase
  accumulated from the instantaneous frequency) follows a melody in the key (MIDI 55-79, 16th to
  quarter notes, portamento between notes) with delayed-onset vibrato (5-6 Hz), vowel formants
  (a/e/i/o/u resonators, a vowel per note), a little breath noise and an envelope per note. The
  melody comes in phrases of 2-4 bars separated by rests of 1-2 bars (and a one-bar intro), where
  the stem is exactly zero.
- ``drums``: kick (sine sweep 120→50 Hz), snare (band-passed noise and a ~190 Hz tone), closed/open
  hi-hats, toms and crashes on 16-step patterns with per-bar variations, fills and velocities.
- ``bass``: the chord roots (MIDI 28-48) in a rhythm per song, a polyBLEP sawtooth through a plucky
  low-pass plus a sine, with occasional fifths and octaves.
- ``other``: the chords voiced in MIDI 50-72 (the voice's range) as a detuned pad and/or decaying
  piano-like tones, sometimes with an arpeggio.

Each stem has its own pan (and small inter-channel delay or decorrelated noise), so left != right.
Stems are balanced roughly like real music (±3 dB at random per song and stem) and the song is
scaled so that the mixture peaks at 0.9. The stems are then rounded to the 16-bit grid, as
MUSDB18-HQ's PCM files are: besides realism, that rounding noise (-101 dB) is what makes BSSEval
well posed on them — pure additive synthesis is so band-limited that the Gram matrix of the
distortion filters is numerically singular, and museval's own ISR/SIR/SAR then move by dB when
the input moves by 1e-12. Song ``i`` is drawn from ``np.random.default_rng([seed,
i])``, so it does not depend on how many songs are written and the same seed gives identical files.
"""

from __future__ import annotations

import io
import logging
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy import signal
from tqdm import tqdm

from sepcore.errors import DataError

log = logging.getLogger(__name__)

STEM_NAMES = ("vocals", "drums", "bass", "other")
_PCM16 = np.float32(2**15)  # stems are rounded to multiples of 2**-15, as 16-bit PCM
MIN_SAMPLE_RATE = 8000

_MAJOR = (0, 2, 4, 5, 7, 9, 11)
_MINOR = (0, 2, 3, 5, 7, 8, 10)
# Chord progressions as 0-based scale degrees, one chord per bar, looping.
_MAJOR_PROGRESSIONS = ((0, 4, 5, 3), (0, 5, 3, 4), (0, 3, 4, 3), (5, 3, 0, 4), (0, 3, 0, 4),
                       (0, 2, 3, 4), (1, 4, 0, 0), (0, 4, 3, 4))
_MINOR_PROGRESSIONS = ((0, 5, 2, 6), (0, 3, 4, 0), (0, 6, 5, 6), (0, 5, 3, 4), (0, 3, 6, 2))
# Vowel formants (alto): centre frequencies (Hz), gains (dB) and bandwidths (Hz) of F1-F3.
_VOWELS = (
    ((800.0, 1150.0, 2800.0), (0.0, -4.0, -20.0), (80.0, 90.0, 120.0)),  # a
    ((400.0, 1600.0, 2700.0), (0.0, -24.0, -30.0), (60.0, 80.0, 120.0)),  # e
    ((350.0, 1700.0, 2700.0), (0.0, -20.0, -30.0), (50.0, 100.0, 120.0)),  # i
    ((450.0, 800.0, 2830.0), (0.0, -9.0, -16.0), (70.0, 80.0, 100.0)),  # o
    ((325.0, 700.0, 2530.0), (0.0, -12.0, -30.0), (50.0, 60.0, 170.0)),  # u
)
# Relative stem levels (dB of RMS) before the random ±3 dB per song: the voice about as loud as
# the accompaniment.
_LEVELS_DB = {"vocals": 2.0, "drums": -2.0, "bass": -4.5, "other": -4.0}
_ADJECTIVES = ("Amber", "Silver", "Quiet", "Electric", "Hollow", "Golden", "Restless", "Velvet",
               "Distant", "Crimson", "Paper", "Neon", "Broken", "Midnight", "Wandering", "Glass")
_NOUNS = ("Harbor", "Lanterns", "Highway", "Garden", "Signals", "Rivers", "Machines", "Skyline",
          "Echoes", "Orchard", "Satellites", "Tides", "Letters", "Mountains", "Fires", "Windows")


@dataclass(frozen=True)
class _Plan:
    """The song-level musical frame shared by all stems."""

    sr: int
    n: int  # samples in the song
    step: float  # samples per 16th note
    bars: int  # bars covering the song (the last one may run past the end)
    tonic: int  # pitch class of the key (0 = C)
    scale: tuple[int, ...]  # pitch classes of the key's scale
    chords: tuple[tuple[int, ...], ...]  # (bars,) chords, each 3-4 pitch classes, root first

    def pos(self, steps: np.ndarray) -> np.ndarray:
        """Sample index of each 16th-note step (clipped to the song's end)."""
        return np.minimum(np.round(np.asarray(steps, dtype=np.float64) * self.step),
                          self.n).astype(np.int64)


# ---------------------------------------------------------------------------------------------
# small signal helpers


def _hz(midi: np.ndarray | float) -> np.ndarray:
    return 440.0 * 2.0 ** ((np.asarray(midi, dtype=np.float64) - 69.0) / 12.0)


def _one_pole(x: np.ndarray, tau: float, sr: int) -> np.ndarray:
    """Smooth ``x`` (n,) with a one-pole low-pass of time constant ``tau`` s, starting settled."""
    a = math.exp(-1.0 / (tau * sr))
    y, _ = signal.lfilter([1.0 - a], [1.0, -a], x, zi=[a * float(x[0])])
    return y


def _phase(freq: np.ndarray, sr: int) -> np.ndarray:
    """Phase (n,) in [0, 2π) accumulated from an instantaneous frequency (n,) in Hz, as float32."""
    cycles = np.cumsum(freq / sr)  # float64 keeps long songs in tune
    cycles -= np.floor(cycles)
    cycles *= 2.0 * np.pi
    return cycles.astype(np.float32)


def _additive(phase: np.ndarray, amps, ratios=None) -> np.ndarray:
    """``sum_k amps[k] * sin(ratios[k] * phase)`` for a float32 phase (n,); ``amps`` entries are
    scalars or (n,) arrays, ``ratios`` default to 1, 2, 3, …. Returns float32 (n,)."""
    out = np.zeros_like(phase)
    tmp = np.empty_like(phase)
    for k, amp in enumerate(amps):
        np.multiply(phase, np.float32(ratios[k] if ratios is not None else k + 1), out=tmp)
        np.sin(tmp, out=tmp)
        tmp *= amp if isinstance(amp, np.ndarray) else np.float32(amp)
        out += tmp
    return out


def _segments(starts: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For sorted segment ``starts`` (k,) in samples, the first 0: the segment bounds (k + 1,) and,
    per sample (n,), its segment's index and the samples (float32) since that segment started."""
    bounds = np.append(np.minimum(starts, n), n)
    index = np.repeat(np.arange(len(starts), dtype=np.int32), np.diff(bounds))  # (n,)
    since = np.arange(n, dtype=np.int64)
    since -= bounds[:-1][index]  # (n,)
    return bounds, index, since.astype(np.float32)


def _pan(x: np.ndarray, pan: float, delay: int = 0) -> np.ndarray:
    """Constant-power pan of a mono (n,) signal, ``pan`` in [-1, 1]; ``delay`` > 0 delays the right
    channel (< 0 the left) by that many samples. Returns (n, 2)."""
    angle = (pan + 1.0) * np.pi / 4.0
    left, right = math.cos(angle) * x, math.sin(angle) * x
    if delay > 0:
        right = np.concatenate([np.zeros(delay, x.dtype), right[:-delay]])
    elif delay < 0:
        left = np.concatenate([np.zeros(-delay, x.dtype), left[:delay]])
    return np.stack([left, right], axis=1)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0


def _normalise(x: np.ndarray) -> np.ndarray:
    r = _rms(x)
    return x / r if r > 0 else x


def _place(n: int, steps: list[float], velocities: list[float], shot: np.ndarray, plan: _Plan,
           jitter: np.ndarray) -> np.ndarray:
    """Trigger the one-shot ``shot`` at the (humanised) 16th ``steps``; returns (n,)."""
    out = np.zeros(n)
    where = np.round(np.asarray(steps, dtype=np.float64) * plan.step + jitter[: len(steps)])
    for at, velocity in zip(where.astype(np.int64), velocities, strict=True):
        if 0 <= at < n:
            length = min(len(shot), n - at)
            out[at:at + length] += velocity * shot[:length]
    return out


def _sos(kind: str, cutoff: float | tuple[float, float], sr: int, order: int = 2) -> np.ndarray:
    nyq_guard = 0.45 * sr
    cut = tuple(min(c, nyq_guard) for c in cutoff) if isinstance(cutoff, tuple) else min(
        cutoff, nyq_guard)
    return signal.butter(order, cut, btype=kind, fs=sr, output="sos")


# ---------------------------------------------------------------------------------------------
# song plan


def _plan(rng: np.random.Generator, n: int, sr: int) -> _Plan:
    bpm = rng.uniform(80.0, 140.0)
    step = sr * 60.0 / bpm / 4.0
    bars = int(math.ceil(n / (16 * step))) + 1
    tonic = int(rng.integers(0, 12))
    major = bool(rng.random() < 0.6)
    scale = _MAJOR if major else _MINOR
    progressions = _MAJOR_PROGRESSIONS if major else _MINOR_PROGRESSIONS
    progression = progressions[int(rng.integers(len(progressions)))]
    sevenths = rng.random(4) < 0.3
    loop = []
    for degree, seventh in zip(progression, sevenths, strict=True):
        size = 4 if seventh else 3
        loop.append(tuple((tonic + scale[(degree + 2 * j) % 7]) % 12 for j in range(size)))
    chords = tuple(loop[b % 4] for b in range(bars))
    return _Plan(sr=sr, n=n, step=step, bars=bars, tonic=tonic,
                 scale=tuple((tonic + s) % 12 for s in scale), chords=chords)


# ---------------------------------------------------------------------------------------------
# vocals


def _melody(rng: np.random.Generator, plan: _Plan):
    """Phrases of notes and rests, in 16th steps: (starts, sung, midi, vowel, velocity) lists."""
    pitches = [m for m in range(55, 80) if m % 12 in plan.scale]
    at = int(np.argmin(np.abs(np.asarray(pitches) - rng.integers(62, 71))))
    starts, sung, midi, vowel, vel = [0], [False], [float(pitches[at])], [0], [0.0]  # intro rest
    moves = np.array([-3, -2, -1, 0, 1, 2, 3])
    move_p = np.array([0.05, 0.17, 0.25, 0.1, 0.25, 0.13, 0.05])
    s, total = 16, 16 * plan.bars
    while s < total:
        phrase_bars, rest_bars = int(rng.integers(2, 5)), int(rng.integers(1, 3))
        phrase_end = s + 16 * phrase_bars - int(rng.integers(0, 5))
        next_phrase = s + 16 * (phrase_bars + rest_bars)
        first = True
        while s < phrase_end:
            d = min(int(rng.choice([1, 2, 3, 4], p=[0.1, 0.4, 0.15, 0.35])), phrase_end - s)
            starts.append(s)
            if not first and rng.random() < 0.1:  # a breath inside the phrase
                sung.append(False)
                midi.append(midi[-1])
                vowel.append(vowel[-1])
                vel.append(0.0)
            else:
                at = int(np.clip(at + rng.choice(moves, p=move_p), 0, len(pitches) - 1))
                if s % 4 == 0 and rng.random() < 0.6:  # strong beats lean on chord tones
                    chord = plan.chords[min(s // 16, plan.bars - 1)]
                    tones = [i for i, m in enumerate(pitches) if m % 12 in chord]
                    at = min(tones, key=lambda i: abs(i - at))
                sung.append(True)
                midi.append(float(pitches[at]))
                vowel.append(int(rng.integers(len(_VOWELS))))
                vel.append(float(rng.uniform(0.7, 1.0)))
            first = False
            s += d
        starts.append(s)  # rest until the next phrase
        sung.append(False)
        midi.append(midi[-1])
        vowel.append(vowel[-1])
        vel.append(0.0)
        s = next_phrase
    return starts, sung, midi, vowel, vel


def _formant_bank(vowel: int, sr: int) -> tuple[np.ndarray, np.ndarray]:
    """(b, a) of the vowel's formant resonators (those below 0.45 sr) summed in parallel."""
    b_sum, a_prod = np.zeros(1), np.ones(1)
    freqs, gains, widths = _VOWELS[vowel]
    for f, g, bw in zip(freqs, gains, widths, strict=True):
        if f >= 0.45 * sr:
            continue
        b, a = signal.iirpeak(f, f / (1.5 * bw), fs=sr)
        b = 10 ** (0.6 * g / 20) * b
        b_sum = np.polyadd(np.polymul(b_sum, a), np.polymul(b, a_prod))
        a_prod = np.polymul(a_prod, a)
    return b_sum, a_prod


def _vocals(rng: np.random.Generator, plan: _Plan) -> np.ndarray:
    sr, n = plan.sr, plan.n
    starts, sung, midi, vowel, vel = _melody(rng, plan)
    bounds, index, _ = _segments(plan.pos(starts), n)  # (k + 1,), (n,)
    notes = [i for i in range(len(starts)) if sung[i] and bounds[i + 1] > bounds[i]]
    attack, release = rng.uniform(0.02, 0.05), rng.uniform(0.04, 0.08)
    rate, depth = rng.uniform(5.0, 6.0), rng.uniform(0.2, 0.3)  # vibrato: Hz, ± semitones
    vib_onset, vib_phase = rng.uniform(0.12, 0.3), rng.uniform(0, 2 * np.pi)

    # per note: envelope (attack/release, softer between legato notes; exactly 0 in rests),
    # delayed vibrato (semitones) and breath gain (stronger at the start)
    env = np.zeros(n, dtype=np.float32)
    vibrato = np.zeros(n, dtype=np.float32)
    breath_gain = np.zeros(n, dtype=np.float32)
    for i in notes:
        a, b = int(bounds[i]), int(bounds[i + 1])
        t = np.arange(b - a, dtype=np.float32) / sr  # seconds since the note started
        a_floor = 0.55 if i > 0 and sung[i - 1] else 0.0
        r_floor = 0.55 if i + 1 < len(sung) and sung[i + 1] else 0.0
        env[a:b] = (vel[i] * (a_floor + (1 - a_floor) * np.clip(t / attack, 0, 1))
                    * (r_floor + (1 - r_floor) * np.clip((t[-1] - t + 1 / sr) / release, 0, 1)))
        vibrato[a:b] = (depth * np.clip((t - vib_onset) / 0.25, 0, 1)
                        * np.sin(2 * np.pi * rate * (t + a / sr) + vib_phase))
        breath_gain[a:b] = 0.4 + np.exp(-t / 0.06)

    # pitch (MIDI, n,): glides between notes, vibrato, slow drift
    pitch = _one_pole(np.asarray(midi)[index], rng.uniform(0.025, 0.07), sr)
    pitch += vibrato
    knots = np.arange(0, n + int(0.1 * sr), int(0.1 * sr))
    pitch += np.interp(np.arange(n), knots, rng.normal(0.0, 0.05, len(knots)))
    f0 = _hz(pitch)  # (n,) Hz

    # harmonic source: all harmonics below 0.45 sr, 1/k^tilt with a per-song colour
    harmonics = int(max(1, min(28, 0.45 * sr // f0.max())))
    amps = np.arange(1, harmonics + 1) ** -rng.uniform(0.9, 1.2) * rng.uniform(0.7, 1.3,
                                                                               harmonics)
    source = _additive(_phase(f0, sr), amps)  # (n,) float32

    # formants: each note through its vowel's resonators (F1-F3 in parallel), the banks of
    # consecutive notes cross-faded over ``fade`` samples
    banks = [_formant_bank(v, sr) for v in range(len(_VOWELS))]
    fade = int(0.03 * sr)
    ramp = np.linspace(0.0, 1.0, fade, endpoint=False, dtype=np.float32)
    voice = 0.3 * source
    for i in notes:
        a, b = int(bounds[i]), int(bounds[i + 1])
        end = min(b + fade, n)
        filtered = signal.lfilter(*banks[vowel[i]], source[a:end]).astype(np.float32)
        head = min(fade, end - a)
        filtered[:head] *= ramp[:head]
        if end > b:
            filtered[b - end:] *= ramp[::-1][: end - b]
        voice[a:end] += filtered
    voice /= _rms(voice[env > 0]) or 1.0

    # breath: band-passed noise
    breath = signal.sosfilt(_sos("bandpass", (1500.0, 7000.0), sr),
                            rng.standard_normal(n, dtype=np.float32))
    breath *= rng.uniform(0.03, 0.08) / (_rms(breath) or 1.0)
    mono = env * (voice + breath_gain * breath)  # (n,) exactly 0 outside the notes
    pan = rng.choice([-1.0, 1.0]) * rng.uniform(0.03, 0.15)
    delay = int(rng.choice([-1, 1]) * rng.integers(1, 12))
    return _pan(mono, pan, delay)  # (n, 2)


# ---------------------------------------------------------------------------------------------
# drums


def _noise_shot(rng: np.random.Generator, sr: int, seconds: float, decay: float,
                sos: np.ndarray) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return signal.sosfilt(sos, rng.standard_normal(len(t))) * np.exp(-t / decay)


def _sweep_shot(sr: int, seconds: float, f_end: float, f_extra: float, sweep: float,
                decay: float) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    freq = f_end + f_extra * np.exp(-t / sweep)
    return np.sin(np.cumsum(freq) * (2 * np.pi / sr)) * np.exp(-t / decay)


def _drums(rng: np.random.Generator, plan: _Plan) -> np.ndarray:
    sr, n = plan.sr, plan.n
    t_kick = np.arange(int(0.45 * sr)) / sr
    kick = _sweep_shot(sr, 0.45, 50.0, 70.0, rng.uniform(0.025, 0.045), rng.uniform(0.12, 0.2))
    kick += 0.3 * rng.standard_normal(len(t_kick)) * np.exp(-t_kick / 0.002)
    snare = 0.6 * _sweep_shot(sr, 0.3, rng.uniform(175.0, 200.0), 20.0, 0.01, 0.06)
    snare += _noise_shot(rng, sr, 0.3, rng.uniform(0.07, 0.12), _sos("bandpass", (1000.0, 6000.0),
                                                                      sr))
    tom = _sweep_shot(sr, 0.5, rng.uniform(90.0, 140.0), 40.0, 0.05, 0.18)
    hat_sos = _sos("highpass", min(7000.0, 0.3 * sr), sr)
    hat_decay = rng.uniform(0.02, 0.035)
    hats = [_noise_shot(rng, sr, 0.12, hat_decay, hat_sos) for _ in range(2)]  # left, right
    open_hats = [_noise_shot(rng, sr, 0.5, 0.15, hat_sos) for _ in range(2)]
    crashes = [_noise_shot(rng, sr, 2.0, 0.6, _sos("highpass", min(4000.0, 0.25 * sr), sr))
               for _ in range(2)]

    hits: dict[str, tuple[list[float], list[float]]] = {
        k: ([], []) for k in ("kick", "snare", "tom", "hat", "open", "crash")}

    def hit(kind: str, step: float, velocity: float) -> None:
        hits[kind][0].append(step)
        hits[kind][1].append(velocity * rng.uniform(0.85, 1.05))

    hat_every = 1 if rng.random() < 0.4 else 2  # 16ths or 8ths
    kick_extra = [(), (10,), (6, 10), (3, 10), (7,), (14,)][int(rng.integers(6))]
    open_p = rng.uniform(0.0, 0.4)
    fill_before = False
    for bar in range(plan.bars):
        base = 16 * bar
        fill = (bar % 4 == 3 and rng.random() < 0.5) or rng.random() < 0.05
        fill_from = (12 if rng.random() < 0.7 else 8) if fill else 16
        if bar > 0 and (fill_before or (bar % 8 == 0 and rng.random() < 0.7)):
            hit("crash", base, 0.8)
        for st in (0, 8, *kick_extra, *(s for s in (2, 7, 11, 15) if rng.random() < 0.08)):
            if st < fill_from or st == 0:
                hit("kick", base + st, 1.0 if st in (0, 8) else 0.8)
        for st in range(16):
            if st >= fill_from:
                hit("snare" if rng.random() < 0.6 else "tom", base + st,
                    0.45 + 0.5 * (st - fill_from + 1) / (16 - fill_from))
            elif st in (4, 12):
                hit("snare", base + st, 1.0)
            elif rng.random() < 0.05:
                hit("snare", base + st, rng.uniform(0.15, 0.3))  # ghost note
            if st < fill_from and st % hat_every == 0:
                accent = 0.9 if st % 4 == 0 else (0.65 if st % 2 == 0 else 0.45)
                hit("open" if st == 14 and rng.random() < open_p else "hat", base + st, accent)
        fill_before = fill

    jitter = rng.normal(0.0, 0.002 * sr, 16 * plan.bars + 64)  # humanised timing, samples
    out = np.zeros((n, 2))
    out += _pan(_place(n, *hits["kick"], kick, plan, jitter), rng.uniform(-0.03, 0.03))
    out += 0.8 * _pan(_place(n, *hits["snare"], snare, plan, jitter), rng.uniform(-0.2, 0.0))
    out += 0.7 * _pan(_place(n, *hits["tom"], tom, plan, jitter), rng.uniform(-0.3, 0.3))
    hat_pan = rng.uniform(0.15, 0.4)
    for kind, shots, gain in (("hat", hats, 0.35), ("open", open_hats, 0.3),
                              ("crash", crashes, 0.3)):
        if hits[kind][0]:
            left = _place(n, *hits[kind], shots[0], plan, jitter)
            right = _place(n, *hits[kind], shots[1], plan, jitter)  # decorrelated noise
            angle = (hat_pan + 1.0) * np.pi / 4.0
            out[:, 0] += gain * math.cos(angle) * left
            out[:, 1] += gain * math.sin(angle) * right
    return out  # (n, 2)


# ---------------------------------------------------------------------------------------------
# bass


def _poly_blep_saw(phase01: np.ndarray, dt: np.ndarray) -> np.ndarray:
    """Band-limited-ish sawtooth from a phase (n,) in [0, 1) advancing ``dt`` (n,) per sample:
    a naive saw with a polyBLEP correction on the two samples around each wrap."""
    saw = 2.0 * phase01 - 1.0
    after = np.flatnonzero(phase01 < dt)
    x = phase01[after] / dt[after]
    saw[after] -= 2 * x - x * x - 1.0
    before = np.flatnonzero(phase01 + dt > 1.0)
    x = (phase01[before] - 1.0) / dt[before]
    saw[before] -= x * x + 2 * x + 1.0
    return saw


def _bass(rng: np.random.Generator, plan: _Plan) -> np.ndarray:
    sr, n = plan.sr, plan.n
    low = int(rng.integers(28, 37))
    rhythms = ((0, 4, 8, 12), (0, 2, 4, 6, 8, 10, 12, 14), (0, 3, 6, 8, 10, 14), (0, 6, 8, 14),
               (0, 2, 4, 8, 10, 12))
    rhythm = rhythms[int(rng.integers(len(rhythms)))]
    starts, lengths, midi, vel = [], [], [], []
    gate = rng.uniform(0.6, 0.95)
    for bar in range(plan.bars):
        root = low + (plan.chords[bar][0] - low) % 12
        for i, st in enumerate(rhythm):
            nxt = rhythm[i + 1] if i + 1 < len(rhythm) else 16
            note = root
            if st % 4 != 0 and rng.random() < 0.2:
                note = root + 7 if rng.random() < 0.6 or root + 12 > 48 else root + 12
            starts.append(16 * bar + st)
            lengths.append(gate * (nxt - st) * plan.step)
            midi.append(note)
            vel.append(rng.uniform(0.8, 1.0))
    bounds, index, _ = _segments(plan.pos(starts), n)  # (k + 1,), (n,)
    dt = (_hz(midi) / sr)[index]  # (n,) cycles per sample
    phase01 = np.cumsum(dt)
    phase01 -= np.floor(phase01)
    saw = _poly_blep_saw(phase01, dt)
    dark = signal.sosfilt(_sos("lowpass", rng.uniform(250.0, 450.0), sr), saw)
    bright = signal.sosfilt(_sos("lowpass", rng.uniform(1200.0, 2500.0), sr), saw)
    bright -= dark
    # per note: the filter's pluck and the amplitude envelope (decay, attack, release)
    pluck_tau, sustain = rng.uniform(0.03, 0.08), rng.uniform(0.3, 0.6)
    decay = rng.uniform(0.15, 0.3)
    pluck = np.empty(n, dtype=np.float32)
    env = np.empty(n, dtype=np.float32)
    for i in range(len(starts)):
        a, b = int(bounds[i]), int(bounds[i + 1])
        if b <= a:
            continue
        t = np.arange(b - a, dtype=np.float32)
        pluck[a:b] = np.exp(-t / (pluck_tau * sr))
        env[a:b] = (vel[i] * (sustain + (1 - sustain) * np.exp(-t / (decay * sr)))
                    * np.clip(t / (0.004 * sr), 0, 1)
                    * np.clip((lengths[i] - t) / (0.01 * sr), 0, 1))  # 0 after the note
    tone = dark + pluck * bright + 0.5 * np.sin(2 * np.pi * phase01)
    return _pan(tone * env, rng.choice([-1.0, 1.0]) * rng.uniform(0.02, 0.08))  # (n, 2)


# ---------------------------------------------------------------------------------------------
# other: chords (pad and/or piano) and an arpeggio


def _pad(rng: np.random.Generator, plan: _Plan, voicing: np.ndarray, bar_index: np.ndarray,
         since_bar: np.ndarray) -> np.ndarray:
    sr, n = plan.sr, plan.n
    cents = rng.uniform(5.0, 12.0)
    amps = np.arange(1, 5) ** -1.3
    out = np.zeros((n, 2), dtype=np.float32)
    for slot in range(voicing.shape[1]):
        for channel, detune in enumerate((cents, -cents)):  # a detuned oscillator per side
            phase = _phase(_hz(voicing[:, slot] + detune / 100)[bar_index], sr)
            out[:, channel] += _additive(phase, amps)
    swell = 0.6 + 0.4 * np.clip(since_bar / (rng.uniform(0.1, 0.4) * sr), 0, 1)  # (n,)
    out *= swell[:, None]
    return signal.sosfilt(_sos("lowpass", rng.uniform(1500.0, 3000.0), sr), out, axis=0)


def _piano(rng: np.random.Generator, plan: _Plan, voicing: np.ndarray,
           bar_index: np.ndarray) -> np.ndarray:
    sr, n = plan.sr, plan.n
    patterns = ((0, 4, 8, 12), (0, 8), (0, 6, 8, 12), (0, 3, 6, 10, 12), (0, 4, 6, 10, 12))
    pattern = patterns[int(rng.integers(len(patterns)))]
    steps = [16 * b + s for b in range(plan.bars) for s in pattern]
    _, index, since = _segments(plan.pos(steps), n)  # (n,) each
    t_on = since / sr  # (n,) seconds since the chord was struck
    velocity = rng.uniform(0.6, 1.0, len(steps))[index]
    tau = rng.uniform(0.4, 0.9)
    attack = np.clip(since / (0.002 * sr), 0, 1)
    stretch = 2e-4  # string inharmonicity
    partials = [((k ** -1.1) * velocity * attack * np.exp(-t_on * (1 + 0.5 * (k - 1)) / tau))
                .astype(np.float32) for k in range(1, 6)]  # 5 × (n,)
    ratios = [k * math.sqrt(1 + stretch * k * k) for k in range(1, 6)]
    out = np.zeros((n, 2), dtype=np.float32)
    slots = voicing.shape[1]
    for slot in range(slots):
        phase = _phase(_hz(voicing[:, slot])[bar_index], sr)
        out += _pan(_additive(phase, partials, ratios), -0.4 + 0.8 * slot / max(1, slots - 1))
    return out


def _arpeggio(rng: np.random.Generator, plan: _Plan) -> np.ndarray:
    sr, n = plan.sr, plan.n
    low = int(rng.integers(60, 65))
    every = 2 if rng.random() < 0.7 else 1
    starts, midi = [], []
    for bar in range(plan.bars):
        tones = sorted(low + (pc - low) % 12 for pc in plan.chords[bar])
        order = tones + tones[-2:0:-1] if rng.random() < 0.5 else tones
        for i, st in enumerate(range(0, 16, every)):
            starts.append(16 * bar + st)
            midi.append(order[i % len(order)])
    _, index, since = _segments(plan.pos(starts), n)  # (n,) each
    phase = _phase(_hz(midi)[index], sr)
    tone = np.sin(phase) + 0.35 * np.sin(2 * phase) + 0.15 * np.sin(3 * phase)
    tone = tone * np.exp(-since / (rng.uniform(0.08, 0.2) * sr)) * np.clip(since / (0.003 * sr),
                                                                           0, 1)
    out = _pan(tone, rng.choice([-1.0, 1.0]) * rng.uniform(0.3, 0.6))
    echo = int(round(3 * plan.step))  # a dotted-8th ping-pong echo into the other channel
    if 0 < echo < n:
        out[echo:, ::-1] += 0.3 * out[:-echo]
    return out


def _other(rng: np.random.Generator, plan: _Plan) -> np.ndarray:
    n = plan.n
    low = int(rng.integers(50, 58))
    voicing = np.zeros((plan.bars, 4))  # MIDI of 4 voices per bar, within 50-72
    for bar, chord in enumerate(plan.chords):
        notes = sorted(low + (pc - low) % 12 for pc in chord)
        if len(notes) < 4:
            notes.append(notes[0] + 12 if notes[0] + 12 <= 72 else notes[0] - 12)
        voicing[bar] = notes
    _, bar_index, since_bar = _segments(plan.pos(16 * np.arange(plan.bars)), n)
    style = rng.choice(["pad", "piano", "both"])
    out = np.zeros((n, 2))
    if style in ("pad", "both"):
        out += _normalise(_pad(rng, plan, voicing, bar_index, since_bar))
    if style in ("piano", "both"):
        out += _normalise(_piano(rng, plan, voicing, bar_index))
    if rng.random() < 0.5:
        out += 0.6 * _normalise(_arpeggio(rng, plan))
    return out  # (n, 2)


# ---------------------------------------------------------------------------------------------
# songs and the tree


def _song_stems(seed: int, index: int, seconds: float, sr: int) -> dict[str, np.ndarray]:
    """The four float32 (n, 2) stems of song ``index``, mixture peak 0.9."""
    rng = np.random.default_rng([seed, index])
    n = max(1, int(round(seconds * sr)))
    plan = _plan(rng, n, sr)
    makers = {"vocals": _vocals, "drums": _drums, "bass": _bass, "other": _other}
    stems = {}
    for name in STEM_NAMES:
        stem = makers[name](rng, plan)  # (n, 2)
        gain_db = _LEVELS_DB[name] + rng.uniform(-3.0, 3.0)
        gain = 10 ** (gain_db / 20) / (_rms(stem) or 1.0)  # unit RMS, then the stem's level
        stems[name] = np.multiply(stem, gain, out=np.empty(stem.shape, np.float32),
                                  casting="same_kind")
        del stem
    mixture = stems["vocals"] + stems["drums"] + stems["bass"] + stems["other"]
    peak = float(np.max(np.abs(mixture)))
    scale = np.float32(0.9 / peak if peak > 0 else 1.0)
    for stem in stems.values():
        stem *= scale
        # the 16-bit grid of MUSDB18-HQ's PCM files (exact in float32, so are sums of four)
        np.round(stem * _PCM16, out=stem)
        stem /= _PCM16
    return stems


def _song_name(seed: int, index: int) -> str:
    rng = np.random.default_rng([seed, index, 1])  # its own stream: titles never shift the audio
    return f"Synth {index:03d} - {rng.choice(_ADJECTIVES)} {rng.choice(_NOUNS)}"


def _write(path: Path, audio: np.ndarray, sample_rate: int) -> None:
    """Write float32 ``audio`` (n, 2) as a 32-bit float WAV, byte-identical for identical audio.

    libsndfile adds a PEAK chunk with a time stamp to float WAVs; the stamp is zeroed so that the
    same seed gives the same bytes. The file is written under a temporary name and renamed.
    """
    buffer = io.BytesIO()
    sf.write(buffer, audio, sample_rate, subtype="FLOAT", format="WAV")
    data = bytearray(buffer.getbuffer())
    peak = data.find(b"PEAK", 12, 512)  # ckID, ckSize, dwVersion, dwTimeStamp, peaks…
    if peak >= 0:
        data[peak + 12:peak + 16] = bytes(4)
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_synthetic_musdb(out: str | Path, tracks: int = 12, seconds: float = 30.0, seed: int = 0,
                          sample_rate: int = 44100, test_fraction: float = 0.25,
                          progress: bool = False) -> list[Path]:
    """Write ``tracks`` synthetic songs of ``seconds`` each as a MUSDB18-HQ tree under ``out``.

    The last ``max(1, round(tracks * test_fraction))`` songs go to ``test/`` (none when ``tracks``
    is 1 or ``test_fraction`` is 0), the others to ``train/``. Each song folder holds
    ``mixture.wav`` and the four stems (stereo, 32-bit float, ``sample_rate``); ``mixture.wav`` is
    bit-exactly ``vocals + drums + bass + other`` in float32. Returns the song folders in order.
    """
    if isinstance(tracks, bool) or not isinstance(tracks, int | np.integer) or tracks < 1:
        raise DataError(f"tracks must be an integer >= 1, got {tracks!r}")
    if not math.isfinite(seconds) or seconds <= 0:
        raise DataError(f"seconds must be > 0, got {seconds!r}")
    if int(sample_rate) != sample_rate or sample_rate < MIN_SAMPLE_RATE:
        raise DataError(f"sample_rate must be an integer >= {MIN_SAMPLE_RATE}, got {sample_rate!r}")
    if not 0.0 <= test_fraction <= 1.0:
        raise DataError(f"test_fraction must be in [0, 1], got {test_fraction!r}")
    tracks, sample_rate = int(tracks), int(sample_rate)
    n_test = 0
    if tracks >= 2 and test_fraction > 0:
        n_test = min(tracks - 1, max(1, round(tracks * test_fraction)))
    root = Path(out)
    for subset in ("train", "test"):
        (root / subset).mkdir(parents=True, exist_ok=True)

    songs: list[Path] = []
    bar = tqdm(range(tracks), desc="synthetic songs", unit="song",
               disable=not (progress and sys.stderr.isatty()))
    for index in bar:
        subset = "test" if index >= tracks - n_test else "train"
        folder = root / subset / _song_name(seed, index)
        folder.mkdir(parents=True, exist_ok=True)
        stems = _song_stems(seed, index, seconds, sample_rate)
        mixture = stems["vocals"] + stems["drums"] + stems["bass"] + stems["other"]  # float32
        for name, audio in (("mixture", mixture), *stems.items()):
            _write(folder / f"{name}.wav", audio, sample_rate)
        log.debug("wrote %s", folder)
        songs.append(folder)
    log.info("wrote %d synthetic songs (%d train, %d test) of %.1f s to %s",
             tracks, tracks - n_test, n_test, seconds, root)
    return songs
