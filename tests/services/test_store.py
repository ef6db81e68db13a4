"""Artifact store: local folder and S3 against a real S3-compatible HTTP server (moto, loopback)."""

from __future__ import annotations

import hashlib
import logging
import random
import threading
import time
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from services.errors import ArtifactError
from services.store import LocalStore, S3Store, open_store
from tests.procs import FaultProxy
from tests.services.conftest import ACCESS_KEY, BUCKET, SECRET_KEY

MiB = 1024 * 1024


def _write_random(path: Path, size: int, seed: int = 0) -> Path:
    path.write_bytes(random.Random(seed).randbytes(size))
    return path


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------- local store


def test_local_put_get_roundtrip(tmp_path: Path) -> None:
    src = _write_random(tmp_path / "ckpt.safetensors", 300_000)
    store = LocalStore(tmp_path / "store")
    stored = store.put(src, "sweep-a/trial-1/ckpt.safetensors")

    target = tmp_path / "store" / "sweep-a" / "trial-1" / "ckpt.safetensors"
    assert stored.uri == target.as_uri() == store.uri_for("sweep-a/trial-1/ckpt.safetensors")
    assert stored.sha256 == _sha(src) == store.sha256_of("sweep-a/trial-1/ckpt.safetensors")
    assert stored.size == 300_000
    assert (target.parent / "ckpt.safetensors.sha256").read_text().strip() == _sha(src)
    assert store.exists("sweep-a/trial-1/ckpt.safetensors")
    assert not store.exists("sweep-a/trial-2/ckpt.safetensors")
    assert not list(target.parent.glob(".*.tmp"))  # no temp files left behind

    out_dir = tmp_path / "out"
    out_dir.mkdir()
    by_key = store.get("sweep-a/trial-1/ckpt.safetensors", out_dir)
    by_uri = store.get(stored.uri, tmp_path / "copy.bin")
    assert by_key == out_dir / "ckpt.safetensors"
    assert by_key.read_bytes() == src.read_bytes() == by_uri.read_bytes()


def test_local_corrupted_file_is_refused(tmp_path: Path) -> None:
    src = _write_random(tmp_path / "ckpt.bin", 10_000)
    store = LocalStore(tmp_path / "store")
    store.put(src, "t/ckpt.bin")
    stored_path = tmp_path / "store" / "t" / "ckpt.bin"
    data = bytearray(stored_path.read_bytes())
    data[5000] ^= 0xFF
    stored_path.write_bytes(bytes(data))

    dest = tmp_path / "restored.bin"
    with pytest.raises(ArtifactError, match="corrupted"):
        store.get("t/ckpt.bin", dest)
    assert not dest.exists()
    assert not list(tmp_path.glob(".*.tmp"))


