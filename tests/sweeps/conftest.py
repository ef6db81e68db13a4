"""Fixtures for the sweep tests: a tiny sweep file over the session's synthetic MUSDB tree."""

from __future__ import annotations

import textwrap

import pytest


def tiny_sweep_text(root, cache, storage, store, body: str = "") -> str:
    return textwrap.dedent(f"""
        base:
          model:
            name: multiband
            num_bands: 2
            encoder: {{N: 32, L: 16}}
            masker: {{B: 16, H: 32, X: 2, R: 1}}
          audio: {{sample_rate: 8000, channels: 1}}
          data: {{root: {root}, segment: 1.0, samples_per_track: 4, valid_segment: 4.0,
                 cache_dir: {cache}}}
          train: {{epochs: 3, steps_per_epoch: 2, batch_size: 2, device: cpu, lr: 1.0e-3}}
          eval: {{segment: 4.0}}
        search:
          model.num_bands: {{choice: [1, 2, 4]}}
          train.lr: {{loguniform: [1.0e-4, 1.0e-2]}}
        tune:
          metric: valid_sisdr
          mode: max
          num_samples: 3
          search_alg: optuna
          scheduler: {{type: asha, grace_period: 1, reduction_factor: 2}}
          max_concurrent: 2
          resources: {{cpu: 1, gpu: 0}}
          max_failures: 2
          num_to_keep: 1
          storage_path: {storage}
          test_max_tracks: 1
        tracking: {{experiment: tiny}}
        artifacts: {{uri: {store}, top_k: 1}}
        registry: {{model_name: sepcore-tiny}}
    """) + textwrap.dedent(body)


@pytest.fixture
def tiny_sweep(synth_root, cache_dir, tmp_path, monkeypatch):
    """Write a tiny sweep file; MLflow goes to a fresh sqlite file in tmp_path."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlruns.db")
    monkeypatch.chdir(tmp_path)

    def make(body: str = "", name: str = "tiny.yaml"):
        path = tmp_path / name
        path.write_text(tiny_sweep_text(synth_root, cache_dir, tmp_path / "ray",
                                        tmp_path / "store", body))
        return path

    return make


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray for a test module (2 CPUs), shut down afterwards."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()
