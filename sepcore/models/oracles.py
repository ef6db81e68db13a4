"""Oracle separators: FB-IRM, the ideal ratio mask in a learned latent (thesis §5.1, Fig. 5.1).

"Given J encoded source signals y_j(n, t) [...] the Ideal Ratio Mask separator computes the mask
to be applied to the mixture encoding as M_j = |y_j| / Σ_j' |y_j'|" (seed 003, ch. 5). The true
sources are encoded with the same encoder as the mixture, the masks multiply the mixture latent and
the decoder synthesises each source. With no TCN to train, an encoder/decoder pair can be trained
(gradients reach it through both the masks and the latent) and judged on its own, as the thesis
does to explore encodings quickly. Bins where no source has energy get equal masks 1/J, so the
masks always sum to one. ``power`` generalises the magnitude ratio (α = 1, the thesis)
to |y_j|^α (α = 2 is the Wiener-like IRM of SiSEC's oracle).

Oracles break the plain call contract in one documented way: they read the true sources through
``forward(mixture, references=...)`` and declare ``needs_references = True``; the trainer,
``sepcore.separate.apply_model`` and ``sepcore.evaluate`` pass them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from sepcore.errors import ConfigError
from sepcore.models import register
from sepcore.models.convtasnet import EncoderConfig, EncoderMaskerDecoder


@dataclass
class FBIRMConfig:
    sources: list[str] = field(default_factory=lambda: ["vocals", "accompaniment"])
    audio_channels: int = 2
    sample_rate: int = 44100
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    power: float = 1.0  # α in M_j = |y_j|^α / Σ |y_j'|^α


class FBIRM(EncoderMaskerDecoder):
    """Encoder → ideal ratio masks of the encoded true sources → decoder."""

    needs_references = True

    def __init__(self, cfg: FBIRMConfig):
        if cfg.power <= 0:
            raise ConfigError(f"model.power must be > 0, got {cfg.power}", key="model.power")
        super().__init__(cfg)
        self.masker = None

    @property
    def context_frames(self) -> int:
        return 0  # a frame's mask depends on that frame only

    def ratio_masks(self, references: torch.Tensor) -> torch.Tensor:
        """True sources (B, S, C, T') → masks (B, S, N, K) that sum to one over sources."""
        batch, sources = references.shape[:2]
        encoded = self.encode(references.flatten(0, 1))  # (B*S, N, K)
        encoded = encoded.view(batch, sources, *encoded.shape[1:])  # (B, S, N, K)
        weight = encoded.abs().pow(self.cfg.power)
        total = weight.sum(dim=1, keepdim=True)
        # where no source has energy (a ReLU latent is often exactly 0) share the bin equally
        return torch.where(total > 0, weight / total.clamp_min(1e-12), 1.0 / sources)

    def forward(self, mixture: torch.Tensor,
                references: torch.Tensor | None = None) -> torch.Tensor:
        if references is None:
            raise ValueError("FB-IRM is an oracle: call it as model(mixture, references=sources)")
        if references.dim() != 4 or references.shape[0] != mixture.shape[0] or \
                references.shape[1] != len(self.sources) or references.shape[-1] != \
                mixture.shape[-1]:
            raise ValueError(f"references must be (batch, {len(self.sources)}, channels, time) "
                             f"matching the mixture {tuple(mixture.shape)}, got "
                             f"{tuple(references.shape)}")
        length = mixture.shape[-1]
        pad = self.valid_length(length) - length
        latent = self.encode(F.pad(mixture, (0, pad)))  # (B, N, K)
        masks = self.ratio_masks(F.pad(references, (0, pad)))  # (B, S, N, K)
        estimates = self.decode(latent.unsqueeze(1) * masks)  # (B, S, C, T')
        return estimates[..., :length]  # (B, S, C, T)


register("fb_irm", FBIRMConfig, FBIRM)