def test_local_rejects_keys_outside_root(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    src = _write_random(tmp_path / "f.bin", 10)
    with pytest.raises(ArtifactError, match=r"\.\."):
        store.put(src, "../escape.bin")
    with pytest.raises(ArtifactError, match="not inside the store"):
        store.get((tmp_path / "f.bin").as_uri(), tmp_path / "x.bin")


def test_open_store_dispatch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    default = open_store(None)
    assert isinstance(default, LocalStore)
    assert default.root == (tmp_path / "mlartifacts" / "store").resolve()
    assert open_store(str(tmp_path / "s")).root == (tmp_path / "s").resolve()
    assert open_store((tmp_path / "u").as_uri()).root == (tmp_path / "u").resolve()
    with pytest.raises(ArtifactError, match="gs://"):
        open_store("gs://bucket/prefix")


# ---------------------------------------------------------------- S3 (moto server on loopback)


def _store(endpoint: str, **kwargs) -> S3Store:
    options = {"multipart_threshold": 5 * MiB, "multipart_chunksize": 5 * MiB, "backoff_s": 0.01}
    options.update(kwargs)
    store = open_store(f"s3://{BUCKET}/sweeps/test", endpoint_url=endpoint, **options)
    assert isinstance(store, S3Store)
    return store


def _injected(operation: str) -> ClientError:
    return ClientError({"Error": {"Code": "InternalError", "Message": "injected"}}, operation)


def test_s3_multipart_upload_roundtrip(s3_endpoint: str, s3, tmp_path: Path) -> None:
    src = _write_random(tmp_path / "big.safetensors", 12 * MiB, seed=1)
    store = _store(s3_endpoint)
    stored = store.put(src, "trial-a/big.safetensors")

    assert stored.uri == f"s3://{BUCKET}/sweeps/test/trial-a/big.safetensors"
    assert stored.sha256 == _sha(src) and stored.size == 12 * MiB
    head = s3.head_object(Bucket=BUCKET, Key="sweeps/test/trial-a/big.safetensors")
    assert head["ETag"].strip('"').endswith("-3")  # 5 + 5 + 2 MiB: went multipart
    assert head["Metadata"]["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert head["ContentLength"] == 12 * MiB
    assert store.exists("trial-a/big.safetensors") and not store.exists("trial-a/none")
    assert store.sha256_of("trial-a/big.safetensors") == stored.sha256

    restored = store.get(stored.uri, tmp_path / "restored.bin")
    assert restored.read_bytes() == src.read_bytes()


def test_s3_store_reads_endpoint_from_env(s3_endpoint: str, tmp_path: Path) -> None:
    src = _write_random(tmp_path / "small.bin", 1000)
    store = open_store(f"s3://{BUCKET}/env")  # no endpoint_url: boto3 reads AWS_ENDPOINT_URL
    assert store.put(src, "small.bin").uri == f"s3://{BUCKET}/env/small.bin"
    assert store.get("small.bin", tmp_path / "back.bin").read_bytes() == src.read_bytes()


def test_s3_get_refuses_corrupted_object(s3_endpoint: str, s3, tmp_path: Path) -> None:
    src = _write_random(tmp_path / "ckpt.bin", 4096, seed=2)
    store = _store(s3_endpoint)
    stored = store.put(src, "trial-c/ckpt.bin")
    tampered = bytearray(src.read_bytes())
    tampered[0] ^= 0xFF
    s3.put_object(
        Bucket=BUCKET,
        Key="sweeps/test/trial-c/ckpt.bin",
        Body=bytes(tampered),
        Metadata={"sha256": stored.sha256},
    )
    dest = tmp_path / "restored.bin"
    with pytest.raises(ArtifactError, match="corrupted"):
        store.get("trial-c/ckpt.bin", dest)
    assert not dest.exists()


def test_s3_failed_upload_is_retried(
    s3_endpoint: str, s3, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    src = _write_random(tmp_path / "big.bin", 12 * MiB, seed=3)
    store = _store(s3_endpoint, max_attempts=3)
    calls = {"CreateMultipartUpload": 0, "UploadPart": 0}
    failures = {"left": 1}

    def fail_first_part(model, **_kwargs) -> None:
        if model.name in calls:
            calls[model.name] += 1
        if model.name == "UploadPart" and failures["left"] > 0:
            failures["left"] -= 1
            raise _injected("UploadPart")

    store.client.meta.events.register("before-call.s3", fail_first_part)
    with caplog.at_level(logging.WARNING, logger="services.store"):
        stored = store.put(src, "trial-r/big.bin")

    assert failures["left"] == 0
    assert calls["CreateMultipartUpload"] == 2  # first attempt failed, second one succeeded
    assert "attempt 1," in caplog.text and "attempt 2," not in caplog.text
    head = s3.head_object(Bucket=BUCKET, Key="sweeps/test/trial-r/big.bin")
    assert head["Metadata"]["sha256"] == _sha(src) == stored.sha256
    assert head["ETag"].strip('"').endswith("-3")
    assert store.get(stored.uri, tmp_path / "back.bin").read_bytes() == src.read_bytes()
    assert not s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads")


def test_s3_upload_that_always_fails_leaves_nothing(
    s3_endpoint: str, s3, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    src = _write_random(tmp_path / "big.bin", 12 * MiB, seed=4)
    store = _store(s3_endpoint, max_attempts=2)
    in_our_cleanup = threading.Event()
    seen = {"UploadPart failed": 0, "transfer abort failed": 0, "our abort": 0}

    def always_fail(model, **_kwargs) -> None:
        if model.name == "UploadPart":
            seen["UploadPart failed"] += 1
            raise _injected("UploadPart")
        # make boto3's own abort fail too, so only the store's cleanup can remove the parts
        if model.name == "AbortMultipartUpload":
            if in_our_cleanup.is_set():
                seen["our abort"] += 1
            else:
                seen["transfer abort failed"] += 1
                raise _injected("AbortMultipartUpload")

    cleanup = store._abort_multipart

    def tracked_cleanup(object_key: str) -> None:
        in_our_cleanup.set()
        try:
            cleanup(object_key)
        finally:
            in_our_cleanup.clear()

    store._abort_multipart = tracked_cleanup  # type: ignore[method-assign]
    store.client.meta.events.register("before-call.s3", always_fail)

    registered: list[str] = []
    caplog.set_level(logging.DEBUG, logger="sweeps")
    with pytest.raises(ArtifactError) as info:
        registered.append(store.put(src, "trial-f/big.bin").uri)

    message = str(info.value)
    assert "sweeps/test/trial-f/big.bin" in message and "2 attempts" in message
    assert "injected" in message
    assert registered == []
    assert seen["UploadPart failed"] >= 2 and seen["transfer abort failed"] >= 1
    assert seen["our abort"] == 2  # one lingering multipart upload cleaned up per attempt
    listing = s3.list_objects_v2(Bucket=BUCKET, Prefix="sweeps/test/trial-f/")
    assert listing["KeyCount"] == 0
    assert not s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads")
    for secret in (ACCESS_KEY, SECRET_KEY):
        assert secret not in caplog.text and secret not in message


def test_s3_upload_that_does_not_verify_is_deleted(s3_endpoint: str, s3, tmp_path: Path) -> None:
    src = _write_random(tmp_path / "ckpt.bin", 6 * MiB, seed=5)
    store = _store(s3_endpoint)

    def wrong_metadata(params, **_kwargs) -> None:
        params["Metadata"] = {"sha256": "0" * 64}

    store.client.meta.events.register(
        "provide-client-params.s3.CreateMultipartUpload", wrong_metadata
    )
    with pytest.raises(ArtifactError, match="does not verify"):
        store.put(src, "trial-v/ckpt.bin")
    listing = s3.list_objects_v2(Bucket=BUCKET, Prefix="sweeps/test/trial-v/")
    assert listing["KeyCount"] == 0


# ---------------------------------------------------------------- S3 refusing requests for a while


def _proxied_store(proxy: FaultProxy, botocore_attempts: int | None = 1, **kwargs) -> S3Store:
    """A store whose requests pass through ``proxy``; ``botocore_attempts=1`` turns off boto's own
    retries so the store's retry loop alone rides out the fault (``None``: boto's defaults)."""
    config = None if botocore_attempts is None else Config(
        retries={"total_max_attempts": botocore_attempts})
    client = boto3.client("s3", endpoint_url=proxy.url, config=config)
    options = {"multipart_threshold": 5 * MiB, "multipart_chunksize": 5 * MiB,
               "backoff_s": 0.2, "max_backoff_s": 1.0, "client": client}
    options.update(kwargs)
    store = open_store(f"s3://{BUCKET}/outage", **options)
    assert isinstance(store, S3Store)
    return store


def _only_object(s3, prefix: str) -> list[str]:
    return [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])]


def test_s3_put_rides_out_refused_writes(
    s3_endpoint: str, s3, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The endpoint answers 503 to every write for 5 s, starting in the middle of a multipart
    upload: the put waits it out, stores the object once, complete, and leaves no parts."""
    src = _write_random(tmp_path / "ckpt.safetensors", 12 * MiB, seed=6)
    with FaultProxy(s3_endpoint) as proxy:
        store = _proxied_store(proxy)
        proxy.refuse(5.0, methods=("PUT", "POST"), after=2)  # create + one part go through
        with caplog.at_level(logging.WARNING, logger="services.store"):
            stored = store.put(src, "trial-o/ckpt.safetensors")
        window_end = proxy.window_ended()
        done = time.monotonic()
    assert window_end is not None and done >= window_end  # it succeeded after the window
    assert len(proxy.refused) >= 2 and {m for m, _ in proxy.refused} <= {"PUT", "POST"}
    assert stored.sha256 == _sha(src)
    key = "outage/trial-o/ckpt.safetensors"
    assert _only_object(s3, "outage/trial-o/") == [key]
    head = s3.head_object(Bucket=BUCKET, Key=key)
    assert head["Metadata"]["sha256"] == _sha(src) and head["ContentLength"] == 12 * MiB
    assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == src.read_bytes()
    assert not s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings and all(f"s3://{BUCKET}/{key}" in w for w in warnings)
    assert all("503" in w or "ServiceUnavailable" in w for w in warnings)
    for secret in (ACCESS_KEY, SECRET_KEY):
        assert secret not in caplog.text


def test_s3_get_rides_out_dropped_connections(
    s3_endpoint: str, s3, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    src = _write_random(tmp_path / "ckpt.bin", 200_000, seed=7)
    s3.upload_file(str(src), BUCKET, "outage/trial-g/ckpt.bin",
                   ExtraArgs={"Metadata": {"sha256": _sha(src)}})
    with FaultProxy(s3_endpoint) as proxy:
        store = _proxied_store(proxy)
        proxy.refuse(3.0, methods=("GET", "HEAD"), mode="drop")
        with caplog.at_level(logging.WARNING, logger="services.store"):
            back = store.get(f"s3://{BUCKET}/outage/trial-g/ckpt.bin", tmp_path / "back.bin")
    assert back.read_bytes() == src.read_bytes()
    assert proxy.refused and "download of s3://" in caplog.text
    assert not list(tmp_path.glob(".*.tmp"))


def test_s3_outage_longer_than_the_window_fails_cleanly(
    s3_endpoint: str, s3, tmp_path: Path
) -> None:
    src = _write_random(tmp_path / "ckpt.bin", 7 * MiB, seed=8)
    with FaultProxy(s3_endpoint) as proxy:
        store = _proxied_store(proxy, retry_window_s=2.0)
        proxy.refuse(600.0, after=1)  # the multipart upload starts, then every write is refused
        started = time.monotonic()
        with pytest.raises(ArtifactError, match=r"outage/trial-w/ckpt.bin.*retry window 2 s"):
            store.put(src, "trial-w/ckpt.bin")
        assert time.monotonic() - started < 10
    assert _only_object(s3, "outage/trial-w/") == []
    assert not s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads")


def test_s3_access_denied_is_not_retried(s3_endpoint: str, tmp_path: Path) -> None:
    src = _write_random(tmp_path / "ckpt.bin", 1000, seed=9)
    store = _store(s3_endpoint)
    calls = []

    def deny(model, **_kwargs) -> None:
        calls.append(model.name)
        raise ClientError({"Error": {"Code": "AccessDenied", "Message": "denied"},
                           "ResponseMetadata": {"HTTPStatusCode": 403}}, model.name)

    store.client.meta.events.register("before-call.s3.PutObject", deny)
    with pytest.raises(ArtifactError, match="AccessDenied") as info:
        store.put(src, "trial-d/ckpt.bin")
    assert calls == ["PutObject"] and "attempts" not in str(info.value)
