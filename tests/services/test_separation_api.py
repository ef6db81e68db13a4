"""The separation service's HTTP API in process (FastAPI's TestClient): auth, model info, stems
equal to the shared separator, every bad upload's status and reason, the asynchronous queue
(progress, expiry, 503 when full) and the hot swap (in-flight requests keep their model, versions
that do not verify are not served)."""

from __future__ import annotations

import io
import threading
import time
import zipfile

import numpy as np
import pytest
from fastapi.testclient import TestClient

from sepcore.separate import load_separator
from services.registry import promote
from services.separation.app import create_app
from services.separation.service import SeparationService
from services.separation.settings import ServeSettings
from tests.services.serving import (
    RATE,
    SOURCES,
    make_checkpoint,
    make_registry,
    read_wav,
    song,
    wav_bytes,
)

TOKEN = "t0ken-for-tests"


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    return make_registry(tmp_path_factory.mktemp("registry"))


def _service(registry, tmp_path, model="@champion", **settings) -> SeparationService:
    values = {"poll": 0, "device": "cpu", "tracking_uri": registry.uri,
              "cache_dir": str(tmp_path / "cache"), **settings}
    return SeparationService(ServeSettings.from_env(
        {}, model=f"models:/{registry.name}{model}", **values))


@pytest.fixture
def client(registry, tmp_path):
    with TestClient(create_app(_service(registry, tmp_path))) as client:
        yield client


def _upload(audio=None, rate=11025, **kw):
    data = audio if isinstance(audio, bytes) else wav_bytes(song() if audio is None else audio,
                                                            rate, **kw)
    return {"audio": ("song.wav", data, "audio/wav")}


def _expected(registry, version: str, audio: np.ndarray, rate: int = 11025) -> dict:
    """What the shared separator (the code of `sep separate`) gives for ``audio``."""
    estimate = load_separator(registry.checkpoints[version], device="cpu").separate(
        np.ascontiguousarray(audio.T), rate).numpy()
    stems = dict(zip(SOURCES, estimate, strict=True))
    stems["accompaniment"] = estimate[1:].sum(axis=0)
    return stems


def _zip(content: bytes) -> dict[str, np.ndarray]:
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        return {name: read_wav(archive.read(name))[0] for name in archive.namelist()}


# --- auth and model ------------------------------------------------------------------------------

