"""Clusters of real processes: `process` on `dask scheduler`/`dask worker` processes equal to
direct calls, a killed worker, TLS, specs."""

from __future__ import annotations

import json
import os
import signal
from concurrent.futures import ThreadPoolExecutor

import dask
import pandas as pd
import pytest
from cli_helpers import cli
from distributed import Client

from ampoffset_dask import ConfigError, process, read_catalog
from ampoffset_dask.pipeline import get_client
from ampoffset_dask.pipeline.cluster import local_cluster_size

from .helpers import (
    VISIT,
    assert_catalog_matches,
    dask_processes,
    journal_lines,
    make_certificates,
    wait_for,
)


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory):
    """A real scheduler and two worker processes of this module's own, for the two tests
    below that inspect and kill its workers (on the session's shared workers other test
    processes' tasks, a notebook's, may keep one worker busy for a whole run). Their
    xdist group keeps them in one test process, in this order: the second kills a worker."""
    with dask_processes(tmp_path_factory.mktemp("cluster"), n_workers=2) as cluster:
        yield cluster


@pytest.mark.xdist_group("two-workers")
def test_local_cluster_matches_direct_calls(sim_visit, sim_dir, direct, two_workers, tmp_path):
    address, workers, _ = two_workers
    assert all(w.poll() is None for w in workers), "a worker died before this test"
    with Client(address) as client:
        client.wait_for_workers(2, timeout=120)
        _matches_direct_calls(sim_visit, sim_dir, direct, client, tmp_path)


def _matches_direct_calls(sim_visit, sim_dir, direct, client, tmp_path):
    cat = tmp_path / "cat"
    summary = process(sim_dir, cat, client=client, progress=False)
    assert (summary.n_inputs, summary.n_submitted, summary.n_ok, summary.n_failed) == (9, 9, 9, 0)
    assert summary.ok and summary.failed == [] and summary.catalog == cat
    assert_catalog_matches(cat, direct)

    det = read_catalog(cat, "detectors")
    assert len(det) == 9 and set(det["status"]) == {"ok"}
    assert set(det["visit"]) == {VISIT}
    assert (det["n_amps"] == 16).all() and (det["n_interfaces"] == 22).all()
    assert det["worker"].nunique() == 2  # both worker processes took part
    assert set(det["input"]) == {str(p.resolve()) for p in sim_visit.paths}
    runs = read_catalog(cat, "runs")
    assert len(runs) == 1 and runs["status"].iloc[0] == "finished"
    assert runs["n_ok"].iloc[0] == 9
    inputs = json.loads(runs["inputs"].iloc[0])
    assert len(inputs) == 9 and all(i["size"] > 0 and i["mtime"] for i in inputs)
    assert set(json.loads(runs["timings"].iloc[0])) >= {"discover", "plan", "compute", "total"}
    # pandas and the hive layout agree
    assert len(pd.read_parquet(cat / "pedestals")) == 9 * 16

    # Resume: nothing to do, nothing duplicated.
    again = process(sim_dir, cat, client=client, progress=False)
    assert (again.n_skipped, again.n_submitted, again.n_ok) == (9, 0, 0)
    assert_catalog_matches(cat, direct)
    # A different config is refused unless a new run is asked for.
    with pytest.raises(ConfigError, match="different configuration"):
        process(sim_dir, cat, client=client, progress=False,
                config={"ampEdgeMaxOffset": 2.0})


