"""`process` on real Dask worker processes: equality with direct calls, failures, resume."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from astropy.io import fits

from ampoffset_dask import AmpOffsetConfig, ConfigError, InputError, process, read_catalog
from ampoffset_dask.io.fits import read_exposure
from ampoffset_dask.masks import DEFAULT_MASK_PLANES

from .helpers import (
    VISIT,
    assert_catalog_matches,
    direct_measurements,
    journal_lines,
    wait_for,
)


def test_bad_inputs_become_failed_rows(sim_visit, client, tmp_path, caplog):
    src = [p for p in sim_visit.paths if p.name.endswith(("R22_S00.fits", "R22_S01.fits",
                                                          "R22_S02.fits"))]
    data = tmp_path / "in"
    data.mkdir()
    good = [shutil.copy(p, data / p.name) for p in src[:2]]
    # a corrupt file: FITS-looking name, garbage inside
    corrupt = data / "lsstcam_000007_R22_S10.fits"
    corrupt.write_bytes(b"SIMPLE  =                    T" + os.urandom(3000))
    # a wrong-shape file: R22_S11 of the full-size camera, but a small image
    wrong = data / "wrong_shape.fits"
    from ampoffset_dask.io.fits import write_exposure

    write_exposure(wrong, np.zeros((200, 640), np.float32), header={
        "INSTRUME": "LSSTCam", "CAMERA": "lsstcam", "DETNAME": "R22_S11", "DETECTOR": 94,
        "VISIT": VISIT})
    # an all-masked detector (visit 8, so it does not clash with the good ones)
    masked = data / "masked.fits"
    shutil.copy(src[2], masked)
    with fits.open(masked, mode="update") as hdul:
        hdul[0].header["VISIT"] = 8
        hdul["MASK"].data[:] = 1 << DEFAULT_MASK_PLANES["BAD"]

    cat = tmp_path / "cat"
    with caplog.at_level(logging.WARNING, logger="ampoffset_dask"):
        summary = process(data, cat, client=client, progress=False)
    assert (summary.n_ok, summary.n_flagged, summary.n_failed) == (2, 1, 2)
    # the worker's warning about the bad file was forwarded to this process
    assert any("wrong_shape.fits" in r.getMessage()
               and r.name == "ampoffset_dask.pipeline.detector_job" for r in caplog.records)
    assert not summary.ok
    det = read_catalog(cat, "detectors")
    assert len(det) == 5
    failed = det[det["status"] == "failed"].set_index("input")
    assert set(failed.index) == {str(corrupt), str(wrong)}
    assert str(corrupt) in failed.loc[str(corrupt), "error"]
    assert "InputError" in failed.loc[str(corrupt), "error"]
    msg = failed.loc[str(wrong), "error"]
    assert str(wrong) in msg and "shape" in msg and "R22_S11" in msg
    by_input = {i: (v, d, e) for v, d, e in summary.failed for i in [d]}
    assert len(by_input) == 2

    flagged = det[det["status"] == "flagged"]
    assert list(flagged["visit"]) == [8] and bool(flagged["all_masked"].iloc[0])
    assert "masked" in flagged["error"].iloc[0]
    ped = read_catalog(cat, "pedestals")
    assert (ped[ped["visit"] == 8]["pedestal"] == 0).all()
    assert len(ped[ped["visit"] == 8]) == 16
    # the good ones are exactly what direct calls give
    exp_ped, _ = direct_measurements(good)
    got = ped[ped["visit"] == VISIT].reset_index(drop=True)
    np.testing.assert_array_equal(got["pedestal"], exp_ped["pedestal"])

    # Re-running retries only the failed inputs and does not duplicate anything.
    corrupt.unlink()
    shutil.copy(src[0], corrupt)  # "fixed": now a copy of R22_S00 of visit 7 ...
    with fits.open(corrupt, mode="update") as hdul:
        hdul[0].header["VISIT"] = 9  # ... moved to visit 9
    again = process(data, cat, client=client, progress=False)
    assert (again.n_skipped, again.n_ok, again.n_failed) == (3, 1, 1)
    det = read_catalog(cat, "detectors")
    assert not det.duplicated(["visit", "detector", "input"]).any()
    # the corrupt file's failed row (unknown visit) is replaced by the new result
    assert str(corrupt) not in set(det[det["status"] == "failed"]["input"])


def test_apply_writes_corrected_copies(sim_visit, client, tmp_path):
    src = sim_visit.paths[:2]
    before = [p.read_bytes() for p in src]
    out = tmp_path / "corrected"
    summary = process(src, tmp_path / "cat", client=client, progress=False, apply=True,
                      output_images=out)
    assert summary.n_ok == 2
    ped = read_catalog(tmp_path / "cat", "pedestals")
    assert ped["applied"].all()
    det = read_catalog(tmp_path / "cat", "detectors")
    for path, raw in zip(src, before, strict=True):
        assert path.read_bytes() == raw  # inputs untouched
        orig = read_exposure(path)
        written = out / str(VISIT) / orig.detector.name / path.name
        assert str(written) in set(det["output"])
        corr = read_exposure(written)
        mine = ped[ped["detector"] == orig.detector.name]
        with fits.open(written) as hdul:
            header = hdul[0].header
            for amp, value in zip(mine["amp"], mine["pedestal"], strict=True):
                assert header[f"LSST ISR AMPOFFSET PEDESTAL {amp}"] == pytest.approx(value)
                box = orig.detector[amp].slices
                np.testing.assert_allclose(corr.image[box],
                                           orig.image[box] - np.float32(value), rtol=0,
                                           atol=1e-3)
            assert header["LSST ISR AMPOFFSET PEDESTAL SUBTRACTED"] is True
        np.testing.assert_array_equal(corr.mask, orig.mask)
    with pytest.raises(ConfigError, match="output_images"):
        process(src, tmp_path / "cat2", client=client, apply=True)
    # an output folder holding the input (its copy would go over it) is refused up front
    inside = tmp_path / "images" / str(VISIT) / read_exposure(src[0]).detector.name
    inside.mkdir(parents=True)
    copy = shutil.copy(src[0], inside / src[0].name)
    with pytest.raises(InputError, match="the input lies inside the --output-images folder"):
        process(copy, tmp_path / "cat2", client=client, output_images=tmp_path / "images")
    assert not (tmp_path / "cat2" / "runs").exists()


def test_input_errors_before_any_work(sim_dir, tmp_path, client):
    with pytest.raises(InputError, match="no such file"):
        process(tmp_path / "missing", tmp_path / "cat", client=client)
    with pytest.raises(InputError, match="matches no file"):
        process(str(tmp_path / "*.fits"), tmp_path / "cat", client=client)
    with pytest.raises(ConfigError, match="ampEdgeWidth"):
        process(sim_dir, tmp_path / "cat", client=client, config={"ampEdgeWidth": -1})


def test_killed_client_then_rerun(sim_dir, direct, shared_scheduler, client, tmp_path):
    """The client process dies mid-run; the re-run completes without duplicates."""
    cat = tmp_path / "cat"
    script = textwrap.dedent(f"""
        from ampoffset_dask import process
        process({str(sim_dir)!r}, {str(cat)!r}, client={shared_scheduler!r},
                max_in_flight=1, progress=False)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE)
    try:
        wait_for(lambda: journal_lines(cat) >= 2 or proc.poll() is not None, 120,
                 what="two results")
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()
    n_journaled = journal_lines(cat)
    assert 2 <= n_journaled < 9
    summary = process(sim_dir, cat, client=client, progress=False)
    assert summary.n_skipped >= n_journaled
    assert summary.n_skipped + summary.n_ok == 9 and summary.n_failed == 0
    assert_catalog_matches(cat, direct)
    runs = read_catalog(cat, "runs")
    assert list(runs["status"]) == ["interrupted", "finished"]
    assert not list((cat / "_journal").glob("*.jsonl"))


