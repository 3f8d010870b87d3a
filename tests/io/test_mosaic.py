"""Multi-CCD files and mosaic raws: DECam raw and CP ooi MEFs, HSC raws.

The files are written with the keywords and value formats the instruments write (as in
astro_metadata_translator's DECam and HSC header fixtures), with synthetic pixels.
"""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from io_helpers import decam_primary, decam_raw_hdu

from ampoffset_dask import AmpOffsetConfig, get_camera, measure_detector, open_exposure
from ampoffset_dask.errors import InputError
from ampoffset_dask.io.fits import inspect_file, read_exposure

EDGES = AmpOffsetConfig(do_background=False, do_detection=False)


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


def test_decam_cp_ooi_trimmed_ccds_are_cropped_from_the_camera(tmp_path):
    """CP instcal/ooi: 2046x4094 float CCDs, LTV1 = LTV2 = -1, no DATASEC."""
    path = tmp_path / "c4d_190402_050618_ooi_VR_v1.fits.fz"
    primary = decam_primary(845291)
    primary.header["PROCTYPE"] = "InstCal"
    hdus = [primary]
    rng = np.random.default_rng(3)
    for name, step in (("S29", 1.5), ("N1", -1.0)):
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


def test_header_described_mef_at_reduced_size(tmp_path):
    """Any MEF of CCD extensions with DATASECA/B + BIASSECA/B works without a camera."""
    hdus = [fits.PrimaryHDU()]
    hdus[0].header["EXPNUM"] = 42
    for k, (name, step) in enumerate((("C1", 2.0), ("C2", -3.0)), start=1):
        img = np.zeros((20, 28), np.float32)
        img[:, 0:4] = 100.0            # overscan B
        img[:, 4:14] = 100.0 + 50.0    # data B
        img[:, 14:24] = 300.0 + 50.0 + step  # data A
        img[:, 24:28] = 300.0          # overscan A
        header = fits.Header()
        for key, value in (("DATASECA", "[15:24,1:20]"), ("BIASSECA", "[25:28,1:20]"),
                           ("CCDSECA", "[11:20,1:20]"), ("DATASECB", "[5:14,1:20]"),
                           ("BIASSECB", "[1:4,1:20]"), ("CCDSECB", "[1:10,1:20]"),
                           ("CCDNUM", k), ("DETPOS", name)):
            header[key] = value
        hdus.append(fits.ImageHDU(img, header=header, name=name))
    path = tmp_path / "mef.fits"
    fits.HDUList(hdus).writeto(path)
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
