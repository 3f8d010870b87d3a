"""Real S3-compatible servers on 127.0.0.1 for the object-store tests (moto's server mode)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

KEYS = {"AWS_ACCESS_KEY_ID": "testing-key", "AWS_SECRET_ACCESS_KEY": "testing-secret",
        "AWS_DEFAULT_REGION": "us-east-1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_moto_server(*, auth: bool = False) -> tuple[str, subprocess.Popen]:
    """Start a ``moto_server`` process on 127.0.0.1 and a random port, in its own session;
    return its endpoint URL and the process once it accepts connections.

    ``auth=True`` makes the server check credentials from the first request on (unknown keys
    are refused with 403), as a real store does.
    """
    port = free_port()
    env = dict(os.environ)
    if auth:
        env["INITIAL_NO_AUTH_ACTION_COUNT"] = "0"
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return f"http://127.0.0.1:{port}", proc
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                raise RuntimeError("moto_server did not start") from None
            time.sleep(0.1)


@contextlib.contextmanager
def moto_server(*, auth: bool = False) -> Iterator[str]:
    """A ``moto_server`` of its own for the block (`start_moto_server`); yields its URL.
    Tests that only need a server use the run's (the ``s3_endpoint`` fixtures)."""
    url, proc = start_moto_server(auth=auth)
    try:
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def bucket_name(label: str) -> str:
    """A valid bucket name (3-63 characters of ``a-z0-9-``) made of ``label`` and this
    process's id: unique on a server that the run's test processes share."""
    clean = "".join(c if c.isalnum() else "-" for c in label.lower()).strip("-")
    return f"b{os.getpid()}-{clean[-48:]}".rstrip("-")


def s3_client(endpoint: str):
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=KEYS["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=KEYS["AWS_SECRET_ACCESS_KEY"],
                        region_name=KEYS["AWS_DEFAULT_REGION"])
