"""Artifact store for sweep checkpoints: a local folder or an S3 bucket, every object checksummed.

``open_store(uri)`` picks the backend from the URI: ``None`` or a path gives a ``LocalStore``
(default ``./mlartifacts/store``), ``s3://bucket/prefix`` an ``S3Store`` speaking to AWS or any
S3-compatible server (MinIO, moto) through boto3 and the usual AWS variables, ``AWS_ENDPOINT_URL``
included. ``put`` returns only after the stored copy has been verified against the local file's
SHA-256, so a caller (the registry step) only ever records verified URIs; ``get`` verifies again on
the way back.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import shutil
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlparse

from sepcore.redact import redact
from services.errors import ArtifactError

log = logging.getLogger(__name__)

DEFAULT_LOCAL_ROOT = "./mlartifacts/store"
MiB = 1024 * 1024
_HASH_BLOCK = 1 * MiB


@dataclass(frozen=True)
class StoredArtifact:
    """A verified object in the store: its URI, SHA-256 (hex) and size in bytes."""

    uri: str
    sha256: str
    size: int


def sha256_file(path: str | os.PathLike[str]) -> str:
    """SHA-256 (hex) of a file, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_HASH_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def _clean_key(key: str) -> str:
    """A store key as a relative POSIX path; rejects absolute keys, ``..`` and empty keys."""
    parts = PurePosixPath(key.replace("\\", "/")).parts
    if not parts or parts[0] == "/" or any(part in ("..", "") for part in parts):
        raise ArtifactError(f"invalid artifact key {key!r}: must be a relative path without '..'")
    return "/".join(part for part in parts if part != ".")


def _dest_file(dest: str | os.PathLike[str], key: str) -> Path:
    """``dest`` itself, or ``dest/<basename of key>`` when ``dest`` is an existing folder."""
    dest_path = Path(dest)
    if dest_path.is_dir():
        return dest_path / PurePosixPath(key).name
    return dest_path


class ArtifactStore(ABC):
    """Where checkpoints live. Keys are relative POSIX paths (``sweep/trial/ckpt.safetensors``)."""

    @abstractmethod
    def put(self, local_path: str | os.PathLike[str], key: str) -> StoredArtifact:
        """Store ``local_path`` under ``key``; returns only once the stored copy is verified."""

    @abstractmethod
    def get(self, key_or_uri: str, dest: str | os.PathLike[str]) -> Path:
        """Fetch a key (or a URI of this store) to ``dest`` (a file, or an existing folder).

        Raises:
            ArtifactError: the object is missing or its bytes do not match its recorded SHA-256.
        """

    @abstractmethod
    def exists(self, key: str) -> bool:
        """Whether ``key`` is stored (with its checksum)."""

    @abstractmethod
    def sha256_of(self, key: str) -> str:
        """The recorded SHA-256 of ``key`` (from the store's metadata, not recomputed)."""

    @abstractmethod
    def uri_for(self, key: str) -> str:
        """The URI under which ``key`` is (or would be) stored."""


class LocalStore(ArtifactStore):
    """A folder: ``<root>/<key>`` plus ``<root>/<key>.sha256``, both written atomically."""

    def __init__(self, root: str | os.PathLike[str] = DEFAULT_LOCAL_ROOT):
        self.root = Path(root).expanduser().resolve()

    def _path(self, key: str) -> Path:
        return self.root / _clean_key(key)

    def _key_of(self, key_or_uri: str) -> str:
        """A key from a key, a ``file://`` URI or an absolute path under ``root``."""
        if key_or_uri.startswith("file://"):
            path = Path(unquote(urlparse(key_or_uri).path))
        elif os.path.isabs(key_or_uri):
            path = Path(key_or_uri)
        else:
            return _clean_key(key_or_uri)
        try:
            return path.resolve().relative_to(self.root).as_posix()
        except ValueError as err:
            raise ArtifactError(f"{key_or_uri!r} is not inside the store at {self.root}") from err

    def put(self, local_path: str | os.PathLike[str], key: str) -> StoredArtifact:
        source = Path(local_path)
        if not source.is_file():
            raise ArtifactError(f"cannot store {source}: not a file")
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        digest = sha256_file(source)
        _replace_if_verified(
            _copy_to_temp(source, target.parent), target, digest,
            lambda copied: f"copy of {source} to {target} does not verify "
                           f"(sha256 {copied} != {digest})")
        _write_text_atomic(target.with_name(target.name + ".sha256"), digest + "\n")
        size = target.stat().st_size
        uri = target.as_uri()
        log.info("stored %s (%d bytes, sha256 %s)", redact(uri), size, digest)
        return StoredArtifact(uri=uri, sha256=digest, size=size)

    def get(self, key_or_uri: str, dest: str | os.PathLike[str]) -> Path:
        key = self._key_of(key_or_uri)
        source = self._path(key)
        if not source.is_file():
            raise ArtifactError(f"no artifact {key!r} in {self.root}")
        expected = self.sha256_of(key)
        target = _dest_file(dest, key)
        target.parent.mkdir(parents=True, exist_ok=True)
        _replace_if_verified(
            _copy_to_temp(source, target.parent), target, expected,
            lambda actual: f"artifact {self.uri_for(key)} is corrupted: sha256 {actual}, "
                           f"recorded {expected}")
        return target

    def exists(self, key: str) -> bool:
        path = self._path(key)
        return path.is_file() and path.with_name(path.name + ".sha256").is_file()

    def sha256_of(self, key: str) -> str:
        path = self._path(key)
        checksum = path.with_name(path.name + ".sha256")
        try:
            return checksum.read_text().split()[0]
        except (FileNotFoundError, IndexError) as err:
            raise ArtifactError(f"no recorded sha256 for artifact {key!r} ({checksum})") from err

    def uri_for(self, key: str) -> str:
        return self._path(key).as_uri()


