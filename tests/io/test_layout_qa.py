"""A file's geometry and identity against the camera it is read with: a detector id the
header's camera filled in is never looked up in another camera; a per-amp layout the header
states that differs from the camera's is reported; trimmed images are told apart from raws."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from astropy.io import fits
from io_helpers import REAL

from ampoffset_dask import InputError, get_camera
from ampoffset_dask.io.fits import inspect_file, open_sources, read_exposure, resolve_detector
from ampoffset_dask.pipeline.inputs import discover_inputs, plan_tasks

RAW_HEADERS = REAL / "lsst_raw_headers_zeroed"
LATISS_RAW = RAW_HEADERS / "LATISS_2018-09-20_065_RXX_S00_ITL.fits.gz"


# ------------------------------------------------------------------------------------------
# 1. an id filled in from the header's camera is not looked up in another camera
# ------------------------------------------------------------------------------------------
def test_latiss_header_id_comes_from_its_camera():
    info = inspect_file(LATISS_RAW)
    # the header names RXX_S00 only: id 0 is LATISS's number for it
    assert (info.camera, info.detector, info.detector_id, info.detector_id_from) == (
        "latiss", "RXX_S00", 0, "latiss")
    assert resolve_detector(info).name == "RXX_S00"


@pytest.mark.parametrize("camera", ["lsstcam", "lsstcomcam"])
def test_latiss_raw_with_another_camera_is_an_unknown_detector(camera):
    info = inspect_file(LATISS_RAW)
    assert get_camera(camera)[0].name != "RXX_S00"  # what the old fallback measured it as
    with pytest.raises(InputError) as err:
        resolve_detector(info, camera=camera)
    text = str(err.value)
    assert text.startswith(f"{LATISS_RAW}: unknown detector: camera {camera!r} has no "
                           "detector 'RXX_S00'"), text
    assert "id 0 is the number of 'RXX_S00' in camera 'latiss'" in text
    # --gain nominal took the other camera's gains: refused before any gain is looked up
    with pytest.raises(InputError, match="unknown detector"):
        open_sources(LATISS_RAW, camera, None, "auto", "nominal", None)


def test_latiss_raw_with_another_camera_plans_as_its_own_name(tmp_path):
    link = tmp_path / LATISS_RAW.name
    link.symlink_to(LATISS_RAW)
    task, = plan_tasks(discover_inputs(link), camera="lsstcam", threads=1)
    assert "unknown detector" in task.error and task.detector is None
    # the failed row names the header's detector, without LATISS's id in LSSTCam's numbering
    assert (task.name, task.detector_id) == ("RXX_S00", None)


def test_header_id_still_finds_the_detector_its_name_does_not(tmp_path):
    # a header stating its own id (CCDNUM) under a name the camera lacks: the id decides
    path = tmp_path / "s1.fits"
    cam = get_camera("decam")
    det = cam["S1"]
    primary = fits.PrimaryHDU()
    primary.header["INSTRUME"] = "DECam"
    primary.header["EXPNUM"] = 3
    ext = fits.ImageHDU(np.zeros(det.shape, np.float32))
    ext.header["DETPOS"] = "XS1"
    ext.header["CCDNUM"] = det.id
    fits.HDUList([primary, ext]).writeto(path)
    info = inspect_file(path)
    assert info.detector_id_from is None
    assert resolve_detector(info).name == "S1"
    assert read_exposure(path).detector.name == "S1"


# ------------------------------------------------------------------------------------------
# 3. a per-amp layout the header states that differs from the camera's is reported
# ------------------------------------------------------------------------------------------
LOGGER = "ampoffset_dask.io.layout"


def _assembled_s5(path, a_left: bool, instrume: bool) -> None:
    """An assembled DECam S5 image whose DATASEC<s>/CCDSEC<s> put amp A on the left
    (``a_left``; the camera has it on the right) or where the camera has it."""
    left, right = "[1:1024,1:4096]", "[1025:2048,1:4096]"
    a, b = (left, right) if a_left else (right, left)
    primary = fits.PrimaryHDU()
    primary.header["EXPNUM"] = 3
    if instrume:
        primary.header["INSTRUME"] = "DECam"
    ext = fits.ImageHDU(np.zeros((4096, 2048), np.int16))
    for key, value in (("DATASECA", a), ("CCDSECA", a), ("DATASECB", b), ("CCDSECB", b),
                       ("DETPOS", "S5"), ("CCDNUM", 29)):
        ext.header[key] = value
    fits.HDUList([primary, ext]).writeto(path)


@pytest.mark.parametrize("instrume, camera, said", [
    (True, None, "the header's camera 'decam'"),
    (False, "decam", "the given camera 'decam'"),
])
def test_stated_layout_differing_from_the_camera_is_warned(tmp_path, caplog, instrume,
                                                           camera, said):
    path = tmp_path / "s5.fits"
    _assembled_s5(path, a_left=True, instrume=instrume)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        det = resolve_detector(inspect_file(path), camera=camera)
    assert det == get_camera("decam")["S5"] and det["A"].x0 == 1024  # the camera's is used
    warned = [r.getMessage() for r in caplog.records if "amp layout" in r.getMessage()]
    assert len(warned) == 1, caplog.text
    assert warned[0].startswith(f"{path}: the amp layout recorded in the header (A x[0:1024] "
                                "y[0:4096], B x[1024:2048] y[0:4096]) differs from "
                                f"detector 'S5' of {said} (A x[1024:2048]"), warned[0]
    assert "for amps A, B;" in warned[0]
    # a header stating the camera's own layout is not warned about
    caplog.clear()
    agreeing = tmp_path / "s5_agreeing.fits"
    _assembled_s5(agreeing, a_left=False, instrume=instrume)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        resolve_detector(inspect_file(agreeing), camera=camera)
    assert "amp layout" not in caplog.text


# ------------------------------------------------------------------------------------------
# 4. a trimmed image is told apart from a raw
# ------------------------------------------------------------------------------------------
def _trimmed_s29(path, ltv: tuple[float, float] | None) -> None:
    """A CP-style trimmed DECam S29 CCD (2046x4094), with ``LTV1``/``LTV2`` or without."""
    primary = fits.PrimaryHDU()
    primary.header["INSTRUME"] = "DECam"
    primary.header["EXPNUM"] = 1
    ext = fits.ImageHDU(np.full((4094, 2046), 700, np.int16))
    ext.header["DETPOS"] = "S29"
    if ltv is not None:
        ext.header["LTV1"], ext.header["LTV2"] = ltv
    fits.HDUList([primary, ext]).writeto(path)


def test_trimmed_image_without_ltv_is_refused_as_such(tmp_path):
    path = tmp_path / "ooi.fits"
    _trimmed_s29(path, None)
    with pytest.raises(InputError) as err:
        read_exposure(path)
    text = str(err.value)
    assert text.startswith(f"{path}: the image is 2046x4094 while detector 'S29' of camera "
                           "'decam' is 2048x4096"), text
    assert "trimmed image" in text and "no LTV1/LTV2" in text
    assert "raw data box" not in text
    # with them, the same image is read, cut out of the camera's detector
    path.unlink()
    _trimmed_s29(path, (-1.0, -1.0))
    data = read_exposure(path)
    assert data.image.shape == (4094, 2046) and data.detector.name == "S29"
    assert (np.asarray(data.image) == 700).all()


def test_trimmed_image_with_ltv_outside_the_detector_names_them(tmp_path):
    path = tmp_path / "ooi.fits"
    _trimmed_s29(path, (-5.0, -1.0))
    with pytest.raises(InputError, match=r"LTV1/LTV2 = -5.0, -1.0 do not place it inside"):
        resolve_detector(inspect_file(path))

