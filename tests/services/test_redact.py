"""Credentials masked in URIs, text lines and nested configs; URIs split into URI + basic auth."""

from __future__ import annotations

import pytest

from services.redact import MASK, is_secret_name, redact, redact_data, split_credentials

SECRET = "hunter2-Zq9"


@pytest.mark.parametrize("text, expected", [
    (f"http://alice:{SECRET}@mlflow:5000/api", "http://***@mlflow:5000/api"),
    (f"https://{SECRET}@github.com/org/repo", "https://***@github.com/org/repo"),
    (f"see postgresql://mlflow:{SECRET}@db:5432/mlflow and retry",
     "see postgresql://***@db:5432/mlflow and retry"),
    (f"s3://b/k?X-Amz-Signature={SECRET}&X-Amz-Credential=AKID%2F1&part=2"
     f"&X-Amz-Security-Token={SECRET}",
     "s3://b/k?X-Amz-Signature=***&X-Amz-Credential=***&part=2&X-Amz-Security-Token=***"),
    (f"https://h/x?token={SECRET}&page=2&key={SECRET}&sig={SECRET}",
     "https://h/x?token=***&page=2&key=***&sig=***"),
    (f"MLFLOW_TRACKING_PASSWORD={SECRET} next", "MLFLOW_TRACKING_PASSWORD=*** next"),
    (f"--env WANDB_API_KEY={SECRET}", "--env WANDB_API_KEY=***"),
    (f"tracking.uri=http://u:{SECRET}@h:1", "tracking.uri=http://***@h:1"),
])
def test_redact_masks_secrets(text, expected):
    assert redact(text) == expected
    assert SECRET not in redact(text)
    assert redact(redact(text)) == redact(text)  # idempotent


@pytest.mark.parametrize("text", [
    "sqlite:////var/lib/mlflow/a@b.db",  # no userinfo: an '@' in a path
    "mlflow-artifacts:/3/abc/artifacts",
    "s3://bucket/prefix/model.safetensors",
    "num_tokens=5 max_tokens=7 key_frames=3 monkey=1",  # names that only contain the words
    "http://127.0.0.1:5000/#/experiments/1?page=2",
    "models:/sepcore-bands@champion",
])
def test_redact_leaves_ordinary_text(text):
    assert redact(text) == text


@pytest.mark.parametrize("name, secret", [
    ("password", True), ("db_password", True), ("MLFLOW_TRACKING_PASSWORD", True),
    ("clientSecret", True), ("api_key", True), ("apiKey", True), ("AWS_SECRET_ACCESS_KEY", True),
    ("AWS_ACCESS_KEY_ID", True), ("auth_token", True), ("x.y.token", True),
    ("num_tokens", False), ("tokenizer", False), ("key", False), ("keys", False),
    ("secretary_count", False), ("passage", False), ("model.masker.X", False),
])
def test_secret_names(name, secret):
    assert is_secret_name(name) is secret


def test_redact_data_masks_keys_and_values_and_copies():
    config = {"model": {"num_tokens": 8, "name": "multiband"},
              "tracking": {"uri": f"http://u:{SECRET}@h:5000", "password": SECRET,
                           "token": ""},
              "list": [f"https://h/?token={SECRET}", 3, None],
              "pair": (f"https://{SECRET}@h",)}
    out = redact_data(config)
    assert out == {"model": {"num_tokens": 8, "name": "multiband"},
                   "tracking": {"uri": "http://***@h:5000", "password": MASK, "token": ""},
                   "list": ["https://h/?token=***", 3, None], "pair": ("https://***@h",)}
    assert config["tracking"]["password"] == SECRET  # the input is not changed


@pytest.mark.parametrize("uri, clean, credentials", [
    (f"http://alice:{SECRET}@127.0.0.1:5000/x?y=1", "http://127.0.0.1:5000/x?y=1",
     ("alice", SECRET)),
    ("https://al%40ice:p%3Aw@mlflow.example.org", "https://mlflow.example.org",
     ("al@ice", "p:w")),
    ("http://127.0.0.1:5000", "http://127.0.0.1:5000", None),
    ("http://h/path@x", "http://h/path@x", None),
    ("sqlite:////tmp/a@b.db", "sqlite:////tmp/a@b.db", None),
])
def test_split_credentials(uri, clean, credentials):
    assert split_credentials(uri) == (clean, credentials)


def test_the_stack_s3_server_masks_presigned_urls_in_its_access_log():
    """services.s3_server: werkzeug's access-log record of a presigned GET (MLflow redirects some
    artifact downloads to one) loses the access key id and the signature."""
    import logging

    from services.s3_server import _Redacting

    line = ('GET /sepcore/a/sweep.json?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential='
            'SEPKEYID123/20261202/us-east-1/s3/aws4_request&X-Amz-Signature=9fda11 HTTP/1.1')
    record = logging.LogRecord("werkzeug", logging.INFO, __file__, 1, '%s - - [%s] "%s" %s -',
                               ("10.0.0.1", "02/Dec/2026", line, "200"), None)
    assert _Redacting().filter(record)
    text = record.getMessage()
    assert "SEPKEYID123" not in text and "9fda11" not in text
    assert text.startswith("10.0.0.1 - - [02/Dec/2026]") and "sweep.json" in text
