"""A raw's own headers against the camera: DETSIZE, DATASEC, the camera it names; reversed
header sections as flips (NOAO/IRAF); the message of a nominal gain nobody gives."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from astropy.io import fits
from io_helpers import REAL

from ampoffset_dask import InputError
from ampoffset_dask.cameras import get_camera
from ampoffset_dask.io import header_geometry
from ampoffset_dask.io.fits import read_exposure
from ampoffset_dask.io.header_geometry import (
    geometry_from_hdus,
    geometry_from_header,
    parse_section,
)
from ampoffset_dask.io.layout import open_sources

BOT = REAL / "lsstcam_bot_spots"
RAW_HEADERS = REAL / "lsst_raw_headers_zeroed"
LOGGER = "ampoffset_dask.io.layout"

#: Every real raw at hand, with the built-in camera and detector its headers name.
REAL_RAWS = [
    (BOT / "e2v_spot.fits.gz", "lsstcam", "R22_S11"),
    (BOT / "itl_spot.fits.gz", "lsstcam", "R02_S02"),
    (RAW_HEADERS / "LSSTCam_BOT_MC_C_20211212_000310_R22_S22_E2V_flat.fits.gz", "lsstcam",
     "R22_S22"),
    (RAW_HEADERS / "LSSTCam_MC_C_20190319_000001_R10_S02_ITL.fits.gz", "lsstcam", "R10_S02"),
    (RAW_HEADERS / "LSSTComCam_CC_C_20190530_000001_R22_S00_ITL.fits.gz", "lsstcomcam",
     "R22_S00"),
    (RAW_HEADERS / "LATISS_2018-09-20_065_RXX_S00_ITL.fits.gz", "latiss", "RXX_S00"),
]


def _copy(src, dst, primary=None, segment=None):
    """``src`` rewritten to ``dst`` with primary keywords set (None deletes) and the keywords
    of HDUs set (``{hdu: {key: value}}``)."""
    with fits.open(src) as hdul:
        out = fits.HDUList([fits.PrimaryHDU(header=hdul[0].header)]
                           + [h.copy() for h in hdul[1:]])
    for key, value in (primary or {}).items():
        if value is None:
            out[0].header.remove(key, ignore_missing=True)
        else:
            out[0].header[key] = value
    for k, keys in (segment or {}).items():
        for key, value in keys.items():
            if value is None:
                out[k].header.remove(key, ignore_missing=True)
            else:
                out[k].header[key] = value
    out.writeto(dst)
    return dst


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == LOGGER and r.levelno >= logging.WARNING]


# -- every real raw passes --------------------------------------------------------------------
@pytest.mark.parametrize("path, camera, detector", REAL_RAWS,
                         ids=[p.name.split(".")[0] for p, _, _ in REAL_RAWS])
def test_real_raws_agree_with_their_camera(path, camera, detector, caplog):
    """The checks are only worth having if no real raw trips them: every segment's DATASEC and
    the DETSIZE of every real LSSTCam/ComCam/LATISS raw are the built-in camera's."""
    cam = get_camera(camera)
    det = cam[detector]
    with fits.open(path) as hdul:
        y0, y1, x0, x1 = parse_section(hdul[0].header["DETSIZE"])
        assert (x1 - x0, y1 - y0) == (det.width, det.height)
        datasecs = {h.header["EXTNAME"]: h.header["DATASEC"] for h in hdul[1:]
                    if str(h.header.get("EXTNAME", "")).startswith("Segment")}
    for raw in cam.raw_amps(detector):
        x0, y0, w, h = raw.raw_data_bbox
        assert parse_section(datasecs[raw.extname]) == (y0, y0 + h, x0, x0 + w)
    for given in (None, camera):
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            _, found, sources = open_sources(path, camera=given)
        assert found.name == detector and len(sources) == len(det)
    assert _warnings(caplog) == []


# -- DETSIZE ----------------------------------------------------------------------------------
def test_itl_raw_named_as_an_e2v_slot_is_refused(tmp_path):
    """An ITL raw whose RAFTBAY/CCDSLOT name an E2V slot was cut with E2V boxes (all inside
    the segments) and measured as ok; its DETSIZE says ITL."""
    path = _copy(BOT / "itl_spot.fits.gz", tmp_path / "itl_as_e2v.fits",
                 {"RAFTBAY": "R22", "CCDSLOT": "S12"})
    with pytest.raises(InputError) as err:
        read_exposure(path)
    text = str(err.value)
    assert text.startswith(f"{path}: ")
    for part in ("'R22_S12'", "DETSIZE '[1:4072,1:4000]'", "4072x4000", "4096x4004", "E2V",
                 "ITL", "--camera", "RAFTBAY/CCDSLOT"):
        assert part in text, part


