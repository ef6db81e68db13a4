"""Checkpoints trials start from: staged by the driver (uploaded once, aliases pinned), fetched by
the trial into its node's cache (SHA-256 verified, reused, safe when trials fetch at once), and
the device a trial trains on is the one Ray gave it."""

from __future__ import annotations

import hashlib
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from mlflow import MlflowClient

from sepcore.errors import ConfigError
from services.errors import ArtifactError, RegistryError
from services.store import LocalStore
from sweeps.errors import SweepError
from sweeps.fetch import fetch_init, fetch_stored, node_cache, stage_checkpoints
from sweeps.spec import grid_points, load_sweep
from tests.services.test_registry import _register_file


class CountingStore(LocalStore):
    """A local store that counts its downloads and holds each one for ``delay_s``."""

    def __init__(self, root, delay_s: float = 0.0):
        super().__init__(root)
        self.gets = 0
        self.delay_s = delay_s
        self.lock = threading.Lock()

    def get(self, key_or_uri, dest):
        with self.lock:
            self.gets += 1
        time.sleep(self.delay_s)
        return super().get(key_or_uri, dest)


def _stored(tmp_path: Path, data: bytes = b"weights", delay_s: float = 0.0):
    store = CountingStore(tmp_path / "store", delay_s)
    source = tmp_path / "ckpt.safetensors"
    source.write_bytes(data)
    return store, store.put(source, "sweep/inputs/ckpt.safetensors")


def test_a_fetched_checkpoint_is_verified_cached_by_sha256_and_reused(tmp_path):
    store, stored = _stored(tmp_path)
    cache = node_cache(str(tmp_path / "node"))
    path, digest = fetch_stored(store, stored.uri, cache, stored.sha256)
    assert path == cache / f"{stored.sha256}.safetensors" and digest == stored.sha256
    assert path.read_bytes() == b"weights" and store.gets == 1
    # the next trial on this node takes the cached copy, without asking the store
    assert fetch_stored(store, stored.uri, cache, stored.sha256) == (path, digest)
    assert store.gets == 1
    # a cached copy that no longer verifies is fetched again, in place
    path.write_bytes(b"bit rot")
    assert fetch_stored(store, stored.uri, cache, stored.sha256) == (path, digest)
    assert path.read_bytes() == b"weights" and store.gets == 2
    # a digest the driver did not record (a URI given in the sweep file): the store's own record
    assert fetch_stored(store, stored.uri, tmp_path / "other", None)[1] == stored.sha256
    assert [p.name for p in cache.iterdir()] == [path.name]  # no temporary file left


def test_a_checkpoint_that_does_not_match_the_drivers_sha256_is_refused_and_removed(tmp_path):
    store, stored = _stored(tmp_path)
    cache = tmp_path / "cache"
    wrong = hashlib.sha256(b"what the driver uploaded").hexdigest()
    with pytest.raises(ArtifactError, match=rf"train.init_from: .*ckpt.safetensors has sha256 "
                                            rf"{stored.sha256}, not the {wrong}") as info:
        fetch_stored(store, stored.uri, cache, wrong)
    assert "\n" not in str(info.value) and info.value.key == "train.init_from"
    assert list(cache.iterdir()) == []  # neither the bad copy nor a temporary file
    # the store's own record does not match its bytes: refused the same way
    Path(stored.uri.removeprefix("file://")).write_bytes(b"tampered")
    with pytest.raises(ArtifactError, match="corrupted"):
        fetch_stored(store, stored.uri, cache, stored.sha256)
    assert list(cache.iterdir()) == []


def test_trials_fetching_at_once_on_one_node_all_get_the_whole_file(tmp_path):
    data = bytes(range(256)) * 4096  # 1 MiB
    store, stored = _stored(tmp_path, data, delay_s=0.2)
    cache = tmp_path / "cache"
    with ThreadPoolExecutor(6) as pool:
        found = list(pool.map(lambda _: fetch_stored(store, stored.uri, cache, stored.sha256),
                              range(6)))
    assert store.gets >= 2  # they did overlap: more than one fetched before the first finished
    assert {f for f in found} == {(cache / f"{stored.sha256}.safetensors", stored.sha256)}
    assert found[0][0].read_bytes() == data
    assert [p.name for p in cache.iterdir()] == [found[0][0].name]


