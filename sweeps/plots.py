"""Figures logged to MLflow: per-trial loss curves and the sweep comparison chart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def loss_curve(history: list[dict[str, Any]], path: str | Path) -> Path:
    """Train/valid loss (left) and validation SI-SDR (right) per epoch."""
    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_sdr) = plt.subplots(1, 2, figsize=(9, 3.2))
    ax_loss.plot(epochs, [h["train_loss"] for h in history], marker="o", label="train")
    ax_loss.plot(epochs, [h["valid_loss"] for h in history], marker="o", label="valid")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    ax_loss.legend()
    ax_sdr.plot(epochs, [h.get("valid_sisdr", float("nan")) for h in history], marker="o",
                color="tab:green")
    ax_sdr.set_xlabel("epoch")
    ax_sdr.set_ylabel("valid SI-SDR (dB)")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
