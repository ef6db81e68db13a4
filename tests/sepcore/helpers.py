"""Small configs shared by the trainer/inference tests."""

from __future__ import annotations

from sepcore.config import config_from_dict


def tiny_config(root, out_dir, cache_dir, *, model="convtasnet", norm="gLN", rate=8000,
                channels=1, targets=("vocals", "accompaniment"), **train):
    """A config small enough to train in seconds on the CPU."""
    model_params = {
        "name": model,
        "encoder": {"N": 64, "L": 16},
        "masker": {"B": 64, "H": 128, "P": 3, "X": 4, "R": 2, "norm": norm},
    }
    if model == "multiband":
        model_params["num_bands"] = 2
    train_params = {"epochs": 2, "batch_size": 4, "lr": 1e-3, "steps_per_epoch": 5,
                    "out_dir": str(out_dir), "progress": False, "seed": 0, "early_stop": 0}
    train_params.update(train)
    return config_from_dict({
        "model": model_params,
        "audio": {"sample_rate": rate, "channels": channels, "sources": list(targets)},
        "data": {"root": str(root), "segment": 1.0, "samples_per_track": 8,
                 "valid_segment": 4.0, "cache_dir": str(cache_dir)},
        "train": train_params,
        "eval": {"segment": 4.0},
    })