def test_e2v_raw_read_with_comcam_is_refused_and_names_both_cameras(caplog):
    """``--camera lsstcomcam`` (all ITL) on an LSSTCam E2V raw: the INSTRUME mismatch is a
    warning (the user may know better), the DETSIZE mismatch an error."""
    path = BOT / "e2v_spot.fits.gz"
    with caplog.at_level(logging.WARNING, logger=LOGGER), \
            pytest.raises(InputError, match=r"DETSIZE '\[1:4096,1:4004\]'.*'R22_S11' of camera "
                                            r"'lsstcomcam' is 4072x4000, ITL; the header names "
                                            r"camera 'lsstcam'"):
        read_exposure(path, camera="lsstcomcam")
    shown = _warnings(caplog)
    assert len(shown) == 1
    assert "camera 'lsstcomcam' was given, but the header names camera 'lsstcam'" in shown[0]
    assert "'lsstCam'" in shown[0] and str(path) in shown[0]


def test_wavefront_half_may_state_the_whole_ccd(tmp_path):
    """A wavefront detector is half a CCD: a DETSIZE of the whole CCD is no other type."""
    path = _copy(BOT / "itl_spot.fits.gz", tmp_path / "sw0.fits",
                 {"RAFTBAY": "R00", "CCDSLOT": "SW0"})
    _, det, sources = open_sources(path)
    assert det.name == "R00_SW0" and det.shape == (2000, 4072) and len(sources) == 8


# -- DATASEC ----------------------------------------------------------------------------------
def test_datasec_of_another_ccd_type_is_refused(tmp_path):
    """Without DETSIZE, the segments' ITL data box (509x2000) still tells an ITL raw from the
    E2V detector its RAFTBAY/CCDSLOT name."""
    path = _copy(BOT / "itl_spot.fits.gz", tmp_path / "itl_nodetsize.fits",
                 {"RAFTBAY": "R22", "CCDSLOT": "S12", "DETSIZE": None},
                 {k: {"DETSIZE": None} for k in range(1, 17)})
    with pytest.raises(InputError) as err:
        read_exposure(path)
    text = str(err.value)
    assert text.startswith(f"{path}: segment Segment10 (HDU 1): DATASEC '[4:512,1:2000]' has "
                           "509x2000 data pixels (the size of ITL")
    assert "'R22_S12' of camera 'lsstcam', E2V has 512x2002 ([11:522,1:2002])" in text


@pytest.mark.parametrize("datasec, reason", [
    ("[12:523,1:2002]", "the same size at another place"),
    ("[11:520,1:2002]", "510x2002 pixels"),
    ("garbage", "'garbage' is not a FITS section"),
])
def test_odd_datasec_warns_once_and_the_camera_is_used(tmp_path, caplog, datasec, reason):
    """Real raws carry some wrong DATASEC values and LSST trusts its camera: so do we, but say
    so once per file (it was silently ignored)."""
    path = _copy(BOT / "e2v_spot.fits.gz", tmp_path / "odd.fits",
                 segment={1: {"DATASEC": datasec}})
    expected = fits.getdata(BOT / "e2v_expected_assembled.fits.gz")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        np.testing.assert_array_equal(read_exposure(path, overscan="none").image, expected)
        open_sources(path)  # the file's sources built again: no second warning
    shown = _warnings(caplog)
    assert len(shown) == 1, shown
    assert shown[0].startswith(f"{path}: segment Segment10 (HDU 1): DATASEC {datasec!r} "
                               "disagrees with the raw data box [11:522,1:2002] of detector "
                               "'R22_S11' of camera 'lsstcam'")
    assert reason in shown[0] and "using the camera's" in shown[0]


# -- the camera the header names --------------------------------------------------------------
def test_header_naming_another_camera_warns_and_the_given_one_is_used(tmp_path, caplog):
    path = _copy(BOT / "e2v_spot.fits.gz", tmp_path / "relabelled.fits",
                 {"INSTRUME": "LSSTComCam"})
    expected = fits.getdata(BOT / "e2v_expected_assembled.fits.gz")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        data = read_exposure(path, camera="lsstcam", overscan="none")
    np.testing.assert_array_equal(data.image, expected)
    assert _warnings(caplog) == [
        f"{path}: camera 'lsstcam' was given, but the header names camera 'lsstcomcam' "
        "('LSSTComCam'); using 'lsstcam' as asked"]


# -- reversed sections are flips (NOAO/IRAF) --------------------------------------------------
def test_section_flips():
    flips = header_geometry.section_flips
    assert flips("[512:1,4004:2003]") == (True, True)
    assert flips("[1:512,4004:2003]") == (False, True)
    assert flips("[1:512,1:2002]") == (False, False)


