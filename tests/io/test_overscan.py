"""Raw ISR while reading: overscan modes (auto, per-row, mean, none) and nominal gains."""

from __future__ import annotations

import json

import numpy as np
import pytest
from astropy.io import fits
from io_helpers import REAL, kast_camera_doc, tiny_raw_camera_doc, write_stepped_lsstcam

from ampoffset_dask import open_exposure
from ampoffset_dask.cameras import Camera
from ampoffset_dask.errors import ConfigError, InputError
from ampoffset_dask.io.fits import open_lazy, read_exposure
from ampoffset_dask.io.overscan import (
    clipped_mean,
    isr_header,
    normalize_overscan,
    overscan_levels,
)

KAST = REAL / "kast_blue_pypeit"


def _tiny_raw(path, camera, bias_slope=7.0, spike=False):
    """Write a tiny LSST-style raw: per-amp bias 500 + 10 * hdu, varying by row."""
    det = camera["R00_S00"]
    truth = np.arange(96, dtype=np.float64).reshape(8, 12) * 3.0
    hdus = [fits.PrimaryHDU()]
    hdus[0].header["RAFTBAY"] = "R00"
    hdus[0].header["CCDSLOT"] = "S00"
    levels = {}
    for amp, raw in zip(det, camera.raw_amps(det), strict=True):
        block = truth[amp.slices]
        if raw.flip_y:
            block = block[::-1]
        if raw.flip_x:
            block = block[:, ::-1]
        bias = 500.0 + bias_slope * np.arange(4) + 10 * raw.hdu
        seg = np.zeros((4, 11), np.int32)
        seg[:, 2:8] = block + bias[:, None]
        seg[:, 8:11] = bias[:, None]
        if spike:
            seg[0, 8] += 1000  # a hot overscan pixel: clipped by "mean", ignored by the median
        levels[amp.name] = bias
        hdus.append(fits.ImageHDU(seg.astype(">i4"), name=f"Segment{amp.name[1:]}"))
    fits.HDUList(hdus).writeto(path)
    return truth, levels


@pytest.mark.parametrize("width", [1, 2, 3, 64, 65])
def test_overscan_levels_are_numpy_medians(width):
    rng = np.random.default_rng(width)
    rows = np.round(rng.normal(20000, 9.7, (500, width)))  # ties, halves between them
    rows[:50] = rng.normal(0, 1e-3, (50, width))  # non-integers of either sign
    rows[50, 0] = np.nan
    rows[51, -1] = np.inf
    rows[52, 0] = -np.inf
    rows[53] = np.inf
    for dtype in (np.float64, np.float32):
        got = overscan_levels(rows.astype(dtype))
        assert got.dtype == np.float64 and got.shape == (500, 1)
        with np.errstate(invalid="ignore"):
            expected = np.median(rows.astype(dtype).astype(np.float64), axis=1)[:, None]
        np.testing.assert_array_equal(got, expected)
    ints = np.round(rng.normal(3e5, 20, (300, width))).astype(np.int32)
    np.testing.assert_array_equal(overscan_levels(ints), np.median(ints, axis=1)[:, None])


def test_per_row_overscan_rounds_once_into_the_plane(tmp_path):
    """Each pixel is its float64 difference with the row's median, rounded to float32 once,
    wherever the amp lands (flipped or not)."""
    camera = Camera.from_dict(tiny_raw_camera_doc())
    _tiny_raw(tmp_path / "raw.fits", camera)
    rng = np.random.default_rng(4)
    det = camera["R00_S00"]
    expected = np.zeros(det.shape, np.float64)
    with fits.open(tmp_path / "raw.fits") as hdul:
        hdul = fits.HDUList([h.copy() for h in hdul])
    for amp, raw in zip(det, camera.raw_amps(det), strict=True):
        # pixels above 2**24 (float32 rounds them), an overscan far below
        seg = np.round(rng.normal(3.3e7, 50.0, (4, 11))).astype(np.int32)
        seg[:, 8:11] = np.round(rng.normal(1000.0, 5.0, (4, 3)))
        hdul[raw.hdu].data = seg.astype(">i4")
        over = seg[:, 8:11].astype(np.float64)
        block = seg[:, 2:8].astype(np.float64) - np.median(over, axis=1)[:, None]
        if raw.flip_y:
            block = block[::-1]
        if raw.flip_x:
            block = block[:, ::-1]
        expected[amp.slices] = block
    hdul.writeto(tmp_path / "noisy.fits")
    data = read_exposure(tmp_path / "noisy.fits", camera=camera)
    assert data.isr.overscan == "per-row"
    np.testing.assert_array_equal(data.image, expected.astype(np.float32))
    assert np.any(expected.astype(np.float32) != expected)  # rounding happened


