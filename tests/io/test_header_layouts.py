"""Amp layouts a file states for itself: header keywords against guessed cameras, amps stored
out of detector order, one HDU per amp, untrimmed single-DATASEC images, overlapping places.

Each test builds a small FITS file in ``tmp_path`` with astropy and checks which file pixels
land in which amp (and, where it matters, the sign of the measured pedestals).
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from astropy.io import fits
from cli_helpers import cli

from ampoffset_dask import AmpOffsetConfig, InputError, get_camera, measure_detector
from ampoffset_dask.geometry import Amplifier, Detector
from ampoffset_dask.io.fits import inspect_file, open_lazy, read_exposure, resolve_detector
from ampoffset_dask.io.header_geometry import format_section, section_suffixes

EDGES = AmpOffsetConfig(do_background=False, do_detection=False, amp_edge_width=20)
LOGGER = "ampoffset_dask.io.layout"


def _pedestals(data) -> dict[str, float]:
    """Measured pedestals by amp name of an opened file, edges only (a lazy file: only the
    edge strips are read)."""
    return dict(measure_detector(data, config=EDGES).pedestal_by_amp)


def _centered(values: dict[str, float]) -> dict[str, float]:
    mean = float(np.mean(list(values.values())))
    return {k: v - mean for k, v in values.items()}


# -- 1. a layout the header states beats a camera guessed from DETNAME + image size ----------
def _pre2020_latiss() -> Detector:
    """LATISS with the rows of amps swapped (C10 at the bottom): the layout LSST persisted in
    files written before March 2020, which the built-in camera no longer has."""
    builtin = get_camera("latiss")["RXX_S00"]
    amps = tuple(Amplifier(a.name, a.x0, builtin.height - a.y1, a.width, a.height)
                 for a in builtin)
    return Detector(builtin.name, builtin.width, builtin.height, amps, builtin.id)


def _write_latiss_like(path, det: Detector, header: dict) -> dict[str, float]:
    """A full-size LATISS image (losslessly tile-compressed, so the file stays small) whose amp
    i (of ``det``) holds the value 100 + i / 4 (neighbours within the 5 ADU do-no-harm limit),
    its layout recorded as `write_exposure` records it (``AMPNAM<s>``/``DATASEC<s>``).
    Returns the value of each amp."""
    image = np.zeros(det.shape, np.float32)
    truth = {}
    ext = fits.Header()
    for i, (s, amp) in enumerate(zip(section_suffixes(len(det)), det, strict=True)):
        image[amp.slices] = truth[amp.name] = 100 + i / 4
        ext[f"AMPNAM{s}"] = amp.name
        ext[f"DATASEC{s}"] = format_section(amp.y0, amp.y1, amp.x0, amp.x1)
    fits.HDUList([fits.PrimaryHDU(header=fits.Header(header)),
                  fits.CompImageHDU(image, ext, compression_type="GZIP_2", quantize_level=0.0,
                                    tile_shape=(128, 128))]).writeto(path)
    return truth


def test_stated_layout_wins_over_a_guessed_camera(tmp_path, caplog):
    old = _pre2020_latiss()
    builtin = get_camera("latiss")["RXX_S00"]
    assert (old["C10"].y0, builtin["C10"].y0) == (0, 2000)
    path = tmp_path / "latiss_own_layout.fits"
    truth = _write_latiss_like(path, old, {"DETNAME": "RXX_S00", "VISIT": 5})

    with caplog.at_level(logging.INFO, logger=LOGGER):
        data = open_lazy(path)
    assert data.detector.amplifiers == old.amplifiers  # not the guessed camera's
    for amp in data.detector:  # every amp reads the pixels the file gave it
        assert float(data.image[amp.y0 + 7, amp.x0 + 3]) == truth[amp.name]
    assert "states its own amp layout" in caplog.text and "'latiss'" in caplog.text
    measured = _centered(_pedestals(data))
    expected = _centered(truth)
    for name in ("C10", "C17", "C07", "C00"):
        assert measured[name] == pytest.approx(expected[name], abs=1e-3)

    # `info` says where the amps came from: the header, not a camera
    shown = json.loads(cli("info", path, "--json").stdout)
    assert (shown["camera"], shown["geometry_source"]) == (None, "header keywords")
    assert (shown["amps"][0]["name"], shown["amps"][0]["y0"]) == ("C10", 0)

    # a camera the caller names keeps its precedence
    assert resolve_detector(inspect_file(path), camera="latiss") == builtin


def test_agreeing_header_keeps_the_guessed_camera(tmp_path, caplog):
    builtin = get_camera("latiss")["RXX_S00"]
    path = tmp_path / "latiss_builtin_layout.fits"
    _write_latiss_like(path, builtin, {"DETNAME": "RXX_S00", "VISIT": 5})
    with caplog.at_level(logging.INFO, logger=LOGGER):
        det = resolve_detector(inspect_file(path))
    assert det == builtin and det.id == builtin.id
    assert "amp layout" not in caplog.text
    shown = json.loads(cli("info", path, "--json").stdout)
    assert (shown["camera"], shown["geometry_source"]) == ("latiss", "camera")


def test_a_camera_named_by_the_header_is_kept_and_the_disagreement_reported(tmp_path, caplog):
    """INSTRUME names the camera: its layout is used (as before), with a warning that the
    recorded AMPNAM layout differs."""
    path = tmp_path / "latiss_named.fits"
    _write_latiss_like(path, _pre2020_latiss(),
                       {"INSTRUME": "LATISS", "DETNAME": "RXX_S00", "VISIT": 5})
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        det = resolve_detector(inspect_file(path))
    assert det == get_camera("latiss")["RXX_S00"]
    assert "latiss_named.fits: the amp layout recorded in the header" in caplog.text


# -- 2. amps stored in another order than on the CCD (image of the detector's shape) ---------
def _swapped_file(path, untrimmed: bool = False) -> np.ndarray:
    """Two 100x120 amps: file columns 1-100 hold B (-1), 101-200 hold A (+1), while CCDSEC
    puts A on the left. ``untrimmed`` adds 4 overscan columns on the right. Returns the
    detector image the file describes."""
    rng = np.random.default_rng(1)
    image = (1000 + rng.normal(0, 0.5, (120, 204 if untrimmed else 200))).astype(np.float32)
    image[:, :100] -= 1.0
    image[:, 100:200] += 1.0
    header = fits.Header({"DETNAME": "swap2", "VISIT": 11,
                          "DATASECA": "[101:200,1:120]", "CCDSECA": "[1:100,1:120]",
                          "DATASECB": "[1:100,1:120]", "CCDSECB": "[101:200,1:120]"})
    fits.PrimaryHDU(image, header).writeto(path)
    return np.concatenate([image[:, 100:200], image[:, :100]], axis=1)


def test_datasec_is_read_even_when_the_image_has_the_detector_shape(tmp_path):
    path = tmp_path / "swap2.fits"
    expected = _swapped_file(path)
    for data in (read_exposure(path), open_lazy(path)):
        assert [(a.name, a.x0) for a in data.detector] == [("A", 0), ("B", 100)]
        np.testing.assert_array_equal(np.asarray(data.image), expected)
    ped = _pedestals(read_exposure(path))
    assert ped["A"] > 0.9 and ped["B"] < -0.9  # +1 / -1: not swapped


def test_trimmed_header_layout_still_reads_the_image_as_is(tmp_path):
    """DATASEC<s> equal to the places: the shortcut (one read of the whole HDU) stays."""
    image = np.arange(12 * 8, dtype=np.float32).reshape(8, 12)
    header = fits.Header({"DATASECA": "[1:6,1:8]", "CCDSECA": "[1:6,1:8]",
                          "DATASECB": "[7:12,1:8]", "CCDSECB": "[7:12,1:8]"})
    path = tmp_path / "trimmed.fits"
    fits.PrimaryHDU(image, header).writeto(path)
    data = read_exposure(path)
    np.testing.assert_array_equal(data.image, image)
    assert not data.isr.raw


# -- 3. a generic MEF with one HDU per amp -----------------------------------------------------
PEDS = (0.0, 2.0, -1.0, 1.5)


def _per_amp_mef(path, names=("AMP1", "AMP2", "AMP3", "AMP4"), detsecs=None,
                 sections: bool = True) -> np.ndarray:
    """Four 40x60 amps side by side, each in its own HDU (data columns 1-40, overscan 41-44,
    its own bias level), amp k ``PEDS[k]`` above a 1000 ADU sky. Returns the detector image."""
    rng = np.random.default_rng(2)
    hdus = [fits.PrimaryHDU(header=fits.Header({"DETNAME": "mef4", "VISIT": 7}))]
    truth = np.zeros((60, 160), np.float32)
    for k, name in enumerate(names):
        bias = 500.0 + 37.0 * k
        block = np.full((60, 44), bias, np.float32)
        data = 1000.0 + PEDS[k] + rng.normal(0, 0.5, (60, 40))
        block[:, :40] += data
        truth[:, 40 * k:40 * k + 40] = data
        header = fits.Header({"EXTNAME": name})
        if sections:
            header["DATASEC"] = "[1:40,1:60]"
            header["BIASSEC"] = "[41:44,1:60]"
            header["DETSEC"] = (detsecs[k] if detsecs
                                else f"[{40 * k + 1}:{40 * k + 40},1:60]")
            header["DETSIZE"] = "[1:160,1:60]"
        hdus.append(fits.ImageHDU(block, header))
    fits.HDUList(hdus).writeto(path)
    return truth


def test_per_amp_mef_is_assembled_from_its_sections(tmp_path):
    path = tmp_path / "mef4.fits"
    truth = _per_amp_mef(path)
    info = inspect_file(path)
    assert (info.kind, info.shape, info.ccd_hdus) == ("raw", (60, 160), ())
    for data in (read_exposure(path), open_lazy(path)):
        det = data.detector
        assert [(a.name, a.x0, a.width) for a in det] == [
            ("AMP1", 0, 40), ("AMP2", 40, 40), ("AMP3", 80, 40), ("AMP4", 120, 40)]
        assert data.isr.overscan == "per-row"  # each HDU's BIASSEC, its own bias removed
        np.testing.assert_allclose(np.asarray(data.image), truth, atol=1e-3)
    measured = _centered(_pedestals(read_exposure(path)))
    expected = _centered(dict(zip(("AMP1", "AMP2", "AMP3", "AMP4"), PEDS, strict=True)))
    for name, value in expected.items():
        assert measured[name] == pytest.approx(value, abs=0.05)


@pytest.mark.parametrize("detsecs, keyword", [
    (["[1:40,1:60]", "[1:40,1:60]", "[81:120,1:60]", "[121:160,1:60]"],
     r"HDU 2 \(AMP2\) DETSEC = '\[1:40,1:60\]' overlaps HDU 1 \(AMP1\) DETSEC"),
    (["[1:40,1:60]", "[41:80,1:60]", "[81:120,1:60]", "[161:200,1:60]"], r"leave gaps"),
])
def test_per_amp_mef_that_does_not_tile_is_refused(tmp_path, detsecs, keyword):
    path = tmp_path / "mef_bad.fits"
    _per_amp_mef(path, detsecs=detsecs)
    pattern = (r"mef_bad.fits: 4 image HDUs \(AMP1, AMP2, AMP3, AMP4\) each hold one amp.*"
               + keyword + r".*\"hdu\": k or \"extname\".*docs/cameras.md")
    with pytest.raises(InputError, match=pattern):
        read_exposure(path)
    assert inspect_file(path).kind == "raw"  # never read as one amp of its first HDU


def test_amp_hdus_naming_the_same_ccd_are_amps_not_ccds(tmp_path):
    """A per-amp MEF whose HDUs all repeat the CCD's DETNAME is one detector, while a
    mosaic (each HDU its own CCD) keeps one task per HDU."""
    path = tmp_path / "mef_detname.fits"
    _per_amp_mef(path)
    with fits.open(path, mode="update") as hdul:
        for hdu in hdul[1:]:
            hdu.header["DETNAME"] = "mef4"
    info = inspect_file(path)
    assert (info.kind, info.ccd_hdus) == ("raw", ())
    assert len(read_exposure(path).detector) == 4
    with fits.open(path, mode="update") as hdul:
        for k, hdu in enumerate(hdul[1:]):
            hdu.header["DETNAME"] = f"ccd{k}"
    assert inspect_file(path).ccd_hdus == (1, 2, 3, 4)


# -- 4. a user camera naming each amp's HDU, whatever its EXTNAME -----------------------------
@pytest.mark.parametrize("style", ["hdu", "extname"])
def test_user_camera_amps_in_any_named_hdu(tmp_path, style):
    path = tmp_path / "mef_plain.fits"
    names = ("LEFT", "MIDL", "MIDR", "RIGHT")
    truth = _per_amp_mef(path, names=names, sections=False)
    amps = []
    for k, name in enumerate(names):
        amp = {"name": f"A{k}", "bbox": [40 * k, 0, 40, 60], "raw_data_bbox": [0, 0, 40, 60],
               "raw_serial_overscan_bbox": [40, 0, 4, 60]}
        amp.update({"hdu": k + 1} if style == "hdu" else {"extname": name})
        amps.append(amp)
    cam = tmp_path / "cam.json"
    cam.write_text(json.dumps({
        "name": "mef4cam", "amp_layouts": {"L": {"detector_size": [160, 60], "amps": amps}},
        "detectors": [{"id": 0, "name": "mef4", "physical_type": "L"}]}))
    for data in (read_exposure(path, camera=str(cam)), open_lazy(path, camera=str(cam))):
        assert data.detector.amp_names == ("A0", "A1", "A2", "A3")
        np.testing.assert_allclose(np.asarray(data.image), truth, atol=1e-3)
    measured = _centered(_pedestals(read_exposure(path, camera=str(cam))))
    expected = _centered(dict(zip(("A0", "A1", "A2", "A3"), PEDS, strict=True)))
    for name, value in expected.items():
        assert measured[name] == pytest.approx(value, abs=0.05)
    # a camera whose amps name no HDU cannot read a file of per-amp HDUs with sections
    sectioned = tmp_path / "mef_sections.fits"
    _per_amp_mef(sectioned)
    doc = json.loads(cam.read_text())
    for amp in doc["amp_layouts"]["L"]["amps"]:
        amp.pop(style)
    blind = tmp_path / "blind.json"
    blind.write_text(json.dumps(doc))
    with pytest.raises(InputError, match=r"mef_sections.fits: camera 'mef4cam' names no HDU "
                                         r".*for amp 'A0'.*one amp per HDU \(HDUs 1, 2, 3, 4\)"):
        read_exposure(sectioned, camera=str(blind))
    # without the camera the file says nothing of its amps: refused, not one amp of HDU 1
    with pytest.raises(InputError, match=r"mef_plain.fits: cannot tell the amp layout: 4 image "
                                         r"HDUs.*\"hdu\"/\"extname\""):
        read_exposure(path)


# -- 5. untrimmed image with a single DATASEC --------------------------------------------------
def test_single_datasec_untrimmed_is_trimmed_by_both_readers(tmp_path):
    image = np.arange(10 * 30, dtype=np.float32).reshape(10, 30)
    path = tmp_path / "oneamp.fits"
    fits.PrimaryHDU(image, fits.Header({"DATASEC": "[1:24,1:10]", "DETNAME": "oneamp"})
                    ).writeto(path)
    full, lazy = read_exposure(path), open_lazy(path)
    assert full.detector.shape == (10, 24)
    np.testing.assert_array_equal(full.image, image[:, :24])
    np.testing.assert_array_equal(np.asarray(lazy.image), full.image)
    assert full.mask.shape == full.variance.shape == (10, 24)


# -- 6. overlapping places are refused when the file is read -----------------------------------
def test_overlapping_ccdsec_is_refused_naming_file_and_keywords(tmp_path):
    header = fits.Header({"DETNAME": "ovl", "VISIT": 3})
    for name, fx, cx, y in (("A", 0, 0, 0), ("B", 10, 0, 0), ("C", 0, 0, 5), ("D", 10, 10, 5)):
        header[f"DATASEC{name}"] = format_section(y, y + 5, fx, fx + 10)
        header[f"CCDSEC{name}"] = format_section(y, y + 5, cx, cx + 10)
    path = tmp_path / "ovl.fits"
    fits.PrimaryHDU(np.zeros((10, 20), np.float32), header).writeto(path)
    match = (r"ovl.fits: header amp geometry: CCDSECB = '\[1:10,1:5\]' overlaps "
             r"CCDSECA = '\[1:10,1:5\]'")
    with pytest.raises(InputError, match=match):
        read_exposure(path)
    with pytest.raises(InputError, match=match):
        open_lazy(path)
    shown = cli("info", path)
    assert shown.returncode != 0 and "CCDSECB = '[1:10,1:5]' overlaps CCDSECA" in shown.stdout
