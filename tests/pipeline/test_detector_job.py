"""The per-detector job (`DetectorJob`, `process_file`), called directly as a worker would."""

from __future__ import annotations

import os
import shutil
import socket

import numpy as np
import pytest

from ampoffset_dask import InputError, measure_detector
from ampoffset_dask.algorithm.apply import apply_pedestals
from ampoffset_dask.catalog import DetectorResult
from ampoffset_dask.io.fits import read_exposure
from ampoffset_dask.pipeline.detector_job import DetectorJob, process_file, with_io_retries

from .helpers import VISIT


def test_process_file_ok_and_in_place(sim_visit, tmp_path):
    src = shutil.copy(sim_visit.paths[0], tmp_path / "d.fits")
    exp = read_exposure(src)
    res = process_file(src, exp.detector)
    m = measure_detector(exp.image, exp.mask, exp.detector, mask_planes=exp.mask_planes)
    assert res.status == "ok" and res.visit == VISIT and res.detector == exp.detector.name
    np.testing.assert_array_equal(res.pedestals, m.pedestals)
    assert len(res.interfaces) == len(m.interfaces) and res.worker.startswith("pid ")
    assert res.attempts == 1  # one read
    assert 0 < res.cpu_seconds <= res.seconds + 0.05
    # output == input is refused unless in_place
    refused = process_file(src, exp.detector, output=src)
    assert refused.status == "failed" and "refusing to overwrite the input" in refused.error
    done = process_file(src, exp.detector, output=src, in_place=True)
    assert done.status == "ok" and done.applied and done.output == str(src)
    assert done.attempts == 1  # one read, one write: no step retried
    np.testing.assert_array_equal(read_exposure(src).image,
                                  apply_pedestals(exp.image, m.pedestals, exp.detector))


def test_process_file_failures_never_raise(sim_visit, tmp_path):
    missing = process_file(tmp_path / "nope.fits", None, visit=3)
    assert missing.status == "failed" and missing.visit == 3
    assert "nope.fits" in missing.error
    exp = read_exposure(sim_visit.paths[0])
    other = read_exposure(sim_visit.paths[1]).detector
    wide = other.__class__(other.name, other.width * 2, other.height,
                           other.amplifiers, other.id)
    res = process_file(sim_visit.paths[0], wide)
    assert res.status == "failed" and "shape" in res.error and exp.visit == VISIT


def test_io_retries_with_backoff():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise OSError("Stale file handle")
        return "read"

    assert with_io_retries(flaky, retries=3, delay=0.001, what="reading x") == "read"
    assert len(calls) == 3
    calls.clear()
    with pytest.raises(OSError, match="Stale"):
        with_io_retries(flaky, retries=1, delay=0.001, what="reading x")
    assert len(calls) == 2

    def gone():
        raise FileNotFoundError(2, "No such file or directory")

    with pytest.raises(InputError, match="reading y: No such file"):
        with_io_retries(gone, retries=5, delay=10, what="reading y")


def test_job_run_raises_and_run_safely_records(sim_visit, tmp_path):
    """`run` raises the detector's error; `run_safely` turns it into the failed record,
    naming the geometry it had resolved by then."""
    exp = read_exposure(sim_visit.paths[0])
    other = read_exposure(sim_visit.paths[1]).detector
    wide = other.__class__(other.name, other.width * 2, other.height, other.amplifiers, other.id)
    with pytest.raises(InputError, match="does not match detector 'R22_S01'"):
        DetectorJob(sim_visit.paths[0], wide).run()
    job = DetectorJob(sim_visit.paths[0], wide)
    rec = job.run_safely()
    assert rec.status == "failed" and rec.error.startswith("InputError: ")
    # the reader refused the file, so its visit is unknown (-1); the geometry was given
    assert (rec.visit, rec.detector, rec.detector_id) == (-1, other.name, other.id)
    assert rec.attempts == 1 and rec.input == str(sim_visit.paths[0])
    with pytest.raises(InputError, match=r"nope\.fits"):
        DetectorJob(tmp_path / "nope.fits", exp.detector, visit=3).run()
    # Without a detector, the geometry comes from the file and the record is the same one
    # `from_measurement` builds from a direct measurement.
    res = DetectorJob(sim_visit.paths[0]).run()
    m = measure_detector(exp.image, exp.mask, exp.detector, mask_planes=exp.mask_planes)
    direct = DetectorResult.from_measurement(m, visit=VISIT, detector=exp.detector,
                                             input=str(sim_visit.paths[0]))
    for field in ("visit", "detector", "detector_id", "status", "error", "input", "output",
                  "amp_names", "pedestals", "interfaces", "applied", "masked_fraction",
                  "all_masked", "background", "detection", "n_detected", "warnings"):
        assert getattr(res, field) == getattr(direct, field), field