def _copy_to_temp(source: Path, folder: Path) -> Path:
    """Copy ``source`` to a hidden temp file in ``folder`` (same filesystem as the target)."""
    fd, name = tempfile.mkstemp(dir=folder, prefix=f".{source.name}.", suffix=".tmp")
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as out, open(source, "rb") as src:
            shutil.copyfileobj(src, out, _HASH_BLOCK)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def _replace_if_verified(tmp: Path, target: Path, expected: str,
                         mismatch: Callable[[str], str]) -> None:
    """Move ``tmp`` onto ``target`` only if its SHA-256 is ``expected``; ``tmp`` never lingers.

    ``mismatch(actual_digest)`` words the ArtifactError raised otherwise.
    """
    try:
        actual = sha256_file(tmp)
        if actual != expected:
            raise ArtifactError(mismatch(actual))
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _write_text_atomic(path: Path, text: str) -> None:
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.replace(name, path)
    finally:
        Path(name).unlink(missing_ok=True)


_TRANSIENT_CODES = frozenset({
    "InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout", "Throttling",
    "ThrottlingException", "RequestLimitExceeded", "TooManyRequests", "500", "502", "503", "504",
})


def _transient(err: BaseException) -> bool:
    """Whether an S3 failure may pass by waiting: 5xx and throttling answers, dropped or timed-out
    connections. Access, credential and parameter errors are not retried."""
    from boto3.exceptions import RetriesExceededError, S3UploadFailedError
    from botocore.exceptions import (
        ChecksumError,
        ClientError,
        ConnectionError,
        HTTPClientError,
        IncompleteReadError,
    )

    if isinstance(err, S3UploadFailedError) and err.__context__ is not None:
        err = err.__context__  # boto3 wraps the part's ClientError in S3UploadFailedError
    if isinstance(err, ConnectionError | HTTPClientError | IncompleteReadError | ChecksumError
                  | RetriesExceededError):
        return True
    if isinstance(err, ClientError):
        status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        code = str(err.response.get("Error", {}).get("Code", ""))
        return status >= 500 or status == 429 or code in _TRANSIENT_CODES
    return False


