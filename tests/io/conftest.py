"""Fixtures for the I/O tests."""

from __future__ import annotations

import pytest
from io_helpers import kast_camera_doc, tiny_raw_camera_doc
from s3_server import KEYS, bucket_name, s3_client

from ampoffset_dask.cameras import Camera


@pytest.fixture
def kast_camera() -> Camera:
    return Camera.from_dict(kast_camera_doc())


@pytest.fixture
def tiny_camera() -> Camera:
    return Camera.from_dict(tiny_raw_camera_doc())


@pytest.fixture
def s3_bucket(s3_endpoint, monkeypatch, tmp_path):
    """The environment pointing at the session's S3 server (credentials, endpoint), an
    empty bucket of this test and a boto3 client: ``(bucket, client)``."""
    for k, v in KEYS.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    client = s3_client(s3_endpoint)
    bucket = bucket_name(tmp_path.name)
    client.create_bucket(Bucket=bucket)
    return bucket, client
