"""A loopback S3 server for the tests (moto's ThreadedMotoServer), started once per session.

`s3_server` starts it on a free loopback port and stops it when the session ends; `s3` points
the AWS environment of one test at it (fixed test credentials, no profile, no instance
metadata) and gives a fresh bucket. Imported by conftest.py so the fixtures are everywhere.
"""

from __future__ import annotations

import contextlib
import json
import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest


@dataclass
class S3:
    """One test's view of the server: its endpoint, a boto3 client and a bucket of its own."""

    endpoint: str
    client: Any
    bucket: str

    def upload(self, folder: Path, prefix: str) -> str:
        """Upload every file of `folder` (recursively) under `prefix`; return its s3:// URL."""
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                key = f"{prefix}/{path.relative_to(folder).as_posix()}"
                self.client.upload_file(str(path), self.bucket, key)
        return f"s3://{self.bucket}/{prefix}"

    def reader(self, denied_prefix: str) -> tuple[str, str]:
        """An IAM user who may read the bucket except under `denied_prefix`: its key pair."""
        iam = _boto3().client("iam", endpoint_url=self.endpoint)
        name = f"reader-{uuid.uuid4().hex[:8]}"
        iam.create_user(UserName=name)
        deny = f"arn:aws:s3:::{self.bucket}/{denied_prefix}/*"
        policy = {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Action": "s3:*", "Resource": "*"},
                {"Effect": "Deny", "Action": "s3:GetObject", "Resource": deny},
            ],
        }
        iam.put_user_policy(UserName=name, PolicyName="read", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName=name)["AccessKey"]
        return key["AccessKeyId"], key["SecretAccessKey"]


def _boto3() -> Any:
    return pytest.importorskip("boto3", reason="needs boto3 (the dev extra)")


def aws_env(monkeypatch: pytest.MonkeyPatch, endpoint: str) -> None:
    """The AWS SDKs' standard variables, pointed at the loopback server, and nothing else."""
    for name, value in {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "AWS_CONFIG_FILE": "/nonexistent/aws-config",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials",
        "AWS_EC2_METADATA_DISABLED": "true",
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """The server's endpoint (http://127.0.0.1:PORT); stopped at the end of the session."""
    pytest.importorskip("obstore", reason="needs obstore (normscope[s3])")
    _boto3()
    server_module = pytest.importorskip("moto.server", reason="needs moto[server] (dev extra)")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no request log on stderr
    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> S3:
    """The AWS environment of this test pointed at the server, and a fresh bucket."""
    aws_env(monkeypatch, s3_server)
    client = _boto3().client("s3", endpoint_url=s3_server)
    bucket = f"ns-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    return S3(s3_server, client, bucket)


@contextlib.contextmanager
def auth_enforced() -> Iterator[None]:
    """The server checks credentials and IAM policies (moto's auth) inside the block."""
    from moto import settings
    from moto.core.responses import ActionAuthenticatorMixin

    before = settings.INITIAL_NO_AUTH_ACTION_COUNT
    settings.INITIAL_NO_AUTH_ACTION_COUNT = 0
    ActionAuthenticatorMixin.request_count = 0
    try:
        yield
    finally:
        settings.INITIAL_NO_AUTH_ACTION_COUNT = before
        ActionAuthenticatorMixin.request_count = 0
