"""Fixtures of the pipeline tests: a small simulated visit, a LocalCluster of processes."""

from __future__ import annotations

from pathlib import Path

import pytest

from ampoffset_dask.simulate import simulate_focal_plane

from .helpers import SCALE, VISIT, direct_measurements


@pytest.fixture(scope="session")
def sim_visit(tmp_path_factory):
    """Nine simulated LSSTCam detectors (raft R22) of one visit, and their truth."""
    out = tmp_path_factory.mktemp("sim") / "visit"
    return simulate_focal_plane(out, "lsstcam", rafts="R22", visits=[VISIT], scale=SCALE,
                                seed=11)


@pytest.fixture(scope="session")
def sim_dir(sim_visit):
    return Path(sim_visit.paths[0]).parent


@pytest.fixture(scope="session")
def direct(sim_visit):
    """Pedestals and interfaces of the visit from direct `measure_detector` calls."""
    return direct_measurements(sim_visit.paths)


@pytest.fixture(scope="session")
def local_cluster():
    """A LocalCluster of two single-threaded worker processes, shared by the tests."""
    from distributed import LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                           memory_limit="1GiB", dashboard_address=":0")
    yield cluster
    cluster.close()


@pytest.fixture
def client(local_cluster):
    from distributed import Client

    with Client(local_cluster) as c:
        yield c
