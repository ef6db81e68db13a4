"""``python -m services serve`` as a real server (uvicorn in its own process group on a free port):
the bearer token, the champion's version, stems equal to what the real ``sep separate`` writes
with the same checkpoint, no 5xx under schemathesis, and a hot swap by the real
``python -m sweeps promote`` under a client loop that sees no error."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import requests
import schemathesis
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from tests.procs import free_port, run_group, stop_group
from tests.services.serving import make_registry, read_wav, song, wav_bytes

pytestmark = pytest.mark.slow  # a server process, the sep and sweeps CLIs: ~45 s in all

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "s3rver-t0ken"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
POLL = 2.0


@dataclass
class Server:
    url: str
    proc: subprocess.Popen
    log: Path


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **extra}
    for name in ("MLFLOW_TRACKING_URI", "SEPCORE_SERVE_MODEL", "SEPCORE_SERVE_POLL"):
        env.pop(name, None)
    return env


def start_server(registry, folder: Path, attempts: int = 3, timeout: float = 120.0) -> Server:
    """The service on a free port, up when /healthz answers; retried on a port taken meanwhile."""
    for attempt in range(attempts):
        port = free_port()
        log = folder / f"serve-{attempt}.log"
        cmd = [sys.executable, "-m", "services", "serve", "--model",
               f"models:/{registry.name}@champion", "--port", str(port), "--poll", str(POLL),
               "--device", "cpu", "--tracking-uri", registry.uri,
               "--cache-dir", str(folder / "cache")]
        with open(log, "w") as out:
            proc = subprocess.Popen(cmd, cwd=folder, env=_env(SEPCORE_SERVE_TOKEN=TOKEN),
                                    stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                if requests.get(f"{url}/healthz", timeout=2).status_code == 200:
                    return Server(url, proc, log)
            except requests.ConnectionError:
                time.sleep(0.3)
        stop_group(proc, grace=5)
    raise AssertionError(f"the service did not come up:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    return make_registry(tmp_path_factory.mktemp("registry"), name="sepcore-served")


@pytest.fixture(scope="module")
def server(registry, tmp_path_factory):
    server = start_server(registry, tmp_path_factory.mktemp("server"))
    try:
        yield server
    finally:
        stop_group(server.proc, grace=10)
        text = server.log.read_text()
        assert TOKEN not in text, "the token was logged"


def test_token_and_champion(server, registry):
    assert requests.get(f"{server.url}/healthz", timeout=10).status_code == 200
    assert requests.get(f"{server.url}/v1/model", timeout=10).status_code == 401
    wrong = requests.get(f"{server.url}/v1/model", headers={"Authorization": "Bearer nope"},
                         timeout=10)
    assert wrong.status_code == 401
    info = requests.get(f"{server.url}/v1/model", headers=AUTH, timeout=10).json()
    champion = registry.client().get_model_version_by_alias(registry.name, "champion")
    assert (info["name"], info["version"], info["alias"]) == (registry.name, "1", "champion")
    assert info["sha256"] == champion.tags["sepcore.checkpoint_sha256"]


def test_separate_equals_sep_separate(server, registry, tmp_path):
    """The stems of /v1/separate equal (<= 1e-4) the WAVs the `sep separate` CLI writes from the
    champion's checkpoint (the stored copy the registry version points at)."""
    path = tmp_path / "song.wav"
    path.write_bytes(wav_bytes(song(seconds=4.2, rate=22050, seed=5), rate=22050, subtype="PCM_16"))
    champion = registry.client().get_model_version_by_alias(registry.name, "champion")
    checkpoint = champion.source.removeprefix("file://")
    done = run_group([sys.executable, "-m", "sepcore.cli", "separate", checkpoint, str(path),
                      "--out", str(tmp_path / "cli")], timeout=300, cwd=tmp_path, env=_env())
    assert done.returncode == 0, done.stderr
    cli = {p.stem: sf.read(p, dtype="float32", always_2d=True)[0].T
           for p in (tmp_path / "cli" / "song").glob("*.wav")}
    assert sorted(cli) == ["bass", "drums", "other", "vocals"]
    with open(path, "rb") as handle:
        response = requests.post(f"{server.url}/v1/separate",
                                 params={"stems": "vocals,drums,bass,other,accompaniment"},
                                 files={"audio": ("song.wav", handle, "audio/wav")}, headers=AUTH,
                                 timeout=120)
    assert response.status_code == 200, response.text
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        served = {Path(n).stem: read_wav(archive.read(n))[0] for n in archive.namelist()}
    cli["accompaniment"] = cli["drums"] + cli["bass"] + cli["other"]
    for name, expected in cli.items():
        assert served[name].shape == expected.shape
        assert np.abs(served[name] - expected).max() <= 1e-4, name
    assert np.abs(cli["vocals"]).max() > 1e-3  # not silence compared with silence