@pytest.mark.xdist_group("two-workers")
def test_cli_against_scheduler_with_a_worker_killed(sim_dir, direct, two_workers, tmp_path):
    """`ampoffset-dask run --scheduler tcp://...`; a busy worker is SIGKILLed mid-run."""
    cat = tmp_path / "cat"
    address, workers, _sfile = two_workers
    with Client(address, timeout=60) as watcher:
        watcher.wait_for_workers(2, timeout=60)
        pids = watcher.run(os.getpid)  # {worker address: pid}
        # the command runs in this process (a thread): the worker is what gets killed
        with ThreadPoolExecutor(1) as pool:
            run = pool.submit(cli, "run", sim_dir, "--output", cat, "--scheduler", address,
                              "--max-in-flight", "2", "--no-progress")

            # wait until the run is under way and a worker holds one of its tasks; that
            # worker is the one killed (asking again could find none: tasks are short)
            busy: list[str] = []

            def found_busy_worker():
                if journal_lines(cat) >= 1:
                    for addr, keys in watcher.processing().items():
                        if any(str(k).startswith("ampoffset-") for k in keys):
                            busy.append(addr)
                            return True
                return run.done()

            wait_for(found_busy_worker, 120, what="a busy worker")
            assert not run.done(), "the run ended before a worker could be killed"
            os.kill(pids[busy[0]], signal.SIGKILL)
            proc = run.result(timeout=180)
        assert proc.returncode == 0, proc.stderr
        alive = [w for w in workers if w.poll() is None]
        assert len(alive) == 1  # one worker really died
    assert_catalog_matches(cat, direct)
    det = read_catalog(cat, "detectors")
    assert len(det) == 9 and set(det["status"]) == {"ok"}
    runs = read_catalog(cat, "runs")
    assert runs["scheduler"].iloc[0] == address


def test_tls_end_to_end(sim_visit, direct, tmp_path):
    certs = make_certificates(tmp_path / "certs")
    cat = tmp_path / "cat"
    with dask_processes(tmp_path / "cluster", n_workers=1, tls=certs) as (address, _, sfile):
        assert address.startswith("tls://")
        # without certificates the client refuses to start
        with dask.config.set({"distributed.comm.tls.ca-file": None,
                              "distributed.comm.tls.client.cert": None,
                              "distributed.comm.tls.client.key": None}), \
                pytest.raises(ConfigError, match="TLS"):
            get_client(address)
        with dask.config.set({"distributed.comm.tls.ca-file": certs["ca"],
                              "distributed.comm.tls.client.cert": certs["cert"],
                              "distributed.comm.tls.client.key": certs["key"],
                              "distributed.comm.require-encryption": True}):
            summary = process(sim_visit.paths[:3], cat, client=address, progress=False)
            assert summary.n_ok == 3
            # the scheduler file works too, and is used as is
            with get_client(str(sfile)) as client:
                assert client.scheduler.address == address
    pedestals, interfaces = direct
    names = {p.name.split("_", 2)[2].removesuffix(".fits") for p in sim_visit.paths[:3]}
    expected = (pedestals[pedestals["detector"].isin(names)].reset_index(drop=True),
                interfaces[interfaces["detector"].isin(names)].reset_index(drop=True))
    assert_catalog_matches(cat, expected)


def _polling(dask_worker=None, dask_scheduler=None) -> dict:
    """The intervals (ms) of a worker's or the scheduler's periodic callbacks."""
    server = dask_worker or dask_scheduler
    callbacks = server.periodic_callbacks
    out = {"profile": "profile" in callbacks}
    out.update({k: callbacks[k].callback_time for k in ("tick", "monitor", "memory_monitor")
                if k in callbacks})
    return out


