"""Fixtures for the sweep tests: a tiny sweep file over the session's synthetic MUSDB tree."""

from __future__ import annotations

import contextlib
import os
import shutil
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


class LocalRay:
    """The test process's own local Ray: private temp folder, loopback, 2 CPUs.

    ``isolated(env_vars)`` runs a block on a separate instance whose workers get ``env_vars``
    (the job's runtime_env: nothing is set in this process's environment) and then brings back a
    clean instance, checked to carry none of those variables.
    """

    def __init__(self):
        self.temp_dir = None

    def start(self, env_vars: dict[str, str] | None = None) -> None:
        import ray

        from tests.procs import short_tmpdir

        if ray.is_initialized():
            ray.shutdown()
        self.temp_dir = short_tmpdir()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 _temp_dir=str(self.temp_dir),
                 runtime_env={"env_vars": dict(env_vars)} if env_vars else None)

    def stop(self) -> None:
        import ray

        from tests.procs import kill_strays

        ray.shutdown()
        if self.temp_dir is not None:
            strays = kill_strays(str(self.temp_dir))
            shutil.rmtree(self.temp_dir, ignore_errors=True)
            self.temp_dir = None
            assert not strays, f"Ray processes outlived ray.shutdown(): {strays}"

    @property
    def node_id(self) -> str:
        import ray

        return ray.get_runtime_context().get_node_id()

    def worker_env(self, names: list[str]) -> dict[str, str | None]:
        """What a fresh Ray worker of the current instance sees for ``names``."""
        import ray

        @ray.remote(num_cpus=0)
        def read(keys):
            return {k: os.environ.get(k) for k in keys}

        return ray.get(read.remote(names), timeout=120)

    @contextlib.contextmanager
    def isolated(self, env_vars: dict[str, str]):
        self.stop()
        try:
            self.start(env_vars)
            yield
        finally:
            self.stop()
            self.start()
            leaked = {k: v for k, v in self.worker_env(list(env_vars)).items() if v is not None}
            assert not leaked, f"the shared Ray's workers inherited {leaked}"


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray for a test module, on 127.0.0.1 in its own temp folder; stopped (and
    checked for stray processes) afterwards."""
    import ray
    import ray._private.ray_constants as ray_constants

    from tests.procs import LOOPBACK_RAY_ENV

    with pytest.MonkeyPatch.context() as mp:
        # Ray's single-node mode: it otherwise binds the host's network address
        mp.setattr(ray_constants, "ENABLE_RAY_CLUSTER", False)
        for key, value in LOOPBACK_RAY_ENV.items():
            mp.setenv(key, value)
        if ray.is_initialized():
            ray.shutdown()
        handle = LocalRay()
        handle.start()
        try:
            yield handle
        finally:
            handle.stop()