def test_modes_are_validated():
    assert normalize_overscan(True) == "per-row" and normalize_overscan(False) == "none"
    assert normalize_overscan("Per_Row") == "per-row"
    assert normalize_overscan("MEDIAN_PER_ROW") == "per-row"  # LSST's name of the per-row fit
    # LSST's MEDIAN is one number per amp: it became the per-row medians, silently
    with pytest.raises(ConfigError, match=r"overscan='median'.*one median per amp.*per-row"):
        normalize_overscan("median")
    with pytest.raises(ConfigError, match=r"overscan=.median-ish.*auto, per-row, mean, none"):
        normalize_overscan("median-ish")
    with pytest.raises(ConfigError, match="gain='measured'"):
        read_exposure(KAST / "b21.fits.gz", camera=Camera.from_dict(kast_camera_doc()),
                      gain="measured")


def test_auto_subtracts_per_row_from_raw_segments(tmp_path):
    camera = Camera.from_dict(tiny_raw_camera_doc())
    truth, _ = _tiny_raw(tmp_path / "raw.fits", camera)
    data = read_exposure(tmp_path / "raw.fits", camera=camera)  # default overscan="auto"
    np.testing.assert_array_equal(data.image, truth.astype(np.float32))
    assert (data.isr.overscan, data.isr.gain, data.isr.raw) == ("per-row", "none", True)
    none = read_exposure(tmp_path / "raw.fits", camera=camera, overscan="none")
    assert none.isr.overscan == "none" and (none.image - truth).min() >= 510


def test_mean_mode_subtracts_one_clipped_level_per_amp(tmp_path):
    camera = Camera.from_dict(tiny_raw_camera_doc())
    truth, levels = _tiny_raw(tmp_path / "raw.fits", camera, spike=True)
    data = read_exposure(tmp_path / "raw.fits", camera=camera, overscan="mean")
    assert data.isr.overscan == "mean"
    det = data.detector
    for amp, raw in zip(det, camera.raw_amps(det), strict=True):
        bias = levels[amp.name]
        rows = bias[::-1] if raw.flip_y else bias  # raw rows -> detector rows
        clipped = (2 * bias[0] + 3 * bias[1:].sum()) / 11  # the hot pixel is clipped out
        expected = truth[amp.slices] + rows[:, None] - clipped
        np.testing.assert_allclose(data.image[amp.slices], expected, atol=1e-4)
    # strip reads of a lazy plane use the whole overscan too: same numbers as the full read
    lazy = open_lazy(tmp_path / "raw.fits", camera=camera, overscan="mean")
    np.testing.assert_array_equal(lazy.image[1:3, 2:9], data.image[1:3, 2:9])
    assert clipped_mean(np.r_[np.zeros(20), 1000.0]) == 0.0


def test_nominal_gain_converts_each_amp_to_electrons(tmp_path):
    doc = tiny_raw_camera_doc()
    gains = [1.37, 2.11, 0.53, 4.07]
    doc["detectors"][0]["amp_gain"] = gains
    camera = Camera.from_dict(doc)
    truth, _ = _tiny_raw(tmp_path / "raw.fits", camera)
    data = read_exposure(tmp_path / "raw.fits", camera=camera, gain="nominal")
    assert data.isr.gain == "nominal" and data.isr.units == "electron"
    for amp, g in zip(data.detector, gains, strict=True):
        np.testing.assert_allclose(data.image[amp.slices], truth[amp.slices] * g, rtol=1e-6)
    # the lazy reader (edges-only jobs, open_exposure) gives the same bits: it multiplied in
    # float64 before rounding, so pedestals depended on the face and the config
    ds = open_exposure(tmp_path / "raw.fits", camera=camera, gain="nominal")
    np.testing.assert_array_equal(ds.image.values, data.image)
    assert ds.attrs["gain"] == "nominal" and ds.attrs["overscan"] == "per-row"
    # a camera without gains: a clear error, not ADU silently called electrons
    with pytest.raises(InputError, match=r"raw.fits: gain='nominal' needs the nominal gains"):
        read_exposure(tmp_path / "raw.fits", camera=Camera.from_dict(tiny_raw_camera_doc()),
                      gain="nominal")


