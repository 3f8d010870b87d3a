"""Issue 10 item 11: a relative ``--output-images`` is resolved on the client.

The worker is a real ``dask worker`` process started in another working directory; the
corrected images must land under the client's working directory. The command runs in this
process (`cli`), from the client's folder: what is tested is where the worker writes, and
a client process of its own would only add its start-up (about 2.5 CPU s).
"""

from __future__ import annotations

import contextlib
import os

import pytest
from cli_helpers import cli
from pipeline.helpers import VISIT, dask_processes


@pytest.mark.slow
def test_relative_output_images_land_under_the_client_cwd(sim4, tmp_path):
    worker_cwd, client_cwd = tmp_path / "worker_cwd", tmp_path / "client_cwd"
    worker_cwd.mkdir()
    client_cwd.mkdir()
    with dask_processes(tmp_path / "cluster", n_workers=1, cwd=worker_cwd) as (address, _, _), \
            contextlib.chdir(client_cwd):
        proc = cli("run", *sim4[:2], "--output", "cat", "--output-images", "images",
                   "--scheduler", address, "--no-progress")
        assert proc.returncode == 0, proc.stdout + proc.stderr
    written = sorted((client_cwd / "images").rglob("*.fits"))
    assert len(written) == 2
    assert all(p.relative_to(client_cwd / "images").parts[0] == str(VISIT) for p in written)
    assert not any(name.endswith(".fits") for _, _, files in os.walk(worker_cwd)
                   for name in files)