def _sweep(tmp_path, body: str, name: str = "s.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent("""
        base:
          model: {name: multiband, num_bands: 2, encoder: {N: 16, L: 16},
                  masker: {B: 8, H: 16, X: 1, R: 1}}
          audio: {sample_rate: 8000, channels: 1}
          data: {segment: 0.5}
          train: {epochs: 1, device: cpu}
        tune: {search_alg: random}
    """) + textwrap.dedent(body))
    return path


@pytest.fixture
def registry(tmp_path) -> MlflowClient:
    uri = f"sqlite:///{tmp_path}/mlruns.db"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def test_the_driver_uploads_local_files_once_and_pins_registry_aliases(tmp_path, registry,
                                                                        monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m1.safetensors").write_bytes(b"m1 weights")
    (tmp_path / "m2.safetensors").write_bytes(b"m2 weights")
    version, registered = _register_file(registry, LocalStore(tmp_path / "registry"), "umx",
                                         b"umx weights", "umx/best.safetensors")
    path = _sweep(tmp_path, f"""
        search:
          row:
            grid:
              - {{id: A, train: {{init_from: m1.safetensors}}}}
              - {{id: B, train: {{init_from: "models:/umx@champion"}}}}
              - {{id: C, train: {{init_from: "row:A"}}}}
        artifacts: {{uri: {tmp_path / 'store'}}}
    """)
    sweep = load_sweep(path, overrides=[f"base.train.init_from={tmp_path / 'm2.safetensors'}"])
    staged, digests = stage_checkpoints(sweep, registry)
    store = LocalStore(tmp_path / "store")
    want = {name: hashlib.sha256(f"{name} weights".encode()).hexdigest() for name in ("m1", "m2")}
    base = staged.base["train"]["init_from"]
    rows = {p["row"]["id"]: p["row"]["train"]["init_from"] for p in grid_points(staged.params)}
    assert base == store.uri_for(f"s/inputs/{want['m2']}.safetensors")
    assert rows == {"A": store.uri_for(f"s/inputs/{want['m1']}.safetensors"),
                    "B": f"models:/umx/{version}", "C": "row:A"}
    assert digests == {base: want["m2"], rows["A"]: want["m1"]}
    assert sweep.base["train"]["init_from"].endswith("m2.safetensors")  # the sweep is unchanged
    # a second run (or a resume) uploads nothing: the store holds those bytes under their digest
    stored = Path(base.removeprefix("file://"))
    before = stored.stat().st_mtime_ns
    assert stage_checkpoints(sweep, registry) == (staged, digests)
    assert stored.stat().st_mtime_ns == before

    # the trial's side: into this node's cache, verified, without any driver path
    (tmp_path / "m1.safetensors").unlink()
    cache = node_cache(str(tmp_path / "node"))
    got = fetch_init(rows["A"], cache, store_uri=str(tmp_path / "store"), checkpoints=digests)
    assert got.path.read_bytes() == b"m1 weights" and got.sha256 == want["m1"]
    got = fetch_init(rows["B"], cache, registry_uri=registry.tracking_uri)
    assert got.path.read_bytes() == b"umx weights" and got.sha256 == registered.sha256
    assert got.path.is_relative_to(cache) and got.uri == f"models:/umx/{version}"
    assert fetch_init(str(tmp_path / "m2.safetensors"), cache) is None  # a plain path: as is


@pytest.mark.parametrize("value, key, message", [
    ("missing.safetensors", "base.train.init_from", "no such checkpoint file"),
    ("http://host/ckpt.safetensors", "base.train.init_from", "use a local checkpoint file"),
])
def test_a_checkpoint_the_driver_cannot_stage_is_one_line(tmp_path, monkeypatch, value, key,
                                                          message):
    monkeypatch.chdir(tmp_path)
    sweep = load_sweep(_sweep(tmp_path, ""), overrides=[f"base.train.init_from={value}"])
    with pytest.raises(SweepError, match=message) as info:
        stage_checkpoints(sweep, client=None)  # no registry URI: nothing asks a registry
    assert info.value.key == key and "\n" not in str(info.value)


def test_a_registry_alias_that_does_not_exist_stops_the_sweep(tmp_path, registry):
    sweep = load_sweep(_sweep(tmp_path, ""), overrides=["base.train.init_from=models:/nope@x"])
    with pytest.raises(RegistryError, match=r"'models:/nope@x'.*no alias 'x'") as info:
        stage_checkpoints(sweep, registry)
    assert info.value.key == "base.train.init_from" and "\n" not in str(info.value)


# --- devices -----------------------------------------------------------------------------------


@pytest.mark.parametrize("body, overrides, key", [
    ("", ["base.train.device=cuda"], "base.train.device"),
    ("search: {train.device: {grid: [cpu, cuda]}}\n", [], "search.train.device"),
    ("search: {row: {grid: [{id: A}, {id: B, train: {device: 'cuda:0'}}]}}\n", [],
     "search.row.B.train.device"),
    ("profiles: {paper: {base: {train: {device: cuda}}}}\n", ["--profile"], "base.train.device"),
])
def test_cuda_without_gpus_is_refused_before_any_trial(tmp_path, body, overrides, key):
    path = _sweep(tmp_path, body)
    profile = "paper" if overrides == ["--profile"] else None
    overrides = [] if profile else overrides
    with pytest.raises(SweepError) as info:
        load_sweep(path, profile=profile, overrides=overrides)
    text = str(info.value)
    assert info.value.key == key and f"'{key}'" in text and "'tune.resources.gpu' is 0" in text
    assert "\n" not in text and (profile is None or "(profile paper)" in text)
    # with half a GPU per trial the same sweep is valid
    load_sweep(path, profile=profile, overrides=[*overrides, "tune.resources.gpu=0.5"])


def test_the_cli_refuses_cuda_without_gpus_in_one_line(capsys):
    from sweeps.__main__ import main

    demo = Path(__file__).resolve().parents[2] / "sweeps" / "demo.yaml"
    assert main(["plan", str(demo), "--profile", "smoke", "base.train.device=cuda"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "'base.train.device' = 'cuda' needs a GPU, but 'tune.resources.gpu' is 0" in line
    assert "demo.yaml" in line


def test_a_fraction_above_one_gpu_is_refused(tmp_path):
    path = _sweep(tmp_path, "")
    with pytest.raises(SweepError, match=r"'tune.resources.gpu' = 1.5 must be a fraction below 1"
                       ) as info:
        load_sweep(path, overrides=["tune.resources.gpu=1.5"])
    assert info.value.key == "tune.resources.gpu"
    load_sweep(path, overrides=["tune.resources.gpu=2"])


@pytest.mark.parametrize("gpus, requested, device", [
    (["3"], "auto", "cuda"), (["3"], "cuda", "cuda"), (["3"], "cpu", "cpu"),
    (["3"], "cuda:1", "cuda"),  # Ray made one GPU visible: cuda:0
    (["0", "1"], "cuda:1", "cuda:1"),
    ([], "auto", "cpu"),  # a node with GPUs that other trials hold
    ([], "cpu", "cpu"),
])
def test_a_trial_trains_on_the_device_ray_gave_it(monkeypatch, gpus, requested, device):
    import ray

    from sweeps.trainable import trial_device

    monkeypatch.setattr(ray, "get_gpu_ids", lambda: gpus)
    assert trial_device(requested) == device


def test_cuda_in_a_trial_ray_gave_no_gpu_is_a_config_error(monkeypatch):
    import ray

    from sweeps.trainable import trial_device

    monkeypatch.setattr(ray, "get_gpu_ids", lambda: [])
    with pytest.raises(ConfigError, match=r"train.device='cuda' but Ray gave this trial no GPU"
                       ) as info:
        trial_device("cuda")
    assert info.value.key == "train.device"
