"""deploy/local/start-cluster.sh: a real scheduler and workers on 127.0.0.1.

Starts the script, connects a distributed.Client, checks the workers' shape and the /health
endpoints the Kubernetes probes use, runs `ampoffset-dask simulate` + `ampoffset-dask run
--scheduler tcp://127.0.0.1:PORT` through it, then stops it and checks nothing is left.
"""

from __future__ import annotations

import os
import subprocess
import urllib.error
import urllib.request

import numpy as np
import pandas as pd
import pytest
from cli_helpers import cli
from conftest import DEPLOY, free_port
from dask.utils import parse_bytes
from distributed import Client

SCRIPT = DEPLOY / "local" / "start-cluster.sh"


def script(action: str, *args: str, env: dict, timeout: float = 120):
    return subprocess.run(
        ["bash", str(SCRIPT), action, *args],
        capture_output=True, text=True, env=env, timeout=timeout, check=False,
    )


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def health(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as response:
        return response.read().decode()


@pytest.fixture
def cluster(tmp_path, cli_env):
    port, dashboard = free_port(), free_port()
    run_dir = tmp_path / "cluster"
    # no bokeh pages (~1 s of CPU less per process): tests/reliability/test_deploy_bind.py
    # starts the script with them
    args = ("--port", str(port), "--dashboard-port", str(dashboard), "--workers", "2",
            "--memory-limit", "1GiB", "--run-dir", str(run_dir), "--no-dashboard")
    started = script("start", *args, env=cli_env)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        pids = [int(p.read_text()) for p in sorted(run_dir.glob("*.pid"))]
        yield {"port": port, "dashboard": dashboard, "run_dir": run_dir, "pids": pids,
               "stdout": started.stdout}
    finally:
        stopped = script("stop", *args, env=cli_env)
    assert stopped.returncode == 0, stopped.stderr
    assert not any(alive(pid) for pid in pids)
    assert list(run_dir.glob("*.pid")) == []


@pytest.mark.slow
def test_start_cluster_runs_the_cli_on_a_real_scheduler(cluster, tmp_path, cli_env):
    port = cluster["port"]
    address = f"tcp://127.0.0.1:{port}"
    assert f"scheduler: {address}" in cluster["stdout"]
    assert len(cluster["pids"]) == 3  # scheduler + 2 workers

    with Client(address, timeout=30) as client:
        info = client.scheduler_info(n_workers=-1)
        workers = info["workers"]
        assert len(workers) == 2
        assert sorted(w["name"] for w in workers.values()) == ["local-0", "local-1"]
        assert all(w["nthreads"] == 1 for w in workers.values())
        assert all(w["memory_limit"] == parse_bytes("1GiB") for w in workers.values())
        assert all(w["host"] == "127.0.0.1" for w in workers.values())
        # The HTTP endpoints behind the Kubernetes liveness/readiness probes.
        assert health(cluster["dashboard"]) == "ok"
        for w in workers.values():
            assert health(w["services"]["dashboard"]) == "ok"
        # --no-dashboard: the HTTP server has no bokeh pages
        with pytest.raises(urllib.error.HTTPError, match="404"):
            urllib.request.urlopen(f"http://127.0.0.1:{cluster['dashboard']}/status",
                                   timeout=10)

        data, catalog = tmp_path / "visit", tmp_path / "catalog"
        sim = cli("simulate", "--detectors", "R22_S11,R22_S12,R22_S21", "--scale", "0.1",
                  "--out", data)
        assert sim.returncode == 0, sim.stdout + sim.stderr
        run = cli("run", data, "--output", catalog, "--scheduler", address, "--no-progress")
        assert run.returncode == 0, run.stdout + run.stderr
        # The detector tasks ran on this scheduler's workers.
        prefixes = client.run_on_scheduler(
            lambda dask_scheduler: sorted(dask_scheduler.task_prefixes)
        )
        assert any(p.startswith("ampoffset") for p in prefixes), prefixes

    detectors = pd.read_parquet(catalog / "detectors")
    assert sorted(detectors["detector"]) == ["R22_S11", "R22_S12", "R22_S21"]
    assert set(detectors["status"]) == {"ok"}
    pedestals = pd.read_parquet(catalog / "pedestals")
    assert len(pedestals) == 3 * 16
    assert np.isfinite(pedestals["pedestal"]).all()

    # Same numbers as measuring one detector directly in this process.
    from ampoffset_dask import measure_detector
    from ampoffset_dask.io.fits import read_exposure

    path = next(data.glob("*R22_S12*.fits"))
    exposure = read_exposure(path)
    direct = measure_detector(exposure.image, exposure.mask, exposure.detector,
                              mask_planes=exposure.mask_planes)
    mine = pedestals[pedestals["detector"] == "R22_S12"].set_index("amp").loc[
        list(direct.amp_names), "pedestal"
    ]
    np.testing.assert_allclose(mine.to_numpy(), direct.pedestals, rtol=0, atol=1e-9)


def test_start_cluster_rejects_unknown_options(cli_env):
    proc = script("start", "--wokers", "2", env=cli_env)
    assert proc.returncode == 2
    assert "unknown option '--wokers'" in proc.stderr
