"""Small configs shared by the trainer/inference tests.

Every test config is built here (:func:`experiment_config`), so a change of the config format is
fixed in one place.
"""

from __future__ import annotations

from sepcore.config import ExperimentConfig, config_from_dict

# Conv-TasNet sizes: "tiny" learns something in a minute; "mini" (a few thousand parameters) is
# for tests of the training loop's bookkeeping (resume, schedules, checkpoints), where what the
# model learns does not matter and each step should cost milliseconds.
SIZES = {
    "tiny": ({"N": 64, "L": 16}, {"B": 64, "H": 128, "P": 3, "X": 4, "R": 2}),
    "mini": ({"N": 16, "L": 16}, {"B": 16, "H": 32, "P": 3, "X": 2, "R": 1}),
}


def experiment_config(model: dict, root, out_dir, cache_dir, *, rate=8000, channels=1,
                      targets=("vocals", "accompaniment"), train=None,
                      evaluation=None) -> ExperimentConfig:
    """A config of the registry model ``model`` (``{"name": ..., **its fields}``) on ``root``.

    The ``audio`` block (hence the model's sources, channels and rate) comes from
    ``targets``/``channels``/``rate``; ``train`` and ``evaluation`` update the small defaults of
    the ``train`` and ``eval`` sections (2 epochs of 5 steps, 4 s inference chunks).
    """
    model_params = dict(model)
    train_params = {"epochs": 2, "batch_size": 4, "lr": 1e-3, "steps_per_epoch": 5,
                    "out_dir": str(out_dir), "progress": False, "seed": 0, "early_stop": 0,
                    **(train or {})}
    return config_from_dict({
        "model": model_params,
        "audio": {"sample_rate": rate, "channels": channels, "sources": list(targets)},
        "data": {"root": str(root), "segment": 1.0, "samples_per_track": 8,
                 "valid_segment": 4.0, "cache_dir": str(cache_dir)},
        "train": train_params,
        "eval": {"segment": 4.0, **(evaluation or {})},
    })


def tiny_config(root, out_dir, cache_dir, *, model="convtasnet", norm="gLN", rate=8000,
                channels=1, targets=("vocals", "accompaniment"), size="tiny", **train):
    """A Conv-TasNet config small enough to train in seconds on the CPU (``size``: SIZES)."""
    encoder, masker = SIZES[size]
    model_params = {"name": model, "encoder": dict(encoder), "masker": {**masker, "norm": norm}}
    if model == "multiband":
        model_params["num_bands"] = 2
    return experiment_config(model_params, root, out_dir, cache_dir, rate=rate,
                             channels=channels, targets=targets, train=train)


def poison_loss(monkeypatch, bad_steps, value=float("inf")) -> None:
    """``sepcore.train``'s training loss is multiplied by ``value`` (inf, nan) at the (1-based)
    loss calls for which ``bad_steps(n)`` is true."""
    import sepcore.train as train_mod

    real = train_mod.build_loss
    calls = {"n": 0}

    def poisoned(name, weights=None):
        fn = real(name, weights)

        def loss(est, tgt):
            calls["n"] += 1
            result = fn(est, tgt)
            return result * value if bad_steps(calls["n"]) else result
        return loss
    monkeypatch.setattr(train_mod, "build_loss", poisoned)
