"""Multi-CCD files and mosaic raws: DECam raw and CP ooi MEFs, HSC raws.

The files are written with the keywords and value formats the instruments write (as in
astro_metadata_translator's DECam and HSC header fixtures), with synthetic pixels.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import xarray as xr
from astropy.io import fits
from io_helpers import decam_primary, decam_raw_hdu

from ampoffset_dask import (
    AmpOffsetConfig,
    get_camera,
    measure_detector,
    open_exposure,
    open_visit,
    process,
    read_catalog,
)
from ampoffset_dask.errors import InputError
from ampoffset_dask.geometry import detector_from_boxes
from ampoffset_dask.io.fits import inspect_file, read_exposure, write_exposure
from ampoffset_dask.io.xarray import (
    AmpOffsetBackendEntrypoint,
    MultiCCDWarning,
    dataset_detector,
)
from ampoffset_dask.pipeline.graph import measure_visit

EDGES = AmpOffsetConfig(do_background=False, do_detection=False)
#: edges-only, with strips that fit the reduced-size CCDs of `_write_header_mef`
SMALL_EDGES = AmpOffsetConfig(amp_edge_width=8, amp_edge_inset=2, do_background=False,
                              do_detection=False)


def test_decam_raw_mef_is_one_ccd_per_hdu_with_overscan(tmp_path):
    path = tmp_path / "DECam_00177764.fits.fz"
    s_steps, n_steps = {"A": 3.0, "B": 0.0}, {"A": 0.0, "B": -2.0}
    fits.HDUList([
        decam_primary(177764),
        decam_raw_hdu("S1", 800.0, s_steps, {"A": 1200.0, "B": 950.0}),
        decam_raw_hdu("N4", 700.0, n_steps, {"A": 1010.0, "B": 1330.0}),
    ]).writeto(path)
    info = inspect_file(path)
    assert info.ccd_hdus == (1, 2) and info.camera == "decam"
    s1, n4 = inspect_file(path, hdu=1), inspect_file(path, hdu=2)
    assert (s1.visit, s1.detector, s1.detector_id) == (177764, "S1", 25)
    assert (n4.visit, n4.detector, n4.detector_id) == (177764, "N4", 35)
    for hdu, steps, sky in ((1, s_steps, 800.0), (2, n_steps, 700.0)):
        data = read_exposure(path, hdu=hdu)  # overscan "auto": the raw boxes have overscan
        assert data.image.shape == (4096, 2048) and data.isr.overscan == "per-row"
        for amp in data.detector:
            np.testing.assert_allclose(np.median(data.image[amp.slices]), sky + steps[amp.name],
                                       atol=0.6)
        m = measure_detector(data.image, data.mask, data.detector, EDGES)
        ped = m.pedestal_by_amp
        assert ped["A"] - ped["B"] == pytest.approx(steps["A"] - steps["B"], abs=0.05)
        # each CCD reads only its HDU: the lazy Dataset says which
        assert open_exposure(path, hdu=hdu).attrs["hdu"] == hdu
    raw = read_exposure(path, hdu=1, overscan="none")
    assert np.median(raw.image[raw.detector["A"].slices]) > 1900  # bias left in


#: the CCDs of `cp_ooi` and the step added to the right half of each
OOI_STEPS = (("S29", 1.5), ("N1", -1.0))


@pytest.fixture(scope="module")
def cp_ooi(tmp_path_factory):
    """A DECam Community Pipeline instcal/ooi file of two CCDs (`OOI_STEPS`): 2046x4094
    float CCDs, LTV1 = LTV2 = -1, no DATASEC; read-only for the tests sharing it."""
    path = tmp_path_factory.mktemp("ooi") / "c4d_190402_050618_ooi_VR_v1.fits.fz"
    primary = decam_primary(845291)
    primary.header["PROCTYPE"] = "InstCal"
    hdus = [primary]
    rng = np.random.default_rng(3)
    for name, step in OOI_STEPS:
        img = rng.normal(711.0, 14.4, (4094, 2046)).astype(np.float32)  # AVSKY, AVSIG
        img[:, 1023:] += step  # the right half of the trimmed CCD
        header = fits.Header()
        for key, value in (("EXTNAME", name), ("DETSEC", "[2053:4092,8197:12284]"),
                           ("CCDNUM", get_camera("decam")[name].id), ("DETPOS", name),
                           ("LTV1", -1.0), ("LTV2", -1.0), ("DES_EXT", "IMAGE")):
            header[key] = value
        hdus.append(fits.CompImageHDU(img, header=header, compression_type="RICE_1",
                                      quantize_level=4.0))
    fits.HDUList(hdus).writeto(path)
    return path


def test_decam_cp_ooi_trimmed_ccds_are_cropped_from_the_camera(cp_ooi):
    """CP instcal/ooi: 2046x4094 float CCDs, LTV1 = LTV2 = -1, no DATASEC."""
    path = cp_ooi
    info = inspect_file(path)
    assert info.ccd_hdus == (1, 2)
    data = read_exposure(path, hdu=1)
    det = data.detector
    assert (det.name, det.id, det.shape) == ("S29", 1, (4094, 2046))
    assert [(a.name, a.x0, a.width) for a in det] == [("A", 1023, 1023), ("B", 0, 1023)]
    assert data.isr.overscan == "none" and not data.isr.raw
    m = measure_detector(data.image, data.mask, det, EDGES)
    assert m.pedestal_by_amp["A"] - m.pedestal_by_amp["B"] == pytest.approx(1.5, abs=0.1)
    n1 = read_exposure(path, hdu=2)
    assert n1.detector.name == "N1" and [a.x0 for a in n1.detector] == [0, 1023]


def _write_header_mef(path, steps=(("C1", 2.0), ("C2", -3.0)), *, width=10, height=20,
                      overscan=4, noise=0.0, seed=0, expnum=42):
    """A MEF of CCD extensions described by DATASECA/B + BIASSECA/B (no camera): per CCD,
    amp B (bias 100) left of amp A (bias 300), sky 50, ``step`` added to amp A's data, and
    Gaussian ``noise`` on every pixel."""
    rng = np.random.default_rng(seed)
    w, h, o = width, height, overscan
    hdus = [fits.PrimaryHDU()]
    hdus[0].header["EXPNUM"] = expnum
    for k, (name, step) in enumerate(steps, start=1):
        img = np.zeros((h, 2 * (w + o)), np.float32)
        img[:, 0:o] = 100.0                          # overscan B
        img[:, o:o + w] = 100.0 + 50.0               # data B
        img[:, o + w:o + 2 * w] = 300.0 + 50.0 + step  # data A
        img[:, o + 2 * w:] = 300.0                   # overscan A
        img += rng.normal(0.0, noise, img.shape).astype(np.float32) if noise else 0.0
        header = fits.Header()
        for key, value in (("DATASECA", f"[{o + w + 1}:{o + 2 * w},1:{h}]"),
                           ("BIASSECA", f"[{o + 2 * w + 1}:{2 * (o + w)},1:{h}]"),
                           ("CCDSECA", f"[{w + 1}:{2 * w},1:{h}]"),
                           ("DATASECB", f"[{o + 1}:{o + w},1:{h}]"),
                           ("BIASSECB", f"[1:{o},1:{h}]"), ("CCDSECB", f"[1:{w},1:{h}]"),
                           ("CCDNUM", k), ("DETPOS", name)):
            header[key] = value
        hdus.append(fits.ImageHDU(img, header=header, name=name))
    fits.HDUList(hdus).writeto(path)
    return path


def test_header_described_mef_at_reduced_size(tmp_path):
    """Any MEF of CCD extensions with DATASECA/B + BIASSECA/B works without a camera."""
    path = _write_header_mef(tmp_path / "mef.fits")
    assert inspect_file(path).ccd_hdus == (1, 2)
    c2 = read_exposure(path, hdu=2)
    assert (c2.detector.name, c2.visit, c2.detector.shape) == ("C2", 42, (20, 20))
    np.testing.assert_array_equal(c2.image[:, 10:], 47.0)
    np.testing.assert_array_equal(c2.image[:, :10], 50.0)
    with pytest.raises(InputError, match=r"mef.fits: HDU 5 is not a 2-D image HDU"):
        inspect_file(path, hdu=5)


# -- HSC -----------------------------------------------------------------------------------------
def _hsc_raw(path, det_id: int, steps, bias, sky=1000.0, exp_id="HSCE00012346"):
    """An HSC raw: one 2144x4241 uint16 HDU, channels described by T_EFMN/T_EFMX/T_OSMN/T_OSMX.

    Pixels are laid out the way the camera's raw boxes say after the whole-image flip
    (left-right; top-bottom for detectors 100-103), and the channel keywords describe the
    file's (unflipped) columns, as HSC writes them.
    """
    cam = get_camera("hsc")
    det = cam[det_id]
    flipped = np.zeros((4241, 2144), np.float64)  # the raw in the camera's raw-box frame
    for amp, raw in zip(det, cam.raw_amps(det.name), strict=True):
        x0, y0, w, h = raw.raw_data_bbox
        ox, oy, ow, oh = raw.raw_serial_overscan_bbox
        rows = bias[amp.name] + 2.0 * np.sin(np.arange(h) / 300.0)  # bias wanders by row
        flipped[y0:y0 + h, x0:x0 + w] = sky + steps[amp.name] + rows[:, None]
        flipped[oy:oy + oh, ox:ox + ow] = rows[:, None]
    rotated = det_id in (100, 101, 102, 103)
    image = flipped[::-1] if rotated else flipped[:, ::-1]
    header = fits.Header()
    for key, value in (("INSTRUME", "Hyper Suprime-Cam"), ("DETECTOR", "notSet"),
                       ("DET-ID", det_id), ("EXP-ID", exp_id), ("FRAMEID", "HSCA00024692"),
                       ("DATA-TYP", "OBJECT"), ("BUNIT", "ADU"), ("T_NFRAME", 112)):
        header[key] = value
    # channel ch reads file columns (1-based): effective 9-520, 553-1064, 1081-1592, 1625-2136
    for ch, (ef, os_) in enumerate((((9, 520), (521, 536)), ((553, 1064), (537, 552)),
                                    ((1081, 1592), (1593, 1608)), ((1625, 2136), (1609, 1624))),
                                   start=1):
        header[f"T_EFMN{ch}1"], header[f"T_EFMX{ch}1"] = ef
        header[f"T_OSMN{ch}1"], header[f"T_OSMX{ch}1"] = os_
        header[f"T_EFMN{ch}2"], header[f"T_EFMX{ch}2"] = 50, 4225
        header[f"T_OSMN{ch}2"], header[f"T_OSMX{ch}2"] = 4226, 4241
        header[f"T_GAIN{ch}"] = 3.2
    fits.PrimaryHDU(np.round(image).astype(np.uint16), header=header).writeto(path)


@pytest.mark.parametrize("det_id", [37, 101])
def test_hsc_raw_is_flipped_assembled_and_overscan_corrected(tmp_path, det_id):
    steps = {"0": 0.0, "1": 2.0, "2": -1.0, "3": 4.0}
    bias = {"0": 1100.0, "1": 1000.0, "2": 1250.0, "3": 900.0}
    path = tmp_path / "HSC-0012346-037.fits"
    _hsc_raw(path, det_id, steps, bias)
    info = inspect_file(path)
    assert (info.camera, info.detector_id, info.visit) == ("hsc", det_id, 12346)
    assert info.detector == get_camera("hsc")[det_id].name
    data = read_exposure(path)
    assert data.image.shape == (4176, 2048) and data.isr.overscan == "per-row"
    for amp in data.detector:
        np.testing.assert_allclose(data.image[amp.slices], 1000.0 + steps[amp.name], atol=0.51)
    m = measure_detector(data.image, data.mask, data.detector, EDGES)
    ped = m.pedestals - m.pedestals.mean()
    truth = np.array([steps[a] for a in data.detector.amp_names])
    np.testing.assert_allclose(ped, truth - truth.mean(), atol=0.05)
    lazy = open_exposure(path)
    np.testing.assert_array_equal(lazy.image[2000:2010, 500:530].values,
                                  data.image[2000:2010, 500:530])


def test_hsc_raw_with_channels_that_do_not_fit_is_refused(tmp_path):
    path = tmp_path / "hsc.fits"
    _hsc_raw(path, 37, dict.fromkeys("0123", 0.0), dict.fromkeys("0123", 1000.0))
    with fits.open(path, mode="update") as hdul:
        hdul[0].header["T_EFMN41"], hdul[0].header["T_EFMX41"] = 1601, 2112
    with pytest.raises(InputError, match=r"hsc.fits: raw amp columns .* none of the channels"):
        read_exposure(path)


# -- multi-CCD files as xarray ---------------------------------------------------------------------
def _right_minus_left(measurement, ds) -> float:
    """Pedestal of the right amp minus the left one's (the step is on the right half) of a
    two-amp detector, whose geometry the `open_exposure` Dataset ``ds`` holds."""
    amps = sorted(dataset_detector(ds), key=lambda a: a.x0)
    ped = measurement.pedestal_by_amp
    return ped[amps[1].name] - ped[amps[0].name]


def test_open_visit_and_measure_visit_take_every_ccd_of_a_multi_ccd_file(cp_ooi):
    # open_visit kept only the first CCD of the file, and measure_visit measured only it
    tree = open_visit(cp_ooi)
    names = [name for name, _ in OOI_STEPS]
    assert list(tree.children) == tree.attrs["detectors"] == names  # the camera's names
    assert [tree[n].attrs["hdu"] for n in names] == [1, 2]
    assert tree.attrs == {"visit": 845291, "camera": "decam", "detectors": names}
    got = measure_visit(tree, config=EDGES, scheduler="sync")
    assert list(got) == names
    for hdu, (name, step) in enumerate(OOI_STEPS, start=1):
        want = measure_detector(open_exposure(cp_ooi, hdu=hdu), config=EDGES)
        assert got[name] == want
        assert _right_minus_left(got[name], tree[name].dataset) == pytest.approx(step,
                                                                                 abs=0.1)


def test_xarray_backend_opens_the_hdu_given_and_warns_about_the_other_ccds(cp_ooi):
    assert "hdu" in AmpOffsetBackendEntrypoint.open_dataset_parameters
    with warnings.catch_warnings():
        warnings.simplefilter("error", MultiCCDWarning)  # a CCD chosen: nothing to say
        n1 = xr.open_dataset(cp_ooi, engine="ampoffset", hdu=2)
    assert (n1.attrs["detector"], n1.attrs["hdu"]) == ("N1", 2)
    assert measure_detector(n1, config=EDGES) == measure_detector(
        open_exposure(cp_ooi, hdu=2), config=EDGES)
    # without hdu=: the first CCD, as before, and one warning saying what else the file holds
    with pytest.warns(MultiCCDWarning, match=r"holds 2 CCDs \(HDUs \[1, 2\]\); opened the "
                      r"first, HDU 1 \(S29\)\. Open another with .*hdu=k.*open_visit") as seen:
        first = xr.open_dataset(cp_ooi, engine="ampoffset")
    assert len(seen) == 1 and seen[0].filename == __file__  # attributed to the caller
    assert (first.attrs["detector"], first.attrs["hdu"]) == ("S29", 1)
    with pytest.raises(InputError, match=r"HDU 5 is not a 2-D image HDU"):
        xr.open_dataset(cp_ooi, engine="ampoffset", hdu=5)


def test_open_visit_of_multi_ccd_and_single_ccd_files_measures_as_process(tmp_path,
                                                                         shared_scheduler):
    data = tmp_path / "data"
    data.mkdir()
    mef = _write_header_mef(data / "mef.fits", width=40, height=60, overscan=8, noise=1.0,
                            seed=4)
    det = detector_from_boxes("D", 80, 60, [("A", 0, 0, 40, 60), ("B", 40, 0, 40, 60)])
    image = np.random.default_rng(5).normal(1000.0, 1.0, det.shape).astype(np.float32)
    image[:, 40:] += 4.0
    single = write_exposure(data / "single.fits", image, detector=det, header={"VISIT": 42})
    tree = open_visit(data)
    assert sorted(tree.children) == ["C1", "C2", "D"]
    assert {n: tree[n].attrs["hdu"] for n in ("C1", "C2")} == {"C1": 1, "C2": 2}
    got = measure_visit(tree, config=SMALL_EDGES, scheduler="sync")
    summary = process(data, tmp_path / "catalog", config=SMALL_EDGES, client=shared_scheduler,
                      progress=False)
    assert summary.n_failed == 0
    pedestals = read_catalog(tmp_path / "catalog", "pedestals")
    assert set(pedestals["visit"]) == {42}
    assert set(pedestals["detector"]) == set(got)
    for row in pedestals.itertuples():
        assert got[row.detector].pedestal_by_amp[row.amp] == pytest.approx(row.pedestal,
                                                                           rel=0, abs=1e-9)
    for hdu, (name, step) in enumerate((("C1", 2.0), ("C2", -3.0)), start=1):
        assert got[name] == measure_detector(open_exposure(mef, hdu=hdu), config=SMALL_EDGES)
        assert _right_minus_left(got[name], tree[name].dataset) == pytest.approx(step,
                                                                                 abs=0.3)
    with warnings.catch_warnings():  # a single-CCD file has no other CCD to warn about
        warnings.simplefilter("error", MultiCCDWarning)
        xr.open_dataset(single, engine="ampoffset")
    # a CCD given twice (the same file twice) names the file and HDU of both
    with pytest.raises(InputError, match=r"mef.fits\[1\]: detector 'C1' is also in "
                                         r".*mef.fits\[1\]"):
        open_visit([mef, mef])
