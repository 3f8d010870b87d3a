"""Issue 10 item 11: a relative ``--output-images`` is resolved on the client.

The worker is a real ``dask worker`` process started in another working directory; the
corrected images must land under the client's working directory.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from pipeline.helpers import VISIT, wait_for

from .conftest import run_cli


@pytest.mark.slow
def test_relative_output_images_land_under_the_client_cwd(sim4, tmp_path, cli_env):
    worker_cwd, client_cwd = tmp_path / "worker_cwd", tmp_path / "client_cwd"
    worker_cwd.mkdir()
    client_cwd.mkdir()
    sfile = tmp_path / "scheduler.json"
    log = open(tmp_path / "cluster.log", "w")
    procs = [subprocess.Popen(
        [sys.executable, "-m", "dask", "scheduler", "--host", "127.0.0.1", "--port", "0",
         "--no-dashboard", "--scheduler-file", str(sfile)], cwd=worker_cwd, stdout=log,
        stderr=subprocess.STDOUT, env=cli_env, start_new_session=True)]
    try:
        wait_for(lambda: sfile.exists() and sfile.stat().st_size > 0, 60, 0.05, "scheduler")
        address = json.loads(sfile.read_text())["address"]
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "dask", "worker", address, "--nthreads", "1", "--no-nanny",
             "--no-dashboard", "--host", "127.0.0.1"], cwd=worker_cwd, stdout=log,
            stderr=subprocess.STDOUT, env=cli_env, start_new_session=True))
        proc = run_cli(cli_env, "run", *sim4[:2], "--output", "cat", "--output-images",
                       "images", "--scheduler", address, "--no-progress", cwd=client_cwd)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        log.close()
    written = sorted((client_cwd / "images").rglob("*.fits"))
    assert len(written) == 2
    assert all(p.relative_to(client_cwd / "images").parts[0] == str(VISIT) for p in written)
    assert not any(name.endswith(".fits") for _, _, files in os.walk(worker_cwd)
                   for name in files)
