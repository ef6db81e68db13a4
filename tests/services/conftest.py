"""Fixtures of the services tests: an S3-compatible server (moto) on loopback with one bucket."""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import pytest

BUCKET = "sepcore-artifacts"
ACCESS_KEY = "AKIDSEPCORETESTKEY01"
SECRET_KEY = "sepcore-test-secret-do-not-log-9f3a"


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """A moto S3 server on 127.0.0.1, dummy credentials, one bucket.

    The server binds port 0 itself and the test reads the port back (no free-port race); it is a
    thread of this process, stopped also when a test fails.
    """
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        assert host == "127.0.0.1" and port > 0
        url = f"http://{host}:{port}"
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            mp.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
            mp.setenv("AWS_ENDPOINT_URL", url)
            for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
                mp.delenv(var, raising=False)
            boto3.client("s3", endpoint_url=url).create_bucket(Bucket=BUCKET)
            yield url
    finally:
        server.stop()


@pytest.fixture
def s3(s3_endpoint: str):
    """A plain boto3 client of the moto server, to look at the bucket behind the store's back."""
    return boto3.client("s3", endpoint_url=s3_endpoint)