def test_openapi_schema_finds_no_server_error(server):
    """Every operation of /openapi.json, with valid and invalid inputs generated from the schema
    (random bytes as songs, odd stems, odd ids), answers without a 5xx."""
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json", headers=AUTH, timeout=30)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/healthz", "/v1/model", "/v1/separate",
                                             "/v1/separations", "/v1/separations/{job_id}"}
    calls = []
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(mode))
            @settings(max_examples=6, deadline=None, derandomize=True, database=None,
                      suppress_health_check=list(HealthCheck))
            def check(case):
                response = case.call_and_validate(headers=AUTH, timeout=60,
                                                  checks=[not_a_server_error])
                calls.append(response.status_code)

            try:
                check()
            except Unsatisfiable:  # nothing invalid to send (e.g. /healthz takes no input)
                assert mode is GenerationMode.NEGATIVE, operation.path
    assert len(calls) >= 30 and max(calls) < 500


def test_promote_is_served_within_poll_while_clients_see_no_error(server, registry, tmp_path):
    """A client loop posts songs while `python -m sweeps promote` moves champion to v2: every
    request succeeds, and v2 serves within the poll interval (plus its load time)."""
    upload = wav_bytes(song(seconds=1.0, seed=9))
    results: list[tuple[float, int, str]] = []
    stop = threading.Event()

    def loop():
        session = requests.Session()
        while not stop.is_set():
            try:
                response = session.post(f"{server.url}/v1/separate", params={"stems": "vocals"},
                                        files={"audio": ("s.wav", upload, "audio/wav")},
                                        headers=AUTH, timeout=60)
                results.append((time.monotonic(), response.status_code,
                                response.headers.get("x-model-version", "")))
            except requests.RequestException as exc:
                results.append((time.monotonic(), 0, repr(exc)))

    clients = [threading.Thread(target=loop) for _ in range(2)]
    for thread in clients:
        thread.start()
    outcome = {}

    def promote():
        outcome["done"] = run_group([sys.executable, "-m", "sweeps", "promote", registry.name,
                                     "--version", "2", "--tracking-uri", registry.uri],
                                    timeout=120, cwd=tmp_path, env=_env())

    promoter = threading.Thread(target=promote)
    client = registry.client()
    try:
        time.sleep(1.0)
        promoter.start()
        deadline = time.monotonic() + 120
        while str(client.get_model_version_by_alias(registry.name, "champion").version) != "2":
            assert promoter.is_alive() or outcome["done"].returncode == 0, outcome["done"].stderr
            assert time.monotonic() < deadline, "the promote did not move the alias"
            time.sleep(0.02)
        promoted = time.monotonic()  # the alias moved (seen within ~20 ms)
        while requests.get(f"{server.url}/v1/model", headers=AUTH,
                           timeout=10).json()["version"] != "2":
            assert time.monotonic() - promoted < POLL + 5, "v2 not served in time"
            time.sleep(0.02)
        swapped = time.monotonic() - promoted
        time.sleep(1.0)  # requests go on after the swap
        promoter.join(timeout=120)
        assert outcome["done"].returncode == 0, outcome["done"].stderr
        assert "now has alias 'champion'" in outcome["done"].stdout
    finally:
        stop.set()
        for thread in clients:
            thread.join(timeout=120)
        promoter.join(timeout=120)
    failures = [r for r in results if r[1] != 200]
    assert not failures, failures[:5]
    versions = [v for _, _, v in sorted(results)]
    assert "1" in versions and versions[-1] == "2"
    after = [v for t, _, v in results if t > promoted + swapped + 0.5]
    assert after and set(after) == {"2"}
    # the poller looks every POLL s; fetching, verifying and loading a tiny model takes well
    # under a second
    assert swapped <= POLL + 2.0, swapped
    print(f"{len(results)} requests, v2 served {swapped:.2f} s after the promote")
