"""Fixtures of the reliability tests: real processes (schedulers, workers, CLI runs) on
127.0.0.1, tiny simulated detectors."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest


@pytest.fixture
def cli_env() -> dict[str, str]:
    """The environment with this interpreter's bin folder (dask, ampoffset-dask) first."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


@pytest.fixture(scope="session")
def sim4(tmp_path_factory):
    """Four tiny simulated LSSTCam detectors of one visit (640 x 200 pixels, 16 amps),
    simulated once per run and shared by the ``-n`` processes (read only)."""
    from pipeline.helpers import SCALE, VISIT
    from run_shared import once_per_run

    from ampoffset_dask.simulate import simulate_focal_plane

    def make(folder):
        sim = simulate_focal_plane(folder / "visit", "lsstcam",
                                   detectors=["R22_S11", "R22_S12", "R22_S21", "R22_S22"],
                                   visits=[VISIT], scale=SCALE, seed=4)
        return [Path(p) for p in sim.paths]

    return once_per_run(tmp_path_factory, "sim4", make)


@pytest.fixture
def scheduler(shared_scheduler):
    """The address of the session's real scheduler with two worker processes."""
    return shared_scheduler
