"""Shared by the separation service tests: tiny real checkpoints registered in a sqlite MLflow
registry, songs to upload, and the service's settings for them."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from mlflow import MlflowClient

from sepcore.checkpoint import Checkpoint, checkpoint_config, save_checkpoint
from sepcore.models import build_model
from services.registry import register_checkpoint
from services.store import open_store
from tests.sepcore.helpers import SIZES, experiment_config

RATE = 8000
SOURCES = ("vocals", "drums", "bass", "other")


def make_checkpoint(path: Path, seed: int, segment: float = 0.5) -> Path:
    """A mini Conv-TasNet (gLN: cross-faded chunks) of 4 stereo sources at 8 kHz, weights from
    ``seed``; its ``eval.segment`` makes a few seconds of audio several chunks."""
    encoder, masker = SIZES["mini"]
    cfg = experiment_config({"name": "convtasnet", "encoder": dict(encoder),
                             "masker": {**masker, "norm": "gLN"}},
                            path.parent, path.parent / "run", path.parent / "cache", rate=RATE,
                            channels=2, targets=SOURCES, evaluation={"segment": segment})
    torch.manual_seed(seed)
    model = build_model(cfg.model_name, cfg.model)
    return save_checkpoint(path, Checkpoint(config=checkpoint_config(cfg),
                                            model_state=model.state_dict()))


@dataclass
class Registry:
    """A sqlite registry with model ``name``: v1 champion, v2 challenger (other weights)."""

    uri: str
    name: str
    checkpoints: dict[str, Path]  # version -> the checkpoint file it was registered from
    store: Path

    def client(self) -> MlflowClient:
        return MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)

    def register(self, checkpoint: Path, value: float, **tags: str) -> str:
        client = self.client()
        stored = open_store(str(self.store)).put(checkpoint, f"{self.name}/{checkpoint.name}")
        experiment = client.get_experiment_by_name("Default").experiment_id
        run_id = client.create_run(experiment).info.run_id
        tags = {"sepcore.checkpoint_sha256": stored.sha256, **tags}
        result = register_checkpoint(client, self.name, stored.uri, run_id, "valid_sisdr", value,
                                     "max", tags={k: v for k, v in tags.items() if v})
        self.checkpoints[result.version] = checkpoint
        return result.version


def make_registry(folder: Path, name: str = "sepcore-test") -> Registry:
    folder.mkdir(parents=True, exist_ok=True)
    registry = Registry(uri=f"sqlite:///{folder / 'mlruns.db'}", name=name, checkpoints={},
                        store=folder / "store")
    registry.register(make_checkpoint(folder / "a.safetensors", seed=0), 2.0)  # v1: champion
    registry.register(make_checkpoint(folder / "b.safetensors", seed=1), 1.0)  # v2: challenger
    return registry


def song(seconds: float = 3.0, rate: int = 11025, channels: int = 2, seed: int = 0) -> np.ndarray:
    """``(T, C)`` float32 noise-and-tone audio (a rate other than the model's: resampled)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    tone = 0.3 * np.sin(2 * np.pi * 220 * t)[:, None]
    return (tone + 0.05 * rng.standard_normal((t.size, channels))).astype(np.float32)


def wav_bytes(audio: np.ndarray, rate: int = 11025, fmt: str = "WAV",
              subtype: str = "FLOAT") -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, audio, rate, format=fmt, subtype=subtype)
    return buffer.getvalue()


def read_wav(data: bytes) -> tuple[np.ndarray, int]:
    """``(C, T)`` float32 and the rate of WAV/FLAC bytes."""
    audio, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    return audio.T, rate