def test_local_spec_and_errors():
    workers, limit = local_cluster_size()
    assert workers >= 1 and limit >= 256 * 2**20
    with get_client("local:1", memory_limit="600MiB") as client:
        info = client.scheduler_info()["workers"]
        assert len(info) == 1
        (worker,) = info.values()
        assert worker["nthreads"] == 1
        assert worker["memory_limit"] == 600 * 2**20
        # one BLAS thread, and glibc's own malloc tuning (no MALLOC_TRIM_THRESHOLD_)
        (env,) = client.run(lambda: (os.environ.get("OMP_NUM_THREADS"),
                                     os.environ.get("MALLOC_TRIM_THRESHOLD_"))).values()
        assert env == ("1", os.environ.get("MALLOC_TRIM_THRESHOLD_"))
        # dask's polling slowed down in the workers and in the scheduler (light monitoring)
        (polls,) = client.run(_polling).values()
        assert polls == {"profile": False, "tick": 500.0, "monitor": 10000.0,
                         "memory_monitor": 200.0}
        assert client.run_on_scheduler(_polling) == {"profile": False, "tick": 500.0,
                                                      "monitor": 10000.0}
        # the cluster object pushes its name to the scheduler every 10 s, not every second
        assert client.cluster._sync_interval == 10
        handle = get_client(client)  # an existing client is used, never closed
        handle.close()
        assert client.status == "running"
    assert client.status == "closed"
    # a run with a performance report keeps the workers' profiler (the report shows it)
    with get_client("local:1", memory_limit="600MiB", profile=True) as client:
        (polls,) = client.run(_polling).values()
        assert polls["profile"] is True and polls["tick"] == 500.0
    with pytest.raises(ConfigError, match="neither 'local'"):
        get_client("bogus-spec")
    # n_workers sizes a cluster started here: beside another spec it was ignored silently
    # (local:N took N; a tcp:// address its own workers) and recorded as used
    for spec in ("local:2", "tcp://127.0.0.1:1", client):
        with pytest.raises(ConfigError, match=r"n_workers=3 sizes a local cluster started "
                                              r"here.*local:N"):
            get_client(spec, n_workers=3)
    with pytest.raises(ConfigError, match=r"jobqueue\.slurm|dask-jobqueue"):
        get_client("slurm")


def test_process_refuses_n_workers_beside_a_scheduler_before_opening_the_catalog(tmp_path):
    with pytest.raises(ConfigError, match=r"n_workers=3 sizes a local cluster"):
        process(tmp_path, tmp_path / "cat", client="tcp://127.0.0.1:1", n_workers=3,
                progress=False)
    assert not (tmp_path / "cat").exists()


_GATEWAY_SCRIPT = """
import sys
from pathlib import Path

import dask
import dask_gateway
import yaml

from ampoffset_dask.errors import ClusterError
from ampoffset_dask.pipeline.cluster import get_client

defaults = yaml.safe_load((Path(dask_gateway.__file__).parent / "gateway.yaml").read_text())
gateway = dask.config.merge(defaults["gateway"], {"address": "http://127.0.0.1:9"})
with dask.config.set({"gateway": gateway}):
    try:
        get_client(sys.argv[1])
    except ClusterError as exc:
        print(exc)
"""


@pytest.mark.parametrize("spec", ["gateway://", "gateway"])
def test_gateway_without_an_address_uses_the_configured_one(spec, tmp_path):
    """``gateway://`` (as deploy/gateway/gateway.yaml once wrote it) took ``//`` for the
    address: the configured gateway was never asked. In a process of its own: dask-gateway's
    client starts an IO loop beside the test process's (others' clusters, their config),
    and did not always get it started there under CI's load."""
    import subprocess
    import sys

    script = tmp_path / "gateway.py"
    script.write_text(_GATEWAY_SCRIPT)
    done = subprocess.run([sys.executable, str(script), spec], capture_output=True,
                          text=True, timeout=120)
    assert "Cannot connect to host 127.0.0.1:9" in done.stdout, done.stdout + done.stderr


_HEARTBEAT_SCRIPT = """
import logging
from ampoffset_dask.pipeline import get_client


def log_both():
    log = logging.getLogger("distributed.worker")
    try:
        raise OSError("Stream is closed")
    except OSError:
        log.exception("Failed to communicate with scheduler during heartbeat.")
        log.exception("another worker error")


if __name__ == "__main__":
    with get_client("local:1", memory_limit="600MiB") as client:
        client.run(log_both)
"""


def test_local_workers_do_not_print_the_heartbeat_that_finds_the_scheduler_gone(tmp_path):
    """A local cluster's scheduler lives in the command's process. At a Ctrl-C, a heartbeat
    in flight while it closed printed a 30-line traceback after the one-line message; the
    workers' other errors still reach stderr."""
    import subprocess
    import sys

    script = tmp_path / "heartbeat.py"
    script.write_text(_HEARTBEAT_SCRIPT)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "another worker error" in done.stderr
    assert "Failed to communicate with scheduler" not in done.stderr, done.stderr