def test_real_e2v_raw_without_camera_keywords_assembles_by_its_sections(tmp_path):
    """The real E2V raw as a generic one-amp-per-HDU file (camera keywords removed): its
    reversed DETSEC ranges are readout flips. Honoured, they give LSST's assembled image
    exactly, upside down (DETSEC puts the C1x row at the bottom, LSST's camera on top); read
    as the same pixels, every amp came out mirrored."""
    with fits.open(BOT / "e2v_spot.fits.gz") as hdul:
        out = fits.HDUList([fits.PrimaryHDU(header=hdul[0].header)]
                           + [fits.ImageHDU(h.data, header=h.header) for h in hdul[1:17]])
    for key in ("INSTRUME", "TELESCOP", "CAMERA", "TELCODE", "CONTRLLR"):
        out[0].header.remove(key, ignore_missing=True)
    for h in out[1:]:
        h.header["EXTNAME"] = "AMP" + h.header["EXTNAME"][-2:]
    path = tmp_path / "generic.fits"
    out.writeto(path)
    image = read_exposure(path, overscan="none").image
    expected = fits.getdata(BOT / "e2v_expected_assembled.fits.gz")
    np.testing.assert_array_equal(image, expected[::-1])


def _two_amp_mef(path, detsecs, datasecs=("[1:4,1:3]", "[1:4,1:3]")):
    """Two 4x3 amps in HDUs of 5x3 (a column of overscan), values 10*amp + column + row/10."""
    hdus = [fits.PrimaryHDU()]
    blocks = []
    for k, (detsec, datasec) in enumerate(zip(detsecs, datasecs, strict=True)):
        block = (10.0 * k + np.arange(5)[None, :] + np.arange(3)[:, None] / 10).astype(np.float32)
        blocks.append(block[:, :4])
        hdus.append(fits.ImageHDU(block, fits.Header({
            "EXTNAME": f"AMP{k}", "DATASEC": datasec, "DETSEC": detsec,
            "BIASSEC": "[5:5,1:3]"})))
    fits.HDUList(hdus).writeto(path)
    return blocks


def test_reversed_detsec_flips_the_amp(tmp_path):
    path = tmp_path / "two.fits"
    a, b = _two_amp_mef(path, ("[1:4,1:3]", "[8:5,3:1]"))
    image = read_exposure(path, overscan="none").image
    np.testing.assert_array_equal(image[:, :4], a)
    np.testing.assert_array_equal(image[:, 4:], b[::-1, ::-1])


def test_reversed_datasec_and_detsec_cancel(tmp_path):
    """A reversed DATASEC reads the data mirrored (IRAF image sections): placed at a reversed
    DETSEC, the amp is as stored."""
    path = tmp_path / "both.fits"
    a, b = _two_amp_mef(path, ("[1:4,1:3]", "[8:5,1:3]"), ("[1:4,1:3]", "[4:1,1:3]"))
    image = read_exposure(path, overscan="none").image
    np.testing.assert_array_equal(image, np.hstack([a, b]))


def test_header_geometry_records_flips():
    header = {"DATASECA": "[1:4,1:3]", "CCDSECA": "[4:1,1:3]",
              "DATASECB": "[5:8,1:3]", "CCDSECB": "[5:8,1:3]"}
    hg = geometry_from_header(header, "D", (3, 8))
    assert hg.flips == ((True, False), (False, False)) and not hg.trimmed
    hg = geometry_from_hdus([(1, {"DETSEC": "[1:4,1:3]"}, (3, 4)),
                             (2, {"DETSEC": "[5:8,1:3]"}, (3, 4))], "D")
    assert hg.flips is None and hg.flip(1) == (False, False)


def test_reversed_ccdsec_in_one_hdu_flips_the_amp(tmp_path):
    """Per-amp keywords in one HDU (DECam style) follow the same convention."""
    data = np.arange(24, dtype=np.float32).reshape(3, 8)
    header = fits.Header({"DATASECA": "[1:4,1:3]", "CCDSECA": "[4:1,1:3]",
                          "DATASECB": "[5:8,1:3]", "CCDSECB": "[5:8,1:3]"})
    path = tmp_path / "one.fits"
    fits.PrimaryHDU(data, header).writeto(path)
    image = read_exposure(path, overscan="none").image
    np.testing.assert_array_equal(image[:, :4], data[:, :4][:, ::-1])
    np.testing.assert_array_equal(image[:, 4:], data[:, 4:])


# -- nominal gains nobody gives ---------------------------------------------------------------
def test_nominal_gain_without_a_camera_says_so(tmp_path):
    """It read "...of detector 'two'; no camera gives none"."""
    path = tmp_path / "two.fits"
    _two_amp_mef(path, ("[1:4,1:3]", "[5:8,1:3]"))
    with pytest.raises(InputError) as err:
        read_exposure(path, gain="nominal")
    assert str(err.value) == (
        f"{path}: gain='nominal' needs the nominal gains (amp_gain, one per amp) of detector "
        "'two', but no camera is given or named in the header; pass camera= (--camera) of a "
        "camera with amp_gain")