def test_token_guards_every_route_but_healthz_and_the_page(registry, tmp_path):
    with TestClient(create_app(_service(registry, tmp_path, token=TOKEN))) as client:
        assert client.get("/healthz").status_code == 200
        assert client.get("/").status_code == 200
        for path in ("/v1/model", "/openapi.json", "/docs", "/v1/separations/x", "/nowhere"):
            response = client.get(path)
            assert response.status_code == 401, path
            assert response.headers["www-authenticate"] == "Bearer"
            assert TOKEN not in response.text
        for header in ("Bearer wrong", f"Basic {TOKEN}", TOKEN, f"Bearer {TOKEN}x", "Bearer"):
            assert client.get("/v1/model", headers={"Authorization": header}).status_code == 401
        assert client.post("/v1/separate", files=_upload()).status_code == 401
        good = {"Authorization": f"Bearer {TOKEN}"}
        assert client.get("/v1/model", headers=good).status_code == 200
        assert client.get("/v1/model", headers={"authorization": f"bearer {TOKEN}"}
                          ).status_code == 200
        schema = client.get("/openapi.json", headers=good).json()
        assert schema["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
        assert "security" not in schema["paths"]["/healthz"]["get"]
        assert schema["paths"]["/v1/separate"]["post"]["security"] == [{"bearer": []}]


def test_no_token_means_open(client):
    assert client.get("/v1/model").status_code == 200


def test_model_shows_the_champion(client, registry):
    info = client.get("/v1/model").json()
    version = registry.client().get_model_version(registry.name, "1")
    assert info["name"] == registry.name
    assert (info["version"], info["alias"]) == ("1", "champion")
    assert info["sha256"] == version.tags["sepcore.checkpoint_sha256"]
    assert info["sources"] == list(SOURCES)
    assert info["stems"] == [*SOURCES, "accompaniment"]
    assert info["sample_rate"] == RATE
    assert info["loaded_at"].endswith("+00:00")


# --- separation -----------------------------------------------------------------------------------

def test_separate_returns_the_separators_stems(client, registry):
    audio = song(seconds=2.3)  # 11.025 kHz: resampled to 8 kHz, several 0.5 s chunks
    response = client.post("/v1/separate?stems=vocals,accompaniment", files=_upload(audio))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/zip"
    assert response.headers["x-model-version"] == "1"
    stems = _zip(response.content)
    assert sorted(stems) == ["accompaniment.wav", "vocals.wav"]
    expected = _expected(registry, "1", audio)
    for name in ("vocals", "accompaniment"):
        got = stems[f"{name}.wav"]
        assert got.shape == expected[name].shape == (2, round(2.3 * RATE))
        np.testing.assert_allclose(got, expected[name], atol=1e-6, rtol=0)
    assert np.abs(expected["vocals"] - expected["accompaniment"]).max() > 1e-3


def test_one_stem_is_audio_and_default_is_every_source(client, registry):
    audio = song(seconds=1.0)
    one = client.post("/v1/separate?stems=drums", files=_upload(audio))
    assert one.headers["content-type"] == "audio/wav"
    data, rate = read_wav(one.content)
    expected = _expected(registry, "1", audio)
    assert rate == RATE
    np.testing.assert_allclose(data, expected["drums"], atol=1e-6, rtol=0)
    every = client.post("/v1/separate", files=_upload(audio))
    assert sorted(_zip(every.content)) == sorted(f"{s}.wav" for s in SOURCES)


def test_flac_is_24_bit(client, registry):
    audio = song(seconds=1.0)
    response = client.post("/v1/separate?stems=vocals,bass&format=flac", files=_upload(audio))
    assert response.status_code == 200
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        assert sorted(archive.namelist()) == ["bass.flac", "vocals.flac"]
        import soundfile as sf

        flac = archive.read("vocals.flac")
        assert sf.info(io.BytesIO(flac)).subtype == "PCM_24"
        data = read_wav(flac)[0]
    expected = np.clip(_expected(registry, "1", audio)["vocals"], -1, 1)
    np.testing.assert_allclose(data, expected, atol=2.0 ** -22, rtol=0)
    single = client.post("/v1/separate?stems=vocals&format=flac", files=_upload(audio))
    assert single.headers["content-type"] == "audio/flac"


# --- bad uploads ----------------------------------------------------------------------------------

def _truncated() -> bytes:
    data = wav_bytes(song(seconds=1.0))
    return data[: len(data) // 2]


def _nan() -> bytes:
    audio = song(seconds=0.5)
    audio[100, 1] = np.nan
    return wav_bytes(audio)


BAD_UPLOADS = {
    "not audio": (b"this is not a song, just text " * 40, 400, "does not decode as audio"),
    "empty file": (b"", 400, "does not decode as audio"),
    "truncated": (_truncated(), 400, "truncated"),
    "nan": (_nan(), 400, "NaN or infinite"),
    "zero length": (wav_bytes(np.zeros((0, 2), np.float32)), 400, "no samples"),
    # three samples at 44.1 kHz last less than one sample of the 11025 Hz model
    "too short": (wav_bytes(np.full((3, 2), 0.1, np.float32), rate=44100), 400,
                  "too short: 3 frame(s) at 44100 Hz"),
    "too long": (wav_bytes(song(seconds=7.0)), 400, "7.0 s long; the limit is 6 s"),
    "5 channels": (wav_bytes(song(seconds=0.5, channels=5)), 400,
                   "the audio has 5 channels; this model takes 2 (or mono)"),
}


@pytest.mark.parametrize("case", list(BAD_UPLOADS))
@pytest.mark.parametrize("route", ["/v1/separate", "/v1/separations"])
def test_bad_upload_gets_a_one_line_reason(registry, tmp_path, case, route):
    data, status, reason = BAD_UPLOADS[case]
    with TestClient(create_app(_service(registry, tmp_path, max_duration=6))) as client:
        response = client.post(route, files=_upload(data))
        assert response.status_code == status, response.text
        detail = response.json()["detail"]
        assert reason in detail and "\n" not in detail
        assert "/tmp" not in detail and "upload-" not in detail  # no server paths


def test_uploads_over_the_limit_get_413(registry, tmp_path):
    service = _service(registry, tmp_path, max_upload_mb=0.25)
    big = wav_bytes(song(seconds=10.0))  # 10 s × 2 ch × 11025 Hz × 4 B ≈ 0.84 MiB
    with TestClient(create_app(service)) as client:
        response = client.post("/v1/separate", files=_upload(big))  # Content-Length says so
        assert response.status_code == 413
        assert response.json()["detail"].endswith("exceeds the upload limit of 0.25 MiB")

        boundary = "sepcoreboundary"
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"audio\"; "
                f"filename=\"a.wav\"\r\nContent-Type: audio/wav\r\n\r\n").encode() + big + \
            f"\r\n--{boundary}--\r\n".encode()

        def chunks():  # no Content-Length: the bytes are counted as they arrive
            for i in range(0, len(body), 64 * 1024):
                yield body[i:i + 64 * 1024]

        response = client.post("/v1/separations", content=chunks(), headers={
            "Content-Type": f"multipart/form-data; boundary={boundary}"})
        assert response.status_code == 413
        assert "exceeds the upload limit of 0.25 MiB" in response.json()["detail"]
        ok = client.post("/v1/separate?stems=vocals", files=_upload(song(seconds=1.0)))
        assert ok.status_code == 200
    assert not service.scratch.exists()  # stopped: nothing left behind


@pytest.mark.parametrize("query, status, reason", [
    ("stems=vocals,drumz", 422, "unknown stem 'drumz'; this model serves: vocals, drums, bass, "
                                "other, accompaniment"),
    ("stems=,", 422, "no stem asked; this model serves: vocals, drums, bass, other, "
                         "accompaniment"),
    ("format=mp3", 422, None),
])
def test_bad_parameters_get_422(client, query, status, reason):
    response = client.post(f"/v1/separate?{query}", files=_upload(song(seconds=0.5)))
    assert response.status_code == status
    if reason:
        assert response.json()["detail"] == reason


def test_bodies_that_are_not_a_multipart_song(client):
    response = client.post("/v1/separate", content=wav_bytes(song(seconds=0.5)),
                           headers={"Content-Type": "audio/wav"})
    assert response.status_code == 415
    assert "multipart/form-data" in response.json()["detail"]
    response = client.post("/v1/separate", files={"music": ("a.wav", b"x", "audio/wav")})
    assert response.status_code == 400
    assert response.json()["detail"] == "the multipart body has no file field 'audio'"
    response = client.post("/v1/separate", content=b"--x\r\nnonsense",
                           headers={"Content-Type": "multipart/form-data"})
    assert response.status_code == 400
    assert response.json()["detail"].startswith("malformed multipart body")


# --- asynchronous separations -----------------------------------------------------------------

def _wait(client, job_id, timeout=60.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = client.get(f"/v1/separations/{job_id}").json()
        if state["status"] in ("done", "failed"):
            return state
        time.sleep(0.05)
    raise AssertionError(f"separation {job_id} did not finish: {state}")


def test_async_separation_and_its_expiry(registry, tmp_path):
    service = _service(registry, tmp_path, result_ttl=1.5)
    audio = song(seconds=3.0)
    with TestClient(create_app(service)) as client:
        response = client.post("/v1/separations?stems=vocals,accompaniment", files=_upload(audio))
        assert response.status_code == 202
        job_id = response.json()["id"]
        state = _wait(client, job_id)
        assert state["status"] == "done" and state["progress"] == 1.0
        assert (state["stems"], state["model_version"]) == (["vocals", "accompaniment"], "1")
        expected = _expected(registry, "1", audio)
        for name in ("vocals", "accompaniment"):
            stem = client.get(f"/v1/separations/{job_id}/stems/{name}")
            assert stem.headers["content-type"] == "audio/wav"
            np.testing.assert_allclose(read_wav(stem.content)[0], expected[name], atol=1e-6)
        missing = client.get(f"/v1/separations/{job_id}/stems/drums")
        assert missing.status_code == 404 and "has no stem 'drums'" in missing.json()["detail"]
        assert client.get("/v1/separations/nope").status_code == 404
        folders = list(service.jobs.root.iterdir())
        assert len(folders) == 1
        time.sleep(1.6)  # past the time to live: gone, files too
        gone = client.get(f"/v1/separations/{job_id}")
        assert gone.status_code == 404 and "unknown or expired" in gone.json()["detail"]
        assert client.get(f"/v1/separations/{job_id}/stems/vocals").status_code == 404
        assert not folders[0].exists()


def test_progress_is_reported_while_running(registry, tmp_path):
    service = _service(registry, tmp_path)
    seen = []
    real = service.separate

    def observed(served, upload, stems, fmt, folder, progress=None):
        def spy(fraction):
            seen.append(fraction)
            progress(fraction)
        return real(served, upload, stems, fmt, folder, spy)

    service.separate = observed
    with TestClient(create_app(service)) as client:
        job_id = client.post("/v1/separations?stems=vocals", files=_upload(
            song(seconds=3.0))).json()["id"]
        assert _wait(client, job_id)["status"] == "done"
    # 3 s at 8 kHz in 0.5 s chunks cross-faded by 25 %: 8 chunks, progress k/8
    assert seen == [k / len(seen) for k in range(1, len(seen) + 1)] and len(seen) >= 6


def test_full_queue_answers_503_with_retry_after(registry, tmp_path):
    service = _service(registry, tmp_path, queue_size=1)
    gate = threading.Event()
    real = service.separate

    def held(*args, **kwargs):
        assert gate.wait(60)
        return real(*args, **kwargs)

    service.separate = held
    with TestClient(create_app(service)) as client:
        upload = _upload(song(seconds=0.5))
        first = client.post("/v1/separations", files=upload).json()["id"]  # running, held
        deadline = time.monotonic() + 10
        while client.get(f"/v1/separations/{first}").json()["status"] != "running":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        second = client.post("/v1/separations", files=upload).json()["id"]  # waits
        full = client.post("/v1/separations", files=upload)
        assert full.status_code == 503
        assert int(full.headers["retry-after"]) >= 1
        assert "queue is full" in full.json()["detail"]
        assert client.get(f"/v1/separations/{second}").json()["status"] == "queued"
        not_yet = client.get(f"/v1/separations/{second}/stems/vocals")
        assert not_yet.status_code == 409 and "queued" in not_yet.json()["detail"]
        gate.set()
        assert _wait(client, first)["status"] == "done"
        assert _wait(client, second)["status"] == "done"
        assert client.post("/v1/separations", files=upload).status_code == 202


def test_synchronous_separations_over_max_sync_get_503_before_their_upload(registry, tmp_path):
    """max_sync=1: while one /v1/separate request separates, the next is answered 503 with
    Retry-After (its body is not read), and once the first is done the next one is served."""
    service = _service(registry, tmp_path, max_sync=1)
    entered, gate = threading.Event(), threading.Event()
    real = service.separate

    def held(*args, **kwargs):
        entered.set()
        assert gate.wait(60)
        return real(*args, **kwargs)

    service.separate = held
    with TestClient(create_app(service)) as client:
        upload = _upload(song(seconds=0.5))
        answers = []
        first = threading.Thread(target=lambda: answers.append(
            client.post("/v1/separate?stems=vocals", files=upload)))
        first.start()
        try:
            assert entered.wait(30)
            busy = client.post("/v1/separate?stems=vocals", files=upload)
            assert busy.status_code == 503 and int(busy.headers["retry-after"]) >= 1
            assert busy.json()["detail"] == ("1 synchronous separation(s) already running; "
                                             "retry later or queue it with POST /v1/separations")
            # a bad request is still told what is wrong with it, not to come back later
            assert client.post("/v1/separate?stems=drumz", files=upload).status_code == 422
            assert client.post("/v1/separations", files=upload).status_code == 202  # queued
        finally:
            gate.set()
            first.join(60)
        assert [a.status_code for a in answers] == [200]
        assert client.post("/v1/separate?stems=vocals", files=upload).status_code == 200
        assert service.scratch.is_dir()
        assert not list(service.scratch.glob("sync-*"))  # the refused request left no folder


def test_a_failing_job_reports_failed(registry, tmp_path):
    service = _service(registry, tmp_path)

    def broken(*args, **kwargs):
        raise RuntimeError("out of memory on the device")

    service.separate = broken
    with TestClient(create_app(service)) as client:
        job_id = client.post("/v1/separations", files=_upload(song(seconds=0.5))).json()["id"]
        state = _wait(client, job_id)
        assert (state["status"], state["error"]) == ("failed", "out of memory on the device")
        response = client.get(f"/v1/separations/{job_id}/stems/vocals")
        assert response.status_code == 409 and "failed" in response.json()["detail"]


# --- hot swap -------------------------------------------------------------------------------------

def test_swap_keeps_in_flight_requests_on_the_old_model(tmp_path):
    registry = make_registry(tmp_path / "swap", name="sepcore-swap")
    service = _service(registry, tmp_path)
    audio = song(seconds=1.0)
    with TestClient(create_app(service)) as client:
        old = service.holder.current  # what a request in flight holds
        assert service.holder.check() is False  # the alias did not move
        promote(registry.client(), registry.name, version="2")
        assert service.holder.check() is True
        assert client.get("/v1/model").json()["version"] == "2"
        response = client.post("/v1/separate?stems=vocals", files=_upload(audio))
        assert response.headers["x-model-version"] == "2"
        np.testing.assert_allclose(read_wav(response.content)[0],
                                   _expected(registry, "2", audio)["vocals"], atol=1e-6)
        # the request that started before the swap finishes on v1
        files = service.separate(old, _file(tmp_path, audio), ["vocals"], "wav", tmp_path)
        np.testing.assert_allclose(read_wav(files["vocals"].read_bytes())[0],
                                   _expected(registry, "1", audio)["vocals"], atol=1e-6)


def _file(tmp_path, audio):
    path = tmp_path / "in.wav"
    path.write_bytes(wav_bytes(audio))
    return path


def test_versions_that_do_not_verify_are_not_served(tmp_path, caplog):
    registry = make_registry(tmp_path / "verify", name="sepcore-verify")
    service = _service(registry, tmp_path)
    tampered = registry.register(make_checkpoint(tmp_path / "c.safetensors", seed=2), 0.0)
    stored = next((registry.store / registry.name).glob("c.safetensors"))
    stored.write_bytes(stored.read_bytes()[:-8] + b"tampered")
    unsigned = registry.register(make_checkpoint(tmp_path / "d.safetensors", seed=3), 0.0,
                                 **{"sepcore.checkpoint_sha256": ""})
    with TestClient(create_app(service)) as client:
        for version, reason in ((tampered, "SHA-256"), (unsigned, "has no recorded SHA-256")):
            promote(registry.client(), registry.name, version=version)
            caplog.clear()
            assert service.holder.check() is False
            assert reason in caplog.text
            assert client.get("/v1/model").json()["version"] == "1"
        promote(registry.client(), registry.name, version="2")
        assert service.holder.check() is True
        assert client.get("/v1/model").json()["version"] == "2"


def test_pinned_version_and_bad_settings(registry, tmp_path):
    service = _service(registry, tmp_path, model="/2")
    assert service.holder.current.info()["alias"] is None
    assert service.holder.current.version == "2"
    from sepcore.errors import ConfigError

    for given, message in ((dict(model="champion"), "--model: 'champion' is not a model URI"),
                           (dict(model="models:/m/x"), "bad model URI 'models:/m/x'"),
                           (dict(model="models:/m@c", poll="-1"), "--poll='-1' must be"),
                           (dict(model="models:/m@c", queue_size="0"), "--queue-size='0'"),
                           (dict(model="models:/m@c", max_sync="0"), "--max-sync='0'"),
                           (dict(model="models:/m@c", max_upload_mb="x"), "is not a number")):
        with pytest.raises(ConfigError, match=message):
            ServeSettings.from_env({}, **given)
    with pytest.raises(ConfigError, match="SEPCORE_SERVE_POLL='soon'"):
        ServeSettings.from_env({"SEPCORE_SERVE_MODEL": "models:/m@c", "SEPCORE_SERVE_POLL": "soon"})
    settings = ServeSettings.from_env({"SEPCORE_SERVE_MODEL": "models:/m@c",
                                       "SEPCORE_SERVE_TOKEN": "abc"}, poll="3")
    assert (settings.poll, settings.token, settings.model) == (3.0, "abc", "models:/m@c")
    assert "abc" not in repr(settings)
