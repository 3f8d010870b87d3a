"""Fixtures of the pipeline tests: a small simulated visit, a client of the shared cluster."""

from __future__ import annotations

from pathlib import Path

import pytest
from run_shared import once_per_run

from ampoffset_dask.simulate import simulate_focal_plane

from .helpers import SCALE, VISIT, direct_measurements


@pytest.fixture(scope="session")
def sim_visit(tmp_path_factory):
    """Nine simulated LSSTCam detectors (raft R22) of one visit, and their truth (simulated
    once per run, shared by the ``-n`` processes: read only)."""
    return once_per_run(tmp_path_factory, "sim_visit", lambda folder: simulate_focal_plane(
        folder / "visit", "lsstcam", rafts="R22", visits=[VISIT], scale=SCALE, seed=11))


@pytest.fixture(scope="session")
def sim_dir(sim_visit):
    return Path(sim_visit.paths[0]).parent


@pytest.fixture(scope="session")
def direct(sim_visit, tmp_path_factory):
    """Pedestals and interfaces of the visit from direct `measure_detector` calls (made once
    per run, like `sim_visit`)."""
    return once_per_run(tmp_path_factory, "direct",
                        lambda _folder: direct_measurements(sim_visit.paths))


@pytest.fixture
def client(shared_scheduler):
    """A client of the session's real scheduler (two single-threaded worker processes)."""
    from distributed import Client

    with Client(shared_scheduler) as c:
        yield c