def test_variance_read_only_when_written(sim_visit, tmp_path, monkeypatch):
    """Measuring skips the VARIANCE plane; writing a corrected file still carries it."""
    import ampoffset_dask.io.fits as fits_io

    src = sim_visit.paths[0]
    info = fits_io.inspect_file(src)
    assert info.variance_hdu is not None
    read_hdus = []
    real = fits_io._read_full

    def spy(path, hdu, *args, **kwargs):
        read_hdus.append(hdu)
        return real(path, hdu, *args, **kwargs)

    monkeypatch.setattr(fits_io, "_read_full", spy)
    full = read_exposure(src)
    assert info.variance_hdu in read_hdus and full.variance.any()
    read_hdus.clear()
    light = read_exposure(src, variance=False)
    assert light.variance is None and info.variance_hdu not in read_hdus
    np.testing.assert_array_equal(light.image, full.image)
    np.testing.assert_array_equal(light.mask, full.mask)

    read_hdus.clear()
    assert process_file(src, full.detector).status == "ok"
    assert info.variance_hdu not in read_hdus and info.image_hdu in read_hdus
    out = tmp_path / "out.fits"
    assert process_file(src, full.detector, output=out).status == "ok"
    monkeypatch.setattr(fits_io, "_read_full", real)
    np.testing.assert_array_equal(read_exposure(out).variance, full.variance)


def test_kernels_choice_from_dask_config(sim_visit):
    import dask

    from ampoffset_dask.algorithm import kernels

    src = sim_visit.paths[0]
    det = read_exposure(src).detector
    results = {}
    try:
        for choice in ("numpy", "numba"):
            with dask.config.set({"ampoffset.kernels": choice}):
                results[choice] = process_file(src, det)
                assert kernels.backend_name() == choice
        with dask.config.set({"ampoffset.kernels": "cuda"}):
            bad = process_file(src, det)
        assert bad.status == "failed" and "kernels must be one of" in bad.error
        # a configuration error of this process (a worker's environment), not a crash
        assert bad.error.startswith("ConfigError: the kernels setting of process "
                                    f"{os.getpid()} on {socket.gethostname()}")
    finally:
        kernels.set_kernels(None)
    np.testing.assert_allclose(results["numba"].pedestals, results["numpy"].pedestals,
                               rtol=1e-12, atol=1e-15)
    assert results["numba"].n_detected == results["numpy"].n_detected


def test_a_single_amp_is_flagged_not_ok(tmp_path):
    """One amp has no interface: nothing is measured, and a file read with too few amps (a
    two-amp frame with one DATASEC, say) looks the same, so the result says so."""
    import numpy as np
    from astropy.io import fits

    from ampoffset_dask.pipeline.detector_job import process_file

    hdu = fits.PrimaryHDU(np.random.default_rng(1).normal(100, 3, (100, 80)).astype("f4"))
    hdu.header.update({"DATASEC": "[1:80,1:100]", "DETNAME": "one", "VISIT": 3})
    hdu.writeto(tmp_path / "one.fits")
    result = process_file(str(tmp_path / "one.fits"))
    assert result.status == "flagged" and list(result.pedestals) == [0.0]
    assert result.error.startswith("a single amp: no interface to measure (pedestal 0)")
    assert "docs/cameras.md" in result.error


def test_inset_zero_is_flagged_naming_the_cause(sim_visit):
    """ampEdgeInset=0 empties LSST's +x/+y strips (slice -width:-0): every interface is
    unmeasured, as in LSST. Before, the flag blamed the image ("image mostly masked?")."""
    from ampoffset_dask import AmpOffsetConfig

    exp = read_exposure(sim_visit.paths[0])
    config = AmpOffsetConfig(amp_edge_inset=0, do_background=False, do_detection=False)
    m = measure_detector(exp.image, exp.mask, exp.detector, config,
                         mask_planes=exp.mask_planes)
    assert not m.pedestals.any()  # LSST's numbers
    assert all(i.min_frac_fail and i.good_frac == 0.0 for i in m.interfaces)
    assert any(w.startswith("ampEdgeInset=0 leaves LSST's edge strips") for w in m.warnings)
    res = process_file(sim_visit.paths[0], exp.detector, config=config)
    assert res.status == "flagged"
    assert res.error == (
        f"{len(m.interfaces)} of {len(m.interfaces)} interfaces unmeasured: ampEdgeInset=0 "
        "leaves LSST's edge strips on the amps' +x and +y sides empty (slice "
        "-ampEdgeWidth:-0); use ampEdgeInset >= 1")
    # an inset of 1 measures
    config.amp_edge_inset = 1
    assert process_file(sim_visit.paths[0], exp.detector, config=config).status == "ok"


def test_attempts_count_the_tries_of_the_most_retried_step(sim_visit, tmp_path, monkeypatch):
    """A read and a write recorded 2 attempts, as if retried; a step retried twice is 3."""
    from ampoffset_dask.io import fits as fits_module

    src = shutil.copy(sim_visit.paths[0], tmp_path / "d.fits")
    real = fits_module.read_exposure
    failures = iter([OSError("transient"), OSError("transient")])

    def flaky(*args, **kwargs):
        error = next(failures, None)
        if error is not None:
            raise error
        return real(*args, **kwargs)

    monkeypatch.setattr(fits_module, "read_exposure", flaky)
    job = DetectorJob(src, io_retries=3, io_retry_delay=0.001,
                      output=tmp_path / "out.fits")
    res = job.run()
    assert res.status == "ok" and res.applied and res.attempts == 3