def test_amps_a_camera_gives_one_hdu_number_are_found_by_extname_only(tmp_path):
    """LSST's ITL_WF layout gives C13 and C14 hdu 4: a wavefront raw without EXTNAMEs gave
    C14 the pixels of C13 (hdu 4), silently. Such numbers say nothing of which HDU is whose:
    the amps are found by EXTNAME, and a raw without them is refused."""
    cam = get_camera("lsstcam")
    for name in cam.detector_names:  # no built-in layout keeps a repeated number
        numbers = [r.hdu for r in cam.raw_amps(name) if r.hdu is not None]
        assert len(numbers) == len(set(numbers)), name
    wf = {r.name: r for r in cam.raw_amps("R00_SW0")}
    assert (wf["C13"].hdu, wf["C14"].hdu, wf["C14"].extname) == (None, None, "Segment14")
    assert wf["C15"].hdu == 6
    with fits.open(RAW_HEADERS / "LSSTCam_MC_C_20190319_000001_R10_S02_ITL.fits.gz") as hdul:
        segments = [h.copy() for h in hdul[1:]
                    if h.header.get("EXTNAME") in {f"Segment1{i}" for i in range(8)}]
        primary = fits.PrimaryHDU(header=hdul[0].header)
    primary.header.update(RAFTBAY="R00", CCDSLOT="SW0", DETSIZE="[1:4072,1:2000]")
    for k, seg in enumerate(segments):  # each segment its own value: a swap would show
        seg.data = np.full_like(seg.data, 1000 * (k + 1))
    named = tmp_path / "wf.fits"
    fits.HDUList([primary, *segments]).writeto(named)
    exp = read_exposure(named, overscan="none")
    assert exp.detector.name == "R00_SW0"
    levels = {a.name: float(np.median(exp.image[a.slices])) for a in exp.detector}
    assert len(set(levels.values())) == 8 and levels["C14"] == 5000.0, levels
    for seg in segments:
        del seg.header["EXTNAME"]
    unnamed = tmp_path / "wf-unnamed.fits"
    fits.HDUList([primary, *segments]).writeto(unnamed)
    with pytest.raises(InputError, match=r"no raw HDU Segment13 for amp 'C13'"):
        read_exposure(unnamed, overscan="none")


def test_decam_data_sections_the_camera_disagrees_with_are_warned_about(tmp_path, caplog):
    """An HDU laid out as an N CCD (its DATASECA/B say so) under an S CCD's DETPOS was cut
    with the S boxes, without a word; consistent sections say nothing."""
    from io_helpers import decam_primary, decam_raw_hdu

    def write(name, swap):
        hdu = decam_raw_hdu("S4", 1000.0, {"A": 1.0, "B": -1.0}, {"A": 500.0, "B": 600.0})
        if swap:
            hdu.header["DATASECA"], hdu.header["DATASECB"] = (hdu.header["DATASECB"],
                                                              hdu.header["DATASECA"])
        path = tmp_path / name
        fits.HDUList([decam_primary(7), hdu]).writeto(path)
        return path

    with caplog.at_level(logging.WARNING, logger=LOGGER):
        read_exposure(write("good.fits", swap=False))
        assert not caplog.records
        swapped = write("swapped.fits", swap=True)
        read_exposure(swapped)
    (record,) = caplog.records
    text = record.getMessage()
    assert text.startswith(f"{swapped}: DATASECA ") and "DATASECB" in text
    assert "detector 'S4' of camera 'decam'" in text and "pass camera= and detector=" in text


def test_a_header_naming_two_detectors_is_measured_as_its_name_with_a_warning(tmp_path,
                                                                             caplog):
    """RAFTBAY/CCDSLOT (or DETNAME, DETPOS) and DETECTOR (or CCDNUM) naming two detectors
    gave a row of one detector's name beside the other's id, without a word."""
    path = _copy(RAW_HEADERS / "LSSTCam_MC_C_20190319_000001_R10_S02_ITL.fits.gz",
                 tmp_path / "x.fits", {"DETECTOR": 95})
    from ampoffset_dask.io.fits import inspect_file

    with caplog.at_level(logging.WARNING, logger="ampoffset_dask.io.file_info"):
        info = inspect_file(path)
        inspect_file(path)  # said once per file
    assert (info.detector, info.detector_id) == ("R10_S02", 29)
    (record,) = caplog.records
    assert record.getMessage() == (
        f"{path}: the header names detector R10_S02 (id 29) and detector id 95 (R22_S12 of "
        "camera lsstcam); measured as R10_S02")
