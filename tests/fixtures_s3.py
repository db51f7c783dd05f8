"""S3 test fixtures: a real moto S3 server on 127.0.0.1 (over HTTP, no client mocking).

Register once in ``tests/conftest.py`` with ``pytest_plugins = ["tests.fixtures_s3"]``
(or list it in a test module's ``pytest_plugins``). The module has no asserts to rewrite:
PYTEST_DONT_REWRITE (so test modules may import its helpers before pytest loads it).

- ``moto_server`` (session): starts ``moto.server.ThreadedMotoServer`` on a free port and
  yields its endpoint URL, e.g. ``http://127.0.0.1:53211``.
- ``s3_env`` (function): test credentials and ``SKILLMIX_S3_ENDPOINT_URL`` in the environment
  (AWS profile, config files and other endpoints hidden), a fresh uniquely named bucket, and
  yields ``s3://<bucket>/run-root``; monkeypatch restores the environment afterwards.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

S3_TEST_SECRET = "testing-secret-5f3c1e0b"  # distinctive, so tests can assert it never leaks
S3_TEST_ACCESS_KEY = "testing"
S3_TEST_PREFIX = "run-root"

# Anything in the developer's environment that could point boto3 elsewhere.
_HIDDEN_ENV = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_REGION",
    "AWS_MAX_ATTEMPTS",
    "AWS_RETRY_MODE",
    "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
)


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """A moto S3 server in a thread of this process; yields ``http://127.0.0.1:<port>``."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()  # returns once the socket is bound
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def s3_test_env(monkeypatch: pytest.MonkeyPatch, endpoint: str, tmp: Path) -> None:
    """Point the AWS chain at ``endpoint`` with test credentials, isolated from ~/.aws."""
    for name in _HIDDEN_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", S3_TEST_ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", S3_TEST_SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp / "aws-config-absent"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp / "aws-credentials-absent"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("SKILLMIX_S3_ENDPOINT_URL", endpoint)


def create_bucket(endpoint: str, name: str | None = None) -> str:
    """Create a uniquely named bucket on ``endpoint`` (credentials from the environment)."""
    import boto3.session
    from botocore.config import Config

    bucket = name or f"skillmix-test-{uuid.uuid4().hex[:16]}"
    client = boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, signature_version="s3v4"),
    )
    client.create_bucket(Bucket=bucket)
    return bucket


@pytest.fixture
def s3_env(
    moto_server: str, monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """Test AWS environment aimed at the moto server plus a fresh bucket; yields its URI."""
    s3_test_env(monkeypatch, moto_server, tmp_path_factory.mktemp("aws"))
    bucket = create_bucket(moto_server)
    yield f"s3://{bucket}/{S3_TEST_PREFIX}"
