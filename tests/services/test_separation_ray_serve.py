"""``services.separation:app`` on Ray Serve: a local Ray (its own temp folder, loopback) runs the
application built from the environment, as a RayService would; /healthz, the token and
/v1/separate answer through Serve's proxy, with the same stems as under uvicorn."""

from __future__ import annotations

import json
import os
import shutil
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tests.procs import LOOPBACK_RAY_ENV, free_port, kill_strays, run_group, short_tmpdir
from tests.services.serving import make_registry, song, wav_bytes

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "serve-t0ken"

SCRIPT = textwrap.dedent("""
    import io, json, sys, zipfile
    import numpy as np, ray, requests, soundfile as sf
    from ray import serve
    from services.separation import app

    temp_dir, port, song = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=temp_dir)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(app({"poll": "0", "num_cpus": "1"}), name="separation", route_prefix="/")
        url = f"http://127.0.0.1:{port}"
        out = {"healthz": requests.get(f"{url}/healthz", timeout=60).status_code,
               "model_no_token": requests.get(f"{url}/v1/model", timeout=60).status_code}
        auth = {"Authorization": "Bearer " + sys.argv[4]}
        out["model"] = requests.get(f"{url}/v1/model", headers=auth, timeout=60).json()
        with open(song, "rb") as handle:
            r = requests.post(f"{url}/v1/separate", params={"stems": "vocals,accompaniment"},
                              files={"audio": ("s.wav", handle, "audio/wav")}, headers=auth,
                              timeout=300)
        out["separate"] = r.status_code
        with zipfile.ZipFile(io.BytesIO(r.content)) as archive:
            for name in archive.namelist():
                data = sf.read(io.BytesIO(archive.read(name)), dtype="float32")[0]
                out[name] = np.asarray(data).T.tolist()
        print("RESULT " + json.dumps(out))
    finally:
        serve.shutdown()
        ray.shutdown()
""")


@pytest.mark.slow
def test_the_app_runs_on_ray_serve(tmp_path):
    from sepcore.separate import load_separator

    registry = make_registry(tmp_path / "registry", name="sepcore-rayserve")
    audio = song(seconds=1.5)
    path = tmp_path / "song.wav"
    path.write_bytes(wav_bytes(audio))
    temp_dir = short_tmpdir()
    env = {**os.environ, **LOOPBACK_RAY_ENV, "PYTHONPATH": str(ROOT),
           "SEPCORE_SERVE_MODEL": f"models:/{registry.name}@champion",
           "SEPCORE_SERVE_TOKEN": TOKEN, "SEPCORE_SERVE_DEVICE": "cpu",
           "SEPCORE_SERVE_CACHE_DIR": str(tmp_path / "cache"), "MLFLOW_TRACKING_URI": registry.uri}
    env.pop("RAY_ADDRESS", None)
    try:
        done = run_group([sys.executable, "-c", SCRIPT, str(temp_dir), str(free_port()),
                          str(path), TOKEN], timeout=240, cwd=tmp_path, env=env)
    finally:
        strays = kill_strays(str(temp_dir))
        shutil.rmtree(temp_dir, ignore_errors=True)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stdout[-3000:] + done.stderr[-3000:]
    assert not strays, f"Ray processes outlived the script: {strays}"
    out = json.loads(lines[0][len("RESULT "):])
    assert (out["healthz"], out["model_no_token"], out["separate"]) == (200, 401, 200)
    assert (out["model"]["name"], out["model"]["version"]) == (registry.name, "1")
    estimate = load_separator(registry.checkpoints["1"], device="cpu").separate(
        np.ascontiguousarray(audio.T), 11025).numpy()
    np.testing.assert_allclose(np.array(out["vocals.wav"]), estimate[0], atol=1e-6)
    np.testing.assert_allclose(np.array(out["accompaniment.wav"]), estimate[1:].sum(0),
                               atol=1e-6)
