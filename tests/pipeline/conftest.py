"""Fixtures of the pipeline tests: a small simulated visit, a client of the shared cluster."""

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


@pytest.fixture
def client(shared_scheduler):
    """A client of the session's real scheduler (two single-threaded worker processes)."""
    from distributed import Client

    with Client(shared_scheduler) as c:
        yield c