@pytest.fixture(scope="module")
def stepped_e2v(tmp_path_factory):
    """A full-size assembled LSSTCam R22_S11 file with amp steps of 1 ADU, written once per
    run (~200 MB of planes) and shared by the ``-n`` processes: read only."""
    from run_shared import once_per_run

    return once_per_run(tmp_path_factory, "stepped_e2v", lambda folder: write_stepped_lsstcam(
        folder / "e.fits", "R22_S11", visit=1, step=1.0))


def test_lsstcam_nominal_gains_on_an_exposure_scale_image_and_variance(stepped_e2v):
    path, image, det = stepped_e2v
    from ampoffset_dask import get_camera

    gains = get_camera("lsstcam").info("R22_S11")["amp_gain"]
    data = read_exposure(path, gain="nominal")
    assert data.isr.overscan == "none" and not data.isr.raw  # assembled: no overscan
    for amp, g in zip(det, gains, strict=True):
        np.testing.assert_allclose(data.image[amp.slices], image[amp.slices] * g, rtol=1e-6)
    lazy = open_lazy(path, gain="nominal")
    np.testing.assert_allclose(lazy.image[:, :], data.image, rtol=1e-6)


@pytest.mark.parametrize("card", [("GAINCORR", "nominal", 0), ("BUNIT", "electron", 1),
                                  ("BUNIT", "e-", 0)])
def test_nominal_gains_are_refused_on_pixels_already_in_electrons(stepped_e2v, tmp_path, card):
    # multiplied again: pedestals and levels gain times too large, recorded ok
    path, _, _ = stepped_e2v
    key, value, hdu = card
    copy = tmp_path / "in_electrons.fits"
    with fits.open(path) as hdul:
        hdul[hdu].header[key] = value
        hdul.writeto(copy)
    for read in (read_exposure, open_lazy):
        with pytest.raises(InputError, match=rf"in_electrons\.fits: detector 'R22_S11': "
                                             rf"gain='nominal' \(--gain nominal\) on pixels "
                                             rf"already in electrons \({key} = '{value}'"):
            read(copy, gain="nominal")
    read_exposure(copy)  # measured as it is


def test_assembled_files_are_left_alone_and_forced_modes_refused(stepped_e2v):
    path, image, _ = stepped_e2v
    data = read_exposure(path)
    np.testing.assert_array_equal(data.image, image)
    assert data.isr.overscan == "none"
    assert open_exposure(path).attrs["overscan"] == "none"
    with pytest.raises(InputError, match=r"e.fits: overscan='per-row', but an assembled"):
        read_exposure(path, overscan="per-row")


def test_kast_auto_equals_per_row_and_mean_differs_little(tmp_path):
    cam = tmp_path / "kast.json"
    cam.write_text(json.dumps(kast_camera_doc()))
    kw = {"camera": str(cam), "detector": "kast_blue"}
    auto = read_exposure(KAST / "b1.fits.gz", **kw)
    per_row = read_exposure(KAST / "b1.fits.gz", overscan="per-row", **kw)
    np.testing.assert_array_equal(auto.image, per_row.image)
    assert auto.isr.overscan == "per-row" and auto.isr.raw
    mean = read_exposure(KAST / "b1.fits.gz", overscan="mean", **kw)
    diff = mean.image - per_row.image
    # per amp the two differ by the row-to-row wander of the bias only (a few ADU)
    for amp in auto.detector:
        assert np.abs(np.median(diff[amp.slices])) < 2.0
    with fits.open(KAST / "b1.fits.gz") as hdul:
        raw = hdul[0].data.astype(np.float64)
    np.testing.assert_allclose(
        per_row.image[:, :1024], raw[:, :1024] - np.median(raw[:, 2049:2080], axis=1)[:, None])


def test_isr_header_records_what_was_done(tmp_path):
    camera = Camera.from_dict(tiny_raw_camera_doc())
    _tiny_raw(tmp_path / "raw.fits", camera)
    cards = isr_header(read_exposure(tmp_path / "raw.fits", camera=camera).isr)
    assert cards["OVERSCAN"][0] == "per-row" and cards["GAINCORR"][0] == "none"
    assert cards["BUNIT"][0] == "adu"