def _reason(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"


class S3Store(ArtifactStore):
    """``s3://bucket/prefix`` through boto3; the SHA-256 travels as object metadata ``sha256``.

    Transient failures (5xx and throttling answers, dropped connections, timeouts) of a put, a get
    or a metadata read are retried with exponential backoff (``backoff_s`` doubled per attempt,
    capped at ``max_backoff_s``, with jitter) until ``retry_window_s`` has passed since the first
    attempt, so an endpoint that refuses requests for a minute does not lose a checkpoint. Each
    retry logs one warning with its reason. Other failures (access denied, missing bucket) raise at
    once. A failed upload attempt leaves nothing under the key: S3 writes an object only once a
    PUT or a multipart upload completes, unfinished multipart uploads are aborted, and a completed
    upload whose metadata does not verify is deleted.

    Args:
        bucket: bucket name.
        prefix: key prefix inside the bucket (no leading/trailing slash needed).
        endpoint_url: S3-compatible endpoint; ``None`` lets boto3 read ``AWS_ENDPOINT_URL``.
        multipart_threshold: files at least this big go multipart (default 64 MiB).
        multipart_chunksize: part size (default 16 MiB; S3's minimum is 5 MiB).
        retry_window_s: no new attempt starts later than this after the first one (default 60 s).
        backoff_s: sleep before the 2nd attempt, doubled for each later one.
        max_backoff_s: the longest sleep between two attempts (default 8 s).
        max_attempts: also stop after this many attempts (default: only the window limits them).
        client: a ready boto3 S3 client (tests, custom sessions); built from the env otherwise.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        multipart_threshold: int = 64 * MiB,
        multipart_chunksize: int = 16 * MiB,
        retry_window_s: float = 60.0,
        backoff_s: float = 0.5,
        max_backoff_s: float = 8.0,
        max_attempts: int | None = None,
        client: Any | None = None,
    ):
        import boto3
        from boto3.s3.transfer import TransferConfig

        if not bucket:
            raise ArtifactError("S3 artifact store needs a bucket name", key="artifacts.uri")
        if max_attempts is not None and max_attempts < 1:
            raise ArtifactError(f"max_attempts must be >= 1, got {max_attempts}",
                                key="artifacts.max_attempts")
        for option, value in (("retry_window_s", retry_window_s), ("backoff_s", backoff_s),
                              ("max_backoff_s", max_backoff_s)):
            if not value >= 0:
                raise ArtifactError(f"{option} must be >= 0, got {value}",
                                    key=f"artifacts.{option}")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.retry_window_s = float(retry_window_s)
        self.backoff_s = float(backoff_s)
        self.max_backoff_s = float(max_backoff_s)
        self.max_attempts = max_attempts
        self.transfer_config = TransferConfig(
            multipart_threshold=multipart_threshold, multipart_chunksize=multipart_chunksize
        )
        self.client = client or boto3.session.Session().client("s3", endpoint_url=endpoint_url)

    def object_key(self, key: str) -> str:
        """The full S3 object key of a store key (``prefix/key``)."""
        key = _clean_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def uri_for(self, key: str) -> str:
        return f"s3://{self.bucket}/{self.object_key(key)}"

    def _object_key_of(self, key_or_uri: str) -> str:
        if not key_or_uri.startswith("s3://"):
            return self.object_key(key_or_uri)
        parsed = urlparse(key_or_uri)
        if parsed.netloc != self.bucket:
            raise ArtifactError(f"{key_or_uri!r} is not in bucket {self.bucket!r}")
        return _clean_key(parsed.path.lstrip("/"))

    def _retrying(self, what: str, attempt: Callable[[], Any],
                  on_failure: Callable[[], None] | None = None) -> Any:
        """Run ``attempt`` until it succeeds, fails for good, or the retry window is spent.

        ``what`` names the operation and its URI in warnings and errors; ``on_failure`` cleans up
        after each failed attempt (e.g. aborts an unfinished multipart upload).

        Raises:
            ArtifactError: a failure that is not transient, or the last transient one.
        """
        from boto3.exceptions import Boto3Error
        from botocore.exceptions import BotoCoreError, ClientError

        start = time.monotonic()
        number = 0
        while True:
            number += 1
            try:
                return attempt()
            except (BotoCoreError, ClientError, Boto3Error) as err:
                if on_failure is not None:
                    on_failure()
                elapsed = time.monotonic() - start
                left = self.retry_window_s - elapsed
                if not _transient(err):
                    raise ArtifactError(f"{what} failed: {_reason(err)}") from err
                if left <= 0 or (self.max_attempts is not None and number >= self.max_attempts):
                    raise ArtifactError(
                        f"{what} failed after {number} attempts over {elapsed:.1f} s "
                        f"(retry window {self.retry_window_s:g} s): {_reason(err)}"
                    ) from err
                delay = min(self.max_backoff_s, self.backoff_s * 2 ** (number - 1))
                delay = min(left, delay * random.uniform(0.5, 1.0))
                log.warning(
                    "%s failed (attempt %d, %.1f s into a %g s retry window): %s; "
                    "retrying in %.1f s", what, number, elapsed, self.retry_window_s,
                    _reason(err), delay)
                time.sleep(delay)

    def _head(self, object_key: str) -> dict[str, Any] | None:
        from botocore.exceptions import ClientError

        try:
            return self.client.head_object(Bucket=self.bucket, Key=object_key)
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise

    def _head_retrying(self, object_key: str) -> dict[str, Any] | None:
        return self._retrying(f"metadata read of s3://{self.bucket}/{object_key}",
                              lambda: self._head(object_key))

    def put(self, local_path: str | os.PathLike[str], key: str) -> StoredArtifact:
        source = Path(local_path)
        if not source.is_file():
            raise ArtifactError(f"cannot store {source}: not a file")
        object_key = self.object_key(key)
        uri = f"s3://{self.bucket}/{object_key}"
        digest = sha256_file(source)
        size = source.stat().st_size
        completed = []  # an attempt's upload finished but did not verify: remove it at the end

        def attempt() -> None:
            self.client.upload_file(
                str(source),
                self.bucket,
                object_key,
                Config=self.transfer_config,
                ExtraArgs={"Metadata": {"sha256": digest}},
            )
            completed.append(True)
            self._verify_upload(object_key, digest, size)

        try:
            self._retrying(f"upload of {source.name} to {uri}", attempt,
                           on_failure=lambda: self._abort_multipart(object_key))
        except ArtifactError:
            if completed:
                self._delete_quietly(object_key)
            raise
        log.info("uploaded %s (%d bytes, sha256 %s)", redact(uri), size, digest)
        return StoredArtifact(uri=uri, sha256=digest, size=size)

    def _verify_upload(self, object_key: str, digest: str, size: int) -> None:
        """Check the stored object's metadata sha256 and length; delete it and raise if wrong."""
        head = self._head(object_key)
        uri = f"s3://{self.bucket}/{object_key}"
        if head is None:
            raise ArtifactError(f"uploaded object {uri} is missing after upload")
        remote_digest = head.get("Metadata", {}).get("sha256")
        remote_size = head.get("ContentLength")
        if remote_digest != digest or remote_size != size:
            self.client.delete_object(Bucket=self.bucket, Key=object_key)
            raise ArtifactError(
                f"uploaded object {uri} does not verify (sha256 {remote_digest}, "
                f"{remote_size} bytes; expected {digest}, {size} bytes); deleted it"
            )

    def _delete_quietly(self, object_key: str) -> None:
        """Best-effort removal of an object whose upload could not be verified."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.delete_object(Bucket=self.bucket, Key=object_key)
        except (BotoCoreError, ClientError) as err:
            log.warning("could not delete unverified s3://%s/%s: %s", self.bucket, object_key, err)

    def _abort_multipart(self, object_key: str) -> None:
        """Abort any unfinished multipart upload of ``object_key`` so no parts linger."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            listing = self.client.list_multipart_uploads(Bucket=self.bucket, Prefix=object_key)
            for upload in listing.get("Uploads", []):
                if upload.get("Key") != object_key:
                    continue
                self.client.abort_multipart_upload(
                    Bucket=self.bucket, Key=object_key, UploadId=upload["UploadId"]
                )
                log.info(
                    "aborted unfinished multipart upload of s3://%s/%s", self.bucket, object_key
                )
        except (BotoCoreError, ClientError) as err:
            log.warning(
                "could not clean up multipart uploads of s3://%s/%s: %s",
                self.bucket,
                object_key,
                err,
            )

    def get(self, key_or_uri: str, dest: str | os.PathLike[str]) -> Path:
        object_key = self._object_key_of(key_or_uri)
        uri = f"s3://{self.bucket}/{object_key}"
        target = _dest_file(dest, object_key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        os.close(fd)
        tmp = Path(name)

        def attempt() -> str:
            head = self._head(object_key)
            if head is None:
                raise ArtifactError(f"no artifact at {uri}")
            digest = head.get("Metadata", {}).get("sha256")
            if not digest:
                raise ArtifactError(f"artifact {uri} has no sha256 metadata; cannot verify it")
            self.client.download_file(
                self.bucket, object_key, str(tmp), Config=self.transfer_config
            )
            return digest

        try:  # nothing half-downloaded lingers, whatever the failure
            expected = self._retrying(f"download of {uri}", attempt)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _replace_if_verified(
            tmp, target, expected,
            lambda actual: f"artifact {uri} is corrupted: sha256 {actual}, recorded {expected}")
        return target

    def exists(self, key: str) -> bool:
        return self._head_retrying(self.object_key(key)) is not None

    def sha256_of(self, key: str) -> str:
        head = self._head_retrying(self.object_key(key))
        digest = (head or {}).get("Metadata", {}).get("sha256")
        if not digest:
            raise ArtifactError(f"no recorded sha256 for {self.uri_for(key)}")
        return digest


def open_store(uri: str | None = None, **options: Any) -> ArtifactStore:
    """The artifact store for ``uri``.

    Args:
        uri: ``None`` (``./mlartifacts/store``), a folder path or ``file://`` URI, or
            ``s3://bucket/prefix``.
        **options: passed to ``S3Store`` for S3 URIs (``endpoint_url``, ``multipart_threshold``,
            ``multipart_chunksize``, ``retry_window_s``, ``backoff_s``, ``max_backoff_s``,
            ``max_attempts``, ``client``).
    """
    if uri is None or uri == "":
        return LocalStore(DEFAULT_LOCAL_ROOT)
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        return S3Store(parsed.netloc, parsed.path.strip("/"), **options)
    if options:
        raise ArtifactError(
            f"options {sorted(options)} apply only to s3:// stores, not {uri!r}",
            key="artifacts",
        )
    if parsed.scheme == "file":
        return LocalStore(unquote(parsed.path))
    if parsed.scheme and len(parsed.scheme) > 1:  # one letter: a Windows drive, i.e. a path
        raise ArtifactError(
            f"unsupported artifact store URI {uri!r}: use a path, file:// or s3://",
            key="artifacts.uri",
        )
    return LocalStore(uri)
