"""Separation metrics.

- :mod:`sepcore.metrics.sisdr`: SI-SDR and SI-SDRi (torch, differentiable; numpy accepted).
- :mod:`sepcore.metrics.bsseval`: BSSEval v4 (SDR, ISR, SIR, SAR per 1 s window) and museval's
  per-track JSON. Imported on demand since it pulls in museval.
- :mod:`sepcore.metrics.aggregate`: median over windows, then median over tracks (SiSEC 2018).
"""

from sepcore.metrics.sisdr import si_sdr, si_sdr_improvement

__all__ = ["si_sdr", "si_sdr_improvement"]
