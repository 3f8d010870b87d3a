"""An input replaced between planning and its task fails with a clear reason instead of being
measured under the planned detector's name."""

from __future__ import annotations

import os
import shutil

import numpy as np

from ampoffset_dask import AmpOffsetConfig, read_catalog
from ampoffset_dask.pipeline import RunOptions, execute, prepare
from ampoffset_dask.simulate import simulate_focal_plane


def test_an_input_replaced_after_planning_fails_and_the_others_are_measured(tmp_path, client):
    sim = simulate_focal_plane(tmp_path / "sim", "lsstcam",
                               detectors=["R22_S11", "R22_S12", "R01_S00"], scale=0.1, seed=3)
    folder = tmp_path / "inputs"
    folder.mkdir()
    for p in sim.paths:
        shutil.copy(p, folder)
    target = folder / "lsstcam_000001_R22_S11.fits"
    other = next(p for p in sim.paths if "R22_S12" in str(p))
    config = AmpOffsetConfig(do_background=False, do_detection=False)
    with prepare(folder, tmp_path / "catalog", config=config,
                 options=RunOptions(progress=False)) as run:
        shutil.copy(other, f"{target}.tmp")  # R22_S12's pixels under R22_S11's name
        os.replace(f"{target}.tmp", target)
        execute(run, client=client)
    det = read_catalog(tmp_path / "catalog", "detectors").set_index("detector")
    assert det.loc["R22_S11", "status"] == "failed"
    assert "changed since it was planned" in det.loc["R22_S11", "error"]
    assert "run again to plan it anew" in det.loc["R22_S11", "error"]
    assert (det.loc[["R22_S12", "R01_S00"], "status"] == "ok").all()
    ped = read_catalog(tmp_path / "catalog", "pedestals")
    assert set(ped["detector"]) == {"R22_S12", "R01_S00"}


def test_a_retried_in_place_task_says_its_file_was_corrected_meanwhile(tmp_path):
    """The retry of an in-place task whose first attempt wrote the file (and lost its
    worker before reporting) is told apart from a file changed by someone else."""
    from ampoffset_dask.io.sections import file_stamp
    from ampoffset_dask.pipeline.detector_job import process_file

    sim = simulate_focal_plane(tmp_path / "sim", "lsstcam", detectors=["R22_S11"], scale=0.1,
                               seed=3)
    path = str(sim.paths[0])
    planned = file_stamp(path)
    first = process_file(path, None, AmpOffsetConfig(), output=path, in_place=True,
                         planned_stamp=planned)
    assert first.status == "ok" and first.applied
    retry = process_file(path, None, AmpOffsetConfig(), output=path, in_place=True,
                         planned_stamp=planned)
    assert retry.status == "failed"
    assert "corrected in place since it was planned" in retry.error
    assert "the next run records the pedestals its header holds" in retry.error


def test_a_run_on_a_scheduler_without_workers_says_it_waits(tmp_path):
    """A run on a scheduler that has no worker says its tasks wait for one (it looked hung)
    and finishes once a worker joins."""
    import subprocess
    import sys

    from .helpers import start_dask_processes, stop_processes, wait_for

    sim = simulate_focal_plane(tmp_path / "sim", "lsstcam", detectors=["R22_S11"], scale=0.1,
                               seed=3)
    address, procs = start_dask_processes(tmp_path / "cluster", n_workers=0)
    log = open(tmp_path / "run.log", "w")  # read while the run goes on
    try:
        run = subprocess.Popen(
            [sys.executable, "-m", "ampoffset_dask.cli", "run", str(sim.paths[0]), "--output",
             str(tmp_path / "cat"), "--scheduler", address, "--no-progress", "--set",
             "doBackground=false", "--set", "doDetection=false"],
            stdout=log, stderr=subprocess.STDOUT)
        wait_for(lambda: "has no workers yet" in (tmp_path / "run.log").read_text(), 120,
                 0.1, "the no-worker warning")
        assert run.poll() is None  # waiting, not failed
        worker = subprocess.Popen(
            [sys.executable, "-m", "dask", "worker", address, "--nthreads", "1", "--no-nanny",
             "--no-dashboard", "--host", "127.0.0.1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        procs.append(worker)
        assert run.wait(timeout=120) == 0, (tmp_path / "run.log").read_text()
    finally:
        log.close()
        stop_processes([p.pid for p in procs])
    assert read_catalog(tmp_path / "cat", "detectors")["status"].tolist() == ["ok"]


def test_two_in_place_corrections_of_one_file_at_once(tmp_path):
    """Runs of two catalogs correcting one folder in place at the same time: one corrects
    each file, the other finds it corrected by that run (before, both often recorded ok
    while the file held only one correction)."""
    import threading

    from astropy.io import fits

    from ampoffset_dask.algorithm.apply import apply_pedestals
    from ampoffset_dask.io.fits import read_exposure
    from ampoffset_dask.io.sections import file_stamp
    from ampoffset_dask.pipeline.detector_job import process_file
    from ampoffset_dask.pipeline.inputs import RUN_KEY

    sim = simulate_focal_plane(tmp_path / "sim", "lsstcam", detectors=["R22_S11"],
                               scale=0.25, seed=5)
    path = str(sim.paths[0])
    original = read_exposure(path)
    planned = file_stamp(path)
    configs = {"run-a": AmpOffsetConfig(), "run-b": AmpOffsetConfig(amp_edge_width=32)}
    together = threading.Barrier(2)
    results = {}

    def correct(run_id):
        together.wait()
        results[run_id] = process_file(path, None, configs[run_id], output=path,
                                       in_place=True, planned_stamp=planned, run_id=run_id)

    threads = [threading.Thread(target=correct, args=(r,)) for r in configs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ok = [r for r, res in results.items() if res.status == "ok"]
    assert len(ok) == 1, {r: (res.status, res.error) for r, res in results.items()}
    won, lost = ok[0], next(r for r in configs if r != ok[0])
    assert results[lost].status == "failed"
    assert f"corrected in place since it was planned, by run {won}, not this one" in \
        results[lost].error, results[lost].error
    assert fits.getheader(path, 0)[RUN_KEY] == won
    expected = apply_pedestals(np.asarray(original.image), results[won].pedestals,
                               original.detector)
    np.testing.assert_array_equal(np.asarray(read_exposure(path).image), expected)
