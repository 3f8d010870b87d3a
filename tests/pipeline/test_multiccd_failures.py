"""Several CCDs of one multi-CCD file failing before their detector is resolved keep a
failed row each, named by their header (or HDU), beside the measured CCDs of the file."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from io_helpers import decam_primary, decam_raw_hdu

from ampoffset_dask import AmpOffsetConfig, InputError, process
from ampoffset_dask.catalog import read_catalog
from ampoffset_dask.pipeline.detector_job import process_file
from ampoffset_dask.pipeline.inputs import discover_inputs, plan_tasks

EDGES = AmpOffsetConfig(do_background=False, do_detection=False)
VISIT = 177765


def _unknown_ccd(name: str | None, ccdnum: int) -> fits.ImageHDU:
    """A CCD the DECam camera does not describe (a guide or focus CCD: CCDNUM 63-74)."""
    hdu = fits.ImageHDU(np.zeros((64, 32), np.uint16))
    if name is not None:
        hdu.header["DETPOS"] = name
    hdu.header["CCDNUM"] = ccdnum
    return hdu


def _mef(path, unnamed: bool = False):
    """S1 (measurable) + GS1 + FN3 (unknown to the camera), and an unnamed unknown CCD."""
    hdus = [decam_primary(VISIT),
            decam_raw_hdu("S1", 800.0, {"A": 3.0, "B": 0.0}, {"A": 1200.0, "B": 950.0}),
            _unknown_ccd("GS1", 66), _unknown_ccd("FN3", 70)]
    if unnamed:
        hdus.append(_unknown_ccd(None, 99))
    fits.HDUList(hdus).writeto(path)


def test_failed_ccds_are_planned_under_their_header_names(tmp_path):
    path = tmp_path / "DECam_00177765.fits"
    _mef(path, unnamed=True)
    planned = plan_tasks(discover_inputs(path), threads=1)
    got = [(t.name, t.hdu, bool(t.error)) for t in planned]
    assert got == [("S1", 1, False), ("GS1", 2, True), ("FN3", 3, True),
                   ("HDU 4", 4, True)], got
    assert all("unknown detector" in t.error for t in planned[1:])
    # the header's own CCDNUM is the failed row's id; an HDU name has none
    assert [t.detector_id for t in planned[1:]] == [66, 70, None]


def test_failed_ccds_keep_a_row_each(tmp_path, client):
    path = tmp_path / "DECam_00177765.fits"
    _mef(path)
    catalog = tmp_path / "cat"
    summary = process(path, catalog, client=client, progress=False, config=EDGES)
    assert (summary.n_ok, summary.n_failed) == (1, 2), summary
    det = read_catalog(catalog, "detectors").sort_values("detector")
    assert list(zip(det.detector, det.status, strict=True)) == [
        ("FN3", "failed"), ("GS1", "failed"), ("S1", "ok")]
    assert list(det.detector_id) == [70, 66, 25]
    assert det.set_index("detector").loc["GS1", "error"].endswith(
        "camera 'decam' has no detector 'GS1'")
    assert len(read_catalog(catalog, "detectors", all_rows=True)) == 3


def test_an_hdu_named_failure_is_not_current_once_its_file_is_run_again(tmp_path, client):
    """A CCD failing as ``HDU 2`` (no name, a damaged id), then fixed: the next run's rows
    of the file replace that failure; run again still broken, it stays a failed row."""
    path = tmp_path / "DECam_00177765.fits"
    b = {"A": 1200.0, "B": 950.0}

    def write(broken):
        s2 = decam_raw_hdu("S2", 800.0, {"A": 2.0, "B": 0.0}, b)
        if broken:
            del s2.header["DETPOS"], s2.header["EXTNAME"]
            s2.header["CCDNUM"] = 99  # no such DECam CCD
        fits.HDUList([decam_primary(VISIT), decam_raw_hdu("S1", 800.0, {"A": 3.0, "B": 0.0}, b),
                      s2]).writeto(path, overwrite=True)

    catalog = tmp_path / "cat"
    write(broken=True)
    process(path, catalog, client=client, progress=False, config=EDGES)
    process(path, catalog, client=client, progress=False, config=EDGES)  # still broken
    det = read_catalog(catalog, "detectors")
    assert sorted(zip(det.detector, det.status, strict=True)) == [
        ("HDU 2", "failed"), ("S1", "ok")]
    write(broken=False)
    summary = process(path, catalog, client=client, progress=False, config=EDGES)
    assert summary.n_failed == 0, summary  # (the rewritten file: S1 measured again)
    det = read_catalog(catalog, "detectors")
    assert sorted(zip(det.detector, det.status, strict=True)) == [("S1", "ok"), ("S2", "ok")]


def test_job_failing_before_its_detector_names_its_ccd(tmp_path):
    path = tmp_path / "DECam_00177765.fits"
    _mef(path, unnamed=True)
    rows = [process_file(str(path), None, EDGES, camera="decam", hdu=hdu)
            for hdu in (2, 3, 4)]
    assert [(r.status, r.detector) for r in rows] == [
        ("failed", "GS1"), ("failed", "FN3"), ("failed", "HDU 4")]
    assert "has no detector 'GS1'" in rows[0].error


def test_two_hdus_of_one_file_naming_one_ccd_are_named(tmp_path):
    path = tmp_path / "DECam_dup.fits"
    bias = {"A": 1200.0, "B": 950.0}
    fits.HDUList([decam_primary(5), decam_raw_hdu("S1", 800.0, {"A": 3.0, "B": 0.0}, bias),
                  _unknown_ccd("GS1", 66),
                  decam_raw_hdu("S1", 800.0, {"A": 1.0, "B": 0.0}, bias)]).writeto(path)
    with pytest.raises(InputError) as err:
        plan_tasks(discover_inputs(path), camera="decam", threads=1)
    assert str(err.value) == ("several inputs are the same (visit, detector): visit 5 "
                              f"detector S1: HDU 1 and HDU 3 of {path}")
