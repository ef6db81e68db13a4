"""Fusion-Net: a fully residual U-Net with summation skips on magnitude spectrograms (Li et al.).

Reads like the paper: Li, Qian, Hasegawa-Johnson and Akagi, "Monaural singing voice separation using
Fusion-Net with time-frequency masking" (the Fusion-Net paper), §II-A, Fig. 2, Tables I and II,
after Quan et al.'s FusionNet (arXiv:1612.05360); front end, soft masks (eq. 2) and reconstruction
with the mixture phase (eqs. 3–4) are the U-Net's (:class:`sepcore.models.unet.SpectrogramMasker`,
Jansson et al., ISMIR 2017), "for the fair comparison" (§II-A). At the paper's input size the blocks
have exactly Table I's shapes (H × W × D = bins × frames × channels):

    DS1 512×128×1 → 256×64×16   …   DS6 16×4×256 → 8×2×512
    US1 16×4×256 → 32×8×128     …   US5 256×64×16 → 512×128×1,  US6 512×128×1 → 512×128×1

- DS block (Table II, left): 5×5 conv (stride 1) → residual layer of three 5×5 convs → strided
  (stride 2) 5×5 conv; every conv with batch norm and leaky ReLU 0.2.
- US block (Table II, right): 5×5 deconv (stride 1) → inverse residual layer of three 5×5 deconvs
  → strided (stride 2) 5×5 deconv; batch norm and ReLU.
- Summation skips replace the U-Net's concatenations: the input of US(k+1) is US(k)'s output
  plus the DS output of the same size.

Choices where the paper is silent or self-contradictory (Table II lists max-pooling, §II-A strided
convs; Table I's US1 takes 16×4×256 while DS6 gives 8×2×512):

- Down-sampling is the strided conv of §II-A (as the U-Net it is compared with), not max-pooling.
- A *bridge* — one strided 5×5 deconv with BN and ReLU (Quan et al.'s bridge between encoder and
  decoder) — takes DS6's 8×2×512 to 16×4×256, summed with DS5's output into US1's input (Fig. 3
  pairs DS6 with US1). The US blocks then have exactly Table I's inputs and outputs.
- US6 is the output block: its input is US5's output plus the (normalised) mixture patch — the
  outermost summation skip; it runs at ``channels[0]`` = 16 inside (1 → 16 deconv, inverse
  residual, 16 → 1 deconv) and ends in a sigmoid mask, like the U-Net's last layer.
- A residual layer is ``act(x + f(x))`` with f three conv/BN blocks, the last without activation
  (He et al.'s ordering; Quan et al. sum before the final activation too).
- No dropout (neither Fusion-Net paper mentions it).
- The last strided deconv of the up path (US5) has ``out_channels`` (1, or S with a shared
  network) channels, as Table I's 512×128×1.

References: Li et al. (Fusion-Net paper), §II-A, Fig. 2–3, Tables I–II; Quan et al. 2016;
Jansson et al. 2017.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from sepcore.errors import ConfigError
from sepcore.models import register
from sepcore.models.unet import ConvBlock2d, SpectrogramMasker, STFTConfig


@dataclass
class FusionNetConfig:
    """The Fusion-Net paper's Fusion-Net (Li et al.). Defaults give Table I's sizes."""

    sources: list[str] = field(default_factory=lambda: ["vocals", "accompaniment"])
    audio_channels: int = 1
    sample_rate: int = 8192
    stft: STFTConfig = field(default_factory=STFTConfig)
    channels: list[int] = field(default_factory=lambda: [16, 32, 64, 128, 256, 512])
    kernel_size: int = 5
    leakiness: float = 0.2  # down path leaky ReLU slope
    res_layers: int = 3  # convs per (inverse) residual layer (Table II)
    mask: str = "soft"  # soft (eq. 2) | sigmoid
    shared_network: bool = False  # one network with S outputs instead of one per source


# --- blocks --------------------------------------------------------------------------------------


class ResidualLayer2d(nn.Module):
    """``act(x + f(x))``, f = ``layers`` size-keeping 5×5 conv (or deconv: "inverse") blocks."""

    def __init__(self, channels: int, layers: int, kernel_size: int, transposed: bool,
                 activation: str, leakiness: float):
        super().__init__()
        self.body = nn.Sequential(*(
            ConvBlock2d(channels, channels, kernel_size, transposed=transposed,
                        activation=None if i == layers - 1 else activation, leakiness=leakiness)
            for i in range(layers)))
        self.act = nn.LeakyReLU(leakiness) if activation == "leaky" else nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, D, F, K)
        return self.act(x + self.body(x))  # (N, D, F, K)


class DownBlock(nn.Module):
    """DS block (Table II): conv → residual layer → strided conv; halves F and K."""

    def __init__(self, in_channels: int, out_channels: int, cfg: FusionNetConfig):
        super().__init__()
        k, a = cfg.kernel_size, cfg.leakiness
        self.layers = nn.Sequential(
            ConvBlock2d(in_channels, out_channels, k, activation="leaky", leakiness=a),
            ResidualLayer2d(out_channels, cfg.res_layers, k, False, "leaky", a),
            ConvBlock2d(out_channels, out_channels, k, stride=2, activation="leaky",
                        leakiness=a))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, D_in, F, K)
        return self.layers(x)  # (N, D_out, F/2, K/2)


class UpBlock(nn.Module):
    """US block (Table II): deconv → inverse residual layer → strided deconv; doubles F and K."""

    def __init__(self, in_channels: int, out_channels: int, cfg: FusionNetConfig):
        super().__init__()
        k = cfg.kernel_size
        self.layers = nn.Sequential(
            ConvBlock2d(in_channels, in_channels, k, transposed=True),
            ResidualLayer2d(in_channels, cfg.res_layers, k, True, "relu", cfg.leakiness),
            ConvBlock2d(in_channels, out_channels, k, stride=2, transposed=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, D_in, F, K)
        return self.layers(x)  # (N, D_out, 2F, 2K)


class OutputBlock(nn.Module):
    """US6: deconv up to ``channels[0]`` → inverse residual layer → deconv → sigmoid mask."""

    def __init__(self, channels: int, width: int, cfg: FusionNetConfig):
        super().__init__()
        k = cfg.kernel_size
        self.layers = nn.Sequential(
            ConvBlock2d(channels, width, k, transposed=True),
            ResidualLayer2d(width, cfg.res_layers, k, True, "relu", cfg.leakiness),
            ConvBlock2d(width, channels, k, transposed=True, activation=None, norm=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, n, F, K)
        return torch.sigmoid(self.layers(x))  # (N, n, F, K)


class FusionNet2d(nn.Module):
    """(N, 1, F, K) magnitudes → (N, out_channels, F, K) masks (Li et al., Fig. 2, Table I)."""

    def __init__(self, cfg: FusionNetConfig, out_channels: int):
        super().__init__()
        ch = list(cfg.channels)
        self.down = nn.ModuleList(
            DownBlock(i, o, cfg) for i, o in zip([1, *ch[:-1]], ch, strict=True))
        self.bridge = ConvBlock2d(ch[-1], ch[-2] if len(ch) > 1 else out_channels,
                                  cfg.kernel_size, stride=2, transposed=True)
        ups = [*reversed(ch[:-1])]  # 256, 128, 64, 32, 16
        self.up = nn.ModuleList(
            UpBlock(i, o, cfg) for i, o in zip(ups, [*ups[1:], out_channels], strict=True))
        self.out_block = OutputBlock(out_channels, ch[0], cfg)

    def named_blocks(self) -> list[tuple[str, nn.Module]]:
        """Table I's blocks in order: DS1…DSn, US1…USn (US n is the output block)."""
        blocks = [(f"DS{i + 1}", m) for i, m in enumerate(self.down)]
        ups = [*self.up, self.out_block]
        return blocks + [(f"US{i + 1}", m) for i, m in enumerate(ups)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, 1, F, K)
        skips = []
        h = x
        for block in self.down:
            h = block(h)  # (N, D_l, F / 2**l, K / 2**l)
            skips.append(h)
        h = self.bridge(skips.pop())  # (N, D_{L-1}, F / 2**(L-1), K / 2**(L-1))
        for block in self.up:
            h = block(h + skips.pop())  # summation skips (Table I: US(k) in = US(k-1) + DS)
        return self.out_block(h + x)  # (N, out, F, K): the outermost skip adds the input


class FusionNet(SpectrogramMasker):
    """Li et al.'s Fusion-Net with soft masking. ``forward``: (B, C, T) → (B, S, C, T).

    References: Li et al. (Fusion-Net paper), §II, Fig. 1–3, Tables I–II, eqs. (2)–(4).
    """

    def __init__(self, cfg: FusionNetConfig):
        if cfg.res_layers < 1:
            raise ConfigError(f"model.res_layers must be >= 1, got {cfg.res_layers}",
                              key="model.res_layers")
        super().__init__(cfg)

    def build_network(self, out_channels: int) -> nn.Module:
        return FusionNet2d(self.cfg, out_channels)


register("fusionnet", FusionNetConfig, FusionNet)