def test_new_run_replaces_rows(sim_visit, client, tmp_path):
    src = sim_visit.paths[:2]
    cat = tmp_path / "cat"
    process(src, cat, client=client, progress=False)
    config = AmpOffsetConfig(do_background=False, do_detection=False)
    summary = process(src, cat, client=client, progress=False, config=config, new_run=True)
    assert (summary.n_ok, summary.n_skipped) == (2, 0)
    expected = direct_measurements(src, config)
    assert_catalog_matches(cat, expected)
    assert read_catalog(cat, "detectors")["run_id"].nunique() == 1
    assert read_catalog(cat, "runs")["config_digest"].nunique() == 2


def test_task_that_kills_its_worker_ends_failed(tmp_path):
    """A task that kills every worker it runs on becomes a 'worker died' failed row."""
    import dask
    from distributed import Client, LocalCluster

    from ampoffset_dask.pipeline.inputs import PlannedTask
    from ampoffset_dask.pipeline.run import SubmitItem, _task_error, stream_tasks

    task = PlannedTask(str(tmp_path / "poison.fits"), 5, None, "R00_S00")
    # no retry on another worker: the first death makes the KilledWorker that stream_tasks
    # turns into the row (each retry would only start one more worker process first)
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}), \
            LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                         dashboard_address=":0") as cluster, Client(cluster) as client:
        items = [SubmitItem(key=task.key("test"), args=(1,), tag=task)]
        ((item, (_, result)),) = list(stream_tasks(client, os._exit, items, max_in_flight=4,
                                              on_error=_task_error))
        assert client.submit(sum, [1, 2]).result() == 3  # the cluster recovered
    assert item.tag is task
    assert result.status == "failed" and result.visit == 5 and result.detector == "R00_S00"
    assert result.error.startswith("worker died while processing") and "poison.fits" in result.error


def test_performance_report_is_written(sim_visit, client, tmp_path):
    report = tmp_path / "report.html"
    summary = process(sim_visit.paths[:2], tmp_path / "cat", client=client, progress=False,
                      performance_report=report)
    assert summary.n_ok == 2
    html = report.read_text()
    assert html.lstrip().lower().startswith("<!doctype html") or "<html" in html[:2000].lower()
    assert "Dask Performance Report" in html
